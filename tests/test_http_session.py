"""Unit tests for flux_worker.http_session: the Session factory and
`Upstream.call`: one deadline for the whole call (body included), retries only
where a repeat cannot cost twice, and one translation of transport faults.
`responses` stands in for the network where status codes matter; a loopback
socket and the fake Cloudflare where the socket's behaviour does."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

import fake_cloudflare as cf
from flux_worker import http_session
from flux_worker.errors import Resend, UpstreamError, UpstreamTimeout
from flux_worker.http_session import Answer, RetryPolicy, Upstream
from flux_worker.version import __version__

URL = "https://upstream.test/run"


def accept(answer: Answer) -> Answer:
    return answer


def refuse_unless_200(answer: Answer) -> Answer:
    """A check as the clients write them: the status decides what may be sent again."""
    if answer.status == 200:
        return answer
    resend = {503: Resend.ALWAYS, 429: Resend.ALWAYS}.get(answer.status, Resend.IF_IDEMPOTENT)
    raise UpstreamError(f"HTTP {answer.status}", resend=resend)


def upstream(session, timeout: float = 2.0, retries: int = 3) -> Upstream:
    return Upstream("Svc", session, timeout=timeout, connect_timeout=1.0,
                    retry=RetryPolicy(retries=retries, backoff=0))


class TestMakeSession:
    """Pooled adapters on both schemes, no retries of its own, our User-Agent."""

    def test_adapters_pool_and_user_agent(self):
        s = http_session.make_session(7)
        assert s.headers["User-Agent"] == f"flux-worker/{__version__}"
        for scheme in ("http://", "https://"):
            adapter = s.get_adapter(scheme + "x.test")
            assert adapter._pool_maxsize == 7
            assert adapter.max_retries.total == 0  # Upstream.call decides


class TestResend:
    """What is sent again: never a POST that may have run; always what cannot have."""

    @pytest.mark.parametrize("status, idempotent, calls", [
        (503, False, 2), (429, False, 2), (502, False, 1), (500, False, 1),
        (503, True, 2), (502, True, 2), (500, True, 2),
    ])
    def test_by_status(self, rsps, session, status, idempotent, calls):
        rsps.post(URL, status=status)
        if calls == 1:
            with pytest.raises(UpstreamError):
                upstream(session).call("POST", URL, refuse_unless_200, idempotent=idempotent)
        else:
            rsps.post(URL, status=200)
            answer = upstream(session).call("POST", URL, refuse_unless_200,
                                            idempotent=idempotent)
            assert answer.status == 200
        assert len(rsps.calls) == calls

    def test_at_most_the_policys_retries(self, rsps, session):
        rsps.post(URL, status=503)
        with pytest.raises(UpstreamError):
            upstream(session, retries=2).call("POST", URL, refuse_unless_200, idempotent=False)
        assert len(rsps.calls) == 3

    def test_retry_after_is_waited_for(self, rsps, session):
        rsps.post(URL, status=429)
        rsps.post(URL, status=200)

        def ask_to_wait(answer: Answer) -> Answer:
            if answer.status == 429:
                raise UpstreamError("busy", resend=Resend.ALWAYS, retry_after=1)
            return answer

        started = time.monotonic()
        upstream(session).call("POST", URL, ask_to_wait, idempotent=False)
        assert time.monotonic() - started >= 1.0

    def test_a_wait_past_the_deadline_is_not_made(self, rsps, session):
        rsps.post(URL, status=429)

        def ask_to_wait(answer: Answer) -> Answer:
            raise UpstreamError("busy", resend=Resend.ALWAYS, retry_after=60)

        with pytest.raises(UpstreamError) as excinfo:
            upstream(session, timeout=2.0).call("POST", URL, ask_to_wait, idempotent=False)
        assert excinfo.value.retry_after == 60 and len(rsps.calls) == 1

    @pytest.mark.parametrize("exc", [requests.ConnectionError, requests.exceptions.SSLError,
                                     requests.exceptions.ChunkedEncodingError])
    def test_transport_errors_become_upstream_error_without_url(self, rsps, session, exc):
        rsps.post(URL, body=exc(f"HTTPSConnectionPool: Max retries exceeded with url: {URL}"))
        with pytest.raises(UpstreamError) as excinfo:
            upstream(session).call("POST", URL, accept, idempotent=False)
        assert type(excinfo.value) is UpstreamError
        assert excinfo.value.status == 502 and excinfo.value.retryable
        assert "upstream.test" not in excinfo.value.message
        assert len(rsps.calls) == 1  # it may have been sent: not again

    def test_non_request_errors_are_not_swallowed(self, rsps, session):
        rsps.post(URL, body=RuntimeError("bug"))
        with pytest.raises(RuntimeError):
            upstream(session).call("POST", URL, accept, idempotent=False)

    def test_passes_method_and_kwargs(self, rsps, session):
        rsps.put(URL, status=201, body=b"done")
        answer = upstream(session).call("PUT", URL, accept, idempotent=True, data=b"raw",
                                        params={"a": "1"}, headers={"X-T": "y"})
        request = rsps.calls[0].request
        assert (answer.status, answer.body) == (201, b"done")
        assert (request.method, request.url, request.body) == ("PUT", URL + "?a=1", b"raw")
        assert request.headers["X-T"] == "y"


class _Loopback:
    """A 127.0.0.1 listener that counts connections; each one is either held
    open without an answer or closed without an answer."""

    def __init__(self, mode: str):
        self.mode, self.accepted, self._held = mode, 0, []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/run"

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.recv(65536)
            if self.mode == "silent":
                self._held.append(conn)
            else:
                conn.close()

    def close(self):
        self._stop.set()
        self._thread.join(2)
        for conn in self._held:
            conn.close()
        self._sock.close()


@pytest.fixture
def loopback(request):
    server = _Loopback(request.param)
    yield server
    server.close()


class TestOnLoopback:
    """Faults only a real socket shows (no network: 127.0.0.1)."""

    @pytest.mark.parametrize("loopback", ["silent"], indirect=True)
    def test_no_answer_is_upstream_timeout_and_not_repeated(self, session, loopback):
        with pytest.raises(UpstreamTimeout):
            upstream(session, timeout=0.3).call("PUT", loopback.url, accept, idempotent=True)
        assert loopback.accepted == 1

    @pytest.mark.parametrize("loopback", ["drop"], indirect=True)
    def test_a_post_dropped_after_sending_is_not_sent_again(self, session, loopback):
        with pytest.raises(UpstreamError) as excinfo:
            upstream(session).call("POST", loopback.url, accept, idempotent=False, json={})
        assert type(excinfo.value) is UpstreamError
        assert loopback.accepted == 1

    @pytest.mark.parametrize("loopback", ["drop"], indirect=True)
    def test_an_idempotent_call_dropped_after_sending_is_sent_again(self, session, loopback):
        with pytest.raises(UpstreamError):
            upstream(session).call("PUT", loopback.url, accept, idempotent=True, data=b"v")
        assert loopback.accepted == 4

    def test_a_refused_connection_is_tried_again_even_for_a_post(self, session, monkeypatch):
        with socket.socket() as probe:  # a port nobody listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        attempts = []
        real = session.request
        monkeypatch.setattr(session, "request", lambda *a, **k: attempts.append(1) or real(*a, **k))
        with pytest.raises(UpstreamError, match="could not be reached"):
            upstream(session).call("POST", f"http://127.0.0.1:{port}/run", accept,
                                   idempotent=False)
        assert len(attempts) == 4


class TestDeadline:
    """UPSTREAM_TIMEOUT_SECONDS bounds the whole call, body included."""

    def kv_url(self, fake) -> str:
        return (f"{fake.api_base}/accounts/{cf.ACCOUNT_ID}/storage/kv/namespaces/"
                f"{cf.NAMESPACE_ID}/values/k")

    def put_value(self, fake, session) -> None:
        upstream(session).call("PUT", self.kv_url(fake), accept, idempotent=True,
                               data=b"x" * 200, headers={"Authorization": f"Bearer {cf.API_TOKEN}"})

    def test_a_trickling_body_ends_at_the_deadline(self, fake, session):
        self.put_value(fake, session)
        fake.inject("kv_get", cf.trickle(bytes_per_second=20, total_seconds=30))
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout) as excinfo:
            upstream(session, timeout=0.5).call(
                "GET", self.kv_url(fake), accept, idempotent=True,
                headers={"Authorization": f"Bearer {cf.API_TOKEN}"})
        # 200 bytes at 20 a second would take 10 s; each read alone is quick.
        assert time.monotonic() - started < 5
        assert excinfo.value.status == 504 and len(fake.calls_to("kv_get")) == 1

    @pytest.mark.parametrize("method, route", [("GET", "kv_get"), ("POST", "ai")])
    def test_trickling_headers_end_at_the_deadline(self, fake, session, method, route):
        fake.inject(route, cf.trickle_headers(seconds_per_line=0.1, total_seconds=30))
        url = (self.kv_url(fake) if route == "kv_get"
               else f"{fake.api_base}/accounts/{cf.ACCOUNT_ID}/ai/run/@cf/x")
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            upstream(session, timeout=0.5).call(
                method, url, accept, idempotent=True, json={},
                headers={"Authorization": f"Bearer {cf.API_TOKEN}"})
        # A header line every 0.1 s resets every socket timeout; 30 s of them would come.
        assert time.monotonic() - started < 5
        assert len(fake.calls_to(route)) == 1

    def test_a_stall_after_the_headers_is_a_timeout_not_a_broken_answer(self, fake, session):
        self.put_value(fake, session)
        fake.inject("kv_get", cf.stall_after_headers(seconds=30))
        with pytest.raises(UpstreamTimeout) as excinfo:
            upstream(session, timeout=0.5).call(
                "GET", self.kv_url(fake), accept, idempotent=True,
                headers={"Authorization": f"Bearer {cf.API_TOKEN}"})
        assert excinfo.value.status == 504

    def test_an_answer_over_the_size_bound_is_refused(self, fake, session, monkeypatch):
        monkeypatch.setattr(http_session, "MAX_ANSWER_BYTES", 100)
        self.put_value(fake, session)
        with pytest.raises(UpstreamError, match="larger than"):
            upstream(session).call("GET", self.kv_url(fake), accept, idempotent=True,
                                   headers={"Authorization": f"Bearer {cf.API_TOKEN}"})

    def test_the_whole_body_arrives_within_the_deadline(self, fake, session):
        self.put_value(fake, session)
        answer = upstream(session).call("GET", self.kv_url(fake), accept, idempotent=True,
                                        headers={"Authorization": f"Bearer {cf.API_TOKEN}"})
        assert answer.status == 200 and answer.body == b"x" * 200


class TestEnvironmentReadOnce:
    """Proxy and CA settings are read when the session is made, not per call."""

    def test_proxy_for_the_base_url_and_no_proxy(self, monkeypatch):
        monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
        monkeypatch.setenv("NO_PROXY", "internal.example")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/custom.pem")
        s = http_session.make_session(2, base_url="https://api.cloudflare.com/client/v4")
        assert s.trust_env is False
        assert s.proxies["https"] == "http://proxy.example:3128"
        assert s.verify == "/etc/ssl/custom.pem"
        bypassed = http_session.make_session(2, base_url="https://internal.example/v1")
        assert "https" not in bypassed.proxies

    def test_environment_changes_after_start_are_not_read(self, monkeypatch):
        s = http_session.make_session(2, base_url="https://api.cloudflare.com/client/v4")
        monkeypatch.setenv("HTTPS_PROXY", "http://late.example:3128")
        assert s.merge_environment_settings("https://api.cloudflare.com/x", {}, None, None,
                                            None)["proxies"].get("https") is None
