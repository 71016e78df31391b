"""Image links from other sites (issue 13): not fetched unless allowed, and
then never from loopback, private, link-local or metadata addresses, checked
after DNS and on every redirect, without a request leaving to them; bytes and
time capped. A real HTTP server on 127.0.0.1 counts what reaches it."""

from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import urllib3.util.connection
from PIL import Image

from conftest import AUTH
from flux_worker.errors import InvalidRequest
from flux_worker.remote_images import RemoteImages

NOT_PUBLIC = "private, local or reserved address"


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (0, 0, 255)).save(out, "PNG")
    return out.getvalue()


class _Site(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", "http://" + self.path[len("/redirect/"):])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/slow.png":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(100):
                time.sleep(0.05)
                try:
                    self.wfile.write(b"\0" * 1000)
                except OSError:
                    return
        else:
            body = {"/cat.png": png(), "/big.png": png() + b"\0" * 3_000_000}.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "image/png")
            if self.path != "/big.png":  # a streamed answer that never says its length
                self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")


@pytest.fixture
def site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    server.hits = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def connections(monkeypatch):
    """Every address a connection was opened to (the IP filter runs before this)."""
    opened = []
    real = urllib3.util.connection.create_connection

    def recording(address, *args, **kwargs):
        opened.append(address[0])
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", recording)
    return opened


def refused(fetcher: RemoteImages, url: str) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as raised:
        fetcher.fetch(url, "messages[0].content[1].image_url")
    assert raised.value.param == "messages[0].content[1].image_url"
    return raised.value


class TestNotAllowed:
    def test_nothing_is_fetched_unless_the_operator_allows_it(self, site, connections):
        error = refused(RemoteImages(False), f"http://127.0.0.1:{site.server_port}/cat.png")
        assert error.code == "invalid_image_url" and "ALLOW_REMOTE_IMAGES" in error.message
        assert site.hits == [] and connections == []

    @pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]",
                                      "2130706433", "127.1"])
    def test_loopback_by_any_name_is_refused_unasked(self, site, connections, host):
        error = refused(RemoteImages(True), f"http://{host}:{site.server_port}/cat.png")
        assert error.code == "invalid_image_url" and NOT_PUBLIC in error.message
        assert site.hits == [] and connections == []

    @pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/",
                                     "http://10.0.0.1/a.png", "http://192.168.1.1/a.png",
                                     "http://[fe80::1]/a.png", "http://100.64.0.1/a.png",
                                     "http://0.0.0.0/a.png"])
    def test_private_link_local_and_metadata_addresses_are_refused(self, connections, url):
        assert NOT_PUBLIC in refused(RemoteImages(True), url).message
        assert connections == []

    @pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.png",
                                     "gopher://x/"])
    def test_other_schemes_are_refused(self, connections, url):
        assert refused(RemoteImages(True), url).code == "invalid_image_url"
        assert connections == []


class TestAllowed:
    """A first hop on loopback (allowed for these tests only) stands in for a public site."""

    def fetcher(self, **options) -> RemoteImages:
        return RemoteImages(True, allow_loopback=True, **options)

    def test_a_public_image_is_fetched(self, site):
        assert self.fetcher().fetch(f"http://127.0.0.1:{site.server_port}/cat.png", "p") == png()

    @pytest.mark.parametrize("target", ["10.0.0.1:9/a.png", "169.254.169.254/latest/",
                                        "192.168.0.10/a.png"])
    def test_a_redirect_to_a_private_address_is_refused_before_connecting(
            self, site, connections, target):
        error = refused(self.fetcher(),
                        f"http://127.0.0.1:{site.server_port}/redirect/{target}")
        assert error.code == "invalid_image_url" and NOT_PUBLIC in error.message
        assert connections == ["127.0.0.1"]  # the first hop only
        assert site.hits == [f"/redirect/{target}"]

    def test_too_many_redirects_stop(self, site):
        port = site.server_port
        url = f"http://127.0.0.1:{port}/redirect/127.0.0.1:{port}/redirect/127.0.0.1:{port}" \
              f"/redirect/127.0.0.1:{port}/redirect/127.0.0.1:{port}/cat.png"
        assert "redirected more than" in refused(self.fetcher(), url).message

    def test_size_is_capped_while_streaming(self, site):
        error = refused(self.fetcher(max_bytes=1_000_000),
                        f"http://127.0.0.1:{site.server_port}/big.png")
        assert error.code == "image_too_large"

    def test_time_is_capped(self, site):
        started = time.monotonic()
        error = refused(self.fetcher(max_seconds=1.0),
                        f"http://127.0.0.1:{site.server_port}/slow.png")
        assert "took too long" in error.message
        assert time.monotonic() - started < 4

    def test_an_error_answer_is_a_400(self, site):
        error = refused(self.fetcher(), f"http://127.0.0.1:{site.server_port}/missing.png")
        assert "HTTP 404" in error.message


class TestThroughTheService:
    def test_chat_with_a_loopback_link_sends_nothing_there(self, make_app, site, fake,
                                                           connections):
        client = make_app(allow_remote_images=True).test_client()
        url = f"http://localhost:{site.server_port}/cat.png"
        response = client.post("/v1/chat/completions", headers=AUTH, json={"messages": [
            {"role": "user", "content": [{"type": "text", "text": "make it blue"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]})
        assert response.status_code == 400
        assert response.json["error"]["code"] == "invalid_image_url"
        assert NOT_PUBLIC in response.json["error"]["message"]
        assert site.hits == [] and fake.calls_to("ai") == []

    def test_an_edit_with_a_metadata_link_is_refused(self, make_app, fake, connections):
        client = make_app(allow_remote_images=True).test_client()
        response = client.post("/v1/images/edits", headers=AUTH, json={
            "prompt": "x", "images": [{"image_url": "http://169.254.169.254/latest/"}]})
        assert response.status_code == 400
        assert response.json["error"]["param"] == "images[0]"
        assert connections == [] and fake.calls_to("ai") == []
