"""Unit tests for flux_worker.http_session: the Session factory, the retry
policy, and `call`'s translation of transport faults. `responses` replays
status-code retries through the adapter's urllib3 Retry; the faults urllib3
retries itself (dropped connections, read timeouts) are checked on the Retry
object and against a loopback socket."""

from __future__ import annotations

import socket
import threading

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPResponse
from urllib3.exceptions import (ConnectTimeoutError, MaxRetryError, NewConnectionError,
                                ProtocolError, ReadTimeoutError)

from flux_worker import __version__, http_session
from flux_worker.errors import UpstreamError, UpstreamTimeout

URL = "https://upstream.test/run"


def call(session, method="POST", url=URL, **kwargs):
    return http_session.call(session, method, url, service="Svc", timeout=(1.0, 2.0), **kwargs)


class TestMakeSession:
    """Pooled adapters on both schemes, our retry policy and our User-Agent."""

    def test_adapters_user_agent_and_pool(self):
        retry = http_session.make_retry(backoff=0)
        s = http_session.make_session(7, retry)
        assert s.headers["User-Agent"] == f"flux-worker/{__version__}"
        for scheme in ("http://", "https://"):
            adapter = s.get_adapter(scheme + "example.test")
            assert isinstance(adapter, HTTPAdapter)
            assert adapter.max_retries is retry
            assert adapter._pool_maxsize == 7

    def test_default_retry_is_the_upstream_policy(self):
        adapter = http_session.make_session().get_adapter(URL)
        assert isinstance(adapter.max_retries, http_session.UpstreamRetry)
        assert adapter.max_retries.total == 3

    def test_user_agent_is_sent(self, rsps, session):
        rsps.get(URL)
        call(session, "GET")
        assert rsps.calls[0].request.headers["User-Agent"].startswith("flux-worker/")


class TestMakeRetry:
    """The Retry configuration: what, how often, how long."""

    def test_configuration(self):
        retry = http_session.make_retry()
        assert set(retry.status_forcelist) == {429, 502, 503, 504}
        assert {"GET", "PUT", "POST", "DELETE"} <= set(retry.allowed_methods)
        assert retry.total == retry.status == retry.connect == retry.read == 3
        assert retry.redirect == 0
        assert retry.respect_retry_after_header is True
        assert retry.raise_on_status is False
        assert (retry.backoff_factor, retry.backoff_jitter, retry.backoff_max) == (0.5, 0.25, 8.0)

    def test_arguments(self):
        retry = http_session.make_retry(retries=1, backoff=0, max_wait=2.0)
        assert (retry.total, retry.status, retry.backoff_factor, retry.backoff_jitter) == (1, 1, 0, 0)
        assert retry.retry_after_max == 2

    @pytest.mark.parametrize("status", [429, 502, 503, 504])
    @pytest.mark.parametrize("method", ["POST", "PUT", "GET"])
    def test_is_retry(self, method, status):
        assert http_session.make_retry().is_retry(method, status)

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 500])
    def test_is_not_retry(self, status):
        assert not http_session.make_retry().is_retry("POST", status)

    @pytest.mark.parametrize("header, slept", [("3", 3), ("100", 8)])
    def test_retry_after_is_honoured_and_capped(self, monkeypatch, header, slept):
        naps = []
        monkeypatch.setattr("urllib3.util.retry.time.sleep", naps.append)
        response = HTTPResponse(status=429, headers={"Retry-After": header})
        http_session.make_retry(backoff=0).sleep(response)
        assert naps == [slept]


class TestUpstreamRetry:
    """A read timeout is never repeated; a dropped connection is."""

    def test_read_timeout_is_not_retried(self):
        error = ReadTimeoutError(None, URL, "Read timed out.")
        with pytest.raises(ReadTimeoutError) as excinfo:
            http_session.make_retry().increment("POST", URL, error=error)
        assert excinfo.value is error

    @pytest.mark.parametrize("error", [
        ProtocolError("Connection aborted.", ConnectionResetError()),
        ConnectTimeoutError(None, "connect timed out"),
        NewConnectionError(None, "Connection refused"),
    ], ids=["dropped", "connect-timeout", "refused"])
    def test_connection_faults_are_retried_three_times(self, error):
        retry = http_session.make_retry()
        for remaining in (2, 1, 0):
            retry = retry.increment("POST", URL, error=error)
            assert isinstance(retry, http_session.UpstreamRetry)
            assert retry.total == remaining
        with pytest.raises(MaxRetryError):
            retry.increment("POST", URL, error=error)


