"""Running it like a service people trust (issue 15, the app's side): the
version, readiness, usage per key and its quota, metrics added up across
gunicorn workers, JSON logs, the bind address and the favicon."""

from __future__ import annotations

import json
import logging
import re
import shutil
import time

import pytest
import requests

import fake_cloudflare as cf
from conftest import API_KEY, AUTH
from flux_worker import logs
from flux_worker.redaction import Redactor
from flux_worker.settings import ConfigError, ServerSettings, Settings
from flux_worker.version import __version__
from harness import Gunicorn, gunicorn_env
from test_routes import assert_error

OTHER_KEY = "other-key-9876543210"


def generate(client, headers=AUTH, **extra):
    return client.post("/v1/images/generations", headers=headers,
                       json={"prompt": "a lighthouse", "response_format": "url", **extra})


class TestVersion:
    def test_healthz_and_the_status_page_show_the_version(self, client):
        assert client.get("/healthz").json == {"status": "ok", "version": __version__}
        assert f"version {__version__}" in client.get("/").get_data(as_text=True)

    def test_the_changelog_names_this_version(self):
        from harness import ROOT

        assert f"## [{__version__}]" in (ROOT / "CHANGELOG.md").read_text()

    def test_a_favicon_so_browsers_log_no_404(self, client):
        with client.get("/favicon.ico") as response:
            assert response.status_code == 200 and response.mimetype == "image/svg+xml"
            assert b"<svg" in response.data
        assert 'rel="icon"' in client.get("/").get_data(as_text=True)


class TestReadiness:
    def test_ready_when_cloudflare_takes_the_token_and_the_store_writes(self, client, fake):
        response = client.get("/readyz")
        assert response.status_code == 200, response.json
        body = response.json
        assert body["status"] == "ready" and body["version"] == __version__
        assert set(body["checks"]) == {"api_key", "workers_ai", "store"}
        assert all(check["ok"] for check in body["checks"].values())
        assert len(fake.calls_to("models")) == 1  # Cloudflare was asked for real…
        client.get("/readyz")
        assert len(fake.calls_to("models")) == 1  # …and the answer kept a while

    def test_a_wrong_token_is_not_ready_with_the_reason(self, fake, make_app):
        client = make_app(cf_api_token="wrong-token").test_client()
        response = client.get("/readyz")
        assert response.status_code == 503
        check = response.json["checks"]["workers_ai"]
        assert not check["ok"] and "CF_API_TOKEN" in check["detail"]
        assert "wrong-token" not in response.get_data(as_text=True)
        page = client.get("/").get_data(as_text=True)
        assert "not ready" in page and "CF_API_TOKEN" in page

    def test_one_refused_account_of_two_is_still_ready_and_named(self, fake, make_app):
        from flux_worker.accounts import CloudflareAccount

        second = CloudflareAccount("second-account", "second-token")
        fake.add_account(second.id, second.token, refused=True)
        response = make_app(cf_accounts=(second,)).test_client().get("/readyz")
        assert response.status_code == 200
        detail = response.json["checks"]["workers_ai"]["detail"]
        assert "accepts 1 of 2" in detail and "seco…ount" in detail
        assert "second-token" not in detail and "second-account" not in detail

    def test_an_unwritable_store_is_not_ready(self, fake, make_app, tmp_path):
        store_dir = tmp_path / "store"
        client = make_app(image_store_path=str(store_dir / "images.sqlite3")).test_client()
        assert client.get("/readyz").status_code == 200
        shutil.rmtree(store_dir)  # the volume went away under the running service
        from flux_worker import readiness

        readiness_checks = client.application.extensions["flux_worker"].readiness
        for check in readiness_checks._checks:
            if getattr(check, "name", "") == "store":
                check._until = 0  # not waiting out the minute the answer is kept
        response = client.get("/readyz")
        assert response.status_code == 503
        assert not response.json["checks"]["store"]["ok"]
        assert readiness.CHECK_SECONDS == 60

    def test_kv_is_checked_when_configured(self, fake, make_app):
        client = make_app(cf_kv_namespace_id=cf.NAMESPACE_ID).test_client()
        assert client.get("/readyz").json["checks"]["kv"]["ok"]
        bad = make_app(cf_kv_namespace_id="no-such-namespace").test_client()
        fake.inject("kv_get", *[cf.status(404, [(10013, "namespace not found")])] * 4)
        response = bad.get("/readyz")
        assert response.status_code == 503 and not response.json["checks"]["kv"]["ok"]

    def test_nothing_configured_says_which_variables_to_set(self, make_app):
        client = make_app(api_keys=(), cf_account_id="", cf_api_token="").test_client()
        response = client.get("/readyz")
        assert response.status_code == 503
        checks = response.json["checks"]
        assert "set API_KEY" in checks["api_key"]["detail"]
        assert "CF_ACCOUNT_ID and CF_API_TOKEN" in checks["workers_ai"]["detail"]
        page = client.get("/").get_data(as_text=True)
        assert "set API_KEY" in page and "CF_ACCOUNT_ID and CF_API_TOKEN" in page


