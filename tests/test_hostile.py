"""Hostile upstreams and hostile clients, through the real code paths against
the fake Cloudflare: no leaked secret, no paid image lost to a 500, no forged
log line, no broken image linked, no slot held by a slow body or a bug."""

from __future__ import annotations

import ast
import datetime
import io
import json
import logging
import re
import sqlite3
import threading
from pathlib import Path

import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app

import fake_cloudflare as cf
import hostile_images as hostile
from conftest import API_KEY, AUTH, parse_sse
from flux_worker import cloudflare
from test_routes import CAT, assert_error, fetch_image, image_url

ROOT = Path(__file__).resolve().parents[1]
STREAM = {**CAT, "stream": True}
SECRET_TOKEN = "cf-token-SECRET-4242"
SECRET_ACCOUNT = "acct-SECRET-7777"
SECRET_NAMESPACE = "ns-SECRET-8888"
SECRET_OPTIMIZER_KEY = "opt-key-SECRET-9999"


@pytest.fixture
def secret_app(make_app, fake, monkeypatch):
    """An app whose secrets the fake accepts: the echoes carry real values."""
    monkeypatch.setattr(cf, "API_TOKEN", SECRET_TOKEN)
    monkeypatch.setattr(cf, "ACCOUNT_ID", SECRET_ACCOUNT)
    monkeypatch.setattr(cf, "NAMESPACE_ID", SECRET_NAMESPACE)
    monkeypatch.setattr(cf, "OPTIMIZER_KEY", SECRET_OPTIMIZER_KEY)
    return make_app(cf_api_token=SECRET_TOKEN, cf_account_id=SECRET_ACCOUNT,
                    cf_kv_namespace_id=SECRET_NAMESPACE)


def assert_no_secret(text: str) -> None:
    for secret in (SECRET_TOKEN, SECRET_ACCOUNT, SECRET_NAMESPACE, SECRET_OPTIMIZER_KEY,
                   API_KEY):
        assert secret not in text


class TestSecretsInUpstreamText:
    def test_a_workers_ai_400_echoing_credentials_is_redacted(self, secret_app, fake, capsys):
        fake.inject("ai", cf.echo(400, 5006))
        response = secret_app.test_client().post("/v1/chat/completions", headers=AUTH, json=CAT)
        assert_error(response, 400, "upstream_validation_error")
        message = response.json["error"]["message"]
        assert "[redacted]" in message and "A cute cat" in message  # the echo is there...
        assert_no_secret(response.get_data(as_text=True) + capsys.readouterr().err)  # ...not them

    def test_a_streamed_400_echoing_credentials_is_redacted(self, secret_app, fake, capsys):
        fake.inject("ai", cf.echo(400, 5006))
        body = secret_app.test_client().post("/v1/chat/completions", headers=AUTH,
                                             json=STREAM).get_data(as_text=True)
        events, _ = parse_sse(body)
        assert events[-2]["error"]["code"] == "upstream_validation_error"
        assert "[redacted]" in body
        assert_no_secret(body + capsys.readouterr().err)

    def test_the_public_image_route_never_shows_upstream_text(self, secret_app, fake, capsys):
        fake.inject("kv_get", *[cf.echo(500, 10001)] * 4)
        response = secret_app.test_client().get("/image/" + "B" * 22)
        assert_error(response, 502, retry="true")
        assert response.json["error"]["message"] == (
            "The image could not be read right now; try again shortly.")
        assert_no_secret(response.get_data(as_text=True) + capsys.readouterr().err)

    def test_an_optimizer_echoing_keys_in_its_prompt_is_redacted(self, make_app, fake, capsys,
                                                               monkeypatch):
        monkeypatch.setattr(cf, "OPTIMIZER_KEY", SECRET_OPTIMIZER_KEY)
        fake.optimizer_reply = ("{prompt} with Bearer " + SECRET_OPTIMIZER_KEY + " and " + API_KEY
                                + " and " + cf.API_TOKEN)
        client = make_app(prompt_optimization=True, external_api_base=fake.optimizer_base,
                          external_model="m", external_api_key=SECRET_OPTIMIZER_KEY).test_client()
        response = client.post("/v1/chat/completions", headers=AUTH, json=CAT)
        content = response.json["choices"][0]["message"]["content"]
        assert "with Bearer [redacted]" in content
        assert cf.API_TOKEN not in content
        assert_no_secret(response.get_data(as_text=True) + capsys.readouterr().err)
        # What Workers AI was asked to draw carries no secret either.
        assert SECRET_OPTIMIZER_KEY not in fake.calls_to("ai")[0].json["prompt"]

    def test_settings_repr_hides_secrets(self, make_settings):
        text = repr(make_settings(cf_api_token=SECRET_TOKEN, external_api_key=SECRET_OPTIMIZER_KEY))
        assert SECRET_TOKEN not in text and SECRET_OPTIMIZER_KEY not in text


