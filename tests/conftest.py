"""Shared fixtures: settings factory, app, client, the fake Cloudflare, gunicorn."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time

import openai
import pytest
import responses

import fake_cloudflare
from flux_worker import create_app, http_session
from flux_worker.settings import Settings
from harness import API_KEY, Gunicorn, free_port, gunicorn_env

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="session")
def fake_server():
    with fake_cloudflare.FakeCloudflare() as server:
        yield server


@pytest.fixture
def fake(fake_server):
    """The fake Cloudflare, clean for each test."""
    fake_server.reset()
    yield fake_server
    fake_server.reset()


@pytest.fixture
def make_settings(tmp_path, fake):
    """Build Settings pointing at the fake Cloudflare; keyword arguments override."""

    def factory(**overrides) -> Settings:
        base = Settings(
            api_keys=(API_KEY,),
            cf_account_id=fake_cloudflare.ACCOUNT_ID,
            cf_api_token=fake_cloudflare.API_TOKEN,
            cf_api_base=fake.api_base,
            image_store_path=str(tmp_path / "images.sqlite3"),
            sse_keepalive_seconds=5.0,
            upstream_timeout_seconds=5.0,
            optimizer_timeout_seconds=2.0,
            retry_backoff_seconds=0.01,
        )
        return base.replace(**overrides)

    return factory


@pytest.fixture
def make_app(make_settings):
    """Build apps from settings overrides; their worker pools are shut down after."""
    apps = []

    def factory(**overrides):
        app = create_app(make_settings(**overrides))
        app.testing = True
        apps.append(app)
        return app

    yield factory
    for app in apps:  # everything it opened: pools, sessions, store, shared state (Redis)
        app.extensions["flux_worker"].close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def rsps():
    """A `responses` mock for unit tests of the HTTP clients."""
    with responses.RequestsMock() as mock:
        yield mock


@pytest.fixture
def session():
    """An upstream session as the app makes them (retries are Upstream's, not its own)."""
    s = http_session.make_session(4)
    yield s
    s.close()


def parse_sse(text: str, named: bool = False) -> tuple[list[object], list[str]]:
    """Split an SSE body into its data payloads (JSON or "[DONE]") and comments.

    An `event:` line must name the JSON `type` of the data in its block, and
    never stand without data (the openai SDK crashes on that); with `named`,
    every payload must have one, as OpenAI's Responses and image streams do.
    """
    events, comments = [], []
    for block in re.split(r"\r?\n\r?\n", text):
        name = None
        for line in block.splitlines():
            if line.startswith(":"):
                comments.append(line)
            elif line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                payload = line[len("data: "):]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
                if name is not None:
                    assert isinstance(events[-1], dict) and events[-1].get("type") == name
                    name = None
                else:
                    assert not named, f"data without an event: line: {block!r}"
            elif line.strip():
                raise AssertionError(f"unexpected SSE line: {line!r}")
        assert name is None, f"an event: line without data: {block!r}"
    return events, comments


@pytest.fixture
def sdk(gunicorn, fake):
    """The official openai SDK, pointed at the gunicorn service."""
    return openai.OpenAI(base_url=gunicorn.url + "/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real Redis (Debian's redis-server) on a free loopback port, for the
    session; tests that need it skip where it is not installed."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (bin/test installs it as root with apt)")
    port = free_port()
    directory = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "redis did not start"
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def redis_url(redis_server):
    """The real Redis, emptied for each test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server


@pytest.fixture(scope="session")
def gunicorn(fake_server, tmp_path_factory):
    """One gunicorn for the end-to-end tests: embedded store, no optimizer."""
    server = Gunicorn(gunicorn_env(fake_server, tmp_path_factory.mktemp("gunicorn")),
                      tmp_path_factory.getbasetemp())
    yield server
    server.stop()
