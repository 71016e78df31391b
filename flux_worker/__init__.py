"""flux-worker: an OpenAI-compatible image service on Cloudflare Workers AI."""

from __future__ import annotations

__version__ = "1.0.0"

import logging
import os

from flask import Flask
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

# After __version__: the modules below read it.
from . import errors, logs, routes  # noqa: E402
from .generation import ImageService  # noqa: E402
from .http_session import make_retry, make_session  # noqa: E402
from .kv import KVClient  # noqa: E402
from .models import ModelCatalog  # noqa: E402
from .optimizer import PromptOptimizer  # noqa: E402
from .rate_limit import init_rate_limit  # noqa: E402
from .settings import Settings  # noqa: E402
from .store import KVImageStore, MemoryCache, ResilientStore, SQLiteImageStore  # noqa: E402
from .workers_ai import WorkersAIClient  # noqa: E402

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app: settings, clients, store, worker pool, routes, handlers."""
    if settings is None:
        _load_dotenv()
        settings = Settings.from_env(os.environ)
    logs.configure_logging()

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    # One proxy hop (nginx, a PaaS router) tells us the scheme and host the
    # client used, so image links are https where the client is.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)

    pool_size = settings.max_concurrent_generations

    def session(base_url: str):
        return make_session(pool_size, make_retry(backoff=settings.retry_backoff_seconds),
                            base_url)

    catalog = ModelCatalog(settings.flux_model, settings.image_models, settings.flux_num_steps)
    workers_ai = None
    if settings.workers_ai_configured:
        workers_ai = WorkersAIClient(
            api_base=settings.cf_api_base, account_id=settings.cf_account_id,
            api_token=settings.cf_api_token, session=session(settings.cf_api_base),
            timeout=settings.upstream_timeout_seconds,
            connect_timeout=settings.connect_timeout_seconds)
    store = SQLiteImageStore(settings.image_store_path)
    if settings.uses_kv:
        kv = KVClient(api_base=settings.cf_api_base, account_id=settings.cf_account_id,
                      namespace_id=settings.cf_kv_namespace_id, api_token=settings.cf_api_token,
                      session=session(settings.cf_api_base),
                      connect_timeout=settings.connect_timeout_seconds)
        store = ResilientStore(KVImageStore(kv), fallback=store,
                               cache=MemoryCache(settings.image_cache_bytes))
    optimizer = None
    if settings.optimizer_enabled:
        optimizer = PromptOptimizer(
            api_base=settings.external_api_base, model=settings.external_model,
            api_key=settings.external_api_key, system_message=settings.system_message,
            session=session(settings.external_api_base),
            timeout=settings.optimizer_timeout_seconds)
    images = ImageService(workers_ai=workers_ai, store=store, optimizer=optimizer,
                          expiration=settings.image_expiration,
                          max_concurrent=settings.max_concurrent_generations)
    app.extensions["flux_worker"] = routes.Services(settings, catalog, images, store)

    CORS(app, origins="*", max_age=86400,
         allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-ID",
                        r"X-Stainless-.*", "OpenAI-Organization", "OpenAI-Project"],
         expose_headers=["X-Request-ID", "Retry-After", "x-should-retry"])
    app.register_blueprint(routes.bp)
    for prefix, name in (("/v1", "api"), ("", "api_bare"), ("/v1/v1", "api_doubled")):
        app.register_blueprint(routes.api, url_prefix=prefix, name=name)
    errors.register_error_handlers(app)
    logs.init_request_ids(app)
    init_rate_limit(app, settings)
    log.info("flux-worker %s started: %s", __version__, settings.describe())
    return app


def _load_dotenv() -> None:
    """Load .env from the working directory when present; real env vars win."""
    try:
        from dotenv import load_dotenv
    except ImportError:
        return
    load_dotenv(os.path.join(os.getcwd(), ".env"), override=False)