class TestUnencodableText:
    @pytest.mark.parametrize("path, body, param", [
        ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "A cat \\ud800"}]}',
         "messages[0].content"),
        ("/v1/chat/completions", '{"stream": true, "messages": [{"role": "user", '
         '"content": [{"type": "text", "text": "\\udfff cat"}]}]}', "messages[0].content[0].text"),
        ("/v1/images/generations", '{"prompt": "A cat \\ud83d"}', "prompt"),
        ("/v1/chat/completions", '{"messages": [], "\\ud800": 1}', "body"),
    ], ids=["chat", "stream-parts", "images", "key"])
    def test_a_lone_surrogate_is_refused_before_any_upstream_call(self, client, fake, path,
                                                                   body, param):
        response = client.post(path, headers=AUTH, data=body, content_type="application/json")
        assert_error(response, 400, "invalid_unicode")
        assert response.json["error"]["param"] == param
        assert fake.calls == []

    def test_a_surrogate_pair_is_fine(self, client):
        body = '{"messages": [{"role": "user", "content": "A cat \\ud83d\\udc31 16:9"}]}'
        response = client.post("/v1/chat/completions", headers=AUTH, data=body,
                               content_type="application/json")
        assert response.status_code == 200 and "🐱" in response.json["choices"][0]["message"][
            "content"]

    def test_an_optimizer_answering_a_lone_surrogate_cannot_break_the_paid_reply(
            self, make_app, fake):
        fake.optimizer_reply = "{prompt} \ud800 glowing"
        client = make_app(prompt_optimization=True, external_api_base=fake.optimizer_base,
                          external_model="m", external_api_key=cf.OPTIMIZER_KEY).test_client()
        for body in (CAT, STREAM):
            response = client.post("/v1/chat/completions", headers=AUTH, json=body)
            assert response.status_code == 200
            assert "\ufffd glowing" in response.get_data(as_text=True)


class TestLogForging:
    def test_a_prompt_echoed_with_a_newline_stays_on_its_line(self, client, fake, capsys):
        fake.inject("ai", cf.echo(400, 5006))
        forged = "A cat\n2026-01-01 00:00:00,000 ERROR [x] flux_worker: forged"
        client.post("/v1/chat/completions", headers=AUTH, buffered=True,
                    json={"stream": True, "messages": [{"role": "user", "content": forged}]})
        err = capsys.readouterr().err
        assert "forged" in err  # it was logged...
        assert not any(line.startswith("2026-01-01") for line in err.splitlines())  # ...escaped

    def test_a_newline_in_a_public_path_stays_on_its_line(self, client, capsys):
        client.get("/image/%0A2026-01-01%2000:00:00,000%20ERROR%20forged", buffered=True)
        err = capsys.readouterr().err
        assert "forged" in err
        assert not any(line.startswith("2026-01-01") for line in err.splitlines())


def stored_keys(app) -> list[str]:
    path = app.extensions["flux_worker"].settings.image_store_path
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT key FROM images")]


