"""Where generated images live until they expire: the embedded SQLite store on
this machine, and Workers KV for every machine when configured."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from . import metrics
from .errors import FluxWorkerError
from .imaging import sniff_content_type
from .kv import KVClient
from .sqlite_db import SQLiteDatabase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredImage:
    data: bytes
    content_type: str
    expires_at: float | None  # unix seconds; None when the store cannot tell


class ImageStore(Protocol):
    def put(self, key: str, data: bytes, ttl: int) -> None: ...

    def get(self, key: str) -> StoredImage | None: ...

    def close(self) -> None: ...


def _stored(data: bytes, expires_at: float | None) -> StoredImage:
    return StoredImage(data, sniff_content_type(data) or "application/octet-stream", expires_at)


class SQLiteImageStore:
    """Images in one SQLite file, shared by every gunicorn worker process.

    :raises sqlite3.Error, OSError: when the file cannot be created or opened.
    """

    def __init__(self, path: str, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._db = SQLiteDatabase(path, (
            "CREATE TABLE IF NOT EXISTS images (key TEXT PRIMARY KEY,"
            " data BLOB NOT NULL, expires_at REAL NOT NULL)",
            "CREATE INDEX IF NOT EXISTS images_expiry ON images (expires_at)"))

    def put(self, key: str, data: bytes, ttl: float) -> None:
        now = self._clock()
        with self._db.connection() as db:
            db.execute("INSERT OR REPLACE INTO images (key, data, expires_at) VALUES (?, ?, ?)",
                       (key, data, now + ttl))
            db.execute("DELETE FROM images WHERE expires_at <= ?", (now,))

    def put_until(self, key: str, data: bytes, expires_at: float) -> None:
        """Keep a copy of an image until the moment it expires elsewhere."""
        self.put(key, data, expires_at - self._clock())

    def get(self, key: str) -> StoredImage | None:
        with self._db.connection() as db:
            row = db.execute("SELECT data, expires_at FROM images WHERE key = ? AND expires_at > ?",
                             (key, self._clock())).fetchone()
        return _stored(row[0], row[1]) if row else None

    def check_writable(self) -> None:
        """Prove the file takes a write now, on a fresh connection (a pooled
        one may outlive its file): a write in a transaction rolled back.

        :raises sqlite3.Error, OSError: when it does not.
        """
        with self._db.fresh_connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT OR REPLACE INTO images (key, data, expires_at) "
                           "VALUES ('readiness-probe', x'', 0)")
            finally:
                db.execute("ROLLBACK")

    def close(self) -> None:
        self._db.close()


class KVImageStore:
    """Images in Workers KV; KV itself expires them."""

    def __init__(self, client: KVClient):
        self._client = client

    def put(self, key: str, data: bytes, ttl: int) -> None:
        self._client.put(key, data, ttl)

    def get(self, key: str) -> StoredImage | None:
        value = self._client.get(key)
        if value is None:
            return None
        if sniff_content_type(value.data) is None:  # only our images go there
            log.warning("KV holds something that is not an image under %s; ignored", key)
            return None
        return _stored(value.data, value.expires_at)

    def close(self) -> None:
        self._client.close()


class WriteThroughStore:
    """The embedded store on this machine first, Workers KV for the others.

    - Every image is written to the embedded store too, so every worker
      process here serves a fresh link at once: KV is eventually consistent
      (a new key may stay invisible for 60 s, and an early miss is cached).
    - KV is asked only for keys not found here (written on another machine);
      what it returns is kept here until it expires.
    - When KV will not take a write after retries, the image is still here,
      so the link in the reply works: a paid-for image is never lost.
    """

    def __init__(self, local: SQLiteImageStore, remote: ImageStore):
        self._local = local
        self._remote = remote

    def put(self, key: str, data: bytes, ttl: int) -> None:
        """Keep the image in both; either one is enough for the link to work.

        :raises FluxWorkerError: only when neither took it.
        """
        try:
            self._local.put(key, data, ttl)
        except (sqlite3.Error, OSError) as exc:
            log.error("the embedded store refused image %s (%s); KV must keep it", key,
                      type(exc).__name__)
            metrics.KV_FALLBACKS.labels("kv_only").inc()
            self._remote.put(key, data, ttl)
            return
        try:
            self._remote.put(key, data, ttl)
        except FluxWorkerError as exc:
            log.warning("KV write failed (%s); image %s is kept in the embedded store only",
                        exc.message, key)
            metrics.KV_FALLBACKS.labels("embedded_only").inc()

    def get(self, key: str) -> StoredImage | None:
        found = self._local.get(key)
        if found is not None:
            return found
        found = self._remote.get(key)
        if found is not None and found.expires_at is not None:
            with contextlib.suppress(sqlite3.Error, OSError):  # a copy only saves a read
                self._local.put_until(key, found.data, found.expires_at)
        return found

    def close(self) -> None:
        self._local.close()
        self._remote.close()
