"""The image stores: the same contract for the embedded SQLite store and for
Workers KV (through the fake Cloudflare), and the write-through store."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time

import pytest

import fake_cloudflare as cf
from flux_worker.http_session import RetryPolicy, Upstream, make_session
from flux_worker.kv import KVClient
from flux_worker.sqlite_db import IDLE_CONNECTIONS
from flux_worker.store import KVImageStore, SQLiteImageStore, WriteThroughStore

JPEG = b"\xff\xd8\xff\xe0" + b"jpeg body"
PNG = b"\x89PNG\r\n\x1a\n" + b"png body"


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def kv_client(fake) -> KVClient:
    upstream = Upstream("Workers KV", make_session(4), timeout=5.0, retry=RetryPolicy(backoff=0))
    return KVClient(upstream, api_base=fake.api_base, account_id=cf.ACCOUNT_ID,
                    namespace_id=cf.NAMESPACE_ID, api_token=cf.API_TOKEN)


@pytest.fixture(params=["sqlite", "kv"])
def store(request, tmp_path, fake):
    if request.param == "sqlite":
        return SQLiteImageStore(str(tmp_path / "deep" / "dir" / "images.sqlite3"))
    return KVImageStore(kv_client(fake))


class TestContract:
    def test_round_trip_with_the_type_of_the_bytes(self, store):
        store.put("key-jpeg", JPEG, 600)
        store.put("key-png", PNG, 600)
        assert store.get("key-jpeg").data == JPEG
        assert store.get("key-jpeg").content_type == "image/jpeg"
        assert store.get("key-png").content_type == "image/png"

    def test_missing_key_is_none(self, store):
        assert store.get("never-written") is None

    def test_overwrite_keeps_the_last_value(self, store):
        store.put("k", JPEG, 600)
        store.put("k", PNG, 600)
        assert store.get("k").data == PNG


class TestSQLite:
    def test_expired_images_are_gone_and_purged(self, tmp_path):
        clock = Clock()
        store = SQLiteImageStore(str(tmp_path / "i.sqlite3"), clock=clock)
        store.put("old", JPEG, 10)
        clock.now += 11
        assert store.get("old") is None
        store.put("new", PNG, 10)  # writing purges what has expired
        with sqlite3.connect(tmp_path / "i.sqlite3") as db:
            assert [row[0] for row in db.execute("SELECT key FROM images")] == ["new"]

    def test_survives_a_restart(self, tmp_path):
        SQLiteImageStore(str(tmp_path / "i.sqlite3")).put("k", JPEG, 600)
        assert SQLiteImageStore(str(tmp_path / "i.sqlite3")).get("k").data == JPEG

    def test_shared_by_processes(self, tmp_path):
        path = str(tmp_path / "i.sqlite3")
        SQLiteImageStore(path)
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            pool.starmap(_write, [(path, f"k{i}") for i in range(40)])
        store = SQLiteImageStore(path)
        assert all(store.get(f"k{i}").data == JPEG for i in range(40))


def _write(path: str, key: str) -> None:
    SQLiteImageStore(path).put(key, JPEG, 600)


class TestKV:
    def test_ttl_is_never_below_kvs_minimum(self, fake):
        KVImageStore(kv_client(fake)).put("short", JPEG, 5)
        assert fake.kv_ttl("short") == 60
        assert fake.kv_value("short") == JPEG

    def test_keys_are_url_quoted(self, fake):
        client = kv_client(fake)
        client.put("a/b?c", PNG, 120)
        assert fake.kv_value("a/b?c") == PNG
        assert client.get("a/b?c").data == PNG

    def test_expiry_comes_from_kv(self, fake):
        store = KVImageStore(kv_client(fake))
        store.put("k", JPEG, 600)
        assert abs(store.get("k").expires_at - (time.time() + 600)) < 5


class TestWriteThroughStore:
    """The embedded store here first, KV for other machines; KV is eventually consistent."""

    def make(self, fake, tmp_path, name: str = "f.sqlite3") -> WriteThroughStore:
        return WriteThroughStore(SQLiteImageStore(str(tmp_path / name)),
                                 KVImageStore(kv_client(fake)))

    def test_every_image_goes_to_both(self, fake, tmp_path):
        self.make(fake, tmp_path).put("k", JPEG, 600)
        assert fake.kv_value("k") == JPEG
        assert SQLiteImageStore(str(tmp_path / "f.sqlite3")).get("k").data == JPEG

    def test_another_process_here_serves_it_while_kv_does_not_show_it(self, fake, tmp_path):
        fake.kv_visibility_delay = 60
        self.make(fake, tmp_path).put("k", JPEG, 600)
        other_process = self.make(fake, tmp_path)
        assert other_process.get("k").data == JPEG
        assert fake.calls_to("kv_get") == []  # found here: KV is not asked

    def test_another_machine_reads_kv_and_keeps_a_copy_until_it_expires(self, fake, tmp_path):
        self.make(fake, tmp_path).put("k", PNG, 600)
        other_machine = self.make(fake, tmp_path, "other.sqlite3")
        found = other_machine.get("k")
        assert found.data == PNG and abs(found.expires_at - (time.time() + 600)) < 5
        assert other_machine.get("k").data == PNG
        assert len(fake.calls_to("kv_get")) == 1
        kept = SQLiteImageStore(str(tmp_path / "other.sqlite3")).get("k")
        assert abs(kept.expires_at - found.expires_at) < 1

    def test_kv_write_failure_still_leaves_the_image_here(self, fake, tmp_path):
        fake.inject("kv_put", *[cf.status(500)] * 4)
        self.make(fake, tmp_path).put("k", JPEG, 600)
        assert fake.kv_value("k") is None
        assert SQLiteImageStore(str(tmp_path / "f.sqlite3")).get("k").data == JPEG

    def test_a_refused_namespace_is_not_retried_and_the_image_stays(self, fake, tmp_path):
        fake.inject("kv_put", cf.status(404, [(10013, "namespace not found")]))
        store = self.make(fake, tmp_path)
        store.put("k", JPEG, 600)
        assert len(fake.calls_to("kv_put")) == 1  # not retried: it cannot help
        assert SQLiteImageStore(str(tmp_path / "f.sqlite3")).get("k").data == JPEG


class TestSQLitePool:
    def test_connections_are_pooled_not_one_per_thread(self, tmp_path):
        store = SQLiteImageStore(str(tmp_path / "i.sqlite3"))
        store.put("k", JPEG, 600)

        def read_once():
            assert store.get("k").data == JPEG

        for _ in range(20):  # one thread after another: each borrows the same connection
            thread = threading.Thread(target=read_once)
            thread.start()
            thread.join()
        assert store._db._idle.qsize() == 1

    def test_the_pool_shrinks_after_a_burst(self, tmp_path):
        store = SQLiteImageStore(str(tmp_path / "i.sqlite3"))
        store.put("k", JPEG, 600)
        barrier = threading.Barrier(IDLE_CONNECTIONS * 3)

        def read_together():
            with store._db.connection() as db:  # every thread holds a connection at once
                barrier.wait(timeout=10)
                db.execute("SELECT 1")

        threads = [threading.Thread(target=read_together) for _ in range(IDLE_CONNECTIONS * 3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert store._db._idle.qsize() == IDLE_CONNECTIONS
        store.close()
        assert store._db._idle.qsize() == 0


def test_a_forked_process_opens_its_own_sqlite_connections(tmp_path):
    """gunicorn preloads the app: a connection opened in the master must not
    be used by the workers (SQLite forbids carrying one across fork)."""
    store = SQLiteImageStore(str(tmp_path / "i.sqlite3"))
    store.put("k", JPEG, 600)  # leaves one idle connection in this process
    parent = store._db._idle.queue[0]
    reader, writer = multiprocessing.Pipe(duplex=False)

    def child() -> None:
        with store._db.connection() as db:
            writer.send(db is not parent and store.get("k").data == JPEG)

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(timeout=30)
    assert reader.recv() is True
    assert store._db._idle.queue[0] is parent  # the parent's own is untouched
