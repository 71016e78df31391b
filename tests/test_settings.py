"""Settings are read once from the environment; bad values stop start-up."""

from __future__ import annotations

import pytest

from flux_worker.settings import ConfigError, Settings

FULL = {"API_KEY": "k1, k2", "CF_ACCOUNT_ID": "acct", "CF_API_TOKEN": "secret-token",
        "EXTERNAL_API_KEY": "secret-external"}


def test_defaults_without_any_variable():
    s = Settings.from_env({})
    assert s.api_keys == ()
    assert s.cf_api_base == "https://api.cloudflare.com/client/v4"
    assert s.image_store_path == "data/images.sqlite3"
    assert (s.image_expiration, s.flux_num_steps) == (1800, 4)
    assert s.flux_model == "@cf/black-forest-labs/flux-1-schnell"
    assert not s.workers_ai_configured and not s.uses_kv and not s.optimizer_enabled
    assert s.sse_keepalive_seconds == 10.0 and s.upstream_timeout_seconds == 120.0
    assert s.optimizer_timeout_seconds == 20.0 and s.response_language == "en"


def test_keys_are_split_on_commas_and_trimmed():
    assert Settings.from_env(FULL).api_keys == ("k1", "k2")


def test_base_urls_lose_their_trailing_slash():
    s = Settings.from_env({"CF_API_BASE": "http://127.0.0.1:9/client/v4/",
                           "PUBLIC_BASE_URL": "https://img.example.com/"})
    assert s.cf_api_base == "http://127.0.0.1:9/client/v4"
    assert s.public_base_url == "https://img.example.com"


@pytest.mark.parametrize("name", ["PROMPT_OPTIMIZATION", "CF_IS_TRANSLATE"])
def test_optimization_under_both_names(name):
    s = Settings.from_env({name: "true", "EXTERNAL_API_BASE": "https://api.example.com",
                           "EXTERNAL_MODEL": "gpt-4o-mini"})
    assert s.optimizer_enabled


def test_the_new_name_wins_over_the_old():
    s = Settings.from_env({"PROMPT_OPTIMIZATION": "false", "CF_IS_TRANSLATE": "true"})
    assert not s.prompt_optimization


def test_models_by_id_or_short_name():
    s = Settings.from_env({"FLUX_MODEL": "flux-2-dev",
                           "IMAGE_MODELS": "dreamshaper-8-lcm, @cf/leonardo/phoenix-1.0"})
    assert s.flux_model == "@cf/black-forest-labs/flux-2-dev"
    assert s.image_models == ("@cf/lykon/dreamshaper-8-lcm", "@cf/leonardo/phoenix-1.0")


def test_fractional_keepalive_is_accepted():
    assert Settings.from_env({"SSE_KEEPALIVE_SECONDS": "0.25"}).sse_keepalive_seconds == 0.25


@pytest.mark.parametrize("env,named", [
    ({"FLUX_NUM_STEPS": "abc"}, "FLUX_NUM_STEPS"),
    ({"FLUX_NUM_STEPS": "9"}, "FLUX_NUM_STEPS"),
    ({"FLUX_NUM_STEPS": "0"}, "FLUX_NUM_STEPS"),
    ({"IMAGE_EXPIRATION": "-5"}, "IMAGE_EXPIRATION"),
    ({"PROMPT_OPTIMIZATION": "maybe"}, "PROMPT_OPTIMIZATION"),
    ({"PROMPT_OPTIMIZATION": "true"}, "PROMPT_OPTIMIZATION"),  # no EXTERNAL_API_BASE/MODEL
    ({"CF_API_BASE": "ftp://x"}, "CF_API_BASE"),
    ({"PUBLIC_BASE_URL": "example.com"}, "PUBLIC_BASE_URL"),
    ({"RESPONSE_LANGUAGE": "xx"}, "RESPONSE_LANGUAGE"),
    ({"RATE_LIMIT": "lots"}, "RATE_LIMIT"),
    ({"SSE_KEEPALIVE_SECONDS": "soon"}, "SSE_KEEPALIVE_SECONDS"),
    ({"UPSTREAM_TIMEOUT_SECONDS": "0"}, "UPSTREAM_TIMEOUT_SECONDS"),
    ({"FLUX_MODEL": "@cf/nope/flux-9"}, "FLUX_MODEL"),
    ({"IMAGE_MODELS": "flux-2-dev, dall-e-3"}, "IMAGE_MODELS"),
])
def test_invalid_values_name_the_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)


def test_describe_tells_what_is_set_but_no_secret():
    text = repr(Settings.from_env(FULL).describe())
    for secret in ("k1", "k2", "secret-token", "secret-external"):
        assert secret not in text
    assert "configured" in text
