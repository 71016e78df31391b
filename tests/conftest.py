"""Shared fixtures: settings factory, app, client, the fake Cloudflare, gunicorn."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

import fake_cloudflare
from flux_worker import create_app
from flux_worker.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "test-key-0123456789"
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
    for app in apps:
        app.extensions["flux_worker"].images.close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def parse_sse(text: str) -> tuple[list[object], list[str]]:
    """Split an SSE body into its data payloads (JSON or "[DONE]") and comments."""
    events, comments = [], []
    for block in re.split(r"\r?\n\r?\n", text):
        for line in block.splitlines():
            if line.startswith(":"):
                comments.append(line)
            elif line.startswith("data: "):
                payload = line[len("data: "):]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
            elif line.strip():
                raise AssertionError(f"unexpected SSE line: {line!r}")
    return events, comments


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def procfile_command() -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return line[len("web:"):].strip()
    raise AssertionError("Procfile has no web: line")


class Gunicorn:
    """The real app, started as the Procfile says, on a free port."""

    def __init__(self, env: dict[str, str], tmp: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"gunicorn-{self.port}.log"
        full_env = {**os.environ, **env, "PORT": str(self.port),
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(procfile_command(), shell=True, cwd=ROOT, env=full_env,
                                        stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited: {self.log()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise AssertionError(f"gunicorn did not start: {self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
        self._log.close()


def gunicorn_env(fake, tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        "API_KEY": f"other-key,{API_KEY}",
        "CF_ACCOUNT_ID": fake_cloudflare.ACCOUNT_ID,
        "CF_API_TOKEN": fake_cloudflare.API_TOKEN,
        "CF_API_BASE": fake.api_base,
        "IMAGE_STORE_PATH": str(tmp / "images.sqlite3"),
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "16",
        "SSE_KEEPALIVE_SECONDS": "0.5",
        "UPSTREAM_TIMEOUT_SECONDS": "10",
    }
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def gunicorn(fake_server, tmp_path_factory):
    """One gunicorn for the end-to-end tests: embedded store, no optimizer."""
    server = Gunicorn(gunicorn_env(fake_server, tmp_path_factory.mktemp("gunicorn")),
                      tmp_path_factory.getbasetemp())
    yield server
    server.stop()
