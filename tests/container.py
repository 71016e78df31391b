"""Building and running the project's Docker image for real, for tests.

- ``connect()``: a Docker daemon to talk to. One that already answers (the
  environment's DOCKER_HOST or the default socket) is used as it is; else, as
  root with Debian's ``dockerd`` installed, one is started with its own data
  root, exec root and socket under CACHE_DIR (``--iptables=false
  --bridge=none``: no bridge network, so builds and containers use the host's
  network), and stopped by ``Daemon.stop()``. Its data root is kept, so the
  base image and build cache survive from one run to the next.
- ``ensure_base_image()``: the image to build on. No registry is reachable
  here, so ``python:3.12-slim`` cannot be pulled: a Debian bookworm base is made
  with debootstrap, ``docker import``-ed with the host's CA bundle (package
  registries are reached through a certificate only it trusts), and given
  Debian's python3 and python3-venv. Tagged BASE_TAG and skipped when the tag
  exists. FLUX_WORKER_TEST_BASE_IMAGE=python:3.12-slim (where a registry is
  reachable) builds on that instead.
- ``build_image()``: ``docker build --network host`` of the project's Dockerfile.

Whatever cannot be had on this machine raises ``Unavailable`` with the reason,
for the tests to skip with; a failing build or command raises ``DockerError``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = Path(os.environ.get("FLUX_WORKER_DOCKER_DIR", "/var/tmp/flux-worker-docker"))
DEBIAN_TAG = "local/flux-worker-debian:bookworm"
BASE_TAG = "local/flux-worker-python:bookworm"
IMAGE_TAG = "flux-worker:test"
DEBIAN_MIRROR = os.environ.get("FLUX_WORKER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
CA_IN_IMAGE = "/etc/host-ca.crt"
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The second layer of the local base: Debian's Python (3.11 on bookworm).
PYTHON_LAYER = f"""\
FROM {DEBIAN_TAG}
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
       python3 python3-venv \\
    && apt-get clean && rm -rf /var/lib/apt/lists/*
"""


class Unavailable(Exception):
    """This machine cannot build or run images; the message says why."""


class DockerError(AssertionError):
    """A docker command failed; the message has its output."""


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


class Docker:
    """The docker CLI, pointed at one daemon."""

    def __init__(self, env: dict[str, str]):
        self.env = env

    def run(self, *args: str, timeout: float = 120, check: bool = True,
            input: str | bytes | None = None) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(
                ["docker", *args], env=self.env, capture_output=True, timeout=timeout,
                input=input.encode() if isinstance(input, str) else input)
        except subprocess.TimeoutExpired as exc:
            raise DockerError(f"docker {' '.join(args[:3])} took over {timeout} s") from exc
        done = subprocess.CompletedProcess(
            result.args, result.returncode, result.stdout.decode(errors="replace"),
            result.stderr.decode(errors="replace"))
        if check and done.returncode != 0:
            raise DockerError(f"docker {' '.join(args)} exited {done.returncode}:\n"
                              f"{_tail(done.stdout + done.stderr)}")
        return done

    def answers(self) -> bool:
        try:
            return self.run("info", "--format", "{{.ServerVersion}}", timeout=20,
                            check=False).returncode == 0
        except DockerError:
            return False

    def image_exists(self, tag: str) -> bool:
        return self.run("image", "inspect", tag, check=False).returncode == 0

    def inspect(self, name: str, template: str) -> str:
        return self.run("inspect", "--format", template, name).stdout.strip()


class Daemon:
    """A dockerd this session started (or found left over by an earlier one)."""

    def __init__(self, pid: int, log_path: Path, process: subprocess.Popen[bytes] | None):
        self.pid = pid
        self.log_path = log_path
        self.process = process

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, 15)
            deadline = time.monotonic() + 60
            while Path(f"/proc/{self.pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.2)
        # dockerd leaves its network namespace mounted in its exec root.
        _unmount_under(_own_paths()["exec"])


def _own_paths() -> dict[str, Path]:
    return {"root": CACHE_DIR / "data-root", "exec": CACHE_DIR / "exec",
            "pidfile": CACHE_DIR / "dockerd.pid", "socket": CACHE_DIR / "docker.sock",
            "log": CACHE_DIR / "dockerd.log"}


def connect() -> tuple[Docker, Daemon | None]:
    """A daemon to use, and the Daemon to stop at the end if it is ours."""
    if shutil.which("docker") is None:
        raise Unavailable("the docker CLI is not installed (apt-get install docker.io)")
    docker = Docker(dict(os.environ))
    if docker.answers():
        return docker, None
    paths = _own_paths()
    ours = Docker({**os.environ, "DOCKER_HOST": f"unix://{paths['socket']}"})
    leftover = _running_pid(paths["pidfile"])
    if leftover is not None and ours.answers():  # an earlier session's, still up
        return ours, Daemon(leftover, paths["log"], None)
    if os.geteuid() != 0:
        raise Unavailable("no Docker daemon answers and only root can start one "
                          "(start dockerd, or run the tests as root)")
    if shutil.which("dockerd") is None:
        raise Unavailable("no Docker daemon answers and dockerd is not installed "
                          "(apt-get install docker.io)")
    if leftover is not None:
        raise Unavailable(f"dockerd {leftover} (pid file {paths['pidfile']}) is running "
                          "but does not answer")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    paths["pidfile"].unlink(missing_ok=True)
    paths["socket"].unlink(missing_ok=True)
    with open(paths["log"], "ab") as log:
        process = subprocess.Popen(
            ["dockerd", "--iptables=false", "--bridge=none",
             "--data-root", str(paths["root"]), "--exec-root", str(paths["exec"]),
             "--pidfile", str(paths["pidfile"]), "-H", f"unix://{paths['socket']}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    daemon = Daemon(process.pid, paths["log"], process)
    deadline = time.monotonic() + 60
    while not ours.answers():
        if process.poll() is not None or time.monotonic() > deadline:
            daemon.stop()
            raise Unavailable("dockerd did not start here:\n"
                              + _tail(paths["log"].read_text(errors="replace"), 15))
        time.sleep(0.5)
    return ours, daemon


def _running_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"dockerd" in cmdline else None


def ensure_base_image(docker: Docker) -> str:
    """The base image's tag: FLUX_WORKER_TEST_BASE_IMAGE, or the local Debian one."""
    override = os.environ.get("FLUX_WORKER_TEST_BASE_IMAGE")
    if override:
        return override
    if docker.image_exists(BASE_TAG):
        return BASE_TAG
    if not docker.image_exists(DEBIAN_TAG):
        _import_debian(docker)
    docker.run("build", "--network", "host", "-t", BASE_TAG, "-", input=PYTHON_LAYER,
               timeout=900)
    return BASE_TAG


def _import_debian(docker: Docker) -> None:
    """debootstrap a minimal bookworm and docker import it as DEBIAN_TAG."""
    if os.geteuid() != 0:
        raise Unavailable(f"{BASE_TAG} is missing and only root can debootstrap it "
                          "(or set FLUX_WORKER_TEST_BASE_IMAGE to a base that can be pulled)")
    if shutil.which("debootstrap") is None:
        raise Unavailable(f"{BASE_TAG} is missing and debootstrap is not installed "
                          "(apt-get install debootstrap)")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE_DIR))
    try:
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR],
            capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise DockerError(f"debootstrap exited {result.returncode}:\n"
                              f"{_tail(result.stdout + result.stderr)}")
        # debootstrap's downloaded packages and lists: 80 MB the image needs not.
        for leftover in [*rootfs.glob("var/cache/apt/archives/*.deb"),
                         *rootfs.glob("var/cache/apt/*.bin"),
                         *(p for p in rootfs.glob("var/lib/apt/lists/*") if p.is_file())]:
            leftover.unlink()
        mirror = DEBIAN_MIRROR.rstrip("/")
        (rootfs / "etc/apt/sources.list").write_text(
            f"deb {mirror} bookworm main\n"
            f"deb {mirror} bookworm-updates main\n"
            f"deb {mirror}-security bookworm-security main\n")
        changes = [f"ENV PATH={STANDARD_PATH} LANG=C.UTF-8"]
        if HOST_CA.exists():
            shutil.copyfile(HOST_CA, rootfs / CA_IN_IMAGE.lstrip("/"))
            changes.append(f"ENV SSL_CERT_FILE={CA_IN_IMAGE} PIP_CERT={CA_IN_IMAGE} "
                           f"REQUESTS_CA_BUNDLE={CA_IN_IMAGE}")
        change_args = [arg for change in changes for arg in ("--change", change)]
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."],
                               stdout=subprocess.PIPE)
        try:
            imported = subprocess.run(["docker", "import", *change_args, "-", DEBIAN_TAG],
                                      env=docker.env, stdin=tar.stdout, capture_output=True,
                                      text=True, timeout=600)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait(timeout=600)
        if imported.returncode != 0 or tar.returncode != 0:
            raise DockerError(f"docker import exited {imported.returncode} (tar "
                              f"{tar.returncode}):\n{_tail(imported.stdout + imported.stderr)}")
    finally:
        _remove_rootfs(rootfs)


def _unmount_under(directory: Path) -> None:
    """Lazily unmount everything mounted below `directory`, deepest first."""
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(f"{directory}/")), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _remove_rootfs(rootfs: Path) -> None:
    """Unmount what debootstrap may have left mounted (a failed run), then delete."""
    _unmount_under(rootfs)
    shutil.rmtree(rootfs, ignore_errors=True)


def build_image(docker: Docker, base: str, version: str, log_path: Path) -> str:
    """docker build the project's Dockerfile on `base`; its output goes to log_path."""
    result = docker.run("build", "--network", "host", "--build-arg", f"BASE_IMAGE={base}",
                        "--build-arg", f"VERSION={version}", "-t", IMAGE_TAG, str(ROOT),
                        timeout=1200, check=False)
    log_path.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise DockerError(f"docker build exited {result.returncode} (log: {log_path}):\n"
                          f"{_tail(result.stdout + result.stderr)}")
    return IMAGE_TAG
