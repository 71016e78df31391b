"""What choosing an account costs per image: the account pool's reads and
writes of the shared state (three records per account read before each
call, one usage record added after), with 1, 4 and 10 accounts, on memory,
the embedded SQLite file and a real Redis (Debian's redis-server).

Workers AI itself is replaced by a client that answers at once, so the
figures are the pool's own overhead, per image, in one thread and with 16
threads at once.

Run: .venv/bin/python bench/account_state.py [--images 2000]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flux_worker.account_pool import AccountPool, Member  # noqa: E402
from flux_worker.accounts import CloudflareAccount  # noqa: E402
from flux_worker.http_session import Answer  # noqa: E402
from flux_worker.models import REGISTRY  # noqa: E402
from flux_worker.shared_state import MemoryState, RedisState, SQLiteState  # noqa: E402

MODEL = REGISTRY["@cf/black-forest-labs/flux-1-schnell"]
ANSWER = Answer(200, {"Content-Type": "application/json"}, b"{}")


class InstantClient:
    """Stands in for WorkersAIClient: every call succeeds at once."""

    def generate(self, *args, **kwargs) -> Answer:
        return ANSWER

    def close(self) -> None:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(pool: AccountPool, images: int, threads: int) -> tuple[float, float]:
    """(median µs per image in one thread, µs per image of wall time with `threads`)."""
    samples = []
    for _ in range(images):
        started = time.perf_counter()
        pool.draw(MODEL, {}, {}, estimate=172.8, cacheable=False)
        samples.append((time.perf_counter() - started) * 1e6)
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as executor:
        list(executor.map(lambda _: pool.draw(MODEL, {}, {}, estimate=172.8, cacheable=False),
                          range(images)))
    return statistics.median(samples), (time.perf_counter() - started) * 1e6 / images


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="account-state-"))
    redis = None
    if shutil.which("redis-server"):
        port = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                                  "--appendonly", "no", "--dir", str(workdir)],
                                 stdout=subprocess.DEVNULL)
        time.sleep(0.5)
    print(f"{'state':8} {'accounts':>8} {'1 thread, µs/image':>20} {'16 threads, µs/image':>21}")
    try:
        for kind in ("memory", "sqlite", "redis"):
            if kind == "redis" and redis is None:
                print("redis    (redis-server not installed: skipped)")
                continue
            for count in (1, 4, 10):
                if kind == "memory":
                    state = MemoryState()
                elif kind == "sqlite":
                    state = SQLiteState(str(workdir / f"state-{count}.sqlite3"))
                else:
                    state = RedisState(f"redis://127.0.0.1:{port}/{count}")
                members = [Member(CloudflareAccount(f"account-{i}", f"token-{i}"),
                                  InstantClient())  # type: ignore[arg-type]
                           for i in range(count)]
                pool = AccountPool(members, state, daily_neurons=0)
                one, many = measure(pool, args.images, 16)
                print(f"{kind:8} {count:8d} {one:20.0f} {many:21.0f}")
                pool.close()
    finally:
        if redis is not None:
            redis.terminate()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