class TestHostileImages:
    @pytest.mark.parametrize("data", [
        hostile.png_header_claiming(20000, 20000),
        hostile.png_bomb(12000, 12000),
        hostile.truncated_jpeg(1024, 1024),
        hostile.jpeg_without_eoi(1024, 1024, padding=64),
        hostile.truncated_png(1024, 1024),
        hostile.gif(1024, 1024),
        hostile.not_an_image(),
    ], ids=["header-20000", "bomb-12000", "jpeg-third", "jpeg-no-eoi", "png-cut", "gif", "text"])
    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    def test_is_a_502_and_never_a_link(self, app, fake, data, stream):
        """1:1, the size flux-1-schnell makes: bytes that already claim the right
        size must still be decoded whole."""
        fake.inject("ai", cf.image_answer(data))
        body = {"stream": stream, "messages": [{"role": "user", "content": "A cute cat"}]}
        response = app.test_client().post("/v1/chat/completions", headers=AUTH, json=body)
        text = response.get_data(as_text=True)
        if not stream:
            assert_error(response, 502, "upstream_error", retry="true")
        else:
            events, _ = parse_sse(text)
            assert events[-2]["error"]["code"] == "upstream_error"
        assert "/image/" not in text
        assert stored_keys(app) == []

    def test_the_images_api_too(self, client, fake):
        fake.inject("ai", cf.image_answer(hostile.png_bomb(12000, 12000)))
        assert_error(client.post("/v1/images/generations", headers=AUTH,
                                 json={"prompt": "A cat"}), 502, "upstream_error", retry="true")


class TestSlowBodies:
    def test_a_trickling_body_is_a_504_at_the_deadline(self, make_app, fake):
        client = make_app(upstream_timeout_seconds=0.5).test_client()
        fake.inject("ai", cf.trickle(bytes_per_second=50, total_seconds=20))
        assert_error(client.post("/v1/chat/completions", headers=AUTH, json=CAT), 504,
                     "upstream_timeout", retry="true")
        assert len(fake.calls_to("ai")) == 1

    def test_a_stall_after_the_headers_is_a_504(self, make_app, fake):
        client = make_app(upstream_timeout_seconds=0.5).test_client()
        fake.inject("ai", cf.stall_after_headers(seconds=20))
        assert_error(client.post("/v1/chat/completions", headers=AUTH, json=CAT), 504,
                     "upstream_timeout", retry="true")

    def test_slow_bodies_never_hold_what_fast_answers_need(self, make_app, fake):
        """More trickling answers than there are decode slots, and a fast one still passes."""
        from flux_worker.generation import DECODE_SLOTS
        app = make_app(upstream_timeout_seconds=4.0)
        slow = DECODE_SLOTS + 2
        fake.inject("ai", *[cf.trickle(bytes_per_second=100, total_seconds=20)] * slow)
        done: list[str] = []

        def ask(name: str) -> None:
            response = app.test_client().post("/v1/chat/completions", headers=AUTH, json=CAT)
            done.append(f"{name}:{response.status_code}")

        threads = [threading.Thread(target=ask, args=(f"slow{i}",)) for i in range(slow)]
        for thread in threads:
            thread.start()
        while len(fake.calls_to("ai")) < slow:  # every slow answer has started
            threading.Event().wait(0.01)
        ask("fast")
        assert done == ["fast:200"]  # answered while every slow one still trickles
        for thread in threads:
            thread.join()
        assert sorted(done[1:]) == [f"slow{i}:504" for i in range(slow)]


class TestCapacityHasOneOwner:
    def test_a_failure_to_start_releases_the_slots(self, app, monkeypatch):
        images = app.extensions["flux_worker"].images
        monkeypatch.setattr(images.pool, "submit", lambda *a, **k: 1 / 0)
        for body in (CAT, STREAM):
            response = app.test_client().post("/v1/chat/completions", headers=AUTH, json=body)
            assert_error(response, 500)
        response = app.test_client().post("/v1/images/generations", headers=AUTH,
                                          json={"prompt": "A cat", "n": 3})
        assert_error(response, 500)
        assert images.capacity.in_use == 0

    @pytest.mark.parametrize("body", [CAT, STREAM], ids=["json", "stream"])
    def test_a_bug_inside_a_run_releases_its_slot_and_ends_the_request(self, app, monkeypatch,
                                                                      body):
        images = app.extensions["flux_worker"].images
        monkeypatch.setattr(images, "optimize", lambda *a: 1 / 0)
        response = app.test_client().post("/v1/chat/completions", headers=AUTH, json=body)
        text = response.get_data(as_text=True)
        if body is CAT:
            assert_error(response, 500)
        else:
            assert text.endswith("data: [DONE]\n\n") and '"type":"server_error"' in text
        assert images.capacity.in_use == 0

    def test_a_full_process_refuses_and_recovers(self, make_app, fake):
        app = make_app(max_concurrent_generations=1)
        images = app.extensions["flux_worker"].images
        fake.inject("ai", cf.delay(0.5))
        slow = threading.Thread(target=lambda: app.test_client().post(
            "/v1/chat/completions", headers=AUTH, json=CAT))
        slow.start()
        while images.capacity.in_use == 0:
            threading.Event().wait(0.01)
        assert_error(app.test_client().post("/v1/chat/completions", headers=AUTH, json=CAT), 429,
                     "rate_limit_exceeded", retry="true")
        slow.join()
        assert images.capacity.in_use == 0
        assert app.test_client().post("/v1/chat/completions", headers=AUTH,
                                      json=CAT).status_code == 200


