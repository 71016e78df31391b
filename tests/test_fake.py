"""Tests of the fake Cloudflare itself, with plain requests: KV consistency,
slow bodies, edge HTML pages, echoing errors, documented codes, image answers,
model input schemas and seeded images."""

from __future__ import annotations

import base64
import io
import threading
import time

import pytest
import requests
from PIL import Image

import fake_cloudflare as cf

SCHNELL = "@cf/black-forest-labs/flux-1-schnell"
FLUX_2 = "@cf/black-forest-labs/flux-2-dev"
KLEIN_4B = "@cf/black-forest-labs/flux-2-klein-4b"
KLEIN_9B = "@cf/black-forest-labs/flux-2-klein-9b"
LUCID = "@cf/leonardo/lucid-origin"
PHOENIX = "@cf/leonardo/phoenix-1.0"
SDXL = "@cf/stabilityai/stable-diffusion-xl-base-1.0"
LIGHTNING = "@cf/bytedance/stable-diffusion-xl-lightning"
DREAMSHAPER = "@cf/lykon/dreamshaper-8-lcm"
MULTIPART_MODELS = (FLUX_2, KLEIN_4B, KLEIN_9B)
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


def run_inputs(fake, model: str, **inputs) -> requests.Response:
    """Run ``model`` with these inputs (and the usual prompt), as the model
    takes them: multipart fields as strings, else JSON."""
    inputs = {**PROMPT, **inputs}
    if model in MULTIPART_MODELS:
        return run(fake, model, files={k: (None, str(v)) for k, v in inputs.items()})
    return run(fake, model, json=inputs)


def refusal(response: requests.Response) -> str:
    """The 400 / 5006 message, without Workers AI's lead-in."""
    assert response.status_code == 400, response.text
    assert error_code(response) == 5006
    message = response.json()["errors"][0]["message"]
    assert message.startswith("AiError: Bad input: Error: ")
    return message.removeprefix("AiError: Bad input: Error: ")


def image_of(response: requests.Response) -> bytes:
    assert response.status_code == 200, response.text
    if response.headers["Content-Type"] == "application/json":
        return base64.b64decode(response.json()["result"]["image"])
    return response.content


def png(width: int, height: int, mode: str = "RGB", colour=(200, 40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), colour if mode == "RGB" else 255).save(out, "PNG")
    return out.getvalue()


