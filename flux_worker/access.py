"""What a request's access line says beyond method, path and status: its
model, stream flag, kind and the images it made.

No web framework here: the generation threads count images into the record
of the request that started them (they run in a copy of its context).
"""

from __future__ import annotations

import contextvars
import threading
from dataclasses import dataclass, field


@dataclass
class RequestRecord:
    """What a request's access line says beyond method, path and status: the
    views fill it in, and a run's workers count the images they store."""

    model: str = "-"
    stream: bool | None = None
    kind: str = "-"  # picture, images, title, tags, follow_ups, …
    images: int = 0
    key: str | None = None  # the caller's API key, hashed (key_usage.key_id)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_image(self) -> None:
        with self._lock:  # an n>1 run's workers store images at the same time
            self.images += 1

    def summary(self) -> str:
        stream = "-" if self.stream is None else str(self.stream).lower()
        return f"model={self.model} stream={stream} kind={self.kind} images={self.images}"


# The current request's record (set per request by logs.init_request_ids).
request_record_var: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "request_record", default=None)


def current_record() -> RequestRecord:
    """The current request's record (a throwaway one outside a request)."""
    return request_record_var.get() or RequestRecord()


def describe_request(*, model: str | None = None, stream: bool | None = None,
                     kind: str | None = None) -> None:
    """Say what the current request is, for its access line."""
    record = current_record()
    if model is not None:
        record.model = model
    if stream is not None:
        record.stream = stream
    if kind is not None:
        record.kind = kind


def count_image() -> None:
    """Count an image made for the current request (on a run's thread)."""
    current_record().count_image()