class TestCloudflareErrorCodes:
    @pytest.mark.parametrize("fault, code", [
        (cf.model_agreement(), "model_agreement_required"),
        (cf.account_blocked(), "account_blocked"),
        (cf.unknown_model_404(), "model_unavailable"),
        (cf.unknown_model(), "model_unavailable"),
    ], ids=["5016", "3023", "3042", "5007"])
    def test_operator_problems_are_502_not_retried_and_say_what_to_do(self, client, fake, fault,
                                                                      code, caplog):
        fake.inject("ai", fault, fault)
        response = client.post("/v1/chat/completions", headers=AUTH, json=CAT)
        assert_error(response, 502, code, retry="false")
        assert "operator" in response.json["error"]["message"]
        assert response.json["error"]["param"] is None  # not the client's prompt
        assert len(fake.calls_to("ai")) == 1
        assert any(r.levelno == logging.ERROR and "refused" in r.getMessage()
                   for r in caplog.records)

    def test_the_daily_allowance_is_429_at_once_until_midnight_utc(self, client, fake):
        fake.inject("ai", *[cf.daily_allowance_used()] * 4)
        response = client.post("/v1/chat/completions", headers=AUTH, json=CAT)
        assert_error(response, 429, "insufficient_quota", retry="false")
        assert len(fake.calls_to("ai")) == 1
        assert abs(int(response.headers["Retry-After"])
                   - cloudflare.seconds_until_utc_midnight()) <= 2

    def test_capacity_is_retried_with_backoff(self, client, fake):
        fake.inject("ai", cf.capacity(), cf.capacity())
        assert client.post("/v1/chat/completions", headers=AUTH, json=CAT).status_code == 200
        assert len(fake.calls_to("ai")) == 3

    @pytest.mark.parametrize("status", [502, 520, 522, 524])
    def test_an_html_page_from_the_edge_is_json_for_the_client(self, client, fake, status):
        fake.inject("ai", cf.html_error(status))
        response = client.post("/v1/chat/completions", headers=AUTH, json=CAT)
        assert response.status_code in (502, 504)
        assert response.content_type.startswith("application/json")
        assert "<" not in response.json["error"]["message"]
        assert len(fake.calls_to("ai")) == 1  # it may have run: not sent again


class TestExpiry:
    def test_caches_are_told_the_time_left_not_the_lifetime(self, app, client):
        store = app.extensions["flux_worker"].store
        key = "K" * 22
        store.put(key, hostile.complete_image(64, 64), 100)
        response = client.get("/image/" + key)
        max_age = int(re.search(r"max-age=(\d+)", response.headers["Cache-Control"]).group(1))
        assert 95 <= max_age <= 100  # IMAGE_EXPIRATION is 1800
        expires = datetime.datetime.strptime(response.headers["Expires"],
                                             "%a, %d %b %Y %H:%M:%S GMT")
        left = expires.replace(tzinfo=datetime.timezone.utc) - datetime.datetime.now(
            datetime.timezone.utc)
        assert 90 <= left.total_seconds() <= 101


