"""Tests of the fake Cloudflare itself, with plain requests: KV consistency,
slow bodies, edge HTML pages, echoing errors, documented codes, image answers."""

from __future__ import annotations

import base64
import threading
import time

import pytest
import requests

import fake_cloudflare as cf

SCHNELL = "@cf/black-forest-labs/flux-1-schnell"
FLUX_2 = "@cf/black-forest-labs/flux-2-dev"
PHOENIX = "@cf/leonardo/phoenix-1.0"
LIGHTNING = "@cf/bytedance/stable-diffusion-xl-lightning"
AUTH = {"Authorization": f"Bearer {cf.API_TOKEN}"}
PROMPT = {"prompt": "a lighthouse at dusk"}


def ai_url(fake, model: str = SCHNELL) -> str:
    return f"{fake.api_base}/accounts/{cf.ACCOUNT_ID}/ai/run/{model}"


def kv_url(fake, key: str) -> str:
    return (f"{fake.api_base}/accounts/{cf.ACCOUNT_ID}/storage/kv/namespaces/"
            f"{cf.NAMESPACE_ID}/values/{key}")


def run(fake, model: str = SCHNELL, **kwargs) -> requests.Response:
    kwargs.setdefault("timeout", 5)
    if model.startswith("@cf/black-forest-labs/flux-2-"):
        kwargs.setdefault("files", {"prompt": (None, PROMPT["prompt"])})
    else:
        kwargs.setdefault("json", PROMPT)
    return requests.post(ai_url(fake, model), headers=AUTH, **kwargs)


def kv_put(fake, key: str, value: bytes, **params) -> None:
    response = requests.put(kv_url(fake, key), data=value, params=params, headers=AUTH,
                            timeout=5)
    assert response.status_code == 200, response.text


def kv_get(fake, key: str, **kwargs) -> requests.Response:
    kwargs.setdefault("timeout", 5)
    return requests.get(kv_url(fake, key), headers=AUTH, **kwargs)


def error_code(response: requests.Response) -> int:
    body = response.json()
    assert body["success"] is False and body["result"] is None
    return body["errors"][0]["code"]


def connection_threads() -> int:
    return sum(t.name == "fake-cloudflare-connection" and t.is_alive()
               for t in threading.enumerate())


