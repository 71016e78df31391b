"""Service settings: read from the environment once, at start-up."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

from .models import REGISTRY

DEFAULT_CF_API_BASE = "https://api.cloudflare.com/client/v4"
DEFAULT_FLUX_MODEL = "@cf/black-forest-labs/flux-1-schnell"
KV_MIN_TTL = 60  # Workers KV refuses expiration_ttl under 60 seconds
LANGUAGES = ("en", "zh-CN", "zh-TW", "ja", "es", "fr", "ru", "de")


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured with; tests build it directly."""

    api_keys: tuple[str, ...] = ()
    cf_account_id: str = ""
    cf_api_token: str = ""
    cf_api_base: str = DEFAULT_CF_API_BASE
    cf_kv_namespace_id: str = ""
    image_store_path: str = "data/images.sqlite3"
    image_expiration: int = 1800
    flux_model: str = DEFAULT_FLUX_MODEL
    image_models: tuple[str, ...] = ()  # empty: every model in the registry
    flux_num_steps: int = 4
    prompt_optimization: bool = False
    external_api_base: str = ""
    external_model: str = ""
    external_api_key: str = ""
    system_message: str = ""
    public_base_url: str = ""
    response_language: str = "en"
    upstream_timeout_seconds: float = 120.0
    optimizer_timeout_seconds: float = 20.0
    connect_timeout_seconds: float = 10.0
    retry_backoff_seconds: float = 0.5  # first retry waits about this long, then doubles
    sse_keepalive_seconds: float = 10.0
    max_concurrent_generations: int = 128
    image_cache_bytes: int = 32 * 1024 * 1024
    rate_limit: str = ""
    rate_limit_storage_uri: str = "memory://"
    max_body_bytes: int = 1024 * 1024

    @property
    def workers_ai_configured(self) -> bool:
        return bool(self.cf_account_id and self.cf_api_token)

    @property
    def uses_kv(self) -> bool:
        return bool(self.cf_kv_namespace_id)

    @property
    def optimizer_enabled(self) -> bool:
        return self.prompt_optimization and bool(self.external_api_base and self.external_model)

    def replace(self, **changes) -> "Settings":
        """Return a copy with some fields changed (handy in tests)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        """Build settings from environment variables.

        :raises ConfigError: naming the variable whose value is invalid.
        """
        reader = _EnvReader(env)
        optimization = reader.boolean("PROMPT_OPTIMIZATION", None)
        if optimization is None:  # the seed Worker's older name
            optimization = reader.boolean("CF_IS_TRANSLATE", False)
        settings = cls(
            api_keys=reader.csv("API_KEY"),
            cf_account_id=reader.text("CF_ACCOUNT_ID"),
            cf_api_token=reader.text("CF_API_TOKEN"),
            cf_api_base=reader.url("CF_API_BASE", DEFAULT_CF_API_BASE),
            cf_kv_namespace_id=reader.text("CF_KV_NAMESPACE_ID"),
            image_store_path=reader.text("IMAGE_STORE_PATH", "data/images.sqlite3"),
            image_expiration=reader.integer("IMAGE_EXPIRATION", 1800, minimum=1),
            flux_model=_model_id(reader.text("FLUX_MODEL", DEFAULT_FLUX_MODEL), "FLUX_MODEL"),
            image_models=tuple(_model_id(name, "IMAGE_MODELS")
                               for name in reader.csv("IMAGE_MODELS")),
            flux_num_steps=reader.integer("FLUX_NUM_STEPS", 4, minimum=1, maximum=8),
            prompt_optimization=optimization,
            external_api_base=reader.url("EXTERNAL_API_BASE", ""),
            external_model=reader.text("EXTERNAL_MODEL"),
            external_api_key=reader.text("EXTERNAL_API_KEY"),
            system_message=reader.text("SYSTEM_MESSAGE"),
            public_base_url=reader.url("PUBLIC_BASE_URL", ""),
            response_language=reader.choice("RESPONSE_LANGUAGE", "en", LANGUAGES),
            upstream_timeout_seconds=reader.number("UPSTREAM_TIMEOUT_SECONDS", 120.0),
            optimizer_timeout_seconds=reader.number("OPTIMIZER_TIMEOUT_SECONDS", 20.0),
            retry_backoff_seconds=reader.number("RETRY_BACKOFF_SECONDS", 0.5),
            sse_keepalive_seconds=reader.number("SSE_KEEPALIVE_SECONDS", 10.0),
            max_concurrent_generations=reader.integer(
                "MAX_CONCURRENT_GENERATIONS", 128, minimum=1, maximum=4096
            ),
            image_cache_bytes=reader.integer("IMAGE_CACHE_BYTES", 32 * 1024 * 1024, minimum=0),
            rate_limit=reader.text("RATE_LIMIT"),
            rate_limit_storage_uri=reader.text("RATE_LIMIT_STORAGE_URI", "memory://"),
        )
        if settings.rate_limit:
            _check_rate_limit(settings.rate_limit)
        if settings.prompt_optimization and not settings.optimizer_enabled:
            raise ConfigError(
                "PROMPT_OPTIMIZATION is on but EXTERNAL_API_BASE and EXTERNAL_MODEL are not both set"
            )
        return settings

    def describe(self) -> dict[str, object]:
        """Return a loggable summary: which secrets are set, never their values."""
        return {
            "api_keys": len(self.api_keys),
            "workers_ai": "configured" if self.workers_ai_configured else "not configured",
            "store": "workers-kv" if self.uses_kv else f"sqlite:{self.image_store_path}",
            "flux_model": self.flux_model,
            "prompt_optimization": self.optimizer_enabled,
            "external_api_key": "set" if self.external_api_key else "unset",
        }


def _model_id(value: str, variable: str) -> str:
    """Return the registry id for a model id or its short name (flux-2-dev)."""
    for model_id in REGISTRY:
        if value in (model_id, model_id.rsplit("/", 1)[-1]):
            return model_id
    raise ConfigError(f"{variable} names an unknown model {value!r}; known: {', '.join(REGISTRY)}")


def _check_rate_limit(value: str) -> None:
    from limits import parse_many  # Flask-Limiter's own parser

    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(f"RATE_LIMIT must look like 60/minute or 10/second;100/hour "
                          f"(got {value!r})") from None


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
        return value.rstrip("/")

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

    def integer(self, name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
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

    def number(self, name: str, default: float) -> float:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number of seconds (got {value!r})") from None
        if not number > 0 or number == float("inf"):
            raise ConfigError(f"{name} must be greater than 0 (got {value!r})")
        return number

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self._raw(name)
        if value is None:
            return default
        for option in choices:
            if option.lower() == value.lower():
                return option
        raise ConfigError(f"{name} must be one of {', '.join(choices)} (got {value!r})")
