"""gunicorn settings for flux-worker (read by `gunicorn app:app`).

The work is I/O-bound: each request mostly waits on Workers AI, and each
open stream holds one thread for its whole life. So: the threaded worker
(gthread; the sync worker would kill a stream longer than `timeout`), one
process per core, and many threads per process.
"""

import os
import shutil
import sys
import tempfile

# Metrics from every worker process add up (prometheus_client's multiprocess
# mode): each process writes its values under this directory, which must be
# set before anything imports prometheus_client and must start empty.
# A reload (SIGHUP) runs this file again in the same master: the directory
# its workers still write is then left as it is.
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
_own_metrics_dir = os.environ.get("FLUX_WORKER_OWN_METRICS_DIR") == _metrics_dir != ""
if not os.environ.get("FLUX_WORKER_METRICS_READY"):
    _own_metrics_dir = not _metrics_dir
    try:
        if _own_metrics_dir:
            _metrics_dir = tempfile.mkdtemp(prefix="flux-worker-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir
            os.environ["FLUX_WORKER_OWN_METRICS_DIR"] = _metrics_dir
        else:
            os.makedirs(_metrics_dir, exist_ok=True)
            for _name in os.listdir(_metrics_dir):  # values a previous run left
                if _name.endswith(".db"):
                    os.remove(os.path.join(_metrics_dir, _name))
    except OSError as _exc:
        sys.stderr.write(f"flux-worker: configuration error: PROMETHEUS_MULTIPROC_DIR "
                         f"{_metrics_dir!r} cannot be used: {_exc.strerror}\n")
        raise SystemExit(1) from None
    os.environ["FLUX_WORKER_METRICS_READY"] = "1"

# gunicorn puts its working directory on sys.path; this file's own directory
# makes flux_worker importable however the file is run (tests use runpy).
_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)

from flux_worker.settings import (  # noqa: E402
    ConfigError,
    ServerSettings,
    exit_with_config_error,
    load_dotenv_file,
)

# .env first, as the app does (real environment variables win), so PORT and
# WEB_CONCURRENCY written there reach gunicorn too. A bad value stops here with
# one line naming the variable (SystemExit passes through gunicorn untouched).
load_dotenv_file()
try:
    _server = ServerSettings.from_env(os.environ)
except ConfigError as exc:
    exit_with_config_error(exc)

bind = _server.address
worker_class = "gthread"
workers = _server.workers
threads = _server.threads
# gthread workers heartbeat while requests run, so this only catches a
# truly stuck worker; it never cuts a long stream.
timeout = _server.timeout
graceful_timeout = 30
keepalive = 75  # longer than typical proxy idle timeouts (nginx 60 s)
# Load the app once in the master: a bad setting stops start-up with one clear
# message instead of every worker failing to boot.
preload_app = True
accesslog = None  # the app logs one line per request, with its request ID
errorlog = "-"
loglevel = _server.log_level
if os.environ.get("LOG_FORMAT", "").strip().lower() == "json":
    # gunicorn's own lines (start, workers, timeouts) as JSON too, redacted
    # by the same process-wide redactor as the app's.
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": "WARNING", "handlers": []},
        "formatters": {"json": {"()": "flux_worker.logs.JsonFormatter",
                                "redact": "ext://flux_worker.logs.redactor"}},
        "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json",
                              "stream": "ext://sys.stderr"}},
        "loggers": {"gunicorn.error": {"level": loglevel.upper(), "handlers": ["json"],
                                       "propagate": False},
                    "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False}},
    }


def _return_freed_image_buffers_to_the_os() -> None:
    """Give large buffers (image bodies, base64 text) their own memory maps.

    glibc otherwise raises its mmap threshold after the first large free and
    serves later megabyte buffers from per-thread heaps that rarely shrink,
    so a burst of images leaves each worker's memory high for good. A fixed
    threshold also turns off that adjustment. Workers inherit it by fork.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


_return_freed_image_buffers_to_the_os()


def child_exit(server, worker) -> None:
    """A worker is gone: its live gauges (in flight, open streams) no longer count."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    if _own_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)


def worker_exit(server, worker) -> None:
    """Close the worker's pool, upstream sessions and SQLite connections."""
    services = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("flux_worker")
    if services is not None:
        services.close()
