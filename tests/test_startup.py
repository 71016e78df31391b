"""Start-up: a bad setting stops the real gunicorn (the Procfile's command) with one
line naming the variable, and gunicorn.conf.py reads .env as the app does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness import ROOT, free_port, procfile_command

TIMEOUT = 20  # seconds; a start-up that hangs fails instead of blocking the suite

# Variables the service reads; dropped from the inherited environment so the
# developer's own settings cannot change what a test sees.
SERVICE_VARIABLES = (
    "API_KEY", "CF_ACCOUNT_ID", "CF_API_TOKEN", "CF_API_BASE", "CF_KV_NAMESPACE_ID",
    "IMAGE_STORE_PATH", "IMAGE_EXPIRATION", "IMAGE_CACHE_BYTES", "FLUX_MODEL", "IMAGE_MODELS",
    "FLUX_NUM_STEPS", "PROMPT_OPTIMIZATION", "CF_IS_TRANSLATE", "EXTERNAL_API_BASE",
    "EXTERNAL_MODEL", "EXTERNAL_API_KEY", "SYSTEM_MESSAGE", "OPTIMIZER_TIMEOUT_SECONDS",
    "PUBLIC_BASE_URL", "RESPONSE_LANGUAGE", "UPSTREAM_TIMEOUT_SECONDS", "RETRY_BACKOFF_SECONDS",
    "SSE_KEEPALIVE_SECONDS", "MAX_CONCURRENT_GENERATIONS", "RATE_LIMIT",
    "RATE_LIMIT_STORAGE_URI", "LOG_LEVEL", "PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS",
    "GUNICORN_TIMEOUT", "GUNICORN_CMD_ARGS",
)



def clean_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in SERVICE_VARIABLES}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def start(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the Procfile's command in ROOT; kill its whole group if it outlives TIMEOUT."""
    process = subprocess.Popen("exec " + procfile_command(), shell=True, cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"still running after {TIMEOUT} s instead of stopping:\n{stderr}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.parametrize("settings,named", [
    ({"WEB_CONCURRENCY": "abc"}, "WEB_CONCURRENCY"),
    ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY"),
    ({"GUNICORN_THREADS": "many"}, "GUNICORN_THREADS"),
    ({"GUNICORN_TIMEOUT": "x"}, "GUNICORN_TIMEOUT"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ({"PORT": "99999"}, "PORT"),
    ({"REDIS_URL": "http://127.0.0.1:1/0"}, "REDIS_URL"),
    ({"IMAGE_STORE_PATH": "/proc/flux-nope/images.sqlite3"}, "IMAGE_STORE_PATH"),
], ids=lambda value: ",".join(f"{k}={v}" for k, v in value.items())
   if isinstance(value, dict) else None)
def test_a_bad_setting_stops_start_up_with_one_line(settings, named, tmp_path):
    # A free port and a store under tmp_path, in case start-up wrongly went ahead.
    env = clean_env(**{"PORT": str(free_port()), "WEB_CONCURRENCY": "1",
                       "IMAGE_STORE_PATH": str(tmp_path / "images.sqlite3"), **settings})
    result = start(env)
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert len(lines) == 1, result.stderr
    assert named in lines[0], result.stderr


def read_gunicorn_conf(cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Execute gunicorn.conf.py as gunicorn does, in cwd, and print what it set."""
    code = ("import json, runpy, sys\n"
            f"ns = runpy.run_path({str(ROOT / 'gunicorn.conf.py')!r})\n"
            "print(json.dumps({k: ns[k] for k in ('bind', 'workers', 'threads', 'timeout', "
            "'loglevel')}))\n")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=clean_env(**env),
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_gunicorn_reads_its_settings_from_dotenv(tmp_path):
    (tmp_path / ".env").write_text("PORT=8123\nWEB_CONCURRENCY=3\nGUNICORN_THREADS=7\n"
                                   "GUNICORN_TIMEOUT=45\nLOG_LEVEL=WARNING\n")
    result = read_gunicorn_conf(tmp_path)
    assert result.returncode == 0, result.stderr
    conf = json.loads(result.stdout)
    assert conf["bind"].endswith(":8123")
    assert (conf["workers"], conf["threads"], conf["timeout"]) == (3, 7, 45)
    assert conf["loglevel"] == "warning"


def test_a_real_environment_variable_wins_over_dotenv(tmp_path):
    (tmp_path / ".env").write_text("PORT=8123\nWEB_CONCURRENCY=3\n")
    result = read_gunicorn_conf(tmp_path, PORT="8124")
    assert result.returncode == 0, result.stderr
    conf = json.loads(result.stdout)
    assert conf["bind"].endswith(":8124")
    assert conf["workers"] == 3


def test_gunicorn_defaults_without_dotenv(tmp_path):
    result = read_gunicorn_conf(tmp_path)
    assert result.returncode == 0, result.stderr
    conf = json.loads(result.stdout)
    assert conf["bind"] == "0.0.0.0:8000"
    assert conf["workers"] == min(os.cpu_count() or 1, 4)
    assert (conf["threads"], conf["timeout"], conf["loglevel"]) == (128, 120, "info")


def test_a_bad_value_in_dotenv_is_one_line_too(tmp_path):
    (tmp_path / ".env").write_text("WEB_CONCURRENCY=abc\n")
    result = read_gunicorn_conf(tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "flux-worker: configuration error: WEB_CONCURRENCY must be a whole number (got 'abc')"]


def test_every_mistake_in_cf_accounts_stops_start_up_with_its_own_line(tmp_path):
    env = clean_env(**{"PORT": str(free_port()), "WEB_CONCURRENCY": "1",
                       "IMAGE_STORE_PATH": str(tmp_path / "images.sqlite3"),
                       "CF_ACCOUNTS": "a:secret-one,b,a:secret-two"})
    result = start(env)
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert len(lines) == 2, result.stderr
    assert "entry 2 has no token" in lines[0] and "entry 3 repeats" in lines[1]
    assert "secret" not in result.stderr
