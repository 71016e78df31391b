"""One SQLite file shared by every gunicorn worker process, and the pool of
connections a process lends its threads."""

from __future__ import annotations

import os
import queue
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

IDLE_CONNECTIONS = 8  # connections kept open for the next request


class SQLiteDatabase:
    """Connections to one SQLite file in WAL mode, so readers and a writer work
    at once across processes.

    Connections are pooled and lent to one thread at a time: one per thread
    would hold three file descriptors for each of hundreds of threads. At most
    IDLE_CONNECTIONS stay open after a burst.

    :raises sqlite3.Error, OSError: when the file cannot be created or opened.
    """

    def __init__(self, path: str, schema: tuple[str, ...] = ()):
        self.path = path
        self._idle: queue.Queue[sqlite3.Connection] = queue.Queue(maxsize=IDLE_CONNECTIONS)
        self._pid = os.getpid()
        self._inherited: queue.Queue[sqlite3.Connection] | None = None
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        db = self._connect()
        try:
            db.execute("PRAGMA journal_mode=WAL")
            for statement in schema:
                db.execute(statement)
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                             check_same_thread=False)
        db.execute("PRAGMA busy_timeout=30000")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """Lend a connection (autocommit) to this thread for a moment."""
        if os.getpid() != self._pid:
            # A forked worker (gunicorn preloads the app) must not use the
            # parent's connections: SQLite forbids carrying one across fork.
            # They are kept, never closed here, so the parent's stay sound.
            self._inherited, self._idle = self._idle, queue.Queue(maxsize=IDLE_CONNECTIONS)
            self._pid = os.getpid()
        try:
            db = self._idle.get_nowait()
        except queue.Empty:
            db = self._connect()
        try:
            yield db
        finally:
            try:
                self._idle.put_nowait(db)
            except queue.Full:
                db.close()

    @contextmanager
    def fresh_connection(self) -> Iterator[sqlite3.Connection]:
        """A connection of its own, closed after: the file as it is now."""
        if not os.path.exists(self.path):  # sqlite3 would make a new, empty one
            raise sqlite3.OperationalError("the database file is gone")
        db = self._connect()
        try:
            yield db
        finally:
            db.close()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
