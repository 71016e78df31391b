"""Streaming chat completions: frame order, progress, keep-alives, failures, capacity."""

from __future__ import annotations

import re
import sqlite3
import threading
import time

import pytest

import fake_cloudflare
from conftest import AUTH, parse_sse
from shapes import assert_shape

CAT = {"messages": [{"role": "user", "content": "A cute cat 16:9"}], "stream": True}


def stream_events(client, body=CAT, **kwargs):
    response = client.post("/v1/chat/completions", headers=AUTH, json=body, **kwargs)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    return response, *parse_sse(response.get_data(as_text=True))


def chunks_text(events) -> str:
    return "".join(e["choices"][0]["delta"].get("content", "")
                   for e in events if isinstance(e, dict) and e.get("choices"))


def without_keys(text: str) -> str:
    return re.sub(r"/image/[A-Za-z0-9_-]{22}", "/image/KEY", text)


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_frames_come_in_openai_order(client):
    """Role chunk, content, stop chunk, [DONE]; every chunk a valid chunk."""
    response, events, _ = stream_events(client)
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        assert_shape("ChatCompletionChunk", chunk)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                        "finish_reason": "stop"}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert len({c["id"] for c in chunks}) == 1
    assert all("usage" not in c for c in chunks)


def test_progress_comes_in_pieces(client):
    """Opening lines, optimized prompt, generating line, then the image link."""
    _, events, _ = stream_events(client)
    pieces = [e["choices"][0]["delta"]["content"] for e in events[1:-2]]
    assert pieces[0].startswith("🎨 Original prompt: A cute cat 16:9\n")
    assert "📐 Image specifications: 1024x576" in pieces[0]
    assert pieces[1].startswith("🌐 Optimized prompt: A cute cat")
    assert pieces[2].startswith("⏳")
    assert "![Generated Image](" in pieces[3]


def test_joined_deltas_equal_the_non_stream_reply(client):
    _, events, _ = stream_events(client, {**CAT, "seed": 99})
    whole = client.post("/v1/chat/completions", headers=AUTH, json={
        **CAT, "stream": False, "seed": 99}).json["choices"][0]["message"]["content"]
    assert without_keys(chunks_text(events)) == without_keys(whole)


def test_usage_chunk_only_when_asked(client):
    body = {**CAT, "stream_options": {"include_usage": True}}
    _, events, _ = stream_events(client, body)
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] > 0
    assert_shape("ChatCompletionChunk", usage_chunk)
    assert events[-3]["choices"][0]["finish_reason"] == "stop"


def test_include_usage_null_means_no_usage_chunk(client):
    _, events, _ = stream_events(client, {**CAT, "stream_options": {"include_usage": None}})
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


def test_keep_alive_comments_while_waiting(make_app, fake):
    client = make_app(sse_keepalive_seconds=0.05).test_client()
    fake.latency = 0.4
    _, events, comments = stream_events(client)
    assert ": keep-alive" in comments
    assert events[-1] == "[DONE]"


def test_failure_after_headers_is_visible_then_an_error_event(client, fake):
    fake.inject("ai", *[fake_cloudflare.status(500)] * 4)
    _, events, _ = stream_events(client)
    assert events[-1] == "[DONE]"
    error = events[-2]
    assert_shape("Error", error)
    assert error["error"]["code"] == "upstream_error"
    assert "❌" in events[-3]["choices"][0]["delta"]["content"]


def test_housekeeping_streams_text_without_generating(client, fake):
    body = {"stream": True, "messages": [
        {"role": "user", "content": "A dog"},
        {"role": "user", "content": "Please generate a four to five word title summarizing our "
                                    "conversation."}]}
    _, events, _ = stream_events(client, body)
    assert chunks_text(events) == "A dog"
    assert events[-1] == "[DONE]" and fake.calls_to("ai") == []


def test_past_the_cap_is_429_at_once(make_app, fake):
    app = make_app(max_concurrent_generations=1)
    client = app.test_client()
    fake.latency = 1.0
    first = client.post("/v1/chat/completions", headers=AUTH, json=CAT, buffered=False)
    next(iter(first.response))  # the first stream holds the only slot
    second = client.post("/v1/chat/completions", headers=AUTH, json={**CAT, "stream": False})
    assert second.status_code == 429
    assert second.headers["Retry-After"].isdigit()
    assert second.json["error"]["code"] == "rate_limit_exceeded"
    assert_shape("Error", second.json)
    first.get_data()
    first.close()


def app_threads() -> int:
    """Live threads, leaving out the fake Cloudflare's connection threads."""
    return sum(not t.name.startswith("fake-cloudflare") for t in threading.enumerate())


def test_client_hanging_up_keeps_the_image_and_leaks_nothing(make_app, make_settings, fake):
    settings = make_settings()
    app = make_app()
    service = app.extensions["flux_worker"].images
    fake.latency = 0.5
    threads_before = app_threads()
    response = app.test_client().post("/v1/chat/completions", headers=AUTH, json=CAT,
                                      buffered=False)
    frames = iter(response.response)
    next(frames)
    response.close()  # the client hangs up mid-stream
    wait_until(lambda: service.capacity.in_use == 0)
    with sqlite3.connect(settings.image_store_path) as db:
        assert db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 1
    assert len(fake.calls_to("ai")) == 1
    # The pool thread that did the work stays for reuse; nothing else is left behind.
    assert app_threads() <= threads_before + 1


@pytest.mark.parametrize("stream", [True, False])
def test_capacity_is_freed_after_each_request(client, app, stream):
    for _ in range(3):
        client.post("/v1/chat/completions", headers=AUTH, json={**CAT, "stream": stream}).get_data()
    wait_until(lambda: app.extensions["flux_worker"].images.capacity.in_use == 0)
