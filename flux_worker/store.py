"""Where generated images live until they expire: Workers KV or embedded SQLite."""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Protocol

from .errors import FluxWorkerError
from .imaging import sniff_content_type
from .kv import KVClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredImage:
    data: bytes
    content_type: str


class ImageStore(Protocol):
    def put(self, key: str, data: bytes, ttl: int) -> None: ...

    def get(self, key: str) -> StoredImage | None: ...


def _stored(data: bytes | None) -> StoredImage | None:
    if data is None:
        return None
    return StoredImage(data, sniff_content_type(data) or "application/octet-stream")


class SQLiteImageStore:
    """Images in one SQLite file, shared by every gunicorn worker process.

    WAL mode lets readers and a writer work at once across processes.
    Connections are pooled and lent to one thread at a time: one per thread
    would hold three file descriptors for each of hundreds of threads.
    """

    def __init__(self, path: str, clock=time.time):
        self._path = path
        self._clock = clock
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        db = self._connect()
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS images (key TEXT PRIMARY KEY, data BLOB NOT NULL,"
                       " expires_at REAL NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS images_expiry ON images (expires_at)")
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, timeout=30, isolation_level=None,
                             check_same_thread=False)
        db.execute("PRAGMA busy_timeout=30000")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        try:
            db = self._idle.get_nowait()
        except queue.Empty:
            db = self._connect()
        try:
            yield db
        finally:
            self._idle.put(db)

    def put(self, key: str, data: bytes, ttl: int) -> None:
        now = self._clock()
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO images (key, data, expires_at) VALUES (?, ?, ?)",
                       (key, data, now + ttl))
            db.execute("DELETE FROM images WHERE expires_at <= ?", (now,))

    def get(self, key: str) -> StoredImage | None:
        with self._db() as db:
            row = db.execute("SELECT data FROM images WHERE key = ? AND expires_at > ?",
                             (key, self._clock())).fetchone()
        return _stored(row[0]) if row else None


class KVImageStore:
    """Images in Workers KV; KV itself expires them."""

    def __init__(self, client: KVClient):
        self._client = client

    def put(self, key: str, data: bytes, ttl: int) -> None:
        self._client.put(key, data, ttl)

    def get(self, key: str) -> StoredImage | None:
        return _stored(self._client.get(key))


class MemoryCache:
    """A small LRU of recent images, bounded in bytes, with their expiry."""

    def __init__(self, max_bytes: int, clock=time.monotonic):
        self._max_bytes = max_bytes
        self._clock = clock
        self._items: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, ttl: int) -> None:
        if len(data) > self._max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old:
                self._bytes -= len(old[0])
            self._items[key] = (data, self._clock() + ttl)
            self._bytes += len(data)
            while self._bytes > self._max_bytes:
                _, (evicted, _) = self._items.popitem(last=False)
                self._bytes -= len(evicted)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[1] <= self._clock():
                del self._items[key]
                self._bytes -= len(item[0])
                return None
            self._items.move_to_end(key)
            return item[0]


class ResilientStore:
    """KV first, with a memory cache in front and the embedded store behind.

    - Images this process wrote are served from memory at once, even while
      KV (eventually consistent) does not show them yet.
    - When KV will not take a write after retries, the image goes to the
      embedded store, so the link in the reply still works: a paid-for image
      is never lost.
    """

    def __init__(self, primary: ImageStore, fallback: ImageStore, cache: MemoryCache):
        self._primary = primary
        self._fallback = fallback
        self._cache = cache

    def put(self, key: str, data: bytes, ttl: int) -> None:
        self._cache.put(key, data, ttl)
        try:
            self._primary.put(key, data, ttl)
        except FluxWorkerError as exc:
            log.warning("KV write failed (%s); keeping image %s in the embedded store",
                        exc.message, key)
            self._fallback.put(key, data, ttl)

    def get(self, key: str) -> StoredImage | None:
        cached = self._cache.get(key)
        if cached is not None:
            return _stored(cached)
        found = self._fallback.get(key)  # local and cheap: check it before the network
        if found is not None:
            return found
        return self._primary.get(key)
