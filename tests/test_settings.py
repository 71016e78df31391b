"""Settings are read once from the environment; bad values stop start-up."""

from __future__ import annotations

import importlib.util
import os

import pytest

from flux_worker.settings import ConfigError, ServerSettings, Settings, load_dotenv_file

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
    ({"CF_API_BASE": "http://[::1"}, "CF_API_BASE"),
    ({"EXTERNAL_API_BASE": "https://host:99999/v1"}, "EXTERNAL_API_BASE"),
    ({"PUBLIC_BASE_URL": "https://"}, "PUBLIC_BASE_URL"),
    ({"IMAGE_EXPIRATION": str(10**12)}, "IMAGE_EXPIRATION"),
    ({"UPSTREAM_TIMEOUT_SECONDS": "1e300"}, "UPSTREAM_TIMEOUT_SECONDS"),
    ({"SSE_KEEPALIVE_SECONDS": "1e300"}, "SSE_KEEPALIVE_SECONDS"),
    ({"OPTIMIZER_TIMEOUT_SECONDS": "100000"}, "OPTIMIZER_TIMEOUT_SECONDS"),
    ({"RETRY_BACKOFF_SECONDS": "1e9"}, "RETRY_BACKOFF_SECONDS"),
])
def test_invalid_values_name_the_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)


def test_describe_tells_what_is_set_but_no_secret():
    text = repr(Settings.from_env(FULL).describe())
    for secret in ("k1", "k2", "secret-token", "secret-external"):
        assert secret not in text
    assert "configured" in text


@pytest.mark.parametrize("env,named", [
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ({"RATE_LIMIT_STORAGE_URI": "foo://somewhere"}, "RATE_LIMIT_STORAGE_URI"),
    ({"RATE_LIMIT_STORAGE_URI": "localhost:6379"}, "RATE_LIMIT_STORAGE_URI"),
    ({"RATE_LIMIT_STORAGE_URI": "async+memory://"}, "RATE_LIMIT_STORAGE_URI"),
])
def test_app_settings_checked_at_start_name_the_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)


