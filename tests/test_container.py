"""The Docker image, built from the Dockerfile and run for real.

Part of the normal suite (`python -m pytest`; no marker or option needed).
Skipped, with the reason, where this machine cannot do it: no docker CLI; no
daemon answers and we are not root or have no dockerd to start; no base image
and no debootstrap (see tests/container.py). bin/test's apt packages for it:
docker.io and debootstrap.

What it checks: the image's configuration (non-root user, volume, port,
healthcheck, command, only the service's files inside); then, with the
container on the host network talking to the in-process fake Cloudflare and
its store on a named volume: Docker's own HEALTHCHECK reaches `healthy`, an
Images API generation answers 200 and its link serves the image, the service
runs as a non-root user, and after `docker restart` the same link still serves
the same bytes.

Cost: a cold run (fresh machine: dockerd's data root empty) debootstraps the
local base, installs Debian's python3 into it and builds the image with pip:
about 80 s on the build machines (75 s of it building), longer on a slow
network. A warm run reuses the base image (cached by tag) and Docker's layer
cache: about 10 s, most of it the two waits for `healthy`.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator

import pytest
import requests
from PIL import Image

import container
import fake_cloudflare
from flux_worker.version import __version__
from harness import API_KEY, free_port

UID = 10001
SERVICE_FILES = {"app.py", "gunicorn.conf.py", "Procfile", "requirements.txt", "flux_worker"}


@pytest.fixture(scope="module")
def docker() -> Iterator[container.Docker]:
    try:
        client, daemon = container.connect()
    except container.Unavailable as exc:
        pytest.skip(f"cannot run Docker here: {exc}")
    try:
        yield client
    finally:
        if daemon is not None:  # ours: drop superseded builds, keep the cache, stop it
            client.run("image", "prune", "-f", check=False)
            daemon.stop()


@pytest.fixture(scope="module")
def image(docker, tmp_path_factory) -> str:
    try:
        base = container.ensure_base_image(docker)
    except container.Unavailable as exc:
        pytest.skip(f"no base image to build on: {exc}")
    log = tmp_path_factory.mktemp("docker") / "build.log"
    return container.build_image(docker, base, __version__, log)


class Service:
    """One running container of the image, on the host network."""

    def __init__(self, docker: container.Docker, name: str, port: int):
        self.docker = docker
        self.name = name
        self.url = f"http://127.0.0.1:{port}"

    def exec(self, *command: str) -> str:
        return self.docker.run("exec", self.name, *command).stdout.strip()

    def logs(self) -> str:
        done = self.docker.run("logs", "--tail", "60", self.name, check=False)
        return done.stdout + done.stderr

    def wait_healthy(self, timeout: float = 120) -> float:
        """Seconds until Docker's HEALTHCHECK says `healthy`; fails on exit or `unhealthy`."""
        start = time.monotonic()
        template = "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}"
        while True:
            state = self.docker.inspect(self.name, template).split()
            if state[0] in ("exited", "dead"):
                raise AssertionError(f"the container stopped: {state}\n{self.logs()}")
            if state[1:] == ["healthy"]:
                return time.monotonic() - start
            if state[1:] == ["unhealthy"] or time.monotonic() - start > timeout:
                health = self.docker.inspect(self.name, "{{json .State.Health}}")
                raise AssertionError(f"not healthy: {state}; {health}\n{self.logs()}")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def service(docker, image, fake_server) -> Iterator[Service]:
    name = f"flux-worker-test-{uuid.uuid4().hex[:10]}"
    volume = f"{name}-data"
    port = free_port()
    env = {
        "PORT": str(port),
        "API_KEY": API_KEY,
        "CF_ACCOUNT_ID": fake_cloudflare.ACCOUNT_ID,
        "CF_API_TOKEN": fake_cloudflare.API_TOKEN,
        "CF_API_BASE": fake_server.api_base,
        "CF_DAILY_NEURONS": "0",
        "WEB_CONCURRENCY": "2",
    }
    docker.run("volume", "create", volume)
    try:
        # The image's own health check, run every second instead of every 15 s.
        docker.run("run", "-d", "--name", name, "--network", "host",
                   "--health-interval", "1s", "-v", f"{volume}:/data",
                   *(arg for key, value in env.items() for arg in ("-e", f"{key}={value}")),
                   image)
        service = Service(docker, name, port)
        service.wait_healthy()
        yield service
    finally:
        docker.run("rm", "-f", "-v", name, check=False)
        docker.run("volume", "rm", "-f", volume, check=False)


def test_image_is_configured_as_documented(docker, image):
    config = json.loads(docker.inspect(image, "{{json .Config}}"))
    assert config["User"] == f"{UID}:{UID}"
    assert config["Cmd"] == ["python3", "app.py"]
    assert "8000/tcp" in config["ExposedPorts"]
    assert "/data" in config["Volumes"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["IMAGE_STORE_PATH"] == "/data/images.sqlite3"
    assert env["PORT"] == "8000"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    check = " ".join(config["Healthcheck"]["Test"])
    assert "urllib" in check and "127.0.0.1:${PORT" in check and "/healthz" in check
    assert config["Labels"]["org.opencontainers.image.version"] == __version__
    # Only what runs the service (compileall adds __pycache__): no tests, .venv, .env, data.
    listing = docker.run("run", "--rm", "--network", "host", "--entrypoint", "ls", image,
                         "-A", "/app").stdout.split()
    assert set(listing) - {"__pycache__"} == SERVICE_FILES


def test_runs_healthy_as_a_non_root_user(service):
    assert requests.get(service.url + "/healthz", timeout=5).json()["status"] == "ok"
    assert service.exec("id", "-u") == str(UID)
    # PID 1 is gunicorn (app.py exec'd it), and it runs as that user too.
    status = dict(line.split(":", 1) for line in service.exec("cat", "/proc/1/status")
                  .splitlines())
    assert status["Uid"].split() == [str(UID)] * 4
    assert "gunicorn" in service.exec("cat", "/proc/1/cmdline")
    assert service.exec("stat", "-c", "%u:%g", "/data") == f"{UID}:{UID}"


def test_images_are_served_and_survive_a_restart(service, fake):
    answer = requests.post(service.url + "/v1/images/generations",
                           headers={"Authorization": f"Bearer {API_KEY}"},
                           json={"prompt": "a lighthouse", "response_format": "url"},
                           timeout=60)
    assert answer.status_code == 200, answer.text
    link = answer.json()["data"][0]["url"]
    assert link.startswith(service.url + "/image/")
    first = requests.get(link, timeout=10)
    assert first.status_code == 200
    assert first.headers["Content-Type"].startswith("image/")
    assert Image.open(io.BytesIO(first.content)).size == (1024, 1024)
    # The store is on the volume, written by the service's user.
    assert service.exec("stat", "-c", "%u", "/data/images.sqlite3") == str(UID)

    started = service.docker.inspect(service.name, "{{.State.StartedAt}}")
    service.docker.run("restart", "-t", "35", service.name, timeout=90)
    assert service.docker.inspect(service.name, "{{.State.StartedAt}}") != started
    service.wait_healthy()
    again = requests.get(link, timeout=10)
    assert again.status_code == 200
    assert again.content == first.content
