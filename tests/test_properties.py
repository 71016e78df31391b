"""Property: whatever a client sends (surrogates, control characters, huge
numbers included), the answer is never a 5xx nor an HTML page, every error is
a valid OpenAI error object, and no secret reaches a response or a log line."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fake_cloudflare
from flux_worker import create_app
from flux_worker.settings import Settings
from shapes import assert_shape

KEY = {"Authorization": "Bearer k"}
TOKEN = "cf-property-SECRET-token"
# Text as clients may send it: any code point, lone surrogates and C0/C1
# controls included (json.dumps writes surrogates as \\udXXX escapes).
hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=20),
    st.lists(st.sampled_from(["\ud800", "\udfff", "\x00", "\n", "\r", "\x1b", "\u2028", "\x85",
                              "a", "🐱", "16:9", " "]), max_size=12).map("".join))
huge_numbers = st.one_of(st.integers(-10**30, 10**30), st.sampled_from([2**63, -2**63, 10**400]),
                         st.floats(allow_nan=False, allow_infinity=False))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), huge_numbers,
                    hostile_text)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12)
prompts = st.one_of(hostile_text,
                    st.sampled_from(["A cat 16:9", "x --ar 3:0", "--ar 99:1 y", "16:9", "a 1:1 b",
                                     "Clock 10:30", "--no", "A dog --no cats", " ", "🐱 9:16"]))
contents = st.one_of(prompts, json_values, st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(prompts, json_values)}),
    st.fixed_dictionaries({"type": st.text(max_size=10)}), json_values), max_size=3))
messages = st.lists(st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", "x"]),
                           "content": contents}),
    json_values), max_size=3)
chat_bodies = st.one_of(json_values, st.fixed_dictionaries(
    {"messages": messages},
    optional={"stream": json_values, "model": st.one_of(st.text(max_size=30), json_values),
              "stream_options": json_values, "temperature": json_values, "n": json_values}))
image_bodies = st.one_of(json_values, st.fixed_dictionaries(
    {"prompt": st.one_of(prompts, json_values)},
    optional={"n": st.one_of(st.integers(-2, 6), huge_numbers, json_values),
              "size": st.one_of(st.sampled_from(["1024x1024", "1792x1024", "auto", "0x5", "big",
                                                 "100000x1"]), json_values),
              "response_format": st.one_of(st.sampled_from(["url", "b64_json", "png"]),
                                           json_values),
              "model": json_values, "quality": json_values}))


@pytest.fixture(scope="module")
def client(fake_server, tmp_path_factory):
    """The fake echoes the prompt in an error now and then; the app's token is
    a secret the fake does not know, so every echo carries it."""
    app = create_app(Settings(
        api_keys=("k",), cf_account_id=fake_cloudflare.ACCOUNT_ID,
        cf_api_token=TOKEN, cf_api_base=fake_server.api_base,
        image_store_path=str(tmp_path_factory.mktemp("prop") / "images.sqlite3"),
        retry_backoff_seconds=0.01))
    yield app.test_client()
    app.extensions["flux_worker"].close()


@pytest.fixture(autouse=True)
def echoing_upstream(fake_server, monkeypatch):
    """Workers AI accepts the property token and echoes credentials and prompt back."""
    monkeypatch.setattr(fake_cloudflare, "API_TOKEN", TOKEN)
    fake_server.reset()
    # Every other call echoes; the others make an image.
    fake_server.inject("ai", *[fake_cloudflare.echo(400, 5006), fake_cloudflare.delay(0)] * 5000)
    yield
    fake_server.reset()


def check(response, capsys) -> None:
    text = response.get_data(as_text=True)
    assert response.status_code < 500, text
    assert not response.mimetype.startswith("text/html")
    if response.status_code >= 400:
        assert_shape("Error", response.json)
    elif response.mimetype == "text/event-stream":
        assert text.endswith("data: [DONE]\n\n")
    text.encode("utf-8")  # what went out could be sent
    logged = capsys.readouterr().err
    assert TOKEN not in text + str(response.headers) and TOKEN not in logged


PROPERTY = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@PROPERTY
@given(body=chat_bodies)
def test_chat_never_fails_on_the_server(client, capsys, body):
    check(client.post("/v1/chat/completions", headers=KEY, buffered=True,
                      data=json.dumps(body), content_type="application/json"), capsys)


@PROPERTY
@given(body=image_bodies)
def test_images_never_fail_on_the_server(client, capsys, body):
    check(client.post("/v1/images/generations", headers=KEY, buffered=True,
                      data=json.dumps(body), content_type="application/json"), capsys)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200), path=st.sampled_from(
    ["/v1/chat/completions", "/v1/images/generations", "/chat/completions", "/v1/models"]))
def test_raw_bytes_never_fail_on_the_server(client, capsys, raw, path):
    check(client.post(path, headers=KEY, data=raw, content_type="application/octet-stream",
                      buffered=True), capsys)