class TestStatusRetries:
    """Status retries replayed by `responses` through the adapter's Retry."""

    @pytest.mark.parametrize("status", [429, 502, 503, 504])
    @pytest.mark.parametrize("method", ["POST", "PUT", "GET"])
    def test_transient_status_then_success(self, rsps, session, method, status):
        rsps.add(method, URL, status=status)
        rsps.add(method, URL, status=200, body="ok")
        response = call(session, method)
        assert (response.status_code, response.text) == (200, "ok")
        assert len(rsps.calls) == 2

    @pytest.mark.parametrize("status", [429, 502, 503, 504])
    def test_gives_up_after_three_retries_with_last_response(self, rsps, session, status):
        for attempt in range(1, 5):
            rsps.post(URL, status=status, body=f"attempt {attempt}")
        never = rsps.post(URL, status=200)
        rsps.assert_all_requests_are_fired = False
        response = call(session)
        assert (response.status_code, response.text) == (status, "attempt 4")
        assert len(rsps.calls) == 4
        assert never.call_count == 0

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 500])
    def test_other_statuses_are_not_retried(self, rsps, session, status):
        rsps.post(URL, status=status)
        assert call(session).status_code == status
        assert len(rsps.calls) == 1

    def test_retry_count_follows_make_retry(self, rsps):
        rsps.post(URL, status=503)
        s = http_session.make_session(2, http_session.make_retry(retries=1, backoff=0))
        assert call(s).status_code == 503
        assert len(rsps.calls) == 2

    def test_429_with_retry_after_is_retried(self, rsps, session):
        rsps.post(URL, status=429, headers={"Retry-After": "0"})
        rsps.post(URL, status=200)
        assert call(session).status_code == 200
        assert len(rsps.calls) == 2


class TestCall:
    """`call` passes the request through and turns transport faults into ours."""

    def test_passes_method_timeout_and_kwargs(self, rsps, session):
        rsps.put(URL, status=201)
        response = call(session, "PUT", data=b"raw", params={"a": "1"}, headers={"X-T": "y"})
        request = rsps.calls[0].request
        assert response.status_code == 201
        assert (request.method, request.url, request.body) == ("PUT", URL + "?a=1", b"raw")
        assert request.headers["X-T"] == "y"
        assert request.req_kwargs["timeout"] == (1.0, 2.0)

    @pytest.mark.parametrize("exc", [requests.ReadTimeout, requests.ConnectTimeout,
                                     requests.Timeout])
    def test_timeouts_become_upstream_timeout(self, rsps, session, exc):
        rsps.post(URL, body=exc("timed out"))
        with pytest.raises(UpstreamTimeout) as excinfo:
            call(session)
        assert excinfo.value.status == 504
        assert excinfo.value.message == "Svc did not answer in time."
        assert isinstance(excinfo.value.__cause__, exc)

    @pytest.mark.parametrize("exc", [requests.ConnectionError, requests.exceptions.SSLError,
                                     requests.exceptions.ChunkedEncodingError,
                                     requests.exceptions.RetryError])
    def test_transport_errors_become_upstream_error_without_url(self, rsps, session, exc):
        rsps.post(URL, body=exc(f"HTTPSConnectionPool: Max retries exceeded with url: {URL}"))
        with pytest.raises(UpstreamError) as excinfo:
            call(session)
        assert type(excinfo.value) is UpstreamError
        assert excinfo.value.status == 502 and excinfo.value.retryable
        assert "upstream.test" not in excinfo.value.message

    def test_non_request_errors_are_not_swallowed(self, rsps, session):
        rsps.post(URL, body=RuntimeError("bug"))
        with pytest.raises(RuntimeError):
            call(session)


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


class TestTransportRetriesOnLoopback:
    """The faults urllib3 retries itself, against a local socket (no network)."""

    @pytest.mark.parametrize("loopback", ["silent"], indirect=True)
    def test_read_timeout_is_upstream_timeout_and_not_retried(self, session, loopback):
        with pytest.raises(UpstreamTimeout):
            http_session.call(session, "POST", loopback.url, service="Svc", timeout=(1.0, 0.3),
                              json={})
        assert loopback.accepted == 1

    @pytest.mark.parametrize("loopback", ["drop"], indirect=True)
    def test_dropped_connection_is_retried_then_upstream_error(self, session, loopback):
        with pytest.raises(UpstreamError) as excinfo:
            http_session.call(session, "POST", loopback.url, service="Svc", timeout=(1.0, 2.0),
                              json={})
        assert type(excinfo.value) is UpstreamError
        assert loopback.accepted == 4


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