def wait_for_threads(at_most: int, within: float = 1.5) -> bool:
    """Whether the fake's connection threads fall to ``at_most`` in time."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        if connection_threads() <= at_most:
            return True
        time.sleep(0.02)
    return False


class TestKvConsistency:
    def test_a_write_is_visible_at_once_by_default(self, fake):
        kv_put(fake, "k", b"v")
        assert kv_get(fake, "k").content == b"v"

    def test_visibility_delay_hides_a_new_key(self, fake):
        fake.kv_visibility_delay = 0.3
        kv_put(fake, "k", b"v")
        written = time.monotonic()
        missing = kv_get(fake, "k")
        assert missing.status_code == 404 and error_code(missing) == 10009
        assert fake.kv_value("k") == b"v"  # stored, just not visible yet
        time.sleep(max(0.0, written + 0.35 - time.monotonic()))
        assert kv_get(fake, "k").content == b"v"

    def test_an_overwrite_shows_the_previous_value_until_visible(self, fake):
        kv_put(fake, "k", b"old")
        fake.kv_visibility_delay = 0.3
        kv_put(fake, "k", b"new")
        assert kv_get(fake, "k").content == b"old"
        time.sleep(0.35)
        assert kv_get(fake, "k").content == b"new"

    def test_a_miss_is_cached_even_after_a_write(self, fake):
        fake.kv_negative_cache_seconds = 0.4
        first = kv_get(fake, "k")
        missed = time.monotonic()
        assert first.status_code == 404 and error_code(first) == 10009
        kv_put(fake, "k", b"v")
        time.sleep(0.2)
        again = kv_get(fake, "k")  # still cached; asking again does not extend it
        assert again.status_code == 404 and error_code(again) == 10009
        time.sleep(max(0.0, missed + 0.45 - time.monotonic()))
        assert kv_get(fake, "k").content == b"v"

    def test_misses_during_the_visibility_delay_are_cached_too(self, fake):
        fake.kv_visibility_delay = 0.1
        fake.kv_negative_cache_seconds = 0.4
        kv_put(fake, "k", b"v")
        assert kv_get(fake, "k").status_code == 404
        time.sleep(0.2)  # visible by now, but the miss is cached
        assert kv_get(fake, "k").status_code == 404

    def test_reset_restores_the_defaults(self, fake):
        fake.kv_visibility_delay = 5
        fake.kv_negative_cache_seconds = 5
        assert kv_get(fake, "k").status_code == 404
        fake.reset()
        assert fake.kv_visibility_delay == 0 and fake.kv_negative_cache_seconds == 0
        kv_put(fake, "k", b"v")
        assert kv_get(fake, "k").content == b"v"

    def test_a_key_with_a_ttl_answers_its_expiration(self, fake):
        before = time.time()
        kv_put(fake, "k", b"v", expiration_ttl=120)
        response = kv_get(fake, "k")
        expiration = response.headers["expiration"]
        assert expiration.isdigit()
        assert int(before) + 119 <= int(expiration) <= int(time.time()) + 120
        assert fake.kv_ttl("k") == 120

    def test_a_key_without_a_ttl_has_no_expiration(self, fake):
        kv_put(fake, "k", b"v")
        assert "expiration" not in kv_get(fake, "k").headers


class TestTrickle:
    def test_headers_at_once_then_one_byte_at_a_time(self, fake):
        real = run(fake).content
        fake.inject("ai", cf.trickle(bytes_per_second=10, total_seconds=5))
        start = time.monotonic()
        with run(fake, stream=True, timeout=(2, 1)) as response:
            assert time.monotonic() - start < 0.5
            assert response.status_code == 200
            assert response.headers["Content-Type"] == "application/json"
            assert int(response.headers["Content-Length"]) == len(real)
            received = b"".join(response.raw.read(1) for _ in range(4))
            elapsed = time.monotonic() - start
        assert received == real[:4]
        assert 0.25 <= elapsed < 1.0  # three gaps of 0.1 s

    def test_a_read_timeout_sees_the_gaps(self, fake):
        before = connection_threads()
        fake.inject("ai", cf.trickle(bytes_per_second=2, total_seconds=30))
        with run(fake, stream=True, timeout=(2, 0.15)) as response:
            assert response.raw.read(1) == b"{"  # the first byte comes with the headers
            with pytest.raises(Exception) as caught:
                response.raw.read(1)
            assert "timed out" in str(caught.value).lower()
        # The client went away: the fake stops at once, not after 30 seconds.
        assert wait_for_threads(before)

    @pytest.mark.parametrize("model, content_type, magic", [
        (PHOENIX, "image/jpeg", b"\xff\xd8"),
        (LIGHTNING, "image/png", b"\xff\xd8"),
    ])
    def test_binary_models(self, fake, model, content_type, magic):
        real = run(fake, model).content
        fake.inject("ai", cf.trickle(bytes_per_second=50, total_seconds=5))
        with run(fake, model, stream=True, timeout=(2, 1)) as response:
            assert response.headers["Content-Type"] == content_type
            assert int(response.headers["Content-Length"]) == len(real)
            assert response.raw.read(1) + response.raw.read(1) == magic

    def test_multipart_model(self, fake):
        real = run(fake, FLUX_2).content
        fake.inject("ai", cf.trickle(bytes_per_second=50, total_seconds=5))
        with run(fake, FLUX_2, stream=True, timeout=(2, 1)) as response:
            assert int(response.headers["Content-Length"]) == len(real)
            assert response.raw.read(1) == b"{"

    def test_kv_get(self, fake):
        kv_put(fake, "k", b"stored value", expiration_ttl=60)
        fake.inject("kv_get", cf.trickle(bytes_per_second=50, total_seconds=5))
        with kv_get(fake, "k", stream=True, timeout=(2, 1)) as response:
            assert response.status_code == 200
            assert response.headers["Content-Length"] == str(len(b"stored value"))
            assert response.headers["expiration"].isdigit()
            assert response.raw.read(1) + response.raw.read(1) == b"st"

    def test_a_short_body_trickles_to_its_end(self, fake):
        kv_put(fake, "k", b"abc")
        fake.inject("kv_get", cf.trickle(bytes_per_second=20, total_seconds=5))
        assert kv_get(fake, "k").content == b"abc"

    def test_gives_up_after_total_seconds(self, fake):
        fake.inject("ai", cf.trickle(bytes_per_second=20, total_seconds=0.3))
        start = time.monotonic()
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            _ = run(fake, timeout=(2, 2)).content  # reading the body raises
        assert 0.25 <= time.monotonic() - start < 1.5

    def test_reset_ends_it(self, fake):
        fake.inject("ai", cf.trickle(bytes_per_second=1, total_seconds=30))
        with run(fake, stream=True, timeout=(2, 5)) as response:
            assert response.raw.read(1) == b"{"
            start = time.monotonic()
            fake.reset()
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                b"".join(response.iter_content(1024))  # the body can never be completed
            assert time.monotonic() - start < 1.0


class TestStallAfterHeaders:
    def test_headers_and_a_few_bytes_then_nothing_then_close(self, fake):
        real = run(fake).content
        fake.inject("ai", cf.stall_after_headers(seconds=0.3))
        start = time.monotonic()
        with run(fake, stream=True, timeout=(2, 2)) as response:
            assert response.status_code == 200
            assert int(response.headers["Content-Length"]) == len(real)
            assert response.raw.read(4) == real[:4]
            assert time.monotonic() - start < 0.25
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                b"".join(response.iter_content(1024))  # closed before the end
        assert 0.25 <= time.monotonic() - start < 1.5

    def test_read_timeout_while_stalled(self, fake):
        before = connection_threads()
        fake.inject("ai", cf.stall_after_headers(seconds=30))
        with run(fake, PHOENIX, stream=True, timeout=(2, 0.2)) as response:
            assert response.headers["Content-Type"] == "image/jpeg"
            assert response.raw.read(2) == b"\xff\xd8"
            with pytest.raises(Exception) as caught:
                response.raw.read(100)
            assert "timed out" in str(caught.value).lower()
        assert wait_for_threads(before)

    def test_kv_get(self, fake):
        kv_put(fake, "k", b"0123456789abcdef0123")
        fake.inject("kv_get", cf.stall_after_headers(seconds=0.2, first_bytes=4))
        with kv_get(fake, "k", stream=True, timeout=(2, 2)) as response:
            assert response.headers["Content-Length"] == "20"
            assert response.raw.read(4) == b"0123"
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                b"".join(response.iter_content(1024))

    def test_stop_ends_it(self):
        with cf.FakeCloudflare() as own:
            own.inject("ai", cf.stall_after_headers(seconds=30))
            response = run(own, stream=True, timeout=(2, 5))
            assert response.status_code == 200
            start = time.monotonic()
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            b"".join(response.iter_content(1024))
        response.close()
        assert time.monotonic() - start < 1.5


class TestHtmlErrors:
    @pytest.mark.parametrize("status, title", [
        (502, "Bad gateway"), (520, "Web server is returning an unknown error"),
        (521, "Web server is down"), (522, "Connection timed out"),
        (524, "A timeout occurred")])
    def test_edge_pages(self, fake, status, title):
        fake.inject("ai", cf.html_error(status))
        response = run(fake)
        assert response.status_code == status
        assert response.headers["Content-Type"].startswith("text/html")
        assert response.headers["Server"] == "cloudflare" and "CF-RAY" in response.headers
        assert response.text.startswith("<!DOCTYPE html>")
        assert f"<title>api.cloudflare.com | {status}: {title}</title>" in response.text
        assert "Cloudflare Ray ID" in response.text
        with pytest.raises(ValueError):
            response.json()

    def test_on_kv_too(self, fake):
        fake.inject("kv_put", cf.html_error(502))
        response = requests.put(kv_url(fake, "k"), data=b"v", headers=AUTH, timeout=5)
        assert response.status_code == 502 and "cloudflare" in response.text
        assert fake.kv_value("k") is None


class TestEcho:
    def test_ai_json_echoes_token_path_and_prompt(self, fake):
        fake.inject("ai", cf.echo())
        response = run(fake)
        assert response.status_code == 400 and error_code(response) == 5006
        message = response.json()["errors"][0]["message"]
        assert message.startswith("AiError: Bad input: Error: ")
        assert f"Bearer {cf.API_TOKEN}" in message
        assert f"/client/v4/accounts/{cf.ACCOUNT_ID}/ai/run/{SCHNELL}" in message
        assert repr(PROMPT["prompt"]) in message

    def test_ai_multipart_echoes_the_prompt(self, fake):
        fake.inject("ai", cf.echo(status=422, code=5006))
        response = run(fake, FLUX_2, files={"prompt": (None, "secret multipart prompt")})
        assert response.status_code == 422
        message = response.json()["errors"][0]["message"]
        assert "'secret multipart prompt'" in message and cf.API_TOKEN in message

    def test_kv_echoes_token_and_namespace(self, fake):
        fake.inject("kv_get", cf.echo(status=400, code=10001))
        response = kv_get(fake, "some-key")
        assert error_code(response) == 10001
        message = response.json()["errors"][0]["message"]
        assert cf.API_TOKEN in message and cf.ACCOUNT_ID in message
        assert f"namespaces/{cf.NAMESPACE_ID}/values/some-key" in message

    def test_optimizer_echoes_in_openai_shape(self, fake):
        fake.inject("optimizer", cf.echo())
        response = requests.post(
            fake.optimizer_base + "/v1/chat/completions", timeout=5,
            headers={"Authorization": f"Bearer {cf.OPTIMIZER_KEY}"},
            json={"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                             {"role": "user", "content": "a red fox"}]})
        assert response.status_code == 400
        message = response.json()["error"]["message"]
        assert cf.OPTIMIZER_KEY in message and "'a red fox'" in message


class TestDocumentedCodes:
    @pytest.mark.parametrize("fault, status, code", [
        (cf.model_agreement(), 403, 5016), (cf.account_blocked(), 403, 3023),
        (cf.unknown_model_404(), 404, 3042), (cf.unknown_model(), 400, 5007),
        (cf.daily_allowance_used(), 429, 3036), (cf.capacity(), 429, 3040),
        (cf.nsfw(), 400, 3030), (cf.too_large(), 413, 3006),
        (cf.invalid_base64(), 400, 8006)])
    def test_status_and_code(self, fake, fault, status, code):
        fake.inject("ai", fault)
        response = run(fake)
        assert response.status_code == status and error_code(response) == code
        assert response.json()["errors"][0]["message"]

    def test_capacity_message_and_headers(self, fake):
        fake.inject("ai", cf.capacity(headers={"Retry-After": "2"}))
        response = run(fake)
        assert response.json()["errors"][0]["message"] == (
            "Capacity temporarily exceeded, please try again.")
        assert response.headers["Retry-After"] == "2"


class TestImageAnswer:
    HOSTILE = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x7f\xff\xff\xff\x7f\xff\xff\xff"

    def test_base64_model(self, fake):
        fake.inject("ai", cf.image_answer(self.HOSTILE))
        response = run(fake)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        assert base64.b64decode(response.json()["result"]["image"]) == self.HOSTILE

    @pytest.mark.parametrize("model, content_type", [(PHOENIX, "image/jpeg"),
                                                     (LIGHTNING, "image/png")])
    def test_binary_models(self, fake, model, content_type):
        fake.inject("ai", cf.image_answer(b"\xff\xd8\xff truncated"))
        response = run(fake, model)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == content_type
        assert response.content == b"\xff\xd8\xff truncated"

    def test_requests_are_still_recorded(self, fake):
        fake.inject("ai", cf.image_answer(b"x"))
        run(fake)
        assert [call.json for call in fake.calls_to("ai")] == [PROMPT]


class TestOlderFaults:
    def test_hang_ends_when_the_client_gives_up(self, fake):
        before = connection_threads()
        fake.inject("ai", cf.hang(30))
        with pytest.raises(requests.exceptions.ReadTimeout):
            run(fake, timeout=(2, 0.2))
        assert wait_for_threads(before)

    def test_delay_then_a_normal_answer(self, fake):
        fake.inject("ai", cf.delay(0.2))
        start = time.monotonic()
        assert run(fake).status_code == 200
        assert time.monotonic() - start >= 0.2
