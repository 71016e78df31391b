"""The WSGI entry point gunicorn loads (`gunicorn app:app`).

`python app.py [gunicorn options]` checks gunicorn's settings first and then
becomes `gunicorn app:app`: gunicorn itself reads WEB_CONCURRENCY with int()
while it is imported, before gunicorn.conf.py runs, so under a bare
`gunicorn app:app` a value like `abc` is a traceback instead of one line.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # gunicorn.conf.py prepares the metrics directory (and checks it) before
    # anything imports prometheus_client; this process only checks settings,
    # so it keeps the variable away from that import and hands it on.
    _metrics_dir = os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

from flux_worker.settings import (
    ConfigError,
    ServerSettings,
    exit_with_config_error,
    load_dotenv_file,
)


def main(argv: list[str]) -> None:
    """Check PORT, WEB_CONCURRENCY, ... (from .env too), then exec gunicorn."""
    if _metrics_dir is not None:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir
    load_dotenv_file()
    try:
        server = ServerSettings.from_env(os.environ)
    except ConfigError as exc:
        exit_with_config_error(exc)
    # A blank value would still break gunicorn's own read of it.
    os.environ["WEB_CONCURRENCY"] = str(server.workers)
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", "app:app", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
else:
    from flux_worker import create_app

    try:
        app = create_app()
    except ConfigError as exc:  # a clear line naming the variable, not a traceback
        exit_with_config_error(exc)
