"""Workers AI REST client: run a text-to-image model on one account, directly
or through AI Gateway, and get its answer back."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field

from . import cloudflare
from .errors import RateLimited, Resend, UpstreamError, UpstreamMisconfigured
from .http_session import Answer, Upstream
from .models import BASE64, MULTIPART, ImageModel

SERVICE = "Workers AI"
DEFAULT_GATEWAY_BASE = "https://gateway.ai.cloudflare.com/v1"
MIN_CACHE_TTL, MAX_CACHE_TTL = 60, 30 * 86400  # AI Gateway's bounds for cf-aig-cache-ttl


@dataclass(frozen=True)
class Gateway:
    """AI Gateway in front of Workers AI (docs/accounts-and-neurons.md): every
    account sends its calls through its own gateway of this id."""

    id: str
    base: str = DEFAULT_GATEWAY_BASE
    token: str = field(default="", repr=False)  # cf-aig-authorization, when authenticated
    cache_ttl: int = 0  # seconds a seeded answer may be cached; 0: never cache

    def url(self, account_id: str, model_id: str) -> str:
        return f"{self.base}/{account_id}/{self.id}/workers-ai/{model_id}"

    def headers(self, cache_key: str | None) -> dict[str, str]:
        """The gateway's headers; a cache key only when this answer may be cached."""
        headers = {"cf-aig-authorization": f"Bearer {self.token}"} if self.token else {}
        if cache_key is not None and self.cache_ttl:
            # A key turns caching on even where the gateway's own setting is off.
            ttl = min(max(self.cache_ttl, MIN_CACHE_TTL), MAX_CACHE_TTL)
            headers.update({"cf-aig-cache-ttl": str(ttl), "cf-aig-cache-key": cache_key})
        else:  # an unseeded request must draw anew, whatever the gateway keeps
            headers["cf-aig-skip-cache"] = "true"
        return headers


class WorkersAIClient:
    """Calls `POST {base}/accounts/{account}/ai/run/{model}` for one account, or
    the same model through AI Gateway.

    A run may make (and bill) an image, so it is sent again only when
    Cloudflare cannot have done the work (see cloudflare.BY_CODE).
    """

    def __init__(self, upstream: Upstream, *, api_base: str, account_id: str, api_token: str,
                 gateway: Gateway | None = None):
        self._upstream = upstream
        self._account_id = account_id
        self._url = f"{api_base}/accounts/{account_id}/ai/run/"
        self._headers = {"Authorization": f"Bearer {api_token}"}
        self._gateway = gateway

    def generate(self, model: ImageModel, inputs: dict[str, object],
                 files: dict[str, bytes] | None = None, *, cacheable: bool = False,
                 patient: bool = True) -> Answer:
        """Run the model and return its whole, successful answer (see `image_bytes`).

        `files` are PNG parts of a multipart model's form (reference images).
        `cacheable`: the same request always draws the same picture (a seed
        the client chose), so AI Gateway may answer it from its cache.
        `patient`: a rate limit is waited out here (within the deadline);
        otherwise it is raised at once, for the caller to try another account.

        :raises FluxWorkerError: as cloudflare.BY_CODE maps Cloudflare's failures.
        :raises UpstreamTimeout: when no whole answer came within the deadline.
        """
        headers = dict(self._headers)
        url = self._url + model.id
        # FLUX.2's multipart form does not pass AI Gateway (cloudflare-docs
        # #33336: 500 / 7000), so those models are always called directly.
        if self._gateway is not None and model.encoding != MULTIPART:
            url = self._gateway.url(self._account_id, model.id)
            headers.update(self._gateway.headers(
                _cache_key(model, inputs) if cacheable else None))
        if model.encoding == MULTIPART:
            # requests writes the multipart boundary itself; no Content-Type here.
            parts: dict[str, tuple] = {name: (None, str(value)) for name, value in inputs.items()}
            parts.update({name: (f"{name}.png", data, "image/png")
                          for name, data in (files or {}).items()})
            body: dict = {"files": parts}
        else:
            assert not files, "JSON models take their pictures as fields"
            body = {"json": inputs}

        through_gateway = url != self._url + model.id

        def check(answer: Answer) -> Answer:
            if answer.status == 200:
                return answer
            error = cloudflare.error_for(answer, SERVICE, self._upstream.redact)
            if (through_gateway and answer.status == 404 and error.upstream_code == 404
                    and _gateway_error(answer)):
                assert self._gateway is not None
                error = UpstreamMisconfigured(
                    f"AI Gateway has no gateway {self._gateway.id!r} on this server's Cloudflare "
                    "account (the operator must create it or check CF_AI_GATEWAY).",
                    code="gateway_not_found")
                error.upstream_code = 404
            if not patient and isinstance(error, RateLimited):
                error.resend = Resend.NEVER
            raise error

        return self._upstream.call("POST", url, check, idempotent=False, headers=headers, **body)

    def verify(self, upstream: Upstream) -> None:
        """Ask Cloudflare whether it takes this account's token for Workers AI
        (Model Search, one model): nothing is drawn, nothing is billed.

        :raises FluxWorkerError: as Cloudflare refuses it.
        """
        def check(answer: Answer) -> None:
            if answer.status != 200:
                raise cloudflare.error_for(answer, SERVICE, upstream.redact, client_input=False)

        upstream.call("GET", self._url.removesuffix("run/") + "models/search", check,
                      idempotent=True, params={"per_page": 1}, headers=self._headers)

    def close(self) -> None:
        self._upstream.close()


def _gateway_error(answer: Answer) -> bool:
    """Whether an answer is AI Gateway's own error, not one passed on from Workers AI."""
    try:
        body = answer.json()
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(body, dict) and (body.get("name") == "AiGatewayError"
                                       or isinstance(body.get("error"), list))


def _cache_key(model: ImageModel, inputs: dict[str, object]) -> str:
    """The same model and inputs (seed included) name the same cached picture."""
    text = json.dumps([model.id, inputs], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def measured_neurons(answer: Answer) -> float | None:
    """The neurons Cloudflare says the call cost (`cf-ai-neurons`), when it says."""
    value = answer.headers.get("cf-ai-neurons", "").strip()
    try:
        neurons = float(value)
    except ValueError:
        return None
    return neurons if 0 <= neurons < 1e7 else None


def from_cache(answer: Answer) -> bool:
    """Whether AI Gateway answered from its cache (no neurons spent)."""
    return answer.headers.get("cf-aig-cache-status", "").strip().upper() == "HIT"


def image_bytes(answer: Answer, model: ImageModel) -> bytes:
    """Return the image in a successful answer: the body itself, or the base64
    in its JSON envelope. CPU and memory heavy for large images.

    :raises UpstreamError: when the answer holds no image.
    """
    # Branch on what came back, not on what the model should send: JSON means
    # the envelope, anything else is the image itself.
    if "application/json" not in answer.content_type:
        return answer.body
    try:
        body = answer.json()
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise UpstreamError("Workers AI returned malformed JSON.") from None
    result = body.get("result") if isinstance(body, dict) else None
    encoded = result.get("image") if isinstance(result, dict) else None
    if not isinstance(encoded, str) or not encoded:
        expected = "a base64 image" if model.output == BASE64 else "image bytes"
        raise UpstreamError(f"Workers AI answered without {expected}.")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise UpstreamError("Workers AI returned an image that is not valid base64.") from None
