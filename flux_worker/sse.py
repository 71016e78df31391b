"""Server-sent events: framing, and the generator that drains a worker's queue."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator

KEEPALIVE = ": keep-alive\n\n"
DONE = "data: [DONE]\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MIMETYPE = "text/event-stream"
_END = object()


def event(payload: dict) -> str:
    """Frame one JSON payload as a `data:` event (chat streams: no `event:`
    names, which some chat clients choke on)."""
    return "data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n\n"


def named_event(payload: dict) -> str:
    """Frame a typed payload as OpenAI's image and Responses streams do: an
    `event:` line naming its `type`, then its `data:` line (never one alone)."""
    return f"event: {payload['type']}\n" + event(payload)


class EventChannel:
    """Carries framed events from a worker thread to the response generator."""

    def __init__(self):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()

    def send(self, frame: str) -> None:
        self._queue.put(frame)

    def close(self) -> None:
        self._queue.put(_END)

    def frames(self, keepalive_seconds: float) -> Iterator[str]:
        """Yield frames until closed, and a keep-alive comment whenever none came in time.

        If the client hangs up, the WSGI server closes this generator; the
        worker keeps going (its image is paid for) and nothing waits on it.
        """
        while True:
            try:
                frame = self._queue.get(timeout=keepalive_seconds)
            except queue.Empty:
                yield KEEPALIVE
                continue
            if frame is _END:
                return
            yield frame
