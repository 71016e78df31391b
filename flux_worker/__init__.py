"""flux-worker: an OpenAI-compatible image service on Cloudflare Workers AI."""

from __future__ import annotations

import logging
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor

from flask import Flask
from flask.json.provider import DefaultJSONProvider
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

from . import error_handlers, logs, routes
from .account_pool import AccountPool, Member
from .errors import FluxWorkerError, UpstreamMisconfigured
from .generation import ImageService
from .http_session import RetryPolicy, Upstream, make_session
from .image_sources import PictureReader
from .key_usage import KeyUsage
from .kv import KVClient
from .links import LinkOrigins
from .metrics_endpoint import init_metrics
from .models import ModelCatalog
from .optimizer import PromptOptimizer
from .rate_limit import init_rate_limit
from .readiness import CachedCheck, Fixed, Readiness
from .redaction import Redactor
from .remote_images import RemoteImages
from .settings import ConfigError, Settings, load_dotenv_file
from .shared_state import RedisState, SharedState, SQLiteState
from .store import ImageStore, KVImageStore, SQLiteImageStore, WriteThroughStore
from .version import __version__
from .workers_ai import MIN_CACHE_TTL, Gateway, WorkersAIClient

__all__ = ["create_app", "__version__"]
KV_TIMEOUT_SECONDS = 30.0  # a whole KV read or write, retries included
READY_TIMEOUT_SECONDS = 5.0  # a readiness check's calls to Cloudflare, retries included

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app: settings, clients, store, worker pool, routes, handlers."""
    if settings is None:
        load_dotenv_file()
        settings = Settings.from_env(os.environ)
    logs.configure_logging(settings.log_level, secrets=settings.secrets,
                           log_format=settings.log_format)

    app = Flask(__name__)
    # One byte over: werkzeug stops a chunked body at the limit without a word,
    # so read_json sees the extra byte and answers 413 the same for both kinds.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes + 1
    json_provider = DefaultJSONProvider(app)
    json_provider.ensure_ascii = False
    json_provider.sort_keys = False
    app.json = json_provider
    # One proxy hop (nginx, a PaaS router) tells us the scheme and host the
    # client used, so image links are https where the client is. (Wrapping
    # app.wsgi_app is how Flask documents middleware; mypy sees a method.)
    app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
        app.wsgi_app, x_for=1, x_proto=1, x_host=1)

    redact = Redactor(settings.secrets)
    retry = RetryPolicy(backoff=settings.retry_backoff_seconds)

    def upstream(service: str, base_url: str, timeout: float) -> Upstream:
        return Upstream(service, make_session(settings.max_concurrent_generations, base_url),
                        timeout=timeout, connect_timeout=settings.connect_timeout_seconds,
                        retry=retry, redact=redact)

    catalog = ModelCatalog(settings.flux_model, settings.image_models, settings.flux_num_steps,
                           edit_id=settings.edit_model, inpaint_id=settings.inpaint_model)
    try:
        local = SQLiteImageStore(settings.image_store_path)
        state: SharedState = (RedisState(settings.state_url) if settings.state_url
                              else SQLiteState(settings.image_store_path))
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"IMAGE_STORE_PATH {settings.image_store_path!r} cannot be used: "
                          f"{exc}") from None
    accounts = None
    if settings.workers_ai_configured:
        accounts = _account_pool(settings, state, upstream("Workers AI", settings.cf_api_base,
                                                           settings.upstream_timeout_seconds))
    def kv_client(timeout: float) -> KVClient:
        """The namespace, on the account that owns it (the first)."""
        owner = settings.kv_account
        return KVClient(upstream("Workers KV", settings.cf_api_base, timeout),
                        api_base=settings.cf_api_base, account_id=owner.id,
                        namespace_id=settings.cf_kv_namespace_id, api_token=owner.token)

    store: ImageStore = local
    if settings.uses_kv:
        store = WriteThroughStore(local, KVImageStore(kv_client(KV_TIMEOUT_SECONDS)))
    # Readiness calls have clients of their own, with a short deadline.
    readiness = _readiness(settings, accounts, local,
                           kv_client(READY_TIMEOUT_SECONDS) if settings.uses_kv else None,
                           upstream("Workers AI", settings.cf_api_base, READY_TIMEOUT_SECONDS))
    optimizer = None
    if settings.optimizer_enabled:
        optimizer = PromptOptimizer(
            upstream("The prompt optimizer", settings.external_api_base,
                     settings.optimizer_timeout_seconds),
            api_base=settings.external_api_base, model=settings.external_model,
            api_key=settings.external_api_key, system_message=settings.system_message)
    images = ImageService(accounts=accounts, store=store, optimizer=optimizer,
                          usage=KeyUsage(state, settings.key_daily_images),
                          expiration=settings.image_expiration,
                          max_concurrent=settings.max_concurrent_generations)
    pictures = PictureReader(store, RemoteImages(settings.allow_remote_images),
                             settings.image_expiration)
    app.extensions["flux_worker"] = routes.Services(settings, catalog, images, store,
                                                    LinkOrigins(settings.public_base_url),
                                                    pictures, state, readiness)

    CORS(app, origins="*", max_age=86400,
         allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-ID",
                        r"X-Stainless-.*", "OpenAI-Organization", "OpenAI-Project"],
         expose_headers=["X-Request-ID", "Retry-After", "x-should-retry"])
    app.register_blueprint(routes.bp)
    for prefix, name in (("/v1", "api"), ("", "api_bare"), ("/v1/v1", "api_doubled")):
        app.register_blueprint(routes.api, url_prefix=prefix, name=name)
    error_handlers.register_error_handlers(app)
    logs.init_request_ids(app)
    init_rate_limit(app, settings)
    init_metrics(app, settings.metrics_token)
    log.info("flux-worker %s started: %s", __version__, settings.describe())
    return app


def _readiness(settings: Settings, accounts: AccountPool | None, local: SQLiteImageStore,
               kv: KVClient | None, upstream: Upstream) -> Readiness:
    """What /readyz checks: each a real call, remembered a short while."""
    checks: list[CachedCheck | Fixed] = [
        Fixed("api_key", True, "set") if settings.api_keys else
        Fixed("api_key", False, "API_KEY is not set, so the API refuses every request: set "
                                "API_KEY")]
    if accounts is None:
        checks.append(Fixed("workers_ai", False, "Workers AI is not configured: set "
                                                 "CF_ACCOUNT_ID and CF_API_TOKEN (or "
                                                 "CF_ACCOUNTS)"))
    else:
        def verify(member: Member) -> str | None:
            """None when Cloudflare takes the account's token, else why not."""
            try:
                member.client.verify(upstream)
                return None
            except FluxWorkerError as exc:
                return f"{member.account.label}: {exc.message}"

        def verify_accounts() -> str:
            # All at once: a slow Cloudflare costs one call's time, not one per account.
            with ThreadPoolExecutor(min(8, len(accounts.members))) as executor:
                found = list(executor.map(verify, accounts.members))
            accepted = [m.account.label for m, why in zip(accounts.members, found, strict=True)
                        if why is None]
            refused = [why for why in found if why is not None]
            if not accepted:
                raise UpstreamMisconfigured("Cloudflare refused every account: "
                                            + "; ".join(refused))
            return (f"Cloudflare accepts {len(accepted)} of {len(accounts.members)} account(s)"
                    + (f"; refused {'; '.join(refused)}" if refused else ""))

        checks.append(CachedCheck("workers_ai", verify_accounts))

    def writable() -> str:
        local.check_writable()
        return "the embedded store takes writes"

    checks.append(CachedCheck("store", writable))
    if kv is not None:
        def kv_answers() -> str:
            kv.get("readiness-probe")
            return "Workers KV answers"

        checks.append(CachedCheck("kv", kv_answers))
    return Readiness(checks, closing=[upstream] + ([kv] if kv is not None else []))


def _account_pool(settings: Settings, state: SharedState, upstream: Upstream) -> AccountPool:
    """One Workers AI client per account, all on one connection pool; AI
    Gateway in front when CF_AI_GATEWAY names one."""
    gateway = None
    if settings.cf_ai_gateway:
        gateway = Gateway(settings.cf_ai_gateway, settings.cf_ai_gateway_base,
                          settings.cf_ai_gateway_token,
                          max(settings.image_expiration, MIN_CACHE_TTL)
                          if settings.cf_ai_gateway_cache else 0)
    members = [Member(account, WorkersAIClient(upstream, api_base=settings.cf_api_base,
                                               account_id=account.id, api_token=account.token,
                                               gateway=gateway))
               for account in settings.accounts]
    pool = AccountPool(members, state, daily_neurons=settings.cf_daily_neurons)
    pool.forget_refusals()  # the operator may have fixed what was refused before
    return pool