@pytest.mark.parametrize("env,named", [
    ({"RATE_LIMIT": "10/minute", "RATE_LIMIT_STORAGE_URI": "redis://:hunter2@127.0.0.1:1/0"},
     "RATE_LIMIT_STORAGE_URI"),
    ({"RATE_LIMIT_STORAGE_URI": "redis://:hunter2@127.0.0.1:1/0"}, "RATE_LIMIT_STORAGE_URI"),
    ({"REDIS_URL": "redis://:hunter2@127.0.0.1:1/0"}, "REDIS_URL"),
])
def test_redis_without_the_package_says_to_install_it(env, named, monkeypatch):
    """Checked without connecting (port 1 would refuse), with or without RATE_LIMIT."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "redis" else real_find_spec(name, *a))
    with pytest.raises(ConfigError, match=named) as caught:
        Settings.from_env(env)
    assert "pip install redis" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_memory_storage_and_log_level():
    s = Settings.from_env({"RATE_LIMIT": "5/second", "RATE_LIMIT_STORAGE_URI": "memory://",
                           "LOG_LEVEL": "WARNING"})
    assert s.rate_limit_storage_uri == "memory://" and s.log_level == "warning"
    assert Settings.from_env({}).log_level == "info"


def test_server_settings_defaults():
    server = ServerSettings.from_env({})
    assert server == ServerSettings()
    assert (server.port, server.threads, server.timeout) == (8000, 128, 120)
    assert server.log_level == "info"
    assert server.workers == min(os.cpu_count() or 1, 4)


def test_server_settings_from_the_environment():
    server = ServerSettings.from_env({"PORT": "8080", "WEB_CONCURRENCY": "3",
                                      "GUNICORN_THREADS": "16", "GUNICORN_TIMEOUT": "0",
                                      "LOG_LEVEL": "Debug"})
    assert server == ServerSettings(port=8080, workers=3, threads=16, timeout=0, log_level="debug")


@pytest.mark.parametrize("env,message", [
    ({"WEB_CONCURRENCY": "abc"}, "WEB_CONCURRENCY must be a whole number (got 'abc')"),
    ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY must be at least 1 (got 0)"),
    ({"GUNICORN_THREADS": "many"}, "GUNICORN_THREADS must be a whole number (got 'many')"),
    ({"GUNICORN_THREADS": "0"}, "GUNICORN_THREADS must be at least 1 (got 0)"),
    ({"GUNICORN_TIMEOUT": "x"}, "GUNICORN_TIMEOUT must be a whole number (got 'x')"),
    ({"GUNICORN_TIMEOUT": "-1"}, "GUNICORN_TIMEOUT must be at least 0 (got -1)"),
    ({"LOG_LEVEL": "loud"},
     "LOG_LEVEL must be one of debug, info, warning, error, critical (got 'loud')"),
    ({"PORT": "99999"}, "PORT must be at most 65535 (got 99999)"),
    ({"PORT": "0"}, "PORT must be at least 1 (got 0)"),
    ({"PORT": "http"}, "PORT must be a whole number (got 'http')"),
])
def test_bad_server_settings_name_the_variable(env, message):
    with pytest.raises(ConfigError) as caught:
        ServerSettings.from_env(env)
    assert str(caught.value) == message


def test_repr_and_str_show_no_secret():
    s = Settings.from_env({**FULL, "CF_KV_NAMESPACE_ID": "ns-secret",
                           "RATE_LIMIT_STORAGE_URI": "memory://"}).replace(
        rate_limit_storage_uri="redis://:storage-pass@127.0.0.1:1/0")
    for text in (repr(s), str(s)):
        for secret in ("k1", "k2", "secret-token", "secret-external", "acct", "ns-secret",
                       "storage-pass"):
            assert secret not in text
        assert "flux_model=" in text  # the rest is still shown


def test_secrets_lists_every_configured_secret():
    s = Settings.from_env({**FULL, "CF_KV_NAMESPACE_ID": "ns-id"})
    assert set(s.secrets) == {"k1", "k2", "secret-token", "secret-external", "acct", "ns-id"}
    assert Settings().secrets == ()
    assert Settings(cf_api_token="t", external_api_key="").secrets == ("t",)
    with_password = Settings(rate_limit_storage_uri="redis://user:pw-123@host:6379/0")
    assert with_password.secrets == ("pw-123",)


def test_dotenv_fills_only_what_the_environment_lacks(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("FLUX_TEST_FROM_FILE=file\nFLUX_TEST_BOTH=file\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLUX_TEST_BOTH", "real")
    monkeypatch.delenv("FLUX_TEST_FROM_FILE", raising=False)
    try:
        load_dotenv_file()
        assert os.environ["FLUX_TEST_FROM_FILE"] == "file"
        assert os.environ["FLUX_TEST_BOTH"] == "real"
    finally:
        os.environ.pop("FLUX_TEST_FROM_FILE", None)


def test_a_password_in_a_url_is_a_secret_and_never_shown():
    s = Settings(external_api_base="https://user:pa55-word@llm.test/v1")
    assert "pa55-word" in s.secrets
    assert "pa55-word" not in repr(s) and "llm.test" in repr(s)


def test_pictures_in_settings():
    settings = Settings.from_env({"EDIT_MODEL": "flux-2-dev", "INPAINT_MODEL":
                                  "stable-diffusion-v1-5-inpainting",
                                  "ALLOW_REMOTE_IMAGES": "yes", "MAX_UPLOAD_MB": "8"})
    assert settings.edit_model == "@cf/black-forest-labs/flux-2-dev"
    assert settings.allow_remote_images is True
    assert settings.max_upload_bytes == 8 * 1024 * 1024
    defaults = Settings.from_env({})
    assert defaults.edit_model == "@cf/black-forest-labs/flux-2-klein-4b"
    assert defaults.allow_remote_images is False


@pytest.mark.parametrize("env, named", [
    ({"EDIT_MODEL": "flux-1-schnell"}, "EDIT_MODEL .* cannot change pictures"),
    ({"EDIT_MODEL": "stable-diffusion-v1-5-inpainting"}, "EDIT_MODEL"),
    ({"INPAINT_MODEL": "flux-2-dev"}, "INPAINT_MODEL .* takes no mask"),
    ({"EDIT_MODEL": "dall-e-2"}, "EDIT_MODEL names an unknown model"),
    ({"MAX_UPLOAD_MB": "0"}, "MAX_UPLOAD_MB must be at least 1"),
    ({"ALLOW_REMOTE_IMAGES": "sometimes"}, "ALLOW_REMOTE_IMAGES must be true or false"),
])
def test_bad_pictures_in_settings_name_the_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)
