"""Request IDs and log lines that carry them: one line per record, no secrets.

Log text holds what clients and upstreams sent us (URL paths, prompts, error
messages), so every record is escaped to a single line (a newline in a path
cannot forge a second record) and passed through a process-wide `Redactor`.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterable
from typing import TextIO

from flask import Flask, g, request
from werkzeug.wrappers import Response

from .access import RequestRecord, current_record, request_record_var
from .redaction import Redactor

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
access_log = logging.getLogger("flux_worker.access")


# One per process: every app created in the process adds its secrets here.
redactor = Redactor()
handler: logging.Handler | None = None

# Whatever a terminal or log viewer could take as a line break or a control
# sequence: C0, DEL, C1, the Unicode line/paragraph separators, lone surrogates.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def one_line(text: str) -> str:
    """Escape control characters so that text can never span two log lines."""
    return _UNSAFE.sub(_escape_char, text)


class LineFormatter(logging.Formatter):
    """Format a record (traceback included) as one redacted, escaped line."""

    def __init__(self, redact: Redactor):
        super().__init__("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):  # made before our record factory was installed
            record.request_id = "-"
        try:
            text = super().format(record)
        except Exception as exc:  # the default error dump prints raw args over many lines
            request_id = getattr(record, "request_id", "-")
            text = (f"{self.formatTime(record)} {record.levelname} [{request_id}] "
                    f"{record.name}: unformattable log record ({type(exc).__name__}) "
                    f"msg={record.msg!r} args={record.args!r}")
        return one_line(self.redact(text))


class JsonFormatter(LineFormatter):
    """Format a record as one JSON object per line (LOG_FORMAT=json): the
    text line's fields, each redacted; non-ASCII escaped, so one line it stays."""

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = "-"
        try:
            message = record.getMessage()
        except Exception as exc:
            message = (f"unformattable log record ({type(exc).__name__}) msg={record.msg!r} "
                       f"args={record.args!r}")
        entry = {"time": self.formatTime(record), "level": record.levelname,
                 "request_id": getattr(record, "request_id", "-"), "logger": record.name,
                 "message": self.redact(message)}
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=True)


class StderrHandler(logging.StreamHandler):
    """Write to sys.stderr as it is now, not as it was at start-up (pytest swaps it)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stderr


def _stamp_request_ids() -> None:
    """Put the current request ID on every record when it is made.

    A record factory rather than a handler filter: other handlers on the root
    logger (pytest's caplog) may see a record before ours does.
    """
    make_record = logging.getLogRecordFactory()

    def record_with_request_id(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        record.request_id = request_id_var.get()
        return record

    logging.setLogRecordFactory(record_with_request_id)


def configure_logging(level: str | int = "info", secrets: Iterable[str] = (),
                      log_format: str = "text") -> None:
    """Log to stderr in our format, and redact `secrets` from every line.

    The first call installs one handler on the root logger (so third-party
    loggers such as urllib3 are formatted and redacted too), sets the root
    logger to WARNING and the "flux_worker" logger to `level`. Every call,
    including later ones from other apps in the same process, adds `secrets`
    to the one process-wide `redactor`.
    """
    global handler
    redactor.add(secrets)
    if handler is not None:
        return
    _stamp_request_ids()
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter(redactor) if log_format == "json"
                         else LineFormatter(redactor))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("flux_worker").setLevel(level.upper() if isinstance(level, str) else level)


def init_request_ids(app: Flask) -> None:
    """Accept or make an X-Request-ID, echo it, and log one line per request:
    method, path, status, duration (a stream's to its end), model, stream flag,
    kind, images made, client address; the request ID leads the line."""

    @app.before_request
    def start_request():
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _VALID_ID.match(given) else uuid.uuid4().hex
        g.started = time.monotonic()
        request_id_var.set(g.request_id)
        request_record_var.set(RequestRecord())

    @app.after_request
    def finish_request(response: Response) -> Response:
        request_id = g.get("request_id") or uuid.uuid4().hex
        response.headers["X-Request-ID"] = request_id
        # No request context when the response closes: capture everything now.
        started = g.get("started", time.monotonic())
        method, path, status, client = (request.method, request.path, response.status_code,
                                        request.remote_addr)
        record = current_record()  # a stream's run goes on counting into it

        def log_access() -> None:
            elapsed = (time.monotonic() - started) * 1000
            request_id_var.set(request_id)
            access_log.info("%s %s %s %.1fms %s client=%s", method, path, status, elapsed,
                            record.summary(), client)
            request_id_var.set("-")  # the request is over: later lines of this thread are not its

        if response.direct_passthrough:
            # send_file: the server closes the file itself, never response.close().
            log_access()
        else:
            # The server closes the response after the last byte of the body
            # (a stream included) is sent, or when the client hung up.
            response.call_on_close(log_access)
        return response
