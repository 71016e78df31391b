"""The state every worker shares: one contract for memory, the embedded
SQLite file and a real Redis; atomic across processes; and an account pool
that goes on when the shared state is down."""

from __future__ import annotations

import logging
import multiprocessing
import time

import pytest

import fake_cloudflare as cf
from conftest import AUTH
from flux_worker.accounts import CloudflareAccount
from flux_worker.shared_state import MemoryState, RedisState, SQLiteState, StateUnavailable
from harness import free_port


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite", "redis"])
def state(request, tmp_path):
    if request.param == "memory":
        made = MemoryState()
    elif request.param == "sqlite":
        made = SQLiteState(str(tmp_path / "state.sqlite3"))
    else:
        made = RedisState(request.getfixturevalue("redis_url"))
    yield made
    made.close()


class TestContract:
    def test_write_sets_fields_and_keeps_the_others(self, state):
        state.write("a", {"x": 1.0, "y": 2.0}, 60)
        state.write("a", {"y": 3.5}, 60)
        assert state.read(["a", "missing"]) == {"a": {"x": 1.0, "y": 3.5}}

    def test_add_counts_up_from_nothing(self, state):
        state.add("usage", {"images": 1, "neurons": 172.8}, 60)
        state.add("usage", {"images": 1, "neurons": 104.2}, 60)
        record = state.read(["usage"])["usage"]
        assert record["images"] == 2 and record["neurons"] == pytest.approx(277.0)

    def test_reading_nothing_is_nothing(self, state):
        assert state.read([]) == {} and state.read(["never"]) == {}

    def test_a_record_expires_ttl_after_its_last_write(self, state):
        state.write("short", {"x": 1.0}, 1)
        state.add("long", {"x": 1.0}, 60)
        deadline = time.monotonic() + 5
        while "short" in state.read(["short"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert state.read(["short", "long"]) == {"long": {"x": 1.0}}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_an_expired_record_starts_again_from_nothing(kind, tmp_path):
    clock = Clock()
    state = (MemoryState(clock) if kind == "memory"
             else SQLiteState(str(tmp_path / "s.sqlite3"), clock))
    state.add("usage", {"images": 5}, 10)
    state.write("marks", {"until": 1.0}, 10)
    clock.now += 11
    assert state.read(["usage", "marks"]) == {}
    state.add("usage", {"images": 1}, 10)
    assert state.read(["usage"]) == {"usage": {"images": 1.0}}


def _add_many(kind: str, where: str, times: int) -> None:
    state = SQLiteState(where) if kind == "sqlite" else RedisState(where)
    for _ in range(times):
        state.add("shared", {"images": 1, "neurons": 0.5}, 600)
    state.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_processes_add_without_losing_a_count(kind, tmp_path, request):
    where = (str(tmp_path / "s.sqlite3") if kind == "sqlite"
             else request.getfixturevalue("redis_url"))
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_add_many, args=(kind, where, 50)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    state = SQLiteState(where) if kind == "sqlite" else RedisState(where)
    assert state.read(["shared"]) == {"shared": {"images": 200.0, "neurons": 100.0}}


def test_redis_down_is_state_unavailable_not_a_crash():
    state = RedisState(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    with pytest.raises(StateUnavailable, match="Redis"):
        state.read(["a"])
    with pytest.raises(StateUnavailable):
        state.add("a", {"x": 1}, 60)


def test_the_pool_goes_on_with_what_it_knows_while_redis_is_down(fake, make_app, caplog):
    """A dead Redis costs sharing, not images: this process remembers the
    used-up account itself and warns once a minute at most."""
    second = CloudflareAccount("second-account", "second-token")
    fake.add_account(second.id, second.token)
    fake.accounts[cf.ACCOUNT_ID].exhaust_after = 0
    client = make_app(cf_accounts=(second,),
                      redis_url=f"redis://127.0.0.1:{free_port()}/0").test_client()
    with caplog.at_level(logging.WARNING, logger="flux_worker"):
        for _ in range(4):
            response = client.post("/v1/images/generations", headers=AUTH,
                                   json={"prompt": "a lighthouse", "response_format": "url"})
            assert response.status_code == 200, response.get_data(as_text=True)
    assert [c.account for c in fake.calls_to("ai")].count(cf.ACCOUNT_ID) == 1
    warnings = [r for r in caplog.records if "shared account state is unavailable" in
                r.getMessage()]
    assert len(warnings) == 1
