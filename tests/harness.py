"""Running the real service for tests and benchmarks: gunicorn from the Procfile."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

import fake_cloudflare

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "test-key-0123456789"


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
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        full_env = {**os.environ, **env, "PORT": str(self.port), "PATH": path}
        # Open for as long as gunicorn runs: stop() closes it, so no `with`.
        self._log = open(self.log_path, "w")  # noqa: SIM115
        # exec: the shell becomes gunicorn, so process.pid is gunicorn's master.
        self.process = subprocess.Popen("exec " + procfile_command(), shell=True, cwd=ROOT,
                                        env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:  # no server to hand back: stop it and close its log here
            self.stop()
            raise

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
        if not self._log.closed:
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
        # One service for the whole session makes more images than a free
        # account's day allows (about 57 at 172.8 neurons): no budget here.
        "CF_DAILY_NEURONS": "0",
    }
    env.update(extra)
    return env