class TestRequestEdges:
    def test_a_chunked_body_over_the_limit_is_413(self, app):
        body = json.dumps({"prompt": "x" * (1024 * 1024)})
        environ = EnvironBuilder(method="POST", path="/v1/images/generations", headers=AUTH,
                                 content_type="application/json").get_environ()
        environ.pop("CONTENT_LENGTH", None)
        environ.update({"wsgi.input": io.BytesIO(body.encode()),
                        "wsgi.input_terminated": True, "HTTP_TRANSFER_ENCODING": "chunked"})
        app_iter, status, _ = run_wsgi_app(app.wsgi_app, environ, buffered=True)
        assert status.startswith("413")
        assert json.loads(b"".join(app_iter))["error"]["code"] == "request_too_large"

    def test_405_says_which_methods_are_allowed(self, client):
        response = client.delete("/v1/models", headers=AUTH)
        assert_error(response, 405, "method_not_allowed")
        assert "GET" in response.headers["Allow"]


LOWER_ROOMS = ("errors", "redaction", "version", "http_session", "cloudflare", "workers_ai", "kv",
               "optimizer", "imaging", "models", "sizes", "planning", "store", "generation")


def imports_of(module: str) -> set[str]:
    tree = ast.parse((ROOT / "flux_worker" / f"{module}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add("." * node.level + node.module)
        elif isinstance(node, ast.ImportFrom):  # from . import sibling
            names.update("." + alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("module", LOWER_ROOMS)
def test_lower_rooms_never_import_the_web_framework_or_the_package_root(module):
    """Clients, errors and the slow path work without Flask; nothing lower
    than create_app imports the package root (the version has its own module)."""
    seen, pending = set(), [module]
    while pending:
        current = pending.pop()
        seen.add(current)
        for name in imports_of(current):
            assert name.split(".")[0] not in ("flask", "werkzeug", "flask_cors", "flask_limiter")
            assert name not in (".", "flux_worker"), f"{current} imports the package root"
            local = name.lstrip(".")
            if name.startswith(".") and local and local not in seen:
                pending.append(local)


def finishes(call, seconds: float = 10.0):
    """Run call on a thread; fail (rather than hang the suite) if it never ends."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert result, f"still running after {seconds} s"
    return result[0]


class TestFoundInReview:
    """What an independent hostile review broke, each kept broken-proof."""

    @pytest.mark.parametrize("prompt", [
        "a cat 16:9 b" + " " * 200_000 + "x",
        "at 16:9 " * 100_000 + "x",
        "(" * 200_000 + "16:9" + ")" * 200_000,
        "### Task: title\n" + "<chat_history>" * 60_000,
    ], ids=["spaces", "times", "brackets", "chat-history-tags"])
    @pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/images/generations"])
    def test_prompt_parsing_is_linear(self, client, prompt, path):
        body = ({"prompt": prompt} if "images" in path
                else {"messages": [{"role": "user", "content": prompt}]})
        response = finishes(lambda: client.post(path, headers=AUTH, json=body))
        assert response.status_code in (200, 400)

    def test_a_secret_across_the_message_cut_is_still_redacted(self, secret_app, fake):
        message = "x" * 290 + SECRET_TOKEN + " and " + SECRET_ACCOUNT.upper()
        fake.inject("ai", cf.status(400, [(5006, message)]))
        response = secret_app.test_client().post("/v1/chat/completions", headers=AUTH, json=CAT)
        text = response.get_data(as_text=True)
        assert SECRET_TOKEN[:12] not in text and SECRET_ACCOUNT.upper() not in text

    def test_upstream_text_is_bounded(self, client, fake):
        fake.inject("ai", cf.status(400, [(5006, "y" * 500)] * 20_000))
        response = client.post("/v1/chat/completions", headers=AUTH, json=CAT)
        assert_error(response, 400, "upstream_validation_error")
        assert len(response.json["error"]["message"]) < 2000

    def test_an_optimizer_answer_is_bounded(self, make_app, fake):
        fake.optimizer_reply = "{prompt} " + "very " * 200_000
        client = make_app(prompt_optimization=True, external_api_base=fake.optimizer_base,
                          external_model="m", external_api_key=cf.OPTIMIZER_KEY).test_client()
        response = client.post("/v1/chat/completions", headers=AUTH, json=CAT)
        assert response.status_code == 200 and len(response.get_data()) < 10_000

    def test_header_lines_that_never_end_are_a_504_at_the_deadline(self, make_app, fake):
        client = make_app(upstream_timeout_seconds=0.5).test_client()
        fake.inject("ai", cf.trickle_headers(seconds_per_line=0.1))
        response = finishes(lambda: client.post("/v1/chat/completions", headers=AUTH, json=CAT))
        assert_error(response, 504, "upstream_timeout", retry="true")

    def test_a_deeply_nested_error_envelope_is_no_500(self, client, fake):
        nested = '{"errors": ' + "[" * 100_000 + "]" * 100_000 + "}"
        fake.inject("ai", cf.status(400, body=nested))
        assert_error(client.post("/v1/chat/completions", headers=AUTH, json=CAT), 400)

    def test_a_daily_allowance_code_written_as_a_string_still_counts(self, client, fake):
        fake.inject("ai", *[cf.status(429, [("3036", "daily allocation used")])] * 4)
        response = client.post("/v1/chat/completions", headers=AUTH, json=CAT)
        assert_error(response, 429, "insufficient_quota", retry="false")
        assert len(fake.calls_to("ai")) == 1

    @pytest.mark.parametrize("expiration", ["9" * 400, "99999999999999", "soon"])
    def test_a_wild_kv_expiration_header_is_no_500(self, make_app, fake, tmp_path, expiration):
        writer = make_app(cf_kv_namespace_id=cf.NAMESPACE_ID).test_client()
        url = image_url(writer.post("/v1/chat/completions", headers=AUTH, json=CAT).json[
            "choices"][0]["message"]["content"])
        reader = make_app(cf_kv_namespace_id=cf.NAMESPACE_ID,
                          image_store_path=str(tmp_path / "other.sqlite3")).test_client()
        image = fake.kv_value(url.rsplit("/", 1)[1])
        for _ in range(2):  # the first read keeps a copy; the second serves it
            fake.inject("kv_get", cf.status(200, body=image, headers={"expiration": expiration}))
            response = fetch_image(reader, url)
            assert response.status_code == 200
            max_age = int(re.search(r"max-age=(\d+)", response.headers["Cache-Control"])[1])
            assert max_age <= 1800

    def test_kv_bytes_that_are_no_image_are_not_served(self, make_app, fake):
        client = make_app(cf_kv_namespace_id=cf.NAMESPACE_ID).test_client()
        fake.inject("kv_get", cf.status(200, body="<html><script>x</script></html>"))
        assert_error(client.get("/image/" + "Q" * 22), 404, "not_found")

    def test_a_full_disk_here_still_keeps_the_paid_image_in_kv(self, make_app, fake, monkeypatch,
                                                              tmp_path):
        from flux_worker.store import SQLiteImageStore

        client = make_app(cf_kv_namespace_id=cf.NAMESPACE_ID).test_client()

        def full(*args, **kwargs):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(SQLiteImageStore, "put", full)
        response = client.post("/v1/chat/completions", headers=AUTH, json=CAT)
        url = image_url(response.json["choices"][0]["message"]["content"])
        assert fake.kv_value(url.rsplit("/", 1)[1]) is not None
        assert fetch_image(client, url).status_code == 200

    @pytest.mark.parametrize("size, status", [(1024 * 1024, 400), (1024 * 1024 + 1, 413)])
    def test_chunked_and_sized_bodies_meet_the_same_limit(self, app, client, size, status):
        data = b" " * size  # whitespace: not JSON, so at most a 400
        assert client.post("/v1/images/generations", headers=AUTH, data=data,
                           content_type="application/json").status_code == status
        environ = EnvironBuilder(method="POST", path="/v1/images/generations", headers=AUTH,
                                 content_type="application/json").get_environ()
        environ.pop("CONTENT_LENGTH", None)
        environ.update({"wsgi.input": io.BytesIO(data), "wsgi.input_terminated": True})
        _, chunked_status, _ = run_wsgi_app(app.wsgi_app, environ, buffered=True)
        assert chunked_status.startswith(str(status))
