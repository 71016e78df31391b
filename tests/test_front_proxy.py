"""The front proxy: real nginx, configured by exactly deploy/nginx/flux-worker.conf and
deploy/nginx/upstream.conf, in front of the real service under gunicorn.

Only the listen port and the upstream's address are rewritten (in a temporary
copy); the main nginx.conf is our own minimal one, including the two files in
http {} as the compose setup mounts them (the site first, then the upstream).
gunicorn runs one worker with 8 threads, so a handful of slow clients could
starve it. Each proof has its control where one makes sense: the same thing
sent straight to gunicorn shows what the proxy fixes.

Needs Debian's `nginx` package (apt-get install -y nginx); skipped without it.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from conftest import AUTH, parse_sse
from harness import ROOT, Gunicorn, free_port, gunicorn_env
from shapes import assert_shape

DEPLOY = ROOT / "deploy" / "nginx"
SITE = DEPLOY / "flux-worker.conf"
UPSTREAM = DEPLOY / "upstream.conf"
UPSTREAM_COMPOSE = DEPLOY / "upstream-compose.conf"
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\((?P<url>[^)]+)\)")
CAT = {"messages": [{"role": "user", "content": "A cute cat"}]}


def nginx_binary() -> str | None:
    """Debian puts nginx in /usr/sbin, which a non-root PATH may lack."""
    return shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(path, os.X_OK)),
        None)


NGINX = nginx_binary()
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (Debian: apt-get install -y nginx)")


class Nginx:
    """nginx with the deploy files, on a free loopback port, in front of `upstream_port`."""

    def __init__(self, upstream_port: int):
        assert NGINX is not None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Not under pytest's tmp (0700): when we are root nginx's workers run as
        # nobody and must reach their temp directories.
        self.prefix = Path(tempfile.mkdtemp(prefix="flux-nginx-"))
        self.prefix.chmod(0o755)
        self.error_log = self.prefix / "error.log"
        self.process: subprocess.Popen | None = None
        try:
            self._write_config(upstream_port)
            self._start()
        except BaseException:
            self.stop()
            raise

    def _write_config(self, upstream_port: int) -> None:
        site, listens = re.subn(r"(?m)^(\s*)listen 80;", rf"\g<1>listen 127.0.0.1:{self.port};",
                                SITE.read_text())
        upstream, servers = re.subn(r"(?m)^(\s*)server 127\.0\.0\.1:8000;",
                                    rf"\g<1>server 127.0.0.1:{upstream_port};",
                                    UPSTREAM.read_text())
        assert (listens, servers) == (1, 1), "the deploy files changed shape: update the test"
        conf_d = self.prefix / "conf.d"
        conf_d.mkdir()
        (conf_d / "default.conf").write_text(site)
        (conf_d / "upstream.conf").write_text(upstream)
        user = ""
        if os.geteuid() == 0:  # nginx's default group "nobody" is "nogroup" on Debian
            nobody = pwd.getpwnam("nobody")
            user = f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};"
        temp = "\n".join(f"    {kind}_temp_path {self.prefix}/temp/{kind};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (self.prefix / "temp").mkdir()
        (self.prefix / "nginx.conf").write_text(f"""\
