"""One access line per request: method, path, status, duration, model,
stream flag, kind, images made, client address; the request ID leads it."""

from __future__ import annotations

import logging
import re

import pytest

import fake_cloudflare
from conftest import AUTH

CAT = {"messages": [{"role": "user", "content": "A cute cat 16:9"}]}
SCHNELL = "@cf/black-forest-labs/flux-1-schnell"


@pytest.fixture
def access(caplog):
    caplog.set_level(logging.INFO, logger="flux_worker.access")

    def lines() -> list[str]:
        return [f"[{r.request_id}] {r.getMessage()}" for r in caplog.records
                if r.name == "flux_worker.access"]
    return lines


def post(client, path: str, body: dict):
    return client.post(path, headers={**AUTH, "X-Request-ID": "req-7"}, json=body,
                       buffered=True, environ_base={"REMOTE_ADDR": "203.0.113.9"})


@pytest.mark.parametrize("stream", [False, True])
def test_a_picture_line_names_model_stream_kind_and_images(client, access, stream):
    post(client, "/v1/chat/completions", {**CAT, "stream": stream})
    [line] = access()
    assert re.fullmatch(
        rf"\[req-7\] POST /v1/chat/completions 200 [\d.]+ms model={SCHNELL} "
        rf"stream={str(stream).lower()} kind=picture images=1 client=203\.0\.113\.9", line)


def test_a_title_request_is_told_from_a_picture(client, access):
    post(client, "/v1/chat/completions", {"messages": [
        {"role": "user", "content": "A cute cat"},
        {"role": "user", "content": "Please generate a four to five word title summarizing our "
                                    "conversation"}]})
    [line] = access()
    assert f"model={SCHNELL} stream=false kind=title images=0 " in line


def test_the_images_api_counts_every_image(client, access, caplog):
    caplog.set_level(logging.INFO, logger="flux_worker.generation")
    post(client, "/v1/images/generations", {"prompt": "A fox", "n": 3})
    [line] = access()
    assert "POST /v1/images/generations 200 " in line
    assert f"model={SCHNELL} stream=false kind=images images=3 " in line
    made = [r for r in caplog.records if r.getMessage().startswith("image generated")]
    assert len(made) == 3


def test_the_responses_api_line(client, access):
    post(client, "/v1/responses", {"model": "flux", "input": "A cute cat", "stream": True})
    [line] = access()
    assert "POST /v1/responses 200 " in line and " stream=true kind=picture images=1 " in line


def test_a_refused_request_still_gets_its_line_and_cannot_forge_fields(client, access):
    post(client, "/v1/chat/completions", {"messages": [], "stream": True,
                                          "model": "x kind=picture images=4\nFAKE"})
    [line] = access()
    assert " 400 " in line and "model=- stream=- kind=- images=0 " in line
    assert "FAKE" not in line


def test_a_failed_picture_counts_no_image(client, access, fake):
    fake.inject("ai", *[fake_cloudflare.status(500)] * 4)
    post(client, "/v1/chat/completions", {**CAT, "stream": True})
    [line] = access()
    assert " 200 " in line and "kind=picture images=0 " in line
