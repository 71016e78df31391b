"""End to end: the app under gunicorn (started from the Procfile), driven over real
HTTP and with the openai SDK, against the fake Cloudflare on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import re
import time

import openai
import pytest
import requests
from PIL import Image

import fake_cloudflare
from conftest import API_KEY, AUTH, Gunicorn, gunicorn_env, parse_sse
from shapes import assert_shape

IMAGE_LINK = re.compile(r"!\[[^\]]*\]\((?P<url>http[^)]+)\)")


def test_sdk_lists_models(sdk):
    ids = [model.id for model in sdk.models.list()]
    assert "@cf/black-forest-labs/flux-1-schnell" in ids


def test_sdk_chat_gets_a_working_image_link(sdk):
    completion = sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "A cute cat 16:9"}])
    content = completion.choices[0].message.content
    url = IMAGE_LINK.search(content).group("url")
    image = requests.get(url, timeout=10)
    assert image.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(image.content)).size == (1024, 576)


def test_sdk_stream_is_read_to_the_end(sdk):
    stream = sdk.chat.completions.create(
        model="flux", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "A lighthouse 3:2"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "768x512" in text and IMAGE_LINK.search(text)
    assert chunks[-1].usage.total_tokens > 0


def test_sdk_raises_on_a_failure_after_headers(sdk, fake):
    fake.inject("ai", *[fake_cloudflare.status(500)] * 4)
    stream = sdk.chat.completions.create(
        model="flux", stream=True, messages=[{"role": "user", "content": "A cat"}])
    with pytest.raises(openai.APIError):
        list(stream)


def test_sdk_sees_clear_errors(sdk, gunicorn):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="x", messages=[{"role": "system", "content": "hi"}])
    assert caught.value.body["param"] == "messages" or caught.value.code is None
    bad = openai.OpenAI(base_url=gunicorn.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_first_content_arrives_before_the_image(gunicorn, fake):
    """With a slow upstream, the opening lines come long before the link."""
    fake.latency = 1.5
    started = time.monotonic()
    with requests.post(gunicorn.url + "/v1/chat/completions", headers=AUTH, stream=True,
                       json={"stream": True, "messages": [{"role": "user", "content": "A cat"}]},
                       timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        arrivals = []
        for line in response.iter_lines():
            has_text = b'"content":"' in line and b'"content":""' not in line
            if line.startswith(b"data: {") and has_text:
                arrivals.append((time.monotonic() - started, line))
    first, last = arrivals[0], arrivals[-1]
    assert b"Original prompt" in first[1] and b"Generated Image" in last[1]
    # Order, not timing: the opening line left before the upstream answered.
    assert first[0] < fake.latency <= last[0]


def test_keepalive_and_sse_framing_over_real_http(gunicorn, fake):
    fake.latency = 1.2  # SSE_KEEPALIVE_SECONDS=0.5 in gunicorn_env
    response = requests.post(gunicorn.url + "/chat/completions", headers=AUTH, timeout=30,
                             json={"stream": True,
                                   "messages": [{"role": "user", "content": "A cat"}]})
    events, comments = parse_sse(response.text)
    assert ": keep-alive" in comments
    assert "event:" not in response.text
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        assert_shape("ChatCompletionChunk", event)


def test_hang_up_under_gunicorn_still_stores_the_image(gunicorn, fake):
    fake.latency = 1.0
    with requests.post(gunicorn.url + "/v1/chat/completions", headers=AUTH, stream=True,
                       json={"stream": True, "messages": [{"role": "user", "content": "A cat"}]},
                       timeout=30) as response:
        next(response.iter_lines())
    deadline = time.monotonic() + 10
    while not fake.calls_to("ai") and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(fake.latency + 0.5)
    assert len(fake.calls_to("ai")) == 1
    log = gunicorn.log()
    assert "image generated" in log and "Traceback" not in log
    assert requests.get(gunicorn.url + "/healthz", timeout=5).status_code == 200


def test_images_api_url_and_b64(sdk):
    result = sdk.images.generate(model="dall-e-3", prompt="A castle", size="1792x1024", n=2)
    assert len(result.data) == 2
    for item in result.data:
        image = requests.get(item.url, timeout=10)
        assert Image.open(io.BytesIO(image.content)).size == (1792, 1024)
    result = sdk.images.generate(model="gpt-image-1", prompt="A castle", size="1024x1024")
    data = base64.b64decode(result.data[0].b64_json)
    assert Image.open(io.BytesIO(data)).size == (1024, 1024)


def test_bad_setting_stops_start_up_naming_the_variable(fake, tmp_path):
    env = gunicorn_env(fake, tmp_path, FLUX_NUM_STEPS="abc")
    with pytest.raises(AssertionError) as caught:
        Gunicorn(env, tmp_path).stop()
    assert "FLUX_NUM_STEPS" in str(caught.value)


def test_secrets_never_reach_the_logs(gunicorn):
    log = gunicorn.log()
    assert "flux-worker" in log
    for secret in (API_KEY, fake_cloudflare.API_TOKEN):
        assert secret not in log


@pytest.fixture
def kv_gunicorn(fake, tmp_path):
    """Two workers sharing one machine's embedded store, images also in KV."""
    server = Gunicorn(gunicorn_env(fake, tmp_path, CF_KV_NAMESPACE_ID=fake_cloudflare.NAMESPACE_ID,
                                   WEB_CONCURRENCY="2"), tmp_path)
    yield server
    server.stop()


