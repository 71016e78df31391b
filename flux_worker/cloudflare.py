"""What Cloudflare's answers mean: the error envelope, and one table from each
documented failure to our error, the client's retry hint and whether the
same call may be sent again (README, "Cloudflare errors", is this table)."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import metrics
from .errors import (
    AllowanceExhausted,
    ContentPolicyViolation,
    FluxWorkerError,
    InvalidRequest,
    RateLimited,
    Resend,
    UpstreamError,
    UpstreamMisconfigured,
    UpstreamTimeout,
)
from .http_session import Answer

log = logging.getLogger(__name__)
NOT_FOUND_KEY = 10009  # Workers KV: no such key (or expired)


@dataclass(frozen=True)
class Meaning:
    """What one Cloudflare failure means for the client and for our call."""

    error: type[FluxWorkerError]
    message: str  # may name {service}, {status} and {detail} (the redacted upstream text)
    code: str | None = None  # our error code, when not the error type's own
    resend: Resend | None = None  # when not the error type's own
    operator: str | None = None  # what the operator must do; logged at ERROR


_AUTH = Meaning(UpstreamMisconfigured, "{service} refused this server's Cloudflare credentials "
                "(the operator must check CF_API_TOKEN and CF_ACCOUNT_ID; your API key is fine).",
                code="upstream_auth_failed",
                operator="check CF_API_TOKEN (Workers AI Read; KV Storage Edit for KV) and "
                         "CF_ACCOUNT_ID")
_UNROUTABLE = Meaning(UpstreamMisconfigured, "{service} does not know this server's Cloudflare "
                      "account or namespace (the operator must check CF_ACCOUNT_ID and "
                      "CF_KV_NAMESPACE_ID).", operator="check CF_ACCOUNT_ID and CF_KV_NAMESPACE_ID")
_UNKNOWN_MODEL = Meaning(UpstreamMisconfigured, "{service} does not offer this model to this "
                         "server's Cloudflare account (the operator must check FLUX_MODEL and "
                         "IMAGE_MODELS).", code="model_unavailable",
                         operator="choose models this account can run (FLUX_MODEL, IMAGE_MODELS)")
_INVALID = Meaning(InvalidRequest, "{service} rejected the request: {detail}",
                   code="upstream_validation_error")
_RATE_LIMITED = Meaning(RateLimited, "{service} is rate limiting this server; try again shortly.")
_FAILED = Meaning(UpstreamError, "{service} failed (HTTP {status}).")

# Cloudflare's documented codes (developers.cloudflare.com/workers-ai/platform/errors)
# and the ones every Cloudflare API shares; a code wins over the HTTP status.
BY_CODE: dict[int, Meaning] = {
    10000: _AUTH, 9106: _AUTH, 9109: _AUTH,
    7003: _UNROUTABLE,
    10013: Meaning(UpstreamMisconfigured, "{service} does not know this server's namespace (the "
                   "operator must check CF_KV_NAMESPACE_ID).", operator="check CF_KV_NAMESPACE_ID"),
    5016: Meaning(UpstreamMisconfigured, "This model's licence agreement has not been accepted "
                  "on this server's Cloudflare account (the operator must accept it).",
                  code="model_agreement_required",
                  operator="accept the model's licence agreement for this Cloudflare account"),
    3023: Meaning(UpstreamMisconfigured, "Cloudflare has blocked this server's account from "
                  "Workers AI (the operator must resolve it with Cloudflare).",
                  code="account_blocked", operator="the account is blocked: see the Cloudflare "
                                                   "dashboard or contact Cloudflare support"),
    3042: _UNKNOWN_MODEL, 5007: _UNKNOWN_MODEL,
    3036: Meaning(AllowanceExhausted, "This server's Cloudflare account has used its daily "
                  "Workers AI allowance; it resets at 00:00 UTC.",
                  operator="the daily free allowance is used up (Workers Paid lifts it)"),
    3040: Meaning(RateLimited, "Workers AI is out of capacity right now; try again shortly."),
    3030: Meaning(ContentPolicyViolation, "{service} flagged this prompt or its image as unsafe "
                  "({detail}). Rephrase the prompt and try again."),
    3006: Meaning(InvalidRequest, "{service} found the request too large: {detail}",
                  code="upstream_request_too_large"),
    5006: _INVALID, 8006: _INVALID, 5004: _INVALID, 3003: _INVALID,
    3007: Meaning(UpstreamTimeout, "{service} timed out (HTTP {status}).",
                  resend=Resend.IF_IDEMPOTENT),
    # AI Gateway's own refusals (third-party reports; docs/accounts-and-neurons.md).
    2003: Meaning(RateLimited, "AI Gateway is rate limiting this server; try again shortly."),
    2009: Meaning(UpstreamMisconfigured, "AI Gateway refused this server's gateway "
                  "credentials (the operator must check CF_AI_GATEWAY_TOKEN and "
                  "CF_AI_GATEWAY).", code="upstream_auth_failed",
                  operator="check CF_AI_GATEWAY_TOKEN (the gateway is authenticated) and "
                           "CF_AI_GATEWAY"),
    2021: Meaning(AllowanceExhausted, "This server's AI Gateway has no credits left.",
                  operator="the gateway's credits are used up"),
    2041: Meaning(AllowanceExhausted, "This server's AI Gateway spend limit is reached.",
                  operator="the gateway's spend limit is reached"),
}
BY_STATUS: dict[int, Meaning] = {
    400: _INVALID, 413: _INVALID, 422: _INVALID,
    401: _AUTH, 403: _AUTH, 404: _UNROUTABLE,
    408: Meaning(UpstreamTimeout, "{service} timed out (HTTP {status}).",
                 resend=Resend.IF_IDEMPOTENT),
    429: _RATE_LIMITED,
    # 503: Cloudflare did not take the work on, so even a POST may go again.
    503: Meaning(UpstreamError, "{service} is unavailable (HTTP {status}).", resend=Resend.ALWAYS),
    504: Meaning(UpstreamTimeout, "{service} timed out (HTTP {status}).",
                 resend=Resend.IF_IDEMPOTENT),
    524: Meaning(UpstreamTimeout, "{service} timed out (HTTP {status}).",
                 resend=Resend.IF_IDEMPOTENT),
}


MAX_ERRORS = 5  # envelope errors read; the rest are ignored
MAX_MESSAGE_CHARS = 300  # of each message, cut after redaction (never through a secret)


def envelope_errors(answer: Answer, redact: Callable[[str], str]) -> list[tuple[int | None, str]]:
    """Return the (code, redacted message) pairs of a Cloudflare error envelope, if any."""
    try:
        body = answer.json()
    except (ValueError, UnicodeDecodeError, RecursionError):
        return []
    errors = None
    if isinstance(body, dict):  # AI Gateway's own errors say "error", not "errors"
        errors = body.get("errors") if isinstance(body.get("errors"), list) else body.get("error")
    pairs = []
    for item in errors[:MAX_ERRORS] if isinstance(errors, list) else []:
        if isinstance(item, dict):
            pairs.append((_code(item.get("code")),
                          _shorten(redact(str(item.get("message", ""))))))
    return pairs


def _code(value: object) -> int | None:
    """Cloudflare's codes are integers; a numeric string counts too."""
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 9:
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS - 1] + "…"


