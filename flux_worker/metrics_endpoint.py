"""/metrics: the counts of every worker process, for Prometheus.

It answers `Authorization: Bearer <METRICS_TOKEN>` when that is set;
otherwise only a request made straight to this port from this machine (no
proxy on the way), so it is never public by accident.
"""

from __future__ import annotations

import hmac
import ipaddress
import os

from flask import Flask, Response, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from .errors import FluxWorkerError
from .metrics import OPEN_STREAMS, REQUESTS

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def init_metrics(app: Flask, token: str) -> None:
    """Count every response, keep the open-stream gauge, and serve /metrics."""

    @app.after_request
    def count(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        # A method label per made-up method would grow the metrics for ever.
        method = request.method if request.method in KNOWN_METHODS else "other"
        REQUESTS.labels(rule, method, str(response.status_code)).inc()
        if response.mimetype == "text/event-stream":
            OPEN_STREAMS.inc()
            response.call_on_close(OPEN_STREAMS.dec)
        return response

    @app.get("/metrics")
    def metrics():
        if not _allowed(token):
            raise MetricsRefused("/metrics answers the METRICS_TOKEN bearer, or a request "
                                 "made on this machine straight to the service's port.")
        return Response(generate_latest(_registry()), mimetype=CONTENT_TYPE_LATEST)


class MetricsRefused(FluxWorkerError):
    status = 403
    type = "invalid_request_error"
    code = "metrics_refused"


def _allowed(token: str) -> bool:
    if token:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
    # Before ProxyFix: the peer that really connected, and no proxy on the way.
    original = request.environ.get("werkzeug.proxy_fix.orig", {})
    peer = original.get("REMOTE_ADDR", request.environ.get("REMOTE_ADDR", ""))
    if "X-Forwarded-For" in request.headers or "Forwarded" in request.headers:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    # With BIND=:: an IPv4 peer arrives as ::ffff:127.0.0.1.
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _registry() -> CollectorRegistry:
    if os.environ.get(MULTIPROC_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY
