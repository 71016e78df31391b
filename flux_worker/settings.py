"""Service settings: read from the environment once, at start-up."""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NoReturn, overload
from urllib.parse import urlsplit

from .accounts import ACCOUNT_ID, TOKEN, CloudflareAccount, parse_accounts
from .models import DEFAULT_EDIT_MODEL, DEFAULT_INPAINT_MODEL, REGISTRY
from .neurons import FREE_DAILY_NEURONS
from .redaction import Redactor
from .workers_ai import DEFAULT_GATEWAY_BASE

DEFAULT_CF_API_BASE = "https://api.cloudflare.com/client/v4"
DEFAULT_FLUX_MODEL = "@cf/black-forest-labs/flux-1-schnell"
LANGUAGES = ("en", "zh-CN", "zh-TW", "ja", "es", "fr", "ru", "de")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
# A DNS name: labels of letters, digits and hyphens, not all digits (1.2.3 is no address).
HOST_NAME = re.compile(r"(?=.*[A-Za-z])(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                       r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# The Python package each rate-limit storage needs (keyed by the scheme's first part).
STORAGE_PACKAGES = {"redis": "redis", "rediss": "redis", "valkey": "valkey", "valkeys": "valkey",
                    "memcached": "pymemcache", "mongodb": "pymongo"}


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


def exit_with_config_error(exc: ConfigError) -> NoReturn:
    """Stop start-up with one line naming the variable, not a traceback.

    SystemExit passes through gunicorn's handling of its config file and of the
    preloaded app, both of which catch only Exception.
    """
    for line in str(exc).splitlines():  # one line per mistake
        sys.stderr.write(f"flux-worker: configuration error: {line}\n")
    sys.stderr.flush()
    raise SystemExit(1)


def load_dotenv_file() -> None:
    """Load .env from the working directory when present; real env vars win.

    gunicorn.conf.py and create_app both call this, so a setting in .env means
    the same to gunicorn as to the app.
    """
    try:
        from dotenv import load_dotenv
    except ImportError:
        return
    load_dotenv(os.path.join(os.getcwd(), ".env"), override=False)


def _default_workers() -> int:
    return min(os.cpu_count() or 1, 4)


@dataclass(frozen=True)
class ServerSettings:
    """gunicorn's settings (gunicorn.conf.py), checked like the app's so a bad
    value stops start-up with a message naming the variable."""

    bind: str = "0.0.0.0"  # every interface, as PaaS routers need; 127.0.0.1 behind nginx
    port: int = 8000
    workers: int = field(default_factory=_default_workers)
    threads: int = 128
    timeout: int = 120  # 0: gunicorn never restarts a silent worker
    log_level: str = "info"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServerSettings:
        """:raises ConfigError: naming the variable whose value is invalid."""
        reader = _EnvReader(env)
        bind = reader.text("BIND") or reader.text("HOST") or "0.0.0.0"
        try:
            ipaddress.ip_address(bind.strip("[]"))
        except ValueError:
            if not HOST_NAME.fullmatch(bind):
                raise ConfigError(f"BIND must be an IP address or a host name, such as "
                                  f"127.0.0.1 or 0.0.0.0 (got {bind!r})") from None
        return cls(
            bind=bind,
            port=reader.integer("PORT", 8000, minimum=1, maximum=65535),
            workers=reader.integer("WEB_CONCURRENCY", _default_workers(), minimum=1),
            threads=reader.integer("GUNICORN_THREADS", 128, minimum=1),
            timeout=reader.integer("GUNICORN_TIMEOUT", 120, minimum=0),
            log_level=reader.choice("LOG_LEVEL", "info", LOG_LEVELS),
        )

    @property
    def address(self) -> str:
        """gunicorn's bind address, host:port (an IPv6 address in brackets)."""
        host = self.bind.strip("[]")
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured with; tests build it directly.

    Fields holding secrets are left out of repr, so logging settings (or a
    traceback showing them) never prints a key or token.
    """

    api_keys: tuple[str, ...] = field(default=(), repr=False)
    cf_account_id: str = field(default="", repr=False)
    cf_api_token: str = field(default="", repr=False)
    cf_api_base: str = DEFAULT_CF_API_BASE
    cf_kv_namespace_id: str = field(default="", repr=False)
    cf_accounts: tuple[CloudflareAccount, ...] = field(default=(), repr=False)  # CF_ACCOUNTS
    cf_daily_neurons: int = FREE_DAILY_NEURONS  # each account's budget; 0: none
    cf_ai_gateway: str = ""  # an AI Gateway id: Workers AI calls go through it
    cf_ai_gateway_token: str = field(default="", repr=False)  # for an authenticated gateway
    cf_ai_gateway_cache: bool = True  # a seeded request may be answered from its cache
    cf_ai_gateway_base: str = DEFAULT_GATEWAY_BASE
    redis_url: str = field(default="", repr=False)  # shared account state (may hold a password)
    image_store_path: str = "data/images.sqlite3"
    image_expiration: int = 1800
    flux_model: str = DEFAULT_FLUX_MODEL
    image_models: tuple[str, ...] = ()  # empty: every model in the registry
    flux_num_steps: int = 4
    edit_model: str = DEFAULT_EDIT_MODEL
    inpaint_model: str = DEFAULT_INPAINT_MODEL
    allow_remote_images: bool = False  # fetch http(s) image links (public addresses only)
    prompt_optimization: bool = False
    external_api_base: str = ""
    external_model: str = ""
    external_api_key: str = field(default="", repr=False)
    system_message: str = ""
    public_base_url: str = ""
    response_language: str = "en"
    upstream_timeout_seconds: float = 120.0
    optimizer_timeout_seconds: float = 20.0
    connect_timeout_seconds: float = 10.0
    retry_backoff_seconds: float = 0.5  # first retry waits about this long, then doubles
    sse_keepalive_seconds: float = 10.0
    max_concurrent_generations: int = 128
    rate_limit: str = ""
    rate_limit_storage_uri: str = field(default="memory://", repr=False)  # may hold a password
    max_body_bytes: int = 1024 * 1024
    max_upload_bytes: int = 32 * 1024 * 1024  # a request that may carry pictures
    log_level: str = "info"
    log_format: str = "text"  # or json: one JSON object per line
    metrics_token: str = field(default="", repr=False)  # /metrics for this bearer token
    key_daily_images: int = 0  # images per API key per UTC day; 0: no quota

    @property
    def accounts(self) -> tuple[CloudflareAccount, ...]:
        """Every Cloudflare account to draw with: CF_ACCOUNT_ID's first (it
        owns the KV namespace), then CF_ACCOUNTS'."""
        first = ((CloudflareAccount(self.cf_account_id, self.cf_api_token),)
                 if self.cf_account_id and self.cf_api_token else ())
        return first + tuple(account for account in self.cf_accounts if account not in first)

    @property
    def kv_account(self) -> CloudflareAccount:
        """The account that owns CF_KV_NAMESPACE_ID: the first one."""
        accounts = self.accounts
        return accounts[0] if accounts else CloudflareAccount(self.cf_account_id,
                                                              self.cf_api_token)

    @property
    def workers_ai_configured(self) -> bool:
        return bool(self.accounts)

    @property
    def state_url(self) -> str:
        """Where accounts' state is shared: REDIS_URL, else a Redis rate-limit
        storage; empty means the embedded SQLite file."""
        if self.redis_url:
            return self.redis_url
        scheme = urlsplit(self.rate_limit_storage_uri).scheme.lower()
        return self.rate_limit_storage_uri if scheme in ("redis", "rediss") else ""

    @property
    def uses_kv(self) -> bool:
        return bool(self.cf_kv_namespace_id)

    @property
    def optimizer_enabled(self) -> bool:
        return self.prompt_optimization and bool(self.external_api_base and self.external_model)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every configured secret value, for scrubbing them out of logs."""
        urls = (self.rate_limit_storage_uri, self.cf_api_base, self.external_api_base,
                self.public_base_url, self.redis_url, self.cf_ai_gateway_base)
        values = (*self.api_keys, self.cf_api_token, self.external_api_key,
                  self.cf_account_id, self.cf_kv_namespace_id, self.cf_ai_gateway_token,
                  self.metrics_token,
                  *(account.token for account in self.cf_accounts),
                  *(account.id for account in self.cf_accounts),
                  *(urlsplit(url).password or "" for url in urls))
        return tuple(value for value in values if value)

    def __repr__(self) -> str:
        """The fields, secrets left out and any secret a URL holds redacted."""
        shown = ", ".join(f"{item.name}={getattr(self, item.name)!r}"
                          for item in dataclasses.fields(self) if item.repr)
        return Redactor(self.secrets)(f"Settings({shown})")

    def replace(self, **changes) -> Settings:
        """Return a copy with some fields changed (handy in tests)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from environment variables.

        :raises ConfigError: naming the variable whose value is invalid.
        """
        reader = _EnvReader(env)
        optimization = reader.boolean("PROMPT_OPTIMIZATION", None)
        if optimization is None:  # the seed Worker's older name
            optimization = reader.boolean("CF_IS_TRANSLATE", False)
        accounts, mistakes = parse_accounts(reader.text("CF_ACCOUNTS"))
        account_id, token = reader.text("CF_ACCOUNT_ID"), reader.text("CF_API_TOKEN")
        if account_id and not ACCOUNT_ID.fullmatch(account_id):
            mistakes.insert(0, "CF_ACCOUNT_ID is not an account id (letters, digits, - and _; "
                               "Cloudflare's are 32 hex digits)")
        if bool(account_id) != bool(token):
            mistakes.insert(0, "CF_ACCOUNT_ID and CF_API_TOKEN go together: set both, or "
                               "neither and use CF_ACCOUNTS")
        clash = [number for number, account in enumerate(accounts, start=1)
                 if account.id == account_id and account.token != token]
        if clash:
            mistakes.append(f"CF_ACCOUNTS entry {clash[0]} names CF_ACCOUNT_ID's account "
                            "with another token")
        for name in ("CF_API_TOKEN", "CF_AI_GATEWAY_TOKEN"):
            if reader.text(name) and not TOKEN.fullmatch(reader.text(name)):
                mistakes.append(f"{name} holds characters a header cannot carry (spaces, "
                                "non-ASCII)")
        if mistakes:
            raise ConfigError("\n".join(mistakes))
        gateway = reader.text("CF_AI_GATEWAY")
        if gateway and not ACCOUNT_ID.fullmatch(gateway):
            raise ConfigError(f"CF_AI_GATEWAY must be a gateway id (letters, digits, - and _; "
                              f"got {gateway!r})")
        settings = cls(
            api_keys=reader.csv("API_KEY"),
            cf_account_id=reader.text("CF_ACCOUNT_ID"),
            cf_api_token=reader.text("CF_API_TOKEN"),
            cf_api_base=reader.url("CF_API_BASE", DEFAULT_CF_API_BASE),
            cf_kv_namespace_id=reader.text("CF_KV_NAMESPACE_ID"),
            cf_accounts=accounts,
            cf_daily_neurons=reader.integer("CF_DAILY_NEURONS", FREE_DAILY_NEURONS, minimum=0),
            cf_ai_gateway=gateway,
            cf_ai_gateway_token=reader.text("CF_AI_GATEWAY_TOKEN"),
            cf_ai_gateway_cache=reader.boolean("CF_AI_GATEWAY_CACHE", True),
            cf_ai_gateway_base=reader.url("CF_AI_GATEWAY_BASE", DEFAULT_GATEWAY_BASE),
            redis_url=reader.text("REDIS_URL"),
            image_store_path=reader.text("IMAGE_STORE_PATH", "data/images.sqlite3"),
            image_expiration=reader.integer("IMAGE_EXPIRATION", 1800, minimum=1,
                                            maximum=365 * 86400),
            flux_model=_model_id(reader.text("FLUX_MODEL", DEFAULT_FLUX_MODEL), "FLUX_MODEL"),
            image_models=tuple(_model_id(name, "IMAGE_MODELS")
                               for name in reader.csv("IMAGE_MODELS")),
            flux_num_steps=reader.integer("FLUX_NUM_STEPS", 4, minimum=1, maximum=8),
            edit_model=_model_id(reader.text("EDIT_MODEL", DEFAULT_EDIT_MODEL), "EDIT_MODEL"),
            inpaint_model=_model_id(reader.text("INPAINT_MODEL", DEFAULT_INPAINT_MODEL),
                                    "INPAINT_MODEL"),
            allow_remote_images=reader.boolean("ALLOW_REMOTE_IMAGES", False),
            max_upload_bytes=reader.integer("MAX_UPLOAD_MB", 32, minimum=1,
                                            maximum=512) * 1024 * 1024,
            prompt_optimization=optimization,
            external_api_base=reader.url("EXTERNAL_API_BASE", ""),
            external_model=reader.text("EXTERNAL_MODEL"),
            external_api_key=reader.text("EXTERNAL_API_KEY"),
            system_message=reader.text("SYSTEM_MESSAGE"),
            public_base_url=reader.url("PUBLIC_BASE_URL", ""),
            response_language=reader.choice("RESPONSE_LANGUAGE", "en", LANGUAGES),
            upstream_timeout_seconds=reader.number("UPSTREAM_TIMEOUT_SECONDS", 120.0, 3600),
            optimizer_timeout_seconds=reader.number("OPTIMIZER_TIMEOUT_SECONDS", 20.0, 600),
            retry_backoff_seconds=reader.number("RETRY_BACKOFF_SECONDS", 0.5, 60),
            sse_keepalive_seconds=reader.number("SSE_KEEPALIVE_SECONDS", 10.0, 300),
            max_concurrent_generations=reader.integer(
                "MAX_CONCURRENT_GENERATIONS", 128, minimum=1, maximum=4096
            ),
            rate_limit=reader.text("RATE_LIMIT"),
            rate_limit_storage_uri=reader.text("RATE_LIMIT_STORAGE_URI", "memory://"),
            log_level=reader.choice("LOG_LEVEL", "info", LOG_LEVELS),
            log_format=reader.choice("LOG_FORMAT", "text", LOG_FORMATS),
            metrics_token=reader.text("METRICS_TOKEN"),
            key_daily_images=reader.integer("KEY_DAILY_IMAGES", 0, minimum=0),
        )
        edit, inpaint = REGISTRY[settings.edit_model], REGISTRY[settings.inpaint_model]
        if not edit.takes_images or edit.takes_mask:
            raise ConfigError(f"EDIT_MODEL {settings.edit_model} cannot change pictures without "
                              f"a mask; use one of {', '.join(_editors(mask=False))}")
        if not inpaint.takes_mask:
            raise ConfigError(f"INPAINT_MODEL {settings.inpaint_model} takes no mask; use one of "
                              f"{', '.join(_editors(mask=True))}")
        if settings.rate_limit:
            _check_rate_limit(settings.rate_limit)
        if settings.rate_limit_storage_uri != "memory://":
            _check_storage_uri(settings.rate_limit_storage_uri)
        if settings.redis_url:
            _check_redis_url(settings.redis_url)
        if settings.prompt_optimization and not settings.optimizer_enabled:
            raise ConfigError(
                "PROMPT_OPTIMIZATION is on but EXTERNAL_API_BASE and EXTERNAL_MODEL are not both "
                "set"
            )
        return settings

    def describe(self) -> dict[str, object]:
        """Return a loggable summary: which secrets are set, never their values."""
        return {
            "api_keys": len(self.api_keys),
            "workers_ai": (f"configured ({len(self.accounts)} account"
                           f"{'s' if len(self.accounts) > 1 else ''})"
                           if self.workers_ai_configured else "not configured"),
            "ai_gateway": self.cf_ai_gateway or "off",
            "account_state": "redis" if self.state_url else "sqlite",
            "store": "workers-kv" if self.uses_kv else f"sqlite:{self.image_store_path}",
            "flux_model": self.flux_model,
            "edit_model": self.edit_model,
            "remote_images": self.allow_remote_images,
            "prompt_optimization": self.optimizer_enabled,
            "external_api_key": "set" if self.external_api_key else "unset",
        }


def _model_id(value: str, variable: str) -> str:
    """Return the registry id for a model id or its short name (flux-2-dev)."""
    for model_id in REGISTRY:
        if value in (model_id, model_id.rsplit("/", 1)[-1]):
            return model_id
    raise ConfigError(f"{variable} names an unknown model {value!r}; known: {', '.join(REGISTRY)}")


def _editors(*, mask: bool) -> list[str]:
    return [model_id for model_id, model in REGISTRY.items()
            if model.takes_images and model.takes_mask == mask]


def _check_rate_limit(value: str) -> None:
    from limits import parse_many  # Flask-Limiter's own parser

    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(f"RATE_LIMIT must look like 60/minute or 10/second;100/hour "
                          f"(got {value!r})") from None


def _check_storage_uri(uri: str) -> None:
    """Refuse a storage Flask-Limiter cannot use, without connecting to it.

    Otherwise a missing client package only shows up as limits'
    ConfigurationError traceback while the app is built. The message names the
    scheme only: the URI may hold a password.
    """
    import limits.storage  # registers the schemes limits knows

    scheme = urlsplit(uri).scheme.lower()
    known = sorted(name for name in getattr(limits.storage, "SCHEMES", {})
                   if not name.startswith("async+"))  # Flask-Limiter is synchronous
    if known and scheme not in known:
        raise ConfigError(f"RATE_LIMIT_STORAGE_URI has an unknown scheme {scheme + '://'!r}; "
                          f"use one of {', '.join(name + '://' for name in known)}")
    package = STORAGE_PACKAGES.get(scheme.split("+")[0])
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(f"RATE_LIMIT_STORAGE_URI uses {scheme}:// storage, which needs the "
                          f"{package} package: pip install {package}")


def _check_redis_url(url: str) -> None:
    """REDIS_URL must be a redis:// URL and the redis package installed; the
    message names the scheme only (the URL may hold a password)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"REDIS_URL must start with redis://, rediss:// or unix:// "
                          f"(got {scheme + '://' if scheme else 'no scheme'})")
    if importlib.util.find_spec("redis") is None:
        raise ConfigError("REDIS_URL needs the redis package: pip install redis")
    from redis.connection import parse_url

    try:
        parse_url(url)
    except ValueError:
        raise ConfigError("REDIS_URL is not a valid Redis URL (check its port, database "
                          "number and options)") from None


class _EnvReader:
    """Typed access to environment variables with errors that name the variable."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def _raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def text(self, name: str, default: str = "") -> str:
        value = self._raw(name)
        return default if value is None else value

    def csv(self, name: str) -> tuple[str, ...]:
        value = self._raw(name) or ""
        return tuple(part.strip() for part in value.split(",") if part.strip())

    def url(self, name: str, default: str) -> str:
        value = self._raw(name)
        if value is None:
            return default
        if not value.startswith(("http://", "https://")):
            raise ConfigError(f"{name} must start with http:// or https:// (got {value!r})")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 (parsing the port is the check)
        except ValueError:
            raise ConfigError(f"{name} is not a valid URL (got {value!r})") from None
        if not parts.hostname:
            raise ConfigError(f"{name} has no host name (got {value!r})")
        return value.rstrip("/")

    @overload
    def boolean(self, name: str, default: bool) -> bool: ...

    @overload
    def boolean(self, name: str, default: None) -> bool | None: ...

    def boolean(self, name: str, default: bool | None) -> bool | None:
        value = self._raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false (got {value!r})")

    def integer(self, name: str, default: int, minimum: int | None = None,
                maximum: int | None = None) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number (got {value!r})") from None
        if minimum is not None and number < minimum:
            raise ConfigError(f"{name} must be at least {minimum} (got {number})")
        if maximum is not None and number > maximum:
            raise ConfigError(f"{name} must be at most {maximum} (got {number})")
        return number

    def number(self, name: str, default: float, maximum: float) -> float:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number of seconds (got {value!r})") from None
        if not number > 0 or number == float("inf"):
            raise ConfigError(f"{name} must be greater than 0 (got {value!r})")
        if number > maximum:
            raise ConfigError(f"{name} must be at most {maximum:g} (got {value!r})")
        return number

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self._raw(name)
        if value is None:
            return default
        for option in choices:
            if option.lower() == value.lower():
                return option
        raise ConfigError(f"{name} must be one of {', '.join(choices)} (got {value!r})")
