"""The WSGI entry point gunicorn loads (`gunicorn app:app`)."""

import sys

from flux_worker import create_app
from flux_worker.settings import ConfigError

try:
    app = create_app()
except ConfigError as exc:  # a clear line naming the variable, not a traceback
    sys.stderr.write(f"flux-worker: configuration error: {exc}\n")
    raise SystemExit(1) from None
