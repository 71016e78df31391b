"""Fault injection against the fake Cloudflare: retries, timeouts, mapping,
no lost images, request IDs and secrets in logs."""

from __future__ import annotations

import io
import logging

import pytest
from PIL import Image

import fake_cloudflare as cf
from conftest import API_KEY, AUTH
from shapes import assert_shape
from test_routes import CAT, assert_error, fetch_image, image_url

KV = dict(cf_kv_namespace_id=cf.NAMESPACE_ID)


def content_of(response) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json["choices"][0]["message"]["content"]


class TestRetries:
    @pytest.mark.parametrize("fault", [cf.status(429), cf.status(503),
                                       cf.status(429, [(3040, "Capacity temporarily exceeded")])],
                             ids=["429", "503", "3040"])
    def test_faults_where_no_image_was_made_are_retried(self, client, fake, fault):
        fake.inject("ai", fault, fault)
        content_of(client.post("/v1/chat/completions", headers=AUTH, json=CAT))
        assert len(fake.calls_to("ai")) == 3

    @pytest.mark.parametrize("fault, status", [(cf.status(502), 502), (cf.status(504), 504),
                                               (cf.status(500), 502), (cf.drop(), 502)],
                             ids=["502", "504", "500", "dropped-after-sending"])
    def test_faults_after_the_work_may_have_run_are_not_retried(self, client, fake, fault,
                                                                  status):
        """No double payment: the image may have been made (and billed)."""
        fake.inject("ai", fault, fault)
        assert_error(client.post("/v1/chat/completions", headers=AUTH, json=CAT), status,
                     retry="true")
        assert len(fake.calls_to("ai")) == 1

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 413])
    def test_other_4xx_are_not_retried(self, client, fake, status):
        fake.inject("ai", cf.status(status))
        response = client.post("/v1/chat/completions", headers=AUTH, json=CAT)
        assert 400 <= response.status_code < 600
        assert len(fake.calls_to("ai")) == 1

    def test_at_most_three_retries(self, client, fake):
        fake.inject("ai", *[cf.status(503)] * 10)
        assert_error(client.post("/v1/chat/completions", headers=AUTH, json=CAT), 502,
                     retry="true")
        assert len(fake.calls_to("ai")) == 4

    def test_rate_limit_after_retries_is_429_with_retry_after(self, client, fake):
        limited = cf.status(429, [(3040, "Capacity temporarily exceeded, please try again.")],
                            headers={"Retry-After": "1"})
        fake.inject("ai", *[limited] * 4)
        response = client.post("/v1/chat/completions", headers=AUTH, json=CAT)
        assert_error(response, 429, "rate_limit_exceeded", retry="true")
        assert response.headers["Retry-After"] == "1"

    def test_kv_write_is_retried(self, make_app, fake):
        client = make_app(**KV).test_client()
        fake.inject("kv_put", cf.status(503))
        url = image_url(content_of(client.post("/v1/chat/completions", headers=AUTH, json=CAT)))
        assert fake.kv_value(url.rsplit("/", 1)[1]) is not None
        assert len(fake.calls_to("kv_put")) == 2

    def test_optimizer_is_retried(self, make_app, fake):
        client = make_app(prompt_optimization=True, external_api_base=fake.optimizer_base,
                          external_model="m", external_api_key=cf.OPTIMIZER_KEY).test_client()
        fake.inject("optimizer", cf.status(503))
        content = content_of(client.post("/v1/chat/completions", headers=AUTH, json=CAT))
        assert "highly detailed" in content and len(fake.calls_to("optimizer")) == 2


class TestMalformedAnswers:
    @pytest.mark.parametrize("kind", ["json", "base64", "not_image"])
    def test_malformed_workers_ai_answers_are_502(self, client, fake, kind):
        fake.inject("ai", cf.malformed(kind))
        assert_error(client.post("/v1/chat/completions", headers=AUTH, json=CAT), 502,
                     "upstream_error", retry="true")

    def test_missing_account_is_502(self, make_app, fake):
        client = make_app(cf_account_id="not-mine").test_client()
        assert_error(client.post("/v1/chat/completions", headers=AUTH, json=CAT), 502)


class TestTimeouts:
    def test_slow_workers_ai_is_504_without_retry(self, make_app, fake):
        client = make_app(upstream_timeout_seconds=0.3).test_client()
        fake.inject("ai", cf.hang(3))
        assert_error(client.post("/v1/chat/completions", headers=AUTH, json=CAT), 504,
                     "upstream_timeout", retry="true")
        assert len(fake.calls_to("ai")) == 1

    def test_slow_optimizer_falls_back_to_the_original(self, make_app, fake):
        client = make_app(prompt_optimization=True, external_api_base=fake.optimizer_base,
                          external_model="m", external_api_key=cf.OPTIMIZER_KEY,
                          optimizer_timeout_seconds=0.3).test_client()
        fake.inject("optimizer", cf.hang(3))
        content = content_of(client.post("/v1/chat/completions", headers=AUTH, json=CAT))
        assert "Prompt optimization failed" in content
        assert fake.calls_to("ai")[0].json["prompt"] == "A cute cat"