daemon off;
worker_processes 1;
{user}
pid {self.prefix}/nginx.pid;
error_log {self.error_log} info;
events {{
    worker_connections 4096;
}}
http {{
    access_log {self.prefix}/access.log;
{temp}
    include {conf_d}/default.conf;
    include {conf_d}/upstream.conf;
}}
""")

    def _command(self, *extra: str) -> list[str]:
        assert NGINX is not None
        return [NGINX, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"), *extra]

    def _start(self) -> None:
        check = subprocess.run(self._command("-t"), capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"nginx -t failed:\n{check.stderr}"
        self._output = open(self.prefix / "stderr.log", "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(self._command(), stdout=self._output,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            assert self.process.poll() is None, f"nginx exited: {self.log()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, f"nginx did not listen: {self.log()}"
                time.sleep(0.05)

    def log(self) -> str:
        parts = [path.read_text(errors="replace")
                 for path in (self.prefix / "stderr.log", self.error_log) if path.exists()]
        return "\n".join(parts)

    def stop(self) -> None:
        try:
            if self.process is not None and self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)  # fast shutdown
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait(timeout=10)
        finally:
            if getattr(self, "_output", None) is not None:
                self._output.close()
            shutil.rmtree(self.prefix, ignore_errors=True)


@pytest.fixture(scope="module")
def service(fake_server, tmp_path_factory) -> Iterator[Gunicorn]:
    """The real service: one worker, 8 threads (so slow clients could starve it)."""
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian: apt-get install -y nginx)")
    tmp = tmp_path_factory.mktemp("front-proxy")
    server = Gunicorn(gunicorn_env(fake_server, tmp, WEB_CONCURRENCY="1", GUNICORN_THREADS="8",
                                   CF_DAILY_NEURONS="0"), tmp)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def proxy(service) -> Iterator[Nginx]:
    server = Nginx(service.port)
    try:
        yield server
    finally:
        server.stop()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes as they are and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # Answered and closed before reading it all: the answer is still there.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        answer = b""
        while True:
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            answer += piece
            head, _, body = answer.partition(b"\r\n\r\n")
            match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if match and len(body) >= int(match.group(1)):
                break
    return answer


def split_answer(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def assert_nginx_json_error(answer: bytes, status: int) -> dict:
    """nginx's own answer (no X-Request-ID: the app never saw it), as JSON in OpenAI's shape."""
    got, headers, body = split_answer(answer)
    assert got == status, answer[:500]
    assert headers.get("server") == "nginx"
    assert "x-request-id" not in headers
    assert headers["content-type"] == "application/json"
    assert b"<html" not in body.lower()
    document = json.loads(body)
    assert_shape("Error", document)
    assert document["error"]["param"] is None
    return document


def wait_for_quiet_log(server: Gunicorn) -> str:
    time.sleep(0.3)
    return server.log()


class SlowClients:
    """`count` connections that each send a request's first line and one header at
    once, then one more header line every `interval` s, and never finish."""

    def __init__(self, port: int, count: int = 300, interval: float = 0.5):
        self.sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, args=(interval,), daemon=True)
        try:
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                self.sockets.append(sock)
                sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            self._thread.start()
        except BaseException:
            self.close()
            raise

    def _trickle(self, interval: float) -> None:
        line = 0
        while not self._stop.wait(interval):
            line += 1
            for sock in self.sockets:
                # A server that hung up on one: still_open() counts it.
                with contextlib.suppress(OSError):
                    sock.sendall(f"X-Slow-{line}: still typing\r\n".encode())

    def still_open(self) -> int:
        """Connections the server has neither answered nor closed."""
        readable, _, _ = select.select(self.sockets, [], [], 0)
        return len(self.sockets) - len(readable)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()

    def __enter__(self) -> SlowClients:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# --- the deploy files themselves ------------------------------------------------

def test_the_compose_upstream_is_the_vps_one_but_for_its_address():
    def meaning(text: str) -> list[str]:
        lines = [line.split("#")[0].strip() for line in text.splitlines()]
        return [line for line in lines if line]

    vps, compose = meaning(UPSTREAM.read_text()), meaning(UPSTREAM_COMPOSE.read_text())
    assert "server 127.0.0.1:8000;" in vps and "server app:8000;" in compose
    assert [line.replace("server 127.0.0.1:8000;", "server app:8000;") for line in vps] == compose


# --- 1. streams pass through unbuffered ---------------------------------------------

@needs_nginx
def test_a_stream_arrives_piece_by_piece_through_nginx(proxy, fake):
    fake.latency = 1.5  # SSE_KEEPALIVE_SECONDS=0.5 in gunicorn_env: keep-alives meanwhile
    started = time.monotonic()
    arrivals: list[tuple[float, bytes]] = []
    with requests.post(proxy.url + "/v1/chat/completions", headers=AUTH, stream=True,
                       json={**CAT, "stream": True}, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Server"] == "nginx"
        assert "Content-Encoding" not in response.headers  # requests asked for gzip: none
        for piece in response.iter_content(chunk_size=None):
            arrivals.append((time.monotonic() - started, piece))
    body = b"".join(piece for _, piece in arrivals).decode()
    events, comments = parse_sse(body)
    assert events[-1] == "[DONE]" and ": keep-alive" in comments

    def first_arrival(marker: bytes) -> float:
        seen = b""
        for at, piece in arrivals:
            seen += piece
            if marker in seen:
                return at
        raise AssertionError(f"{marker!r} never arrived")

    opening = first_arrival(b"Original prompt")
    keepalive = first_arrival(b": keep-alive")
    link = first_arrival(b"Generated Image")
    print(f"\nthrough nginx: opening line at {opening:.3f}s, first keep-alive at "
          f"{keepalive:.3f}s, image link at {link:.3f}s, {len(arrivals)} reads")
    # The opening line left nginx long before Workers AI answered, the
    # keep-alives in between, the link after.
    assert opening < 0.75 < fake.latency <= link
    assert opening < keepalive < link
    assert link - opening > 1.0


# --- 2. links keep the client's port and scheme ---------------------------------------

def image_link(response: requests.Response) -> str:
    assert response.status_code == 200, response.text
    match = IMAGE_LINK.search(response.json()["choices"][0]["message"]["content"])
    assert match is not None
    return match.group("url")


@needs_nginx
def test_image_links_keep_a_non_default_port(proxy, service, fake):
    assert proxy.port not in (80, 443)
    link = image_link(requests.post(proxy.url + "/v1/chat/completions", headers=AUTH,
                                    json=CAT, timeout=30))
    assert link.startswith(f"http://127.0.0.1:{proxy.port}/image/"), link
    # The link works through nginx (a buffered location), byte for byte.
    through_proxy = requests.get(link, timeout=10)
    assert through_proxy.status_code == 200
    assert through_proxy.headers["Content-Type"] == "image/jpeg"
    direct = requests.get(link.replace(proxy.url, service.url), timeout=10)
    assert through_proxy.content == direct.content


@needs_nginx
def test_an_outer_tls_terminator_makes_links_https(proxy, fake):
    link = image_link(requests.post(proxy.url + "/v1/chat/completions", timeout=30, json=CAT,
                                    headers={**AUTH, "X-Forwarded-Proto": "https"}))
    assert link.startswith(f"https://127.0.0.1:{proxy.port}/image/"), link


@needs_nginx
def test_forged_forwarding_headers_do_not_reach_links(proxy, fake):
    """nginx replaces X-Forwarded-Host and takes only http/https as a scheme."""
    link = image_link(requests.post(proxy.url + "/v1/chat/completions", timeout=30, json=CAT,
                                    headers={**AUTH, "X-Forwarded-Host": "evil.example",
                                             "X-Forwarded-Proto": "javascript"}))
    assert link.startswith(f"http://127.0.0.1:{proxy.port}/image/"), link


# --- 4. broken HTTP is answered by nginx, in JSON -----------------------------------

GARBAGE = {
    "not HTTP at all": (b"GARBAGE\r\n\r\n", 400),
    "a bad version": (b"GET /healthz HTTP/1.x\r\nHost: 127.0.0.1\r\n\r\n", 400),
    "an unknown major version": (b"GET /healthz HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n", 505),
    "an oversized header": (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
                            + b"a" * 20000 + b"\r\n\r\n", 431),
    "an oversized request line": (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n"
                                  b"Host: 127.0.0.1\r\n\r\n", 414),
}


@needs_nginx
def test_malformed_http_gets_json_from_nginx_and_never_reaches_gunicorn(proxy, service):
    before = wait_for_quiet_log(service)
    for name, (data, status) in GARBAGE.items():
        document = assert_nginx_json_error(raw_exchange(proxy.port, data), status)
        print(f"\n{name} through nginx: {status} {document['error']['code']}")
    assert wait_for_quiet_log(service) == before, "gunicorn heard of the garbage"


@needs_nginx
def test_control_malformed_http_straight_to_gunicorn_gets_an_html_page(service):
    before = wait_for_quiet_log(service)
    for name, (data, _) in GARBAGE.items():
        status, headers, body = split_answer(raw_exchange(service.port, data))
        assert status in (400, 431), (name, body[:200])
        assert headers["content-type"].startswith("text/html")
        assert b"<html>" in body
    new = wait_for_quiet_log(service)[len(before):]
    assert new.count("Invalid request from ip=127.0.0.1") == len(GARBAGE), new


@needs_nginx
def test_a_body_no_setting_allows_is_a_json_413_from_nginx(proxy, service):
    before = wait_for_quiet_log(service)
    answer = raw_exchange(proxy.port, b"POST /v1/images/generations HTTP/1.1\r\n"
                          b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 40000000\r\n\r\n{")
    assert assert_nginx_json_error(answer, 413)["error"]["code"] == "request_too_large"
    assert wait_for_quiet_log(service) == before


@needs_nginx
def test_metrics_are_not_reachable_through_the_proxy(proxy, service):
    before = wait_for_quiet_log(service)
    for path in ("/metrics", "/metrics/", "/v1/metrics", "//metrics", "/%6Detrics",
                 "/metrics?format=text"):
        answer = raw_exchange(proxy.port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                          f"Connection: close\r\n\r\n".encode())
        assert assert_nginx_json_error(answer, 404)["error"]["code"] == "not_found", path
    assert wait_for_quiet_log(service) == before


@needs_nginx
def test_gunicorn_down_is_a_json_502(proxy):
    down = Nginx(free_port())  # nothing listens there
    try:
        response = requests.get(down.url + "/healthz", timeout=10)
    finally:
        down.stop()
    assert response.status_code == 502
    assert response.headers["x-should-retry"] == "true"
    assert_shape("Error", response.json())


# --- 3. slow clients starve gunicorn, not nginx --------------------------------------

@needs_nginx
def test_slow_header_clients_do_not_starve_requests_through_nginx(proxy, fake):
    opened = time.monotonic()
    with SlowClients(proxy.port) as slow:
        time.sleep(1.2)  # each has sent more header lines since
        started = time.monotonic()
        health = requests.get(proxy.url + "/healthz", timeout=10)
        health_seconds = time.monotonic() - started
        started = time.monotonic()
        image = requests.post(proxy.url + "/v1/images/generations", headers=AUTH, timeout=10,
                              json={"prompt": "A cute cat", "size": "1024x1024"})
        image_seconds = time.monotonic() - started
        open_meanwhile = slow.still_open()
        # However slowly they go on, client_header_timeout (10 s) ends them all.
        time.sleep(max(0.0, opened + 11.5 - time.monotonic()))
        open_after_timeout = slow.still_open()
    print(f"\n300 slow clients on nginx ({open_meanwhile} still open): /healthz in "
          f"{health_seconds:.3f}s, an image in {image_seconds:.3f}s; "
          f"{open_after_timeout} still open after 11.5 s")
    assert open_after_timeout == 0
    assert open_meanwhile >= 295  # they were all still hanging on
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert image.status_code == 200, image.text
    assert image.json()["data"][0]["url"].startswith(proxy.url + "/image/")
    assert health_seconds < 3 and image_seconds < 5


@needs_nginx
def test_control_the_same_slow_clients_straight_to_gunicorn_starve_it(service):
    with SlowClients(service.port) as slow:
        time.sleep(1.2)
        started = time.monotonic()
        with pytest.raises(requests.Timeout):
            requests.get(service.url + "/healthz", timeout=5)
        waited = time.monotonic() - started
        open_meanwhile = slow.still_open()
    print(f"\n300 slow clients on gunicorn ({open_meanwhile} still open): /healthz "
          f"unanswered after {waited:.1f}s")
    assert open_meanwhile >= 295
    # And it recovers once they are gone.
    deadline = time.monotonic() + 15
    while True:
        try:
            if requests.get(service.url + "/healthz", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "gunicorn did not recover"