def error_for(answer: Answer, service: str, redact: Callable[[str], str], *,
              client_input: bool = True) -> FluxWorkerError:
    """Return our error for a Cloudflare answer that is not a success.

    ``client_input``: whether what was refused came from the client (a
    prompt: a 400 for them) or is ours alone (a KV call: a 502).
    """
    errors = envelope_errors(answer, redact)
    upstream_code = next((code for code, _ in errors if code in BY_CODE), None)
    meaning = BY_CODE[upstream_code] if upstream_code is not None else None
    detail = "; ".join(text for _, text in errors if text)
    if meaning is None and answer.status == 400 and any(
            word in detail.lower() for word in ("nsfw", "flagged")):
        meaning, upstream_code = BY_CODE[3030], 3030
    if meaning is None:
        meaning = BY_STATUS.get(answer.status, _FAILED)
    codes = sorted(code for code, _ in errors if code is not None)
    if meaning.operator:
        log.error("%s refused the request (HTTP %s, codes %s): %s", service, answer.status,
                  codes, meaning.operator)
    message = meaning.message.format(service=service, status=answer.status,
                                     detail=detail or f"HTTP {answer.status}")
    retry_after = None
    if meaning.error is AllowanceExhausted:
        retry_after = seconds_until_utc_midnight()
    elif issubclass(meaning.error, RateLimited):
        retry_after = retry_after_seconds(answer)
    error_type, code = meaning.error, meaning.code
    if issubclass(error_type, InvalidRequest) and not client_input:
        error_type, code = UpstreamError, None
    param = "prompt" if issubclass(error_type, InvalidRequest) else None
    error = error_type(message, param=param, code=code, resend=meaning.resend,
                       retry_after=retry_after)
    error.upstream_code = upstream_code or answer.status
    metrics.UPSTREAM_ERRORS.labels(service, str(error.upstream_code)).inc()
    return error


MAX_RETRY_AFTER = 86400  # a longer wait asked for is passed on as a day


def retry_after_seconds(answer: Answer) -> int | None:
    """The whole seconds a Retry-After header asks for, if it gives a number."""
    value = answer.headers.get("Retry-After", "").strip()
    if not value.isdigit():
        return None
    return MAX_RETRY_AFTER if len(value) > 6 else min(int(value), MAX_RETRY_AFTER)


def utc_day(now: float) -> str:
    """The UTC day Workers AI counts allowances by, as YYYY-MM-DD."""
    return datetime.datetime.fromtimestamp(now, datetime.timezone.utc).date().isoformat()


def next_utc_midnight(now: float) -> float:
    """When Workers AI's daily allowances reset after `now` (unix seconds)."""
    return (int(now) // 86400 + 1) * 86400.0


def seconds_until_utc_midnight(now: float | None = None) -> int:
    """Whole seconds until Workers AI's daily allowance resets (00:00 UTC)."""
    now = time.time() if now is None else now
    return max(1, int(next_utc_midnight(now) - now) + 1)


def is_missing_key(answer: Answer, redact: Callable[[str], str]) -> bool:
    """True for KV's 404 about a key (missing or expired), not about the account."""
    codes = {code for code, _ in envelope_errors(answer, redact)}
    return answer.status == 404 and (NOT_FOUND_KEY in codes or not codes & BY_CODE.keys())