class TestUsagePerKey:
    @pytest.fixture
    def two_keys(self, make_app):
        return make_app(api_keys=(API_KEY, OTHER_KEY)).test_client()

    def test_each_key_reads_its_own_images_and_neurons_today(self, two_keys):
        for _ in range(2):
            assert generate(two_keys).status_code == 200
        assert generate(two_keys, headers={"Authorization": f"Bearer {OTHER_KEY}"},
                        n=3).status_code == 200
        mine = two_keys.get("/v1/usage", headers=AUTH).json
        assert mine["images"] == 2 and mine["neurons"] == pytest.approx(2 * 172.8)
        assert mine["daily_images"] is None and mine["day"] == time.strftime(
            "%Y-%m-%d", time.gmtime())
        theirs = two_keys.get("/v1/usage", headers={"Authorization": f"Bearer {OTHER_KEY}"})
        assert theirs.json["images"] == 3
        assert API_KEY not in json.dumps(mine) and OTHER_KEY not in theirs.get_data(as_text=True)

    def test_usage_needs_a_key(self, client):
        assert_error(client.get("/v1/usage"), 401, "invalid_api_key")

    def test_a_daily_quota_is_429_until_midnight_utc(self, fake, make_app):
        client = make_app(api_keys=(API_KEY, OTHER_KEY), key_daily_images=3).test_client()
        assert generate(client, n=2).status_code == 200
        response = generate(client, n=2)  # 2 more would be 4 of 3
        assert_error(response, 429, "key_quota_exceeded")
        assert "1 of its 3 images left" in response.json["error"]["message"]
        midnight = (int(time.time()) // 86400 + 1) * 86400
        assert abs(int(response.headers["Retry-After"]) - (midnight - time.time())) <= 5
        assert generate(client).status_code == 200  # the last one
        assert_error(generate(client), 429, "key_quota_exceeded")
        assert len(fake.calls_to("ai")) == 3  # refused before Cloudflare was asked
        usage = client.get("/v1/usage", headers=AUTH).json
        assert (usage["images"], usage["daily_images"], usage["images_left"]) == (3, 3, 0)
        other = {"Authorization": f"Bearer {OTHER_KEY}"}
        assert generate(client, headers=other).status_code == 200  # each key its own

    def test_the_quota_also_holds_for_chat(self, fake, make_app):
        client = make_app(key_daily_images=1).test_client()
        chat = {"messages": [{"role": "user", "content": "A cute cat"}]}
        assert client.post("/v1/chat/completions", headers=AUTH, json=chat).status_code == 200
        response = client.post("/v1/chat/completions", headers=AUTH, json=chat)
        assert_error(response, 429, "key_quota_exceeded")


class TestSettings:
    @pytest.mark.parametrize("env,address", [
        ({}, "0.0.0.0:8000"),
        ({"BIND": "127.0.0.1"}, "127.0.0.1:8000"),
        ({"HOST": "127.0.0.1", "PORT": "9000"}, "127.0.0.1:9000"),
        ({"BIND": "::1"}, "[::1]:8000"),
        ({"BIND": "localhost"}, "localhost:8000"),
    ])
    def test_bind_sets_the_address(self, env, address):
        assert ServerSettings.from_env(env).address == address

    def test_a_bad_bind_names_the_variable(self):
        with pytest.raises(ConfigError, match="BIND"):
            ServerSettings.from_env({"BIND": "not an address!"})

    @pytest.mark.parametrize("env,named", [({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
                                           ({"KEY_DAILY_IMAGES": "-1"}, "KEY_DAILY_IMAGES")])
    def test_bad_values_name_the_variable(self, env, named):
        with pytest.raises(ConfigError, match=named):
            Settings.from_env(env)

    def test_the_metrics_token_is_a_secret(self):
        settings = Settings.from_env({"METRICS_TOKEN": "metrics-secret"})
        assert "metrics-secret" in settings.secrets and "metrics-secret" not in repr(settings)


class TestJsonLogs:
    def test_one_json_object_per_line_with_the_text_lines_fields(self):
        formatter = logs.JsonFormatter(Redactor(["tok-secret"]))
        record = logging.LogRecord("flux_worker.x", logging.WARNING, __file__, 1,
                                   "got %s\nand\u2028more", ("tok-secret",), None)
        record.request_id = "abc"
        line = formatter.format(record)
        assert "\n" not in line and "\u2028" not in line
        entry = json.loads(line)
        assert set(entry) == {"time", "level", "request_id", "logger", "message"}
        assert (entry["level"], entry["request_id"], entry["logger"]) == (
            "WARNING", "abc", "flux_worker.x")
        assert entry["message"] == "got [redacted]\nand\u2028more"

    def test_a_traceback_stays_in_the_object(self):
        formatter = logs.JsonFormatter(Redactor(["tok-secret"]))
        try:
            raise ValueError("boom tok-secret")
        except ValueError:
            import sys

            record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (),
                                       sys.exc_info())
        entry = json.loads(formatter.format(record))
        assert "ValueError: boom [redacted]" in entry["exception"]

    def test_the_service_logs_json_under_gunicorn(self, fake, tmp_path):
        server = Gunicorn(gunicorn_env(fake, tmp_path, LOG_FORMAT="json",
                                       WEB_CONCURRENCY="1"), tmp_path)
        try:
            requests.post(server.url + "/v1/images/generations", headers=AUTH,
                          json={"prompt": "a lighthouse"}, timeout=30).raise_for_status()
            ours = [line for line in server.log().splitlines() if line.startswith("{")]
        finally:
            server.stop()
        entries = [json.loads(line) for line in ours]
        assert any(e["logger"] == "flux_worker.access" and "/v1/images/generations" in
                   e["message"] for e in entries)
        assert any("image generated" in e["message"] for e in entries)
        assert all(cf.API_TOKEN not in line for line in ours)


def scrape(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include these."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[1] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match[2])
    return total


class TestMetrics:
    def test_counts_add_up_across_two_gunicorn_workers(self, fake, tmp_path):
        """A known mix, on new connections so both workers serve: 6 images, 2
        refused prompts, 3 bad requests, 2 streams; then one scrape."""
        server = Gunicorn(gunicorn_env(fake, tmp_path, WEB_CONCURRENCY="2"), tmp_path)
        try:
            def post(path, body):
                return requests.post(server.url + path, json=body, timeout=30,
                                     headers={**AUTH, "Connection": "close"})

            for number in range(6):
                assert post("/v1/images/generations",
                            {"prompt": f"picture {number}"}).status_code == 200
            for _ in range(2):
                assert post("/v1/images/generations",
                            {"prompt": f"a {cf.NSFW_TRIGGER}"}).status_code == 400
            for _ in range(3):
                assert post("/v1/images/generations", {"prompt": ""}).status_code == 400
            for _ in range(2):
                response = post("/v1/chat/completions", {"stream": True, "messages": [
                    {"role": "user", "content": "A cute cat"}]})
                assert response.status_code == 200 and "[DONE]" in response.text
            pids = {line.split("[")[2].split("]")[0] for line in server.log().splitlines()
                    if "Booting worker with pid" in line}
            text = requests.get(server.url + "/metrics", timeout=10).text
            refused = requests.get(server.url + "/metrics", timeout=10,
                                   headers={"X-Forwarded-For": "203.0.113.9"})
        finally:
            server.stop()
        assert len(pids) == 2
        route = "/v1/images/generations"
        assert scrape(text, "flux_worker_http_requests_total", route=route, status="200") == 6
        assert scrape(text, "flux_worker_http_requests_total", route=route, status="400") == 5
        assert scrape(text, "flux_worker_images_total", outcome="made") == 8
        assert scrape(text, "flux_worker_images_total", outcome="failed") == 2
        assert scrape(text, "flux_worker_upstream_errors_total", code="3030") == 2
        assert scrape(text, "flux_worker_generation_phase_seconds_count", phase="generate") == 8
        assert scrape(text, "flux_worker_neurons_total") == pytest.approx(8 * 172.8)
        assert scrape(text, "flux_worker_key_images_total") == 8
        assert scrape(text, "flux_worker_generations_in_flight") == 0
        assert scrape(text, "flux_worker_open_streams") == 0
        assert API_KEY not in text
        assert refused.status_code == 403 and refused.json()["error"]["code"] == \
            "metrics_refused"

    def test_the_metrics_token_opens_it_from_anywhere(self, make_app):
        client = make_app(metrics_token="scrape-me").test_client()
        assert client.get("/metrics", headers={"Authorization": "Bearer scrape-me"}
                          ).status_code == 200
        assert_error(client.get("/metrics"), 403, "metrics_refused")

    def test_without_a_token_only_this_machine_straight_to_the_port(self, client):
        assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}
                          ).status_code == 200
        assert_error(client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"}),
                     403, "metrics_refused")
        # Through a proxy on this machine, a request from anywhere: refused.
        proxied = client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"},
                             headers={"X-Forwarded-For": "203.0.113.9"})
        assert_error(proxied, 403, "metrics_refused")


