"""Small numbers every gunicorn worker (and, with Redis, every machine) must
agree on: which Cloudflare account is used up or backing off, and how much
each has used today.

A state is a set of named records, each a few numeric fields that live
`ttl` seconds after the record's last write. Three homes, one contract:
the embedded SQLite file (the default: every worker on this machine),
Redis (REDIS_URL, or a redis:// RATE_LIMIT_STORAGE_URI: every machine), and
memory (one process: tests, and the fallback while the shared one is down).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from .sqlite_db import SQLiteDatabase

KEY_PREFIX = "flux-worker:"  # Redis keys, so a shared Redis can tell ours apart
MAX_VALUE = 1e12  # larger than any time (unix seconds) or count we write


class StateUnavailable(Exception):
    """The shared state could not be read or written (Redis down, disk full)."""


class SharedState(Protocol):
    def read(self, names: Sequence[str]) -> dict[str, dict[str, float]]:
        """Every live record among `names` (missing or expired ones are left out)."""
        ...

    def write(self, name: str, fields: Mapping[str, float], ttl: float) -> None:
        """Set these fields (the record's others stay) and renew the record's life."""
        ...

    def add(self, name: str, amounts: Mapping[str, float], ttl: float) -> dict[str, float]:
        """Add to these fields at once, atomically, and renew the record's life;
        return the fields' new values."""
        ...

    def close(self) -> None: ...


class MemoryState:
    """Records in this process only."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._records: dict[str, tuple[dict[str, float], float]] = {}
        self._lock = threading.Lock()

    def read(self, names: Sequence[str]) -> dict[str, dict[str, float]]:
        now = self._clock()
        with self._lock:
            return {name: dict(self._records[name][0]) for name in names
                    if name in self._records and self._records[name][1] > now}

    def write(self, name: str, fields: Mapping[str, float], ttl: float) -> None:
        self._change(name, fields, ttl, add=False)

    def add(self, name: str, amounts: Mapping[str, float], ttl: float) -> dict[str, float]:
        return self._change(name, amounts, ttl, add=True)

    def _change(self, name: str, values: Mapping[str, float], ttl: float, *, add: bool
                ) -> dict[str, float]:
        now = self._clock()
        with self._lock:
            record, expires_at = self._records.get(name, ({}, 0.0))
            if expires_at <= now:
                record = {}
            for field, value in values.items():
                record[field] = record.get(field, 0.0) + value if add else value
            self._records[name] = (record, now + ttl)
            for stale in [n for n, (_, until) in self._records.items() if until <= now]:
                del self._records[stale]
            return {field: record[field] for field in values}

    def close(self) -> None:
        pass


class SQLiteState:
    """Records in a table of the embedded SQLite file, shared by every worker process."""

    def __init__(self, path: str, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._db = SQLiteDatabase(path, (
            "CREATE TABLE IF NOT EXISTS shared_state (name TEXT NOT NULL, field TEXT NOT NULL,"
            " value REAL NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (name, field))",))

    def read(self, names: Sequence[str]) -> dict[str, dict[str, float]]:
        if not names:
            return {}
        marks = ",".join("?" * len(names))
        try:
            with self._db.connection() as db:
                rows = db.execute(f"SELECT name, field, value FROM shared_state WHERE name IN "
                                  f"({marks}) AND expires_at > ?", (*names, self._clock()))
                found: dict[str, dict[str, float]] = {}
                for name, field, value in rows:
                    number = _number(value)
                    if number is not None:
                        found.setdefault(name, {})[field] = number
                return found
        except Exception as exc:  # sqlite3.Error, OSError
            raise StateUnavailable(f"SQLite: {type(exc).__name__}") from None

    def write(self, name: str, fields: Mapping[str, float], ttl: float) -> None:
        self._change(name, fields, ttl, "excluded.value")

    def add(self, name: str, amounts: Mapping[str, float], ttl: float) -> dict[str, float]:
        # An expired row starts again from nothing rather than adding to it.
        return self._change(name, amounts, ttl, "CASE WHEN shared_state.expires_at > :now "
                                                 "THEN shared_state.value + excluded.value "
                                                 "ELSE excluded.value END")

    def _change(self, name: str, values: Mapping[str, float], ttl: float, update: str
                ) -> dict[str, float]:
        now = self._clock()
        rows = [{"name": name, "field": field, "value": float(value), "until": now + ttl,
                 "now": now} for field, value in values.items()]
        try:
            with self._db.connection() as db:
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.executemany(
                        "INSERT INTO shared_state (name, field, value, expires_at) VALUES "
                        "(:name, :field, :value, :until) ON CONFLICT (name, field) DO UPDATE "
                        f"SET value = {update}, expires_at = excluded.expires_at", rows)
                    db.execute("UPDATE shared_state SET expires_at = ? WHERE name = ? AND "
                               "expires_at > ?", (now + ttl, name, now))
                    db.execute("DELETE FROM shared_state WHERE expires_at <= ?", (now,))
                    marks = ",".join("?" * len(values))
                    rows_now = db.execute(
                        f"SELECT field, value FROM shared_state WHERE name = ? AND field IN "
                        f"({marks})", (name, *values)).fetchall()
                    db.execute("COMMIT")
                    return {field: value for field, value in rows_now}
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        except Exception as exc:  # sqlite3.Error, OSError
            raise StateUnavailable(f"SQLite: {type(exc).__name__}") from None

    def close(self) -> None:
        self._db.close()


class RedisState:
    """Records as Redis hashes, shared by every process and machine using the server."""

    def __init__(self, url: str, timeout: float = 2.0):
        import redis  # only needed when Redis is configured

        self._errors = (redis.RedisError, OSError)
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout,
                                           socket_connect_timeout=timeout,
                                           health_check_interval=30)

    def read(self, names: Sequence[str]) -> dict[str, dict[str, float]]:
        try:
            pipe = self._redis.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(KEY_PREFIX + name)
            records = pipe.execute()
        except self._errors as exc:
            raise StateUnavailable(f"Redis: {type(exc).__name__}") from None
        found: dict[str, dict[str, float]] = {}
        for name, record in zip(names, records, strict=True):
            for field, value in record.items():
                number = _number(value)
                if number is not None:
                    found.setdefault(name, {})[_text(field)] = number
        return found

    def write(self, name: str, fields: Mapping[str, float], ttl: float) -> None:
        self._run(name, ttl, lambda pipe, key: pipe.hset(key, mapping=dict(fields)))

    def add(self, name: str, amounts: Mapping[str, float], ttl: float) -> dict[str, float]:
        def increments(pipe, key: str) -> None:
            for field, amount in amounts.items():
                pipe.hincrbyfloat(key, field, amount)

        results = self._run(name, ttl, increments)
        return {field: _number(value) or 0.0 for field, value in zip(amounts, results,
                                                                      strict=False)}

    def _run(self, name: str, ttl: float, change: Callable) -> list:
        key = KEY_PREFIX + name
        try:
            pipe = self._redis.pipeline(transaction=True)
            change(pipe, key)
            pipe.expire(key, max(1, round(ttl)))
            return pipe.execute()
        except self._errors as exc:
            raise StateUnavailable(f"Redis: {type(exc).__name__}") from None

    def close(self) -> None:
        self._redis.close()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _number(value: object) -> float | None:
    """A field as a plausible number; anything else someone wrote is ignored."""
    if not isinstance(value, (int, float, str, bytes)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (ValueError, UnicodeDecodeError):
        return None
    return number if math.isfinite(number) and abs(number) < MAX_VALUE else None
