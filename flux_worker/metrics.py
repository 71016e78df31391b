"""The service's Prometheus metrics: what is counted, free of Flask (the
slow path counts here; metrics_endpoint serves them).

Under gunicorn, gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at a fresh
directory before anything imports prometheus_client: each process writes its
values there, and /metrics adds them up (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Generations take seconds: buckets from 100 ms to 5 min.
SECONDS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)

REQUESTS = Counter("flux_worker_http_requests", "HTTP requests answered, by route and status",
                   ["route", "method", "status"])
PHASE_SECONDS = Histogram("flux_worker_generation_phase_seconds",
                          "Time per image in each phase: optimize, generate, decode, store",
                          ["model", "phase"], buckets=SECONDS)
IMAGES = Counter("flux_worker_images", "Images by model and outcome (made or failed)",
                 ["model", "outcome"])
UPSTREAM_ERRORS = Counter("flux_worker_upstream_errors",
                          "Cloudflare refusals and failures, by service and Cloudflare code "
                          "(or HTTP status)", ["service", "code"])
CAPACITY_REJECTIONS = Counter("flux_worker_capacity_rejections",
                              "Requests refused at MAX_CONCURRENT_GENERATIONS")
KV_FALLBACKS = Counter("flux_worker_kv_fallbacks",
                       "Images KV would not take (kept in the embedded store only), or the "
                       "embedded store would not take (KV only)", ["kind"])
IN_FLIGHT = Gauge("flux_worker_generations_in_flight", "Generation slots in use",
                  multiprocess_mode="livesum")
OPEN_STREAMS = Gauge("flux_worker_open_streams", "SSE responses being sent",
                     multiprocess_mode="livesum")
NEURONS = Counter("flux_worker_neurons", "Neurons spent (Cloudflare's figure or our "
                  "estimate), by model and account", ["model", "account"])
KEY_IMAGES = Counter("flux_worker_key_images", "Images made per API key (hashed)", ["key"])
KEY_NEURONS = Counter("flux_worker_key_neurons", "Neurons per API key (hashed)", ["key"])
