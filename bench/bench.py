"""Capacity benchmark: the service under gunicorn (as the Procfile starts it)
against the project's fake Cloudflare with a fixed upstream latency L.

Reports, as figures and as ratios to L and to the bare upstream calls (one
Workers AI call + one KV write made directly):
- added latency per request at concurrency 1 (median, p99);
- burst throughput and efficiency (L / wall) at concurrency 16, 64, 128,
  non-stream and stream;
- time to first content delta for streams (p50, p95);
- peak RSS of the gunicorn processes with ~1 MiB images.

Run: .venv/bin/python bench/bench.py [--latency 2] [--image-bytes 1048576]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import fake_cloudflare  # noqa: E402
from harness import API_KEY, Gunicorn, gunicorn_env  # noqa: E402

AUTH = {"Authorization": f"Bearer {API_KEY}"}
SUBJECT = "A lighthouse on a cliff at dusk"
PROMPT = {"messages": [{"role": "user", "content": SUBJECT}]}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def bare_upstream(api_base: str, session: requests.Session) -> float:
    """One Workers AI call and one KV write, as the service makes them."""
    started = time.perf_counter()
    account = f"{api_base}/accounts/{fake_cloudflare.ACCOUNT_ID}"
    headers = {"Authorization": f"Bearer {fake_cloudflare.API_TOKEN}"}
    answer = session.post(f"{account}/ai/run/@cf/black-forest-labs/flux-1-schnell",
                          json={"prompt": SUBJECT, "steps": 4},
                          headers=headers, timeout=60)
    data = base64.b64decode(answer.json()["result"]["image"])
    session.put(f"{account}/storage/kv/namespaces/{fake_cloudflare.NAMESPACE_ID}/values/bench-"
                f"{threading.get_ident()}", params={"expiration_ttl": 60}, data=data,
                headers=headers, timeout=60).raise_for_status()
    return time.perf_counter() - started


def chat(url: str, stream: bool) -> dict:
    """One chat request; returns wall time, time to first content, status."""
    started = time.perf_counter()
    first_content = None
    with requests.post(url + "/v1/chat/completions", headers=AUTH, stream=stream, timeout=120,
                       json={**PROMPT, "stream": stream}) as response:
        if stream:
            for line in response.iter_lines():
                if first_content is None and line.startswith(b"data: {") \
                        and b'"content":"' in line and b'"content":""' not in line:
                    first_content = time.perf_counter() - started
        else:
            _ = response.content  # read the whole body, as a client would
        ok = response.status_code == 200 and (not stream or first_content is not None)
    return {"wall": time.perf_counter() - started, "ttfc": first_content, "ok": ok,
            "status": response.status_code}


def burst(url: str, concurrency: int, stream: bool) -> dict:
    barrier = threading.Barrier(concurrency)

    def one(_):
        barrier.wait()
        return chat(url, stream)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(concurrency)))
    wall = time.perf_counter() - started
    return {"results": results, "wall": wall}


def gunicorn_pids(master_pid: int) -> list[int]:
    return [master_pid] + [int(p) for p in subprocess.run(
        ["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout.split()]


def cpu_seconds(master_pid: int) -> float:
    """User + system CPU time used so far by the gunicorn master and workers."""
    total = 0
    for pid in gunicorn_pids(master_pid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(master_pid: int) -> dict[str, float]:
    """VmHWM (peak resident set) of the gunicorn master and each worker."""
    pids = gunicorn_pids(master_pid)
    peaks = {}
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                name = "master" if pid == master_pid else f"worker {pid}"
                peaks[name] = int(line.split()[1]) / 1024
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=2.0, help="fake upstream latency L (s)")
    parser.add_argument("--image-bytes", type=int, default=1024 * 1024, help="size of each image")
    parser.add_argument("--samples", type=int, default=30, help="requests at concurrency 1")
    parser.add_argument("--concurrency", default="16,64,128")
    parser.add_argument("--ratio", default="",
                        help="aspect ratio at the end of the prompt, e.g. 16:9 (a crop per image)")
    args = parser.parse_args()
    if args.ratio:
        PROMPT["messages"][0]["content"] = f"{SUBJECT} {args.ratio}"
    latency = args.latency

    fake = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_server.py"),
                             "--latency", str(latency), "--image-padding", str(args.image_bytes)],
                            stdout=subprocess.PIPE, text=True)
    api_base = fake.stdout.readline().strip()
    tmp = Path(tempfile.mkdtemp(prefix="flux-bench-"))
    env = gunicorn_env(SimpleNamespace(api_base=api_base), tmp,
                       CF_KV_NAMESPACE_ID=fake_cloudflare.NAMESPACE_ID, SSE_KEEPALIVE_SECONDS="10",
                       UPSTREAM_TIMEOUT_SECONDS="120", LOG_LEVEL="warning")
    for name in ("WEB_CONCURRENCY", "GUNICORN_THREADS"):  # the shipped defaults, unless set
        env.pop(name, None)
        if name in os.environ:
            env[name] = os.environ[name]
    server = Gunicorn(env, tmp)
    report: dict = {"date": time.strftime("%Y-%m-%d"), "latency_s": latency,
                    "ratio": args.ratio or "1:1",
                    "image_bytes": args.image_bytes, "cpus": os.cpu_count()}
    try:
        session = requests.Session()
        bare_upstream(api_base, session)  # warm up
        bare = [bare_upstream(api_base, session) for _ in range(args.samples)]
        chat(server.url, False)
        single = [chat(server.url, False)["wall"] for _ in range(args.samples)]
        report["bare_upstream_ms"] = {"median": statistics.median(bare) * 1000,
                                      "p99": percentile(bare, 99) * 1000}
        report["service_c1_ms"] = {"median": statistics.median(single) * 1000,
                                   "p99": percentile(single, 99) * 1000}
        report["added_ms"] = {k: report["service_c1_ms"][k] - report["bare_upstream_ms"][k]
                              for k in ("median", "p99")}
        report["bursts"] = []
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            for stream in (False, True):
                cpu_before, client_before = cpu_seconds(server.process.pid), time.process_time()
                outcome = burst(server.url, concurrency, stream)
                cpu_used = cpu_seconds(server.process.pid) - cpu_before
                client_used = time.process_time() - client_before
                results = outcome["results"]
                ok = [r for r in results if r["ok"]]
                row = {"concurrency": concurrency, "stream": stream, "ok": len(ok),
                       "statuses": sorted({r["status"] for r in results}),
                       "wall_s": outcome["wall"], "efficiency": latency / outcome["wall"],
                       "throughput_rps": len(ok) / outcome["wall"],
                       "ideal_rps": concurrency / latency,
                       "service_cpu_ms_per_request": cpu_used * 1000 / concurrency,
                       "client_cpu_ms_per_request": client_used * 1000 / concurrency}
                if stream and ok:
                    ttfc = [r["ttfc"] * 1000 for r in ok]
                    row["ttfc_ms"] = {"p50": percentile(ttfc, 50), "p95": percentile(ttfc, 95)}
                report["bursts"].append(row)
                time.sleep(0.5)
        report["peak_rss_mb"] = peak_rss_mb(server.process.pid)
    finally:
        server.stop()
        fake.terminate()
    print(json.dumps(report, indent=2))
    print_markdown(report)


def print_markdown(report: dict) -> None:
    latency_ms = report["latency_s"] * 1000
    bare, service, added = report["bare_upstream_ms"], report["service_c1_ms"], report["added_ms"]
    print(f"\nL = {report['latency_s']} s, images {report['image_bytes']} bytes, "
          f"ratio {report['ratio']}, {report['cpus']} CPUs, {report['date']}\n")
    print("| concurrency 1 | median ms | p99 ms |\n|---|---|---|")
    print(f"| bare upstream (AI + KV) | {bare['median']:.1f} | {bare['p99']:.1f} |")
    print(f"| service | {service['median']:.1f} | {service['p99']:.1f} |")
    print(f"| added | {added['median']:.1f} ({added['median'] / latency_ms:.2%} of L) | "
          f"{added['p99']:.1f} ({added['p99'] / latency_ms:.2%} of L) |\n")
    print("| concurrency | mode | ok | wall s | efficiency L/wall | req/s (ideal) "
          "| first content p50 / p95 ms | CPU ms/request: service, load client |")
    print("|---|---|---|---|---|---|---|---|")
    for row in report["bursts"]:
        ttfc = row.get("ttfc_ms")
        ttfc_text = f"{ttfc['p50']:.0f} / {ttfc['p95']:.0f}" if ttfc else "—"
        print(f"| {row['concurrency']} | {'stream' if row['stream'] else 'non-stream'} | "
              f"{row['ok']}/{row['concurrency']} | {row['wall_s']:.2f} | {row['efficiency']:.2f} | "
              f"{row['throughput_rps']:.1f} ({row['ideal_rps']:.1f}) | {ttfc_text} | "
              f"{row['service_cpu_ms_per_request']:.1f}, {row['client_cpu_ms_per_request']:.1f} |")
    print("\n| process | peak RSS MB |\n|---|---|")
    for name, value in report["peak_rss_mb"].items():
        print(f"| {name} | {value:.1f} |")


if __name__ == "__main__":
    main()