def pixels(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as picture:
        return picture.convert("RGB")


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


# Every field each model documents, seed included (docs/workers-ai-models.md).
ALL_FIELDS = {
    SCHNELL: {"steps": 4, "seed": 7},
    FLUX_2: {"width": 512, "height": 768, "seed": 123, "guidance": 3.5, "steps": 25},
    KLEIN_4B: {"width": 512, "height": 768, "seed": 0, "guidance": 4},
    KLEIN_9B: {"width": 1920, "height": 256, "seed": 4294967295, "guidance": "2.5"},
    LUCID: {"width": 512, "height": 640, "steps": 20, "num_steps": 20, "guidance": 4.5,
            "seed": 0},
    PHOENIX: {"negative_prompt": "blurry", "width": 512, "height": 640, "num_steps": 25,
              "guidance": 2, "seed": 5},
    SDXL: {"negative_prompt": "", "width": 512, "height": 640, "num_steps": 20,
           "guidance": 7.5, "strength": 1, "seed": -3},
    LIGHTNING: {"negative_prompt": "blurry", "width": 256, "height": 2048, "num_steps": 1,
                "guidance": 0, "strength": 0.5, "seed": 2**40},
    DREAMSHAPER: {"width": 1024, "height": 1024, "num_steps": 8, "guidance": 1.5, "seed": 9},
    cf.IMG2IMG: {"negative_prompt": "blurry", "width": 512, "height": 512, "num_steps": 20,
                 "guidance": 7.5, "strength": 0.6, "seed": 1,
                 "image_b64": base64.b64encode(png(64, 64)).decode()},
    cf.INPAINTING: {"negative_prompt": "blurry", "width": 512, "height": 384, "num_steps": 20,
                    "guidance": 7.5, "strength": 1, "seed": 2, "image": list(png(64, 48)),
                    "mask": list(png(64, 48, "L"))},
}


class TestSchemas:
    @pytest.mark.parametrize("model", list(ALL_FIELDS))
    def test_every_documented_field_is_accepted(self, fake, model):
        inputs = ALL_FIELDS[model]
        picture = pixels(image_of(run_inputs(fake, model, **inputs)))
        expected = (1024, 1024) if model == SCHNELL else (inputs["width"], inputs["height"])
        assert picture.size == expected
        assert fake.seeds_seen() == [inputs["seed"]]

    def test_the_schema_table_covers_every_model(self):
        assert set(cf.SCHEMAS) == set(cf.MODELS) == set(ALL_FIELDS)
        assert all("prompt" in fields and "seed" in fields for fields in cf.SCHEMAS.values())

    @pytest.mark.parametrize("model", list(ALL_FIELDS))
    def test_an_unknown_field_is_refused_by_name(self, fake, model):
        message = refusal(run_inputs(fake, model, seed=1, colour="red"))
        assert message == "must NOT have additional properties (colour)"

    @pytest.mark.parametrize("extra", [{"width": 1024}, {"height": 768},
                                       {"negative_prompt": "blurry"}, {"guidance": 3.5},
                                       {"num_steps": 4}])
    def test_schnell_refuses_what_its_schema_does_not_list(self, fake, extra):
        (name,) = extra
        assert refusal(run_inputs(fake, SCHNELL, **extra)) == (
            f"must NOT have additional properties ({name})")

    @pytest.mark.parametrize("model, name", [
        (KLEIN_4B, "steps"), (KLEIN_9B, "steps"), (FLUX_2, "num_steps"),
        (FLUX_2, "negative_prompt"), (PHOENIX, "steps"), (PHOENIX, "strength"),
        (LUCID, "negative_prompt"), (SDXL, "steps"), (DREAMSHAPER, "input_image_0")])
    def test_fields_of_other_models_are_refused(self, fake, model, name):
        assert refusal(run_inputs(fake, model, **{name: 4})) == (
            f"must NOT have additional properties ({name})")

    @pytest.mark.parametrize("model, seed", [
        (SCHNELL, "7"), (SCHNELL, True), (SCHNELL, 1.5), (PHOENIX, "7"), (PHOENIX, False),
        (LUCID, 2.5), (SDXL, None), (SDXL, [1]), (LIGHTNING, {"seed": 1}),
        (FLUX_2, "abc"), (FLUX_2, "12.5"), (KLEIN_4B, ""), (KLEIN_9B, "1e3"), (KLEIN_9B, " 7")])
    def test_a_seed_that_is_not_an_integer_is_refused(self, fake, model, seed):
        assert refusal(run_inputs(fake, model, seed=seed)) == "seed must be integer"

    def test_an_integral_json_float_is_an_integer_as_for_ajv(self, fake):
        assert run_inputs(fake, PHOENIX, seed=7.0, width=512.0).status_code == 200
        assert fake.seeds_seen() == [7]

    @pytest.mark.parametrize("model", [PHOENIX, LUCID])
    def test_leonardo_refuses_a_negative_seed(self, fake, model):
        assert refusal(run_inputs(fake, model, seed=-1)) == "seed must be >= 0"

    @pytest.mark.parametrize("model", [SDXL, FLUX_2, SCHNELL])
    def test_other_models_take_a_negative_seed(self, fake, model):
        assert run_inputs(fake, model, seed=-1).status_code == 200

    @pytest.mark.parametrize("model, inputs, message", [
        (SCHNELL, {"steps": 9}, "steps must be <= 8"),
        (SCHNELL, {"steps": 0}, "steps must be >= 1"),
        (SCHNELL, {"steps": "4"}, "steps must be integer"),
        (FLUX_2, {"steps": 51}, "steps must be <= 50"),
        (FLUX_2, {"width": 255}, "width must be >= 256"),
        (KLEIN_4B, {"height": 1921}, "height must be <= 1920"),
        (KLEIN_4B, {"guidance": "strong"}, "guidance must be number"),
        (LUCID, {"width": 2501}, "width must be <= 2500"),
        (LUCID, {"num_steps": 41}, "num_steps must be <= 40"),
        (LUCID, {"guidance": 10.5}, "guidance must be <= 10"),
        (PHOENIX, {"guidance": 1.5}, "guidance must be >= 2"),
        (PHOENIX, {"num_steps": 51}, "num_steps must be <= 50"),
        (PHOENIX, {"negative_prompt": ""}, "negative_prompt must NOT have fewer than 1 characters"),
        (PHOENIX, {"width": True}, "width must be integer"),
        (SDXL, {"num_steps": 21}, "num_steps must be <= 20"),
        (SDXL, {"width": 2049}, "width must be <= 2048"),
        (SDXL, {"guidance": "7.5"}, "guidance must be number"),
        (SDXL, {"negative_prompt": 3}, "negative_prompt must be string"),
        (DREAMSHAPER, {"strength": True}, "strength must be number"),
        (DREAMSHAPER, {"mask": "x"}, "mask must be array"),
    ])
    def test_types_and_ranges(self, fake, model, inputs, message):
        assert refusal(run_inputs(fake, model, **inputs)) == message

    @pytest.mark.parametrize("model", [SCHNELL, FLUX_2])
    def test_the_prompt_is_required_and_bounded(self, fake, model):
        assert refusal(run_inputs(fake, model, prompt="")) == (
            "prompt must NOT have fewer than 1 characters")
        assert refusal(run_inputs(fake, model, prompt="x" * 2049)) == (
            "prompt must NOT have more than 2048 characters")
        body = {"files": {"seed": (None, "1")}} if model == FLUX_2 else {"json": {"seed": 1}}
        assert refusal(run(fake, model, **body)) == "must have required property 'prompt'"

    def test_a_nsfw_prompt_is_still_refused_after_the_schema(self, fake):
        response = run_inputs(fake, FLUX_2, prompt="a nsfw-trigger here", seed=3)
        assert response.status_code == 400 and error_code(response) == 3030
        assert refusal(run_inputs(fake, SCHNELL, prompt="nsfw-trigger", width=1)) == (
            "must NOT have additional properties (width)")

    def test_schnell_rejects_seed_when_asked(self, fake):
        assert fake.schnell_rejects_seed is False
        fake.schnell_rejects_seed = True
        assert refusal(run_inputs(fake, SCHNELL, seed=7)) == (
            "must NOT have additional properties (seed)")
        assert run_inputs(fake, SCHNELL, steps=4).status_code == 200
        assert run_inputs(fake, LUCID, seed=7).status_code == 200  # schnell only
        fake.reset()
        assert fake.schnell_rejects_seed is False
        assert run_inputs(fake, SCHNELL, seed=7).status_code == 200

    def test_seeds_seen(self, fake):
        run_inputs(fake, SCHNELL, seed=7)
        run_inputs(fake, FLUX_2, seed=123)
        run_inputs(fake, PHOENIX)
        run_inputs(fake, FLUX_2, seed="abc")  # refused, but seen
        assert fake.seeds_seen() == [7, 123, None, "abc"]
        assert fake.seeds_seen(FLUX_2) == [123, "abc"]
        assert [call.form["seed"] for call in fake.calls_to("ai") if call.form] == ["123", "abc"]


class TestSeededImages:
    @pytest.mark.parametrize("model", [SCHNELL, FLUX_2, LUCID, PHOENIX, SDXL, LIGHTNING])
    def test_two_seeds_give_different_pixels(self, fake, model):
        first = pixels(image_of(run_inputs(fake, model, seed=1)))
        second = pixels(image_of(run_inputs(fake, model, seed=2)))
        unseeded = pixels(image_of(run_inputs(fake, model)))
        assert first.size == second.size == unseeded.size
        assert len({first.tobytes(), second.tobytes(), unseeded.tobytes()}) == 3
        # Visibly: many pixels differ, by more than JPEG noise.
        differ = sum(abs(a - b) > 16 for a, b in zip(first.tobytes()[::97],
                                                     second.tobytes()[::97], strict=True))
        assert differ > len(first.tobytes()[::97]) // 4

    @pytest.mark.parametrize("model", [SCHNELL, FLUX_2, PHOENIX, DREAMSHAPER])
    def test_the_same_seed_gives_the_same_bytes(self, fake, model):
        assert run_inputs(fake, model, seed=42).content == run_inputs(fake, model, seed=42).content
        # also once the cache has forgotten it
        fake._images.clear()
        again = run_inputs(fake, model, seed=42).content
        assert again == run_inputs(fake, model, seed=42).content
        assert image_of(run_inputs(fake, model, seed=42)) == image_of(
            run_inputs(fake, model, seed=42))

    def test_a_multipart_seed_is_the_same_as_a_json_one(self, fake):
        assert image_of(run_inputs(fake, FLUX_2, seed=5, width=512, height=512)) == \
            fake.image(512, 512, "PNG", seed=5)

    def test_no_seed_gives_the_plain_gradient_as_before(self, fake):
        gradient = Image.linear_gradient("L").resize((1024, 1024)).convert("RGB")
        out = io.BytesIO()
        gradient.save(out, "JPEG", quality=80)
        assert image_of(run(fake)) == out.getvalue() == image_of(run(fake))
        assert fake.image(1024, 1024, "JPEG") == out.getvalue()
        out = io.BytesIO()
        Image.linear_gradient("L").resize((512, 768)).convert("RGB").save(out, "PNG")
        assert image_of(run_inputs(fake, FLUX_2, width=512, height=768)) == out.getvalue()

    def test_the_cache_is_bounded_and_keeps_what_is_used(self, fake):
        kept = fake.image(64, 64, "PNG", seed=-1)
        for seed in range(cf.IMAGE_CACHE_SIZE + 10):
            fake.image(64, 64, "PNG", seed=seed)
            assert fake.image(64, 64, "PNG", seed=-1) is kept  # recently used: stays
        assert len(fake._images) <= cf.IMAGE_CACHE_SIZE
        assert (64, 64, "PNG", 0, False, 0) not in fake._images  # the oldest went