def test_every_worker_serves_a_fresh_link_while_kv_does_not_show_it(kv_gunicorn, fake):
    """KV is eventually consistent (a new key hidden for 60 s, a miss cached):
    the link still works at once from whichever worker the browser reaches."""
    fake.kv_visibility_delay = 60
    fake.kv_negative_cache_seconds = 60
    response = requests.post(kv_gunicorn.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                             json={"messages": [{"role": "user", "content": "A cute cat"}]})
    url = IMAGE_LINK.search(response.json()["choices"][0]["message"]["content"]).group("url")
    for _ in range(12):  # fresh connections: the kernel spreads them over both workers
        assert requests.get(url, timeout=10, headers={"Connection": "close"}).status_code == 200
    assert fake.calls_to("kv_get") == []
    assert fake.kv_value(url.rsplit("/", 1)[1]) is not None  # and KV has it for other machines


def test_a_chunked_body_over_the_limit_is_413(gunicorn):
    def chunks():
        for _ in range(17):
            yield b" " * 65536  # 1.06 MiB of whitespace, no Content-Length
    response = requests.post(gunicorn.url + "/v1/images/generations", data=chunks(), timeout=30,
                             headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_an_upstream_echo_reaches_neither_client_nor_log(fake, tmp_path, monkeypatch):
    token = "cf-e2e-SECRET-token"
    monkeypatch.setattr(fake_cloudflare, "API_TOKEN", token)
    server = Gunicorn(gunicorn_env(fake, tmp_path, CF_API_TOKEN=token), tmp_path)
    try:
        fake.inject("ai", fake_cloudflare.echo(400, 5006), fake_cloudflare.echo(400, 5006))
        bodies = [requests.post(server.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                                json={"stream": stream, "messages": [
                                    {"role": "user", "content": "A cat\nERROR forged"}]}).text
                  for stream in (False, True)]
        assert all("[redacted]" in body for body in bodies)
    finally:
        server.stop()
    log = server.log()
    assert token not in "".join(bodies) + log
    assert not any(line.startswith("ERROR forged") for line in log.splitlines())


def test_a_worker_closes_its_pools_and_sessions_when_it_exits(fake, tmp_path):
    server = Gunicorn(gunicorn_env(fake, tmp_path, WEB_CONCURRENCY="1"), tmp_path)
    server.stop()
    assert "closed the generation pool, upstream sessions and store" in server.log()
