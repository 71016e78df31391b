"""Request IDs and structured log lines that carry them."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
import uuid

from flask import Flask, g, request

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
access_log = logging.getLogger("flux_worker.access")


class RequestIdFilter(logging.Filter):
    """Stamp every record with the request ID of the code that logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(level: int = logging.INFO) -> None:
    """Send our logs to stderr with request IDs, once per process."""
    logger = logging.getLogger("flux_worker")
    if any(isinstance(f, RequestIdFilter) for h in logger.handlers for f in h.filters):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)


def init_request_ids(app: Flask) -> None:
    """Accept or make an X-Request-ID, echo it, and log one line per request."""

    @app.before_request
    def start_request():
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _VALID_ID.match(given) else uuid.uuid4().hex
        g.started = time.monotonic()
        request_id_var.set(g.request_id)

    @app.after_request
    def finish_request(response):
        request_id = g.get("request_id") or uuid.uuid4().hex
        response.headers["X-Request-ID"] = request_id
        elapsed = (time.monotonic() - g.get("started", time.monotonic())) * 1000
        access_log.info("%s %s %s %.1fms", request.method, request.path, response.status_code,
                        elapsed)
        return response
