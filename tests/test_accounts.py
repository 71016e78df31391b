"""Several Cloudflare accounts as one (issue 14): CF_ACCOUNTS, failover on
3036 / 3040 / refused tokens, the neurons each account spends, the state every
worker shares, the status endpoint, and AI Gateway."""

from __future__ import annotations

import datetime
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import fake_cloudflare as cf
from conftest import AUTH
from flux_worker.accounts import CloudflareAccount, parse_accounts
from flux_worker.cloudflare import next_utc_midnight, utc_day
from flux_worker.models import REGISTRY
from flux_worker.neurons import Price, megapixels, per_dollar, tiles
from flux_worker.settings import ConfigError, Settings
from harness import Gunicorn, gunicorn_env
from test_routes import assert_error

SECOND = CloudflareAccount("second-account", "second-token")
THIRD = CloudflareAccount("third-account", "third-token")
SCHNELL = "@cf/black-forest-labs/flux-1-schnell"
KLEIN = "@cf/black-forest-labs/flux-2-klein-4b"


def generate(client, prompt: str = "A lighthouse at dusk", **extra):
    return client.post("/v1/images/generations", headers=AUTH,
                       json={"prompt": prompt, "response_format": "url", **extra})


def accounts_called(fake) -> list[tuple[str | None, int | None]]:
    """Each Workers AI call in order: (account, what it answered)."""
    return [(call.account, call.status) for call in fake.calls_to("ai")]


@pytest.fixture
def two(fake, make_app):
    """An app drawing with the fake's first account and SECOND."""
    fake.add_account(SECOND.id, SECOND.token)
    return make_app(cf_accounts=(SECOND,)).test_client()


class TestSettings:
    def test_cf_accounts_adds_accounts_after_cf_account_id(self):
        settings = Settings.from_env({"CF_ACCOUNT_ID": "first", "CF_API_TOKEN": "t1",
                                      "CF_ACCOUNTS": "second:t2, third:t3\nfourth:t4"})
        assert [a.id for a in settings.accounts] == ["first", "second", "third", "fourth"]
        assert settings.kv_account.id == "first"  # CF_ACCOUNT_ID's owns the namespace

    def test_cf_accounts_alone_is_enough(self):
        settings = Settings.from_env({"CF_ACCOUNTS": "a:t1,b:t2"})
        assert settings.workers_ai_configured and settings.kv_account.id == "a"

    def test_the_same_account_twice_is_one(self):
        settings = Settings.from_env({"CF_ACCOUNT_ID": "a", "CF_API_TOKEN": "t1",
                                      "CF_ACCOUNTS": "a:t1,b:t2"})
        assert [a.id for a in settings.accounts] == ["a", "b"]

    def test_every_mistake_has_its_own_line_and_no_token(self):
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({"CF_API_TOKEN": "lonely-secret",
                               "CF_ACCOUNTS": "ok:secret-1,no-token,:secret-2,ok:secret-3,"
                                              "bad/id:secret-4"})
        lines = str(caught.value).splitlines()
        assert len(lines) == 5, lines
        assert "CF_ACCOUNT_ID and CF_API_TOKEN go together" in lines[0]
        assert "entry 2 has no token" in lines[1]
        assert "entry 3 has no valid account id" in lines[2]
        assert "entry 4 repeats the account of entry 1" in lines[3]
        assert "entry 5 has no valid account id" in lines[4]
        assert "secret" not in str(caught.value)

    def test_another_token_for_cf_account_ids_account_is_a_mistake(self):
        with pytest.raises(ConfigError, match="entry 1 names CF_ACCOUNT_ID's account"):
            Settings.from_env({"CF_ACCOUNT_ID": "a", "CF_API_TOKEN": "t1",
                               "CF_ACCOUNTS": "a:other"})

    def test_tokens_and_ids_are_secrets_never_shown(self):
        settings = Settings.from_env({"CF_ACCOUNTS": "account-aaaa-1111:tok-one,"
                                                     "account-bbbb-2222:tok-two",
                                      "CF_AI_GATEWAY": "gw", "CF_AI_GATEWAY_TOKEN": "gw-secret",
                                      "REDIS_URL": "redis://:redis-pass@127.0.0.1:6379/0"})
        for secret in ("tok-one", "tok-two", "gw-secret", "redis-pass", "account-aaaa-1111"):
            assert secret in settings.secrets
            assert secret not in repr(settings) and secret not in repr(settings.accounts)
        assert repr(settings.accounts[0]) == "CloudflareAccount(acco…1111)"

    @pytest.mark.parametrize("env,named", [
        ({"CF_DAILY_NEURONS": "-1"}, "CF_DAILY_NEURONS"),
        ({"CF_AI_GATEWAY": "my gateway"}, "CF_AI_GATEWAY"),
        ({"CF_AI_GATEWAY_CACHE": "maybe"}, "CF_AI_GATEWAY_CACHE"),
        ({"CF_AI_GATEWAY_BASE": "gateway.example"}, "CF_AI_GATEWAY_BASE"),
        ({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL"),
    ])
    def test_bad_values_name_the_variable(self, env, named):
        with pytest.raises(ConfigError, match=named):
            Settings.from_env(env)

    def test_redis_is_the_shared_state_when_configured(self):
        assert Settings.from_env({}).state_url == ""
        assert Settings.from_env({"RATE_LIMIT_STORAGE_URI": "redis://r:6379"}).state_url \
            == "redis://r:6379"
        assert Settings.from_env({"RATE_LIMIT_STORAGE_URI": "memory://"}).state_url == ""
        assert Settings.from_env({"REDIS_URL": "redis://a:1",
                                  "RATE_LIMIT_STORAGE_URI": "redis://b:2"}).state_url \
            == "redis://a:1"

    def test_parse_accounts_reads_commas_spaces_and_lines(self):
        accounts, mistakes = parse_accounts(" a:t1 ,\n b:t2\tc:t3 ")
        assert [a.id for a in accounts] == ["a", "b", "c"] and not mistakes


class TestNeurons:
    def test_flux_1_schnell_is_what_cloudflare_bills(self):
        """1024x1024 at 4 steps: 4 tiles x (4.80 + 4 x 9.60) = 172.8, the
        cf-ai-neurons figure seen on real calls (docs/accounts-and-neurons.md)."""
        assert REGISTRY[SCHNELL].price.neurons(1024, 1024, 4) == 172.8
        assert REGISTRY[SCHNELL].price.neurons(1024, 1024, 8) == 326.4

    def test_tiles_and_megapixels_count_a_part_as_whole(self):
        assert tiles(512, 512) == 1 and tiles(513, 512) == 2 and tiles(1120, 1120) == 9
        assert megapixels(1024, 1024) == 1 and megapixels(1024, 1025) == 2

    def test_pictures_in_are_priced_too(self):
        klein = REGISTRY[KLEIN].price
        assert klein.neurons(1024, 768, None) == 4 * 26.05
        assert klein.neurons(1024, 768, None, [(512, 512)] * 2) == round(4 * 26.05 + 2 * 5.37, 2)

    def test_klein_9b_by_the_megapixel(self):
        price = REGISTRY["@cf/black-forest-labs/flux-2-klein-9b"].price
        assert price.neurons(1024, 1024) == round(per_dollar(0.015), 2)
        assert price.neurons(1920, 1080) == round(per_dollar(0.015 + 0.002), 2)

    def test_unpublished_prices_are_none(self):
        assert REGISTRY["@cf/stabilityai/stable-diffusion-xl-base-1.0"].price is None
        assert Price().neurons(1024, 1024, 4) == 0


class TestFailover:
    def test_thirty_images_across_two_accounts_when_the_first_is_used_up_after_five(
            self, two, fake):
        fake.accounts[cf.ACCOUNT_ID].exhaust_after = 5
        for number in range(30):
            response = generate(two, f"picture {number}")
            assert response.status_code == 200, response.get_data(as_text=True)
        calls = accounts_called(fake)
        refused = [i for i, (account, status) in enumerate(calls) if status == 429]
        assert [calls[i] for i in refused] == [(cf.ACCOUNT_ID, 429)]  # the switch, once
        assert (cf.ACCOUNT_ID, 200) not in calls[refused[0]:]  # no more calls to it
        assert cf.ACCOUNT_ID not in [account for account, _ in calls[refused[0] + 1:]]
        assert fake.accounts[cf.ACCOUNT_ID].images == 5
        assert fake.accounts[SECOND.id].images == 25
        # Least used first: the two took turns until the first was used up.
        assert [account for account, _ in calls[:4]].count(cf.ACCOUNT_ID) == 2

    def test_both_used_up_is_429_until_midnight_utc_and_asks_cloudflare_no_more(
            self, two, fake):
        fake.accounts[cf.ACCOUNT_ID].exhaust_after = 0
        fake.accounts[SECOND.id].exhaust_after = 0
        response = generate(two)
        assert_error(response, 429, "insufficient_quota")
        expected = next_utc_midnight(time.time()) - time.time()
        assert abs(int(response.headers["Retry-After"]) - expected) <= 5
        assert "Every usable Cloudflare account" in response.json["error"]["message"]
        assert sorted(accounts_called(fake)) == sorted([(cf.ACCOUNT_ID, 429), (SECOND.id, 429)])
        assert_error(generate(two), 429, "insufficient_quota")
        assert len(fake.calls_to("ai")) == 2  # known used up: not asked again

    def test_a_busy_account_hands_the_same_image_to_the_next_at_once(self, two, fake):
        fake.accounts[cf.ACCOUNT_ID].busy = 1
        fake.accounts[cf.ACCOUNT_ID].busy_retry_after = 30
        fake.accounts[SECOND.id].busy = 1  # whichever comes first is busy
        fake.accounts[SECOND.id].busy_retry_after = 30
        started = time.monotonic()
        response = generate(two)
        assert_error(response, 429, "rate_limit_exceeded", retry="true")
        assert 25 <= int(response.headers["Retry-After"]) <= 30
        assert time.monotonic() - started < 5  # Retry-After was not waited out
        assert sorted(accounts_called(fake)) == sorted([(cf.ACCOUNT_ID, 429), (SECOND.id, 429)])

    def test_a_busy_account_is_skipped_for_retry_after(self, two, fake):
        fake.accounts[cf.ACCOUNT_ID].busy = 1
        fake.accounts[cf.ACCOUNT_ID].busy_retry_after = 30
        fake.accounts[SECOND.id].exhaust_after = 1  # so the first comes first next time
        for _ in range(4):
            generate(two)
        calls = accounts_called(fake)
        busy_at = calls.index((cf.ACCOUNT_ID, 429))
        # The busy account is not asked again within its Retry-After.
        assert cf.ACCOUNT_ID not in [account for account, _ in calls[busy_at + 1:]]
        states = {a["state"] for a in two.get("/v1/status", headers=AUTH).json["accounts"]}
        assert "backing_off" in states

    def test_one_account_busy_is_still_waited_out_as_before(self, client, fake):
        fake.accounts[cf.ACCOUNT_ID].busy = 2
        fake.accounts[cf.ACCOUNT_ID].busy_retry_after = 0
        assert generate(client).status_code == 200
        assert accounts_called(fake) == [(cf.ACCOUNT_ID, 429)] * 2 + [(cf.ACCOUNT_ID, 200)]

    def test_a_refused_token_is_taken_out_and_told_to_the_operator(self, two, fake, caplog):
        fake.accounts[cf.ACCOUNT_ID].refused = True
        with caplog.at_level(logging.ERROR, logger="flux_worker"):
            for _ in range(6):
                assert generate(two).status_code == 200
        calls = accounts_called(fake)
        assert calls.count((cf.ACCOUNT_ID, 401)) == 1
        assert calls.count((SECOND.id, 200)) == 6
        taken_out = [r.getMessage() for r in caplog.records if "taken out" in r.getMessage()]
        assert len(taken_out) == 1 and "10000" in taken_out[0]
        assert cf.API_TOKEN not in caplog.text
        status = two.get("/v1/status", headers=AUTH).json["accounts"]
        assert status[0]["state"] == "out" and status[0]["last_error"] == 10000

    def test_the_only_account_refused_is_502_then_503_until_rechecked(self, client, fake):
        fake.accounts[cf.ACCOUNT_ID].refused = True
        assert_error(generate(client), 502, "upstream_auth_failed")
        response = generate(client)
        assert_error(response, 503, "no_usable_account")
        assert 500 <= int(response.headers["Retry-After"]) <= 600
        assert len(fake.calls_to("ai")) == 1

    def test_a_restart_gives_a_refused_account_a_fresh_try(self, make_settings, fake):
        from flux_worker import create_app

        settings = make_settings()
        fake.accounts[cf.ACCOUNT_ID].refused = True
        first = create_app(settings).test_client()
        generate(first)
        fake.accounts[cf.ACCOUNT_ID].refused = False  # the operator fixed it
        assert_error(generate(first), 503, "no_usable_account")
        assert generate(create_app(settings).test_client()).status_code == 200

    def test_a_model_agreement_missing_on_one_account_skips_that_model_only(
            self, two, fake):
        fake.inject("ai", cf.model_agreement())
        assert generate(two, model="flux-2-klein-4b").status_code == 200
        first = fake.calls_to("ai")[0].account
        other = SECOND.id if first == cf.ACCOUNT_ID else cf.ACCOUNT_ID
        for _ in range(3):
            assert generate(two, model="flux-2-klein-4b").status_code == 200
        assert [c.account for c in fake.calls_to("ai")[1:]] == [other] * 4
        for _ in range(2):  # other models still go to it (the least used now)
            assert generate(two).status_code == 200
        assert [c.account for c in fake.calls_to("ai")[5:]] == [first] * 2

    def test_a_bad_prompt_is_not_an_account_problem(self, two, fake):
        response = generate(two, f"a {cf.NSFW_TRIGGER} picture")
        assert_error(response, 400, "content_policy_violation")
        assert len(fake.calls_to("ai")) == 1  # not tried on the other account

    def test_the_daily_budget_skips_an_account_before_cloudflare_says_so(
            self, fake, make_app):
        """Budget 400 and flux-1-schnell at 172.8: each account makes two images
        within it and one past it (an image is never refused for its cost
        alone), then is skipped without asking Cloudflare."""
        fake.add_account(SECOND.id, SECOND.token)
        client = make_app(cf_accounts=(SECOND,), cf_daily_neurons=400).test_client()
        for _ in range(6):
            assert generate(client).status_code == 200
        response = generate(client)
        assert_error(response, 429, "insufficient_quota")
        assert "budget of 400 neurons" in response.json["error"]["message"]
        assert len(fake.calls_to("ai")) == 6  # Cloudflare was never asked to refuse
        assert fake.accounts[cf.ACCOUNT_ID].images == fake.accounts[SECOND.id].images == 3
        states = client.get("/v1/status", headers=AUTH).json["accounts"]
        assert [a["state"] for a in states] == ["exhausted", "exhausted"]

    def test_an_image_dearer_than_the_budget_is_still_made(self, client, fake):
        """phoenix-1.0 at 2048x2048 is estimated at 12,480 neurons, more than
        the default day of 10,000: Cloudflare decides, not our estimate."""
        response = generate(client, model="phoenix-1.0", size="2048x2048")
        assert response.status_code == 200, response.get_data(as_text=True)

    def test_a_zero_budget_means_no_budget(self, client, fake, make_app):
        client = make_app(cf_daily_neurons=0).test_client()
        for _ in range(3):
            assert generate(client).status_code == 200


class TestStatus:
    def test_the_status_endpoint_needs_the_api_key(self, two):
        assert_error(two.get("/v1/status"), 401, "invalid_api_key")

    def test_each_account_with_its_day_and_never_a_token(self, fake, make_app):
        fake.add_account(SECOND.id, SECOND.token)
        fake.add_account(THIRD.id, THIRD.token, exhaust_after=0)
        client = make_app(cf_accounts=(SECOND, THIRD)).test_client()
        for _ in range(4):
            generate(client)
        body = client.get("/v1/status", headers=AUTH).json
        assert body["day"] == utc_day(time.time()) and body["daily_neurons"] == 10000
        shown = {a["account"]: a for a in body["accounts"]}
        assert set(shown) == {cf.ACCOUNT_ID[:4] + "…" + cf.ACCOUNT_ID[-4:],
                              "seco…ount", "thir…ount"}
        third = shown["thir…ount"]
        assert third["state"] == "exhausted" and third["last_error"] == 3036
        midnight = datetime.datetime.fromtimestamp(next_utc_midnight(time.time()),
                                                   datetime.timezone.utc)
        assert third["until"] == midnight.isoformat().replace("+00:00", "Z")
        served = [a for a in body["accounts"] if a["state"] == "healthy"]
        assert sum(a["images_today"] for a in served) == 4
        # flux-1-schnell answers say what they cost (cf-ai-neurons): 172.8 each
        assert sum(a["neurons_today"] for a in served) == pytest.approx(4 * 172.8)
        text = str(body)
        for secret in (cf.API_TOKEN, SECOND.token, THIRD.token, SECOND.id, THIRD.id):
            assert secret not in text

    def test_the_status_page_shows_the_accounts(self, fake, make_app):
        fake.add_account(SECOND.id, SECOND.token, exhaust_after=0)
        client = make_app(cf_accounts=(SECOND,)).test_client()
        generate(client)
        generate(client)
        page = client.get("/").get_data(as_text=True)
        assert "seco…ount" in page and "used up until 00:00 UTC" in page
        assert SECOND.token not in page and SECOND.id not in page

    def test_each_image_is_logged_with_its_account_and_cost(self, client, fake, caplog):
        with caplog.at_level(logging.INFO, logger="flux_worker"):
            generate(client)
            generate(client, model="flux-2-klein-4b")
            generate(client, model="stable-diffusion-xl-base-1.0")
        lines = [r.getMessage() for r in caplog.records if "image generated" in r.getMessage()]
        assert "neurons=172.8 " in lines[0]  # measured: Cloudflare's cf-ai-neurons
        assert "neurons=104.2(estimated)" in lines[1]  # 4 tiles x 26.05
        assert "neurons=unpriced" in lines[2]
        assert all(f"account={cf.ACCOUNT_ID[:4]}…" in line for line in lines)


class TestGateway:
    @pytest.fixture
    def gateway_app(self, fake, make_app):
        def build(token: str | None = None, **overrides):
            fake.add_gateway(cf.ACCOUNT_ID, "my-gateway", token=token)
            return make_app(cf_ai_gateway="my-gateway", cf_ai_gateway_base=fake.gateway_base,
                            cf_ai_gateway_token=token or "", **overrides).test_client()
        return build

    def test_calls_go_to_the_gateway_path_with_the_documented_headers(self, gateway_app,
                                                                       fake):
        client = gateway_app(token="gateway-secret")
        assert generate(client).status_code == 200
        call = fake.calls_to("ai")[0]
        assert call.path == f"/gateway/v1/{cf.ACCOUNT_ID}/my-gateway/workers-ai/{SCHNELL}"
        assert call.headers["authorization"] == f"Bearer {cf.API_TOKEN}"
        assert call.headers["cf-aig-authorization"] == "Bearer gateway-secret"
        assert call.headers["cf-aig-skip-cache"] == "true"  # no seed given: no cache

    def test_a_wrong_gateway_token_is_the_operators_problem(self, gateway_app, fake):
        client = gateway_app(token="gateway-secret")
        fake.gateways[(cf.ACCOUNT_ID, "my-gateway")].token = "another"
        response = generate(client)
        assert_error(response, 502, "upstream_auth_failed")
        assert "CF_AI_GATEWAY_TOKEN" in response.json["error"]["message"]
        assert "gateway-secret" not in response.get_data(as_text=True)

    def test_only_a_seeded_request_may_come_from_the_cache(self, gateway_app, fake):
        client = gateway_app()
        for _ in range(2):
            assert generate(client, seed=42).status_code == 200
            assert generate(client).status_code == 200
        calls = fake.calls_to("ai")
        seeded = [c for c in calls if c.headers.get("cf-aig-cache-key")]
        assert len(seeded) == 2 and seeded[0].headers["cf-aig-cache-key"] \
            == seeded[1].headers["cf-aig-cache-key"]
        assert seeded[0].headers["cf-aig-cache-ttl"] == "1800"  # IMAGE_EXPIRATION
        assert fake.accounts[cf.ACCOUNT_ID].images == 3  # the second seeded one was a HIT
        status = client.get("/v1/status", headers=AUTH).json["accounts"][0]
        assert status["images_today"] == 4
        assert status["neurons_today"] == pytest.approx(3 * 172.8)  # a HIT costs nothing

    def test_gateway_caching_can_be_turned_off(self, gateway_app, fake):
        client = gateway_app(cf_ai_gateway_cache=False)
        generate(client, seed=42)
        generate(client, seed=42)
        assert fake.accounts[cf.ACCOUNT_ID].images == 2
        assert all(c.headers["cf-aig-skip-cache"] == "true" for c in fake.calls_to("ai"))

    def test_flux_2_goes_around_the_gateway(self, gateway_app, fake):
        """FLUX.2's multipart form fails through AI Gateway (cloudflare-docs #33336)."""
        client = gateway_app()
        assert generate(client, model="flux-2-klein-4b").status_code == 200
        call = fake.calls_to("ai")[0]
        assert call.gateway is None and call.path.startswith("/client/v4/accounts/")


class TestUnderGunicorn:
    """The real service, four workers: what one worker learns, all know."""

    @pytest.mark.parametrize("store", ["sqlite", "redis"])
    def test_four_workers_share_a_used_up_and_a_refused_account(self, fake, tmp_path, store,
                                                                request):
        fake.accounts[cf.ACCOUNT_ID].exhaust_after = 2
        fake.add_account(SECOND.id, SECOND.token)
        fake.add_account(THIRD.id, THIRD.token, refused=True)
        extra = {"CF_ACCOUNTS": f"{SECOND.id}:{SECOND.token} {THIRD.id}:{THIRD.token}",
                 "WEB_CONCURRENCY": "4"}
        if store == "redis":
            extra["REDIS_URL"] = request.getfixturevalue("redis_url")
        server = Gunicorn(gunicorn_env(fake, tmp_path, **extra), tmp_path)
        try:
            with requests.Session() as session:
                for number in range(24):
                    # A new connection each time, so the workers take turns.
                    response = requests.post(server.url + "/v1/images/generations",
                                             headers={**AUTH, "Connection": "close"},
                                             json={"prompt": f"picture {number}"}, timeout=30)
                    assert response.status_code == 200, response.text
                status = session.get(server.url + "/v1/status", headers=AUTH, timeout=10).json()
            log = server.log()
        finally:
            server.stop()
        calls = accounts_called(fake)
        # Each account's lesson is learnt once, by one worker, for all four.
        assert calls.count((cf.ACCOUNT_ID, 429)) == 1
        assert calls.count((THIRD.id, 401)) == 1
        assert calls.count((cf.ACCOUNT_ID, 200)) == 2
        assert calls.count((SECOND.id, 200)) == 22
        states = {a["account"]: a["state"] for a in status["accounts"]}
        assert list(states.values()) == ["exhausted", "healthy", "out"]
        assert status["account_state"] == store
        assert sum(a["images_today"] for a in status["accounts"]) == 24
        assert "Cloudflare account thir…ount taken out" in log
        assert THIRD.token not in log and SECOND.token not in log and THIRD.id not in log


class TestFoundInReview:
    def test_busy_without_retry_after_moves_on_rather_than_retrying_there(self, two, fake):
        fake.accounts[cf.ACCOUNT_ID].busy = 1  # the first asked (in turn, both unused)
        assert generate(two).status_code == 200
        # No retry on the busy account: the next one, at once.
        assert accounts_called(fake) == [(cf.ACCOUNT_ID, 429), (SECOND.id, 200)]

    def test_the_gateway_cache_key_names_the_whole_request(self, fake, make_app):
        fake.add_gateway(cf.ACCOUNT_ID, "gw")
        client = make_app(cf_ai_gateway="gw", cf_ai_gateway_base=fake.gateway_base
                          ).test_client()
        generate(client, seed=1)
        generate(client, seed=2)
        generate(client, "another prompt", seed=1)
        keys = [c.headers["cf-aig-cache-key"] for c in fake.calls_to("ai")]
        assert len(set(keys)) == 3

    def test_an_edge_page_403_does_not_take_the_only_account_out(self, client, fake):
        fake.inject("ai", cf.html_error(403))
        assert generate(client).status_code == 502
        assert generate(client).status_code == 200

    def test_a_huge_retry_after_keeps_an_account_aside_five_minutes_at_most(self, two, fake):
        fake.accounts[cf.ACCOUNT_ID].busy = 1
        fake.accounts[cf.ACCOUNT_ID].busy_retry_after = 99999999
        fake.accounts[SECOND.id].busy = 1
        fake.accounts[SECOND.id].busy_retry_after = 99999999
        response = generate(two)
        assert_error(response, 429, "rate_limit_exceeded", retry="true")
        assert int(response.headers["Retry-After"]) <= 300

    def test_an_unknown_gateway_names_cf_ai_gateway(self, fake, make_app):
        client = make_app(cf_ai_gateway="missing", cf_ai_gateway_base=fake.gateway_base
                          ).test_client()
        response = generate(client)
        assert_error(response, 502, "gateway_not_found")
        assert "CF_AI_GATEWAY" in response.json["error"]["message"]

    def test_numbers_name_entries_after_empty_ones(self):
        _, mistakes = parse_accounts(",a:t1,,a:t2")
        assert mistakes == ["CF_ACCOUNTS entry 2 repeats the account of entry 1"]

    @pytest.mark.parametrize("env,named", [
        ({"CF_ACCOUNT_ID": "a", "CF_API_TOKEN": "токен"}, "CF_API_TOKEN"),
        ({"CF_AI_GATEWAY_TOKEN": "two words"}, "CF_AI_GATEWAY_TOKEN"),
        ({"REDIS_URL": "redis://:hunter2@127.0.0.1:notaport/0"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://:hunter2@127.0.0.1:6379/0?socket_timeout=x"}, "REDIS_URL"),
    ])
    def test_values_that_would_fail_every_call_stop_start_up(self, env, named):
        with pytest.raises(ConfigError, match=named) as caught:
            Settings.from_env(env)
        assert "hunter2" not in str(caught.value) and "токен" not in str(caught.value)

    def test_garbage_in_redis_is_ignored_not_a_500(self, fake, make_app, redis_url):
        import redis

        client = make_app(redis_url=redis_url).test_client()
        assert generate(client).status_code == 200
        raw = redis.Redis.from_url(redis_url)
        for key in raw.keys("flux-worker:*"):
            if raw.type(key) == b"hash":
                raw.hset(key, mapping={"exhausted_until": "garbage", "neurons": "nan",
                                       "backoff_until": "inf", "images": "1e300"})
        raw.close()
        assert generate(client).status_code == 200
        status = client.get("/v1/status", headers=AUTH)
        assert status.status_code == 200 and "NaN" not in status.get_data(as_text=True)
        assert client.get("/").status_code == 200


class TestClock:
    """The pool against an injected clock: used up at 23:59, serving at 00:00."""

    def test_a_used_up_account_serves_again_after_midnight_utc(self):
        from flux_worker.account_pool import AccountPool, Member
        from flux_worker.errors import AllowanceExhausted
        from flux_worker.http_session import Answer
        from flux_worker.shared_state import MemoryState

        clock = [datetime.datetime(2026, 11, 24, 23, 59, 0,
                                   tzinfo=datetime.timezone.utc).timestamp()]

        class Client:
            exhausted = True

            def generate(self, *args, **kwargs):
                if self.exhausted:
                    error = AllowanceExhausted("used up")
                    error.upstream_code = 3036
                    raise error
                return Answer(200, {}, b"")

        client = Client()
        pool = AccountPool([Member(CloudflareAccount("a", "t"), client)],  # type: ignore[arg-type]
                           MemoryState(lambda: clock[0]), daily_neurons=10_000,
                           clock=lambda: clock[0])
        model = REGISTRY[SCHNELL]
        with pytest.raises(AllowanceExhausted) as caught:
            pool.draw(model, {}, {}, estimate=172.8, cacheable=False)
        assert caught.value.retry_after == 60
        client.exhausted = False
        with pytest.raises(AllowanceExhausted):  # not asked again before midnight
            pool.draw(model, {}, {}, estimate=172.8, cacheable=False)
        clock[0] += 61
        assert pool.draw(model, {}, {}, estimate=172.8, cacheable=False).neurons == 172.8
        assert pool.status()[0].neurons_today == 172.8  # a new day's count


class TestSecondReview:
    @pytest.mark.parametrize("round_", range(5))
    def test_images_starting_together_share_the_budget(self, tmp_path, round_):
        """Budget 400 at 172.8 an image, sixteen images at once: two fit, one
        may pass the budget, the rest are refused, however they interleave."""
        from flux_worker.account_pool import AccountPool, Member
        from flux_worker.errors import RateLimited
        from flux_worker.http_session import Answer
        from flux_worker.shared_state import SQLiteState

        made = []

        class Client:
            def generate(self, *args, **kwargs):
                time.sleep(0.001 * (len(made) % 3))  # some finish as others choose
                made.append(1)
                return Answer(200, {}, b"")

        pool = AccountPool([Member(CloudflareAccount("a", "t"), Client())],  # type: ignore[arg-type]
                           SQLiteState(str(tmp_path / "state.sqlite3")), daily_neurons=400)
        barrier = threading.Barrier(16)

        def one(_):
            barrier.wait(timeout=10)
            try:
                pool.draw(REGISTRY[SCHNELL], {}, {}, estimate=172.8, cacheable=False)
                return "made"
            except RateLimited:
                return "refused"

        with ThreadPoolExecutor(16) as executor:
            outcomes = list(executor.map(one, range(16)))
        assert outcomes.count("made") == len(made) == 3, outcomes

    def test_the_only_account_refused_says_it_cannot_be_used(self, client, fake):
        fake.accounts[cf.ACCOUNT_ID].refused = True
        generate(client)
        message = generate(client).json["error"]["message"]
        assert message.startswith("This server's Cloudflare account cannot be used")

    def test_an_edge_page_404_on_the_gateway_path_takes_nothing_out(self, fake, make_app):
        fake.add_gateway(cf.ACCOUNT_ID, "gw")
        client = make_app(cf_ai_gateway="gw", cf_ai_gateway_base=fake.gateway_base
                          ).test_client()
        fake.inject("ai", cf.html_error(404))
        assert generate(client).status_code == 502
        assert generate(client).status_code == 200

    def test_a_blob_in_the_sqlite_state_is_ignored(self, client, tmp_path, make_settings):
        import sqlite3

        assert generate(client).status_code == 200
        path = make_settings().image_store_path
        with sqlite3.connect(path) as db:
            db.execute("UPDATE shared_state SET value = ?", (b"7",))
        assert generate(client).status_code == 200
        assert client.get("/v1/status", headers=AUTH).status_code == 200
        assert client.get("/").status_code == 200

    def test_cf_account_id_must_be_an_account_id(self):
        with pytest.raises(ConfigError, match="CF_ACCOUNT_ID is not an account id"):
            Settings.from_env({"CF_ACCOUNT_ID": "abc/../x", "CF_API_TOKEN": "t"})