class TestNoLostImages:
    def test_failed_kv_write_falls_back_to_the_embedded_store(self, make_app, fake):
        settings = dict(**KV)
        writer = make_app(**settings).test_client()
        fake.inject("kv_put", *[cf.status(500)] * 4)
        url = image_url(content_of(writer.post("/v1/chat/completions", headers=AUTH, json=CAT)))
        assert fake.kv_value(url.rsplit("/", 1)[1]) is None
        # Another process (no shared memory cache) still serves it from SQLite.
        reader = make_app(**settings).test_client()
        image = fetch_image(reader, url)
        assert image.status_code == 200
        assert Image.open(io.BytesIO(image.data)).size == (1024, 576)

    def test_image_is_served_at_once_while_kv_does_not_show_it(self, make_app, fake):
        client = make_app(**KV).test_client()
        url = image_url(content_of(client.post("/v1/chat/completions", headers=AUTH, json=CAT)))
        fake.inject("kv_get", *[cf.status(404, [(10009, "get: 'key not found'")])] * 4)
        assert fetch_image(client, url).status_code == 200
        assert fake.calls_to("kv_get") == []  # served from this process's cache

    def test_transient_kv_read_errors_are_retried(self, make_app, fake, tmp_path):
        writer = make_app(**KV).test_client()
        reader = make_app(**KV, image_store_path=str(tmp_path / "other.sqlite3")).test_client()
        url = image_url(content_of(writer.post("/v1/chat/completions", headers=AUTH, json=CAT)))
        fake.inject("kv_get", cf.status(503), cf.drop())
        assert fetch_image(reader, url).status_code == 200
        assert len(fake.calls_to("kv_get")) == 3

    def test_kv_read_failure_is_502_json(self, make_app, fake):
        client = make_app(**KV).test_client()
        fake.inject("kv_get", *[cf.status(500)] * 4)
        assert_error(client.get("/image/" + "B" * 22), 502, retry="true")


class TestRequestIdsAndLogs:
    def test_request_id_is_echoed_or_made(self, client):
        given = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
        assert given.headers["X-Request-ID"] == "abc-123"
        made = client.get("/healthz").headers["X-Request-ID"]
        assert len(made) == 32
        assert client.get("/healthz", headers={"X-Request-ID": "bad id <script>"}).headers[
            "X-Request-ID"] != "bad id <script>"

    def test_every_log_line_of_a_request_carries_its_id(self, client, caplog):
        caplog.set_level(logging.INFO, logger="flux_worker")
        client.post("/v1/chat/completions", headers={**AUTH, "X-Request-ID": "req-42"}, json=CAT,
                    buffered=True)  # the access line is written when the response closes
        lines = [r for r in caplog.records if getattr(r, "request_id", None) == "req-42"]
        messages = " | ".join(r.getMessage() for r in lines)
        assert "image generated" in messages and "POST /v1/chat/completions 200" in messages
        assert "generate_ms=" in messages and "store_ms=" in messages and "optimize_ms=" in messages

    def test_secrets_never_appear_in_logs_or_responses(self, make_app, fake, caplog, capsys):
        caplog.set_level(logging.DEBUG)
        secrets = {"token": "cf-secret-token-value", "optimizer": "optimizer-secret-value"}
        client = make_app(cf_api_token=secrets["token"], prompt_optimization=True,
                          external_api_base=fake.optimizer_base, external_model="m",
                          external_api_key=secrets["optimizer"]).test_client()
        bodies = [client.post("/v1/chat/completions", headers=AUTH, json=CAT),
                  client.post("/v1/chat/completions", headers=AUTH, json={**CAT, "stream": True}),
                  client.get("/"), client.get("/v1/models", headers=AUTH),
                  client.get("/v1/models", headers={"Authorization": "Bearer wrong"})]
        seen = caplog.text + capsys.readouterr().err + "".join(
            b.get_data(as_text=True) + str(b.headers) for b in bodies)
        for secret in (*secrets.values(), API_KEY):
            assert secret not in seen


class TestRateLimit:
    def test_per_key_limit_answers_429_in_openai_shape(self, make_app):
        client = make_app(rate_limit="2/minute", api_keys=(API_KEY, "second")).test_client()
        for _ in range(2):
            assert client.get("/v1/models", headers=AUTH).status_code == 200
        limited = client.get("/models", headers=AUTH)  # every prefix shares the count
        assert_error(limited, 429, "rate_limit_exceeded", retry="true")
        assert int(limited.headers["Retry-After"]) > 0
        second = {"Authorization": "Bearer second"}
        assert client.get("/v1/models", headers=second).status_code == 200
        assert client.get("/healthz").status_code == 200

    def test_no_limit_when_unset(self, client):
        for _ in range(30):
            assert client.get("/v1/models", headers=AUTH).status_code == 200


class TestSecurityHeaders:
    def test_page_has_a_strict_csp(self, client):
        csp = client.get("/").headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp

    def test_error_bodies_validate(self, client):
        for response in (client.get("/nope"), client.delete("/v1/models", headers=AUTH)):
            assert_shape("Error", response.json)
