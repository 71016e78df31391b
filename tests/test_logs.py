"""Log lines: one line per record, no secrets, third-party loggers, access timing."""

from __future__ import annotations

import logging
import re
import time
from urllib.parse import quote

import pytest
from flask import Flask, Response

from flux_worker import logs

SECRET = "sk-live/abc+def=="  # percent-encoding changes it: sk-live%2Fabc%2Bdef%3D%3D
ACCOUNT_ID = "0123456789abcdef0123456789abcdef"
RECORD_START = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \[[^\]]*\] \S+: ")
log = logging.getLogger("flux_worker.test")


def records(err: str) -> list[str]:
    """The lines written, each checked to be the start of one of our records."""
    lines = err.splitlines()
    for line in lines:
        assert RECORD_START.match(line), f"not a record of its own: {line!r}"
    return lines


@pytest.fixture
def client(caplog):
    # Two calls, as two apps in one process make: both apps' secrets count.
    logs.configure_logging("info", secrets=[SECRET])
    logs.configure_logging("info", secrets=[ACCOUNT_ID])
    caplog.set_level(logging.INFO, logger="flux_worker")
    app = Flask(__name__)
    logs.init_request_ids(app)

    @app.get("/image/<key>")
    def image(key: str):
        return "no such image", 404

    @app.get("/stream")
    def stream():
        def body():
            yield "first "
            time.sleep(0.3)
            yield "last"
        return Response(body(), mimetype="text/event-stream")

    return app.test_client()


def test_newline_in_url_path_cannot_forge_a_line(client, capsys):
    capsys.readouterr()
    with client.get("/image/%0A2026-01-01%2000:00:00%20ERROR%20forged") as response:
        assert response.status_code == 404
    lines = records(capsys.readouterr().err)
    assert any("GET /image/\\n2026-01-01 00:00:00 ERROR forged 404 " in line for line in lines)
    assert not any(line.startswith("2026-01-01 00:00:00 ERROR forged") for line in lines)


def test_control_characters_in_args_are_escaped(client, capsys):
    capsys.readouterr()
    log.warning("prompt: %s", "a\r\nb\x1b[31mc\u2028d\te\x85f\x7f 猫 🐱 \udc80")
    [line] = records(capsys.readouterr().err)
    # The lone surrogate (which UTF-8 cannot encode) becomes U+FFFD.
    assert line.endswith("prompt: a\\r\\nb\\x1b[31mc\\u2028d\\te\\x85f\\x7f 猫 🐱 \ufffd")


def test_logged_exception_is_one_line(client, capsys):
    capsys.readouterr()
    try:
        raise ValueError("upstream said:\nFAKE LINE")
    except ValueError:
        log.exception("generation failed")
    [line] = records(capsys.readouterr().err)
    assert "generation failed\\nTraceback (most recent call last):\\n" in line
    assert line.endswith("ValueError: upstream said:\\nFAKE LINE")


def test_secrets_are_redacted_as_written_and_percent_encoded(client, capsys):
    capsys.readouterr()
    log.warning("token %s in url /v/%s for account %s", SECRET, quote(SECRET, safe=""),
                ACCOUNT_ID)
    [line] = records(capsys.readouterr().err)
    assert SECRET not in line and quote(SECRET, safe="") not in line and ACCOUNT_ID not in line
    assert line.count("[redacted]") == 3


def test_third_party_loggers_use_our_handler_once(client, capsys):
    capsys.readouterr()
    logging.getLogger("urllib3.connectionpool").warning(
        "Retrying (%s) after connection broken by '%s': %s", "Retry(total=2)",
        "ProtocolError('Connection aborted.')",
        f"/client/v4/accounts/{ACCOUNT_ID}/ai/run/@cf/black-forest-labs/flux-1-schnell")
    log.info("ours, once")
    lines = records(capsys.readouterr().err)
    assert len(lines) == 2  # flux_worker records are not printed twice
    assert re.search(r" WARNING \[\S+\] urllib3.connectionpool: Retrying \(Retry", lines[0])
    assert "/client/v4/accounts/[redacted]/ai/run/" in lines[0] and ACCOUNT_ID not in lines[0]
    assert lines[1].endswith("] flux_worker.test: ours, once")


def test_access_line_times_a_stream_to_its_end(client, capsys, caplog):
    capsys.readouterr()
    response = client.get("/stream", headers={"X-Request-ID": "stream-1"})
    assert response.headers["X-Request-ID"] == "stream-1"
    assert "GET /stream" not in capsys.readouterr().err  # headers sent, body not yet
    assert response.get_data(as_text=True) == "first last"
    response.close()  # what the WSGI server does after the last byte
    [line] = records(capsys.readouterr().err)
    match = re.search(r"INFO \[stream-1\] flux_worker.access: GET /stream 200 ([\d.]+)ms "
                      r"model=- stream=- kind=- images=0 client=", line)
    assert match and float(match.group(1)) >= 300
    [record] = [r for r in caplog.records if r.name == "flux_worker.access"]
    assert record.request_id == "stream-1"