class TestFoundInReview:
    def test_requests_at_the_same_time_share_the_key_quota(self, fake, make_app):
        import threading
        from concurrent.futures import ThreadPoolExecutor

        fake.latency = 0.3  # all ten are in flight together
        app = make_app(key_daily_images=2)
        barrier = threading.Barrier(10)

        def one(_):
            client = app.test_client()
            barrier.wait(timeout=10)
            return generate(client).status_code

        with ThreadPoolExecutor(10) as pool:
            statuses = list(pool.map(one, range(10)))
        assert sorted(statuses) == [200] * 2 + [429] * 8
        assert app.test_client().get("/v1/usage", headers=AUTH).json["images"] == 2

    def test_an_image_not_made_is_given_back_to_the_quota(self, fake, make_app):
        client = make_app(key_daily_images=1).test_client()
        assert generate(client, prompt=f"a {cf.NSFW_TRIGGER}").status_code == 400
        assert client.get("/v1/usage", headers=AUTH).json["images"] == 0
        assert generate(client).status_code == 200

    def test_usage_is_unknown_not_zero_while_the_shared_state_is_down(self, make_app):
        from harness import free_port

        client = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0").test_client()
        assert generate(client).status_code == 200  # images go on being made
        usage = client.get("/v1/usage", headers=AUTH).json
        assert usage["images"] is None and usage["images_left"] is None

    def test_made_up_methods_do_not_grow_the_metrics(self, client):
        from flux_worker.metrics import REQUESTS

        before = len(list(REQUESTS.collect())[0].samples)
        for method in ("FOOBAR", "QWERTY", "ZZZZ"):
            client.open("/v1/models", method=method, headers=AUTH)
        methods = {s.labels["method"] for s in list(REQUESTS.collect())[0].samples}
        assert not methods & {"FOOBAR", "QWERTY", "ZZZZ"} and "other" in methods
        assert len(list(REQUESTS.collect())[0].samples) <= before + 2  # _total, _created

    def test_an_ipv4_peer_on_an_ipv6_socket_is_this_machine_too(self, client):
        response = client.get("/metrics", environ_base={"REMOTE_ADDR": "::ffff:127.0.0.1"})
        assert response.status_code == 200

    def test_timeouts_are_upstream_errors_in_the_metrics(self, fake, make_app):
        from flux_worker.metrics import UPSTREAM_ERRORS

        def timeouts() -> float:
            return sum(s.value for s in list(UPSTREAM_ERRORS.collect())[0].samples
                       if s.labels.get("code") == "timeout" and s.name.endswith("_total"))

        client = make_app(upstream_timeout_seconds=0.5).test_client()
        before = timeouts()
        fake.inject("ai", cf.hang(5))
        assert_error(generate(client), 504, "upstream_timeout", retry="true")
        assert timeouts() == before + 1

    def test_a_slow_check_never_holds_a_second_caller_once_it_has_an_answer(self):
        import threading

        from flux_worker.readiness import CachedCheck

        clock = [0.0]
        started, release = threading.Event(), threading.Event()
        calls = []

        def slow() -> str:
            calls.append(1)
            if len(calls) > 1:
                started.set()
                release.wait(10)
            return f"answer {len(calls)}"

        check = CachedCheck("workers_ai", slow, clock=lambda: clock[0])
        assert check().detail == "answer 1"
        clock[0] = 120  # stale
        refresher = threading.Thread(target=check)
        refresher.start()
        assert started.wait(5)
        begun = time.monotonic()
        assert check().detail == "answer 1"  # the stale answer, at once
        assert time.monotonic() - begun < 1
        release.set()
        refresher.join(5)
        assert check().detail == "answer 2"

    def test_the_status_page_never_waits_for_cloudflare(self, fake, make_app):
        client = make_app().test_client()
        page = client.get("/").get_data(as_text=True)
        assert "not checked yet" in page
        assert not fake.calls_to("models")  # the page asked nobody
        client.get("/readyz")
        assert "not checked yet" not in client.get("/").get_data(as_text=True)

    def test_a_bad_metrics_directory_is_one_line_at_start(self, tmp_path):
        import subprocess
        import sys

        from harness import ROOT, free_port

        env = {"PATH": "/usr/bin:/bin", "PORT": str(free_port()), "WEB_CONCURRENCY": "1",
               "IMAGE_STORE_PATH": str(tmp_path / "images.sqlite3"),
               "PROMETHEUS_MULTIPROC_DIR": "/proc/no-such-dir"}
        result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        lines = [line for line in result.stderr.splitlines() if "configuration error" in line]
        assert len(lines) == 1 and "PROMETHEUS_MULTIPROC_DIR" in lines[0]

    def test_gunicorn_lines_are_json_too(self, fake, tmp_path):
        server = Gunicorn(gunicorn_env(fake, tmp_path, LOG_FORMAT="json",
                                       WEB_CONCURRENCY="1"), tmp_path)
        server.stop()
        lines = [line for line in server.log().splitlines() if line.strip()]
        assert lines and all(json.loads(line)["level"] for line in lines)
        assert any(json.loads(line)["logger"] == "gunicorn.error" for line in lines)

    @pytest.mark.parametrize("value", ["a..b", "999.1.1.1", "1.2.3", "-x"])
    def test_bind_refuses_what_is_no_address(self, value):
        with pytest.raises(ConfigError, match="BIND"):
            ServerSettings.from_env({"BIND": value})
