"""A fake Cloudflare on 127.0.0.1: Workers AI, Workers KV and an
OpenAI-compatible prompt optimizer, faithful to the facts the service relies on
(../shared/reference/CLOUDFLARE_API.md) and, on request, as unkind as the real API.

Workers AI (POST /client/v4/accounts/{account}/ai/run/{model}):
- Several accounts, each with its own token and counters: ``fake.accounts``
  maps an account id to a ``FakeAccount`` (ACCOUNT_ID / API_TOKEN is there
  from the start; ``fake.add_account(id, token, ...)`` adds more). A token
  that is not the account's is 401 / 10000; an account nobody added is
  404 / 7003; an unknown model is 400 / 5007.
- An account's dials: ``exhaust_after=N`` answers 429 / 3036 once it has made
  N images (until ``images`` is reset); ``busy=N`` answers its next N calls
  429 / 3040 (with ``Retry-After: busy_retry_after`` when set); ``refused``
  answers 401 / 10000 whatever the token. ``images`` counts what it made.
- flux-1-schnell answers carry ``cf-ai-neurons`` (its cost, 172.8 for 4
  steps, as Cloudflare was seen to send); other models carry none.
- Every input is checked against the model's schema in ``SCHEMAS`` (model ->
  {field: Field(type, minimum, maximum)}, from docs/workers-ai-models.md), and
  the first problem is 400 / 5006 "AiError: Bad input: Error: ..." in ajv's
  words: "must have required property 'prompt'", "must NOT have additional
  properties (<field>)" for any field the model does not list, "<field> must
  be integer" (or number, string, array) and "<field> must be >= N" / "<= N"
  (strings: "must NOT have fewer than N characters"). In JSON a boolean is no
  number and 1.5 is no integer; multipart values are strings, so an integer is
  a decimal ("123"; "12.5" and "abc" are refused).
- flux-1-schnell takes JSON {prompt 1..2048 chars, steps 1..8, seed} (width,
  height and the rest are refused) and always answers a 1024x1024 JPEG as
  base64 in ``result.image`` inside the envelope. Its seed is in Cloudflare's
  docs examples but not its schema: ``fake.schnell_rejects_seed = True``
  (reset() clears it) refuses it as an additional property.
- flux-2-* take multipart only (JSON is 400 / 5006): prompt, width and height
  (256..1920), seed, guidance and input_image_0..3; flux-2-dev also steps
  (1..50), klein refuses steps. They answer base64 at the exact width x height
  asked. lucid-origin (JSON; steps and num_steps 1..40, seed >= 0) answers
  base64 JPEG.
- phoenix-1.0 answers raw image/jpeg, refuses an empty negative_prompt and a
  negative seed; SDXL base and dreamshaper answer raw PNG; SDXL lightning
  answers JPEG bytes labelled image/png.
- The image depends on the seed sent: none gives the same grey gradient every
  time; a seed tints it and adds a block coloured and placed by the seed (the
  same seed, size and format give the same bytes). ``fake.image(w, h, fmt,
  seed=...)`` makes the same bytes; ``fake.seeds_seen(model=None)`` lists the
  seed each Workers AI call carried (None when it had none).
- A prompt holding "nsfw-trigger" is 400 / 3030.

AI Gateway (POST /gateway/v1/{account}/{gateway}/workers-ai/{model}):
- ``fake.add_gateway(account, gateway_id, token=None)``; an unknown gateway
  is 404 with AI Gateway's own error shape ({"error": [...], "name":
  "AiGatewayError"}); an authenticated one needs ``cf-aig-authorization:
  Bearer <token>``, else 401 / 2009. A multipart body is 500 / 7000 (FLUX.2
  does not pass the gateway today: cloudflare-docs #33336).
- Behind it, Workers AI as above (the account's token in Authorization).
- Caching: a request with ``cf-aig-cache-key`` (and no ``cf-aig-skip-cache:
  true``) is answered from the gateway's cache when the same key was
  answered before, with ``cf-aig-cache-status: HIT`` and no call to the
  account; otherwise ``MISS``. Gateway calls are route "ai" with ``gateway``
  set on the Call.

Workers KV (/client/v4/accounts/{account}/storage/kv/namespaces/{ns}/values/{key}):
- PUT stores the raw body; expiration_ttl under 60 is 400 / 10019.
- GET answers raw application/octet-stream, or 404 / 10009 when missing or
  expired; another namespace is 404 / 10013. A key written with a TTL is
  answered with an ``expiration`` header (unix seconds, an integer).
- Eventual consistency: ``fake.kv_visibility_delay`` (seconds, default 0) hides
  a write from GET for that long after the PUT (a new key is 404 / 10009, an
  overwritten key still shows its previous value).
- Negative caching: ``fake.kv_negative_cache_seconds`` (default 0): after a GET
  miss, GETs of that key keep missing for that long, even if it is written
  meanwhile ("Negative lookups are cached too").
- ``fake.kv_value(key)`` and ``fake.kv_ttl(key)`` show what was last written,
  whatever GET would see.

Model Search (GET /client/v4/accounts/{account}/ai/models/search, route
"models"): the account's token checked as above, then one page of models;
the service's readiness check asks it.

Faults are queued per route ("ai", "kv_put", "kv_get", "optimizer", "models") with
``fake.inject(route, *faults)`` and consumed one per request, first in first out.
- status(code, errors, headers, body): an error envelope (or ``body``).
- delay(seconds): wait, then answer normally.  hang(seconds): say nothing, close.
- drop(): close without answering.  malformed(kind): a broken 200.
- trickle(bytes_per_second=1.0, total_seconds=30): the real answer's status and
  headers (true Content-Length), then its body a byte at a time; gives up after
  total_seconds or when the client goes away.
- trickle_headers(seconds_per_line=0.2): a status line, then header lines that
  never end, one at a time (no socket read timeout ever fires).
- stall_after_headers(seconds=30): the real answer's headers and first few
  body bytes, then nothing for ``seconds``, then close.
- html_error(status=502): a text/html error page from Cloudflare's edge
  (502/520/521/522/524 and others), not the JSON envelope.
- echo(status=400, code=5006): an error whose message repeats the request's
  Authorization header, full path (account and namespace ids) and, on "ai" and
  "optimizer", the prompt; "optimizer" answers OpenAI's {"error": {...}} shape.
- The documented codes, each a ready status fault: model_agreement() 403/5016,
  account_blocked() 403/3023, unknown_model_404() 404/3042, unknown_model()
  400/5007, daily_allowance_used() 429/3036, capacity() 429/3040, nsfw()
  400/3030, too_large() 413/3006, invalid_base64() 400/8006.
- image_answer(data): a 200 carrying ``data`` as the requested model answers
  images (base64 in the envelope, or raw bytes with its Content-Type).
Faults that wait stop early when the client disconnects, or when
``fake.reset()`` or ``fake.stop()`` is called.

Every request is recorded in ``fake.calls``; ``fake.calls_to(route)`` filters them.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import re
import secrets
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from PIL import Image

ACCOUNT_ID = "test-account"
API_TOKEN = "cf-test-token"
NAMESPACE_ID = "test-namespace"
OPTIMIZER_KEY = "optimizer-test-key"

NSFW_TRIGGER = "nsfw-trigger"

# model id -> (body encoding, output kind, image format, declared content type)
MODELS = {
    "@cf/black-forest-labs/flux-1-schnell": ("json", "base64", "JPEG", None),
    "@cf/black-forest-labs/flux-2-dev": ("multipart", "base64", "PNG", None),
    "@cf/black-forest-labs/flux-2-klein-4b": ("multipart", "base64", "PNG", None),
    "@cf/black-forest-labs/flux-2-klein-9b": ("multipart", "base64", "PNG", None),
    "@cf/leonardo/lucid-origin": ("json", "base64", "JPEG", None),
    "@cf/leonardo/phoenix-1.0": ("json", "binary", "JPEG", "image/jpeg"),
    "@cf/stabilityai/stable-diffusion-xl-base-1.0": ("json", "binary", "PNG", "image/png"),
    "@cf/bytedance/stable-diffusion-xl-lightning": ("json", "binary", "JPEG", "image/png"),
    "@cf/lykon/dreamshaper-8-lcm": ("json", "binary", "PNG", "image/png"),
    "@cf/runwayml/stable-diffusion-v1-5-img2img": ("json", "binary", "PNG", "image/png"),
    "@cf/runwayml/stable-diffusion-v1-5-inpainting": ("json", "binary", "PNG", "image/png"),
}
IMG2IMG = "@cf/runwayml/stable-diffusion-v1-5-img2img"
INPAINTING = "@cf/runwayml/stable-diffusion-v1-5-inpainting"
REFERENCE_SIDE = 512  # FLUX.2: "All input images must be smaller than 512x512"
FLUX_2 = "@cf/black-forest-labs/flux-2-"
SCHNELL = "@cf/black-forest-labs/flux-1-schnell"
DEFAULT_SIZES = {FLUX_2: (1024, 768), "@cf/leonardo/lucid-origin": (1120, 1120)}


@dataclass(frozen=True)
class Field:
    """One input field of a model's schema: its JSON Schema type ("string",
    "integer", "number", "array", or "file": a multipart part, taken as is)
    and its inclusive bounds (for a string, on its length; None: unbounded)."""

    type: str
    minimum: float | None = None
    maximum: float | None = None


_PROMPT = Field("string", 1, 2048)
_SEED = Field("integer")  # no source gives a range
_SEED_MIN_0 = Field("integer", 0)  # lucid-origin and phoenix: "minimum": 0
_FLUX_2_FIELDS = {"prompt": _PROMPT, "width": Field("integer", 256, 1920),
                  "height": Field("integer", 256, 1920), "seed": _SEED,
                  "guidance": Field("number"),
                  # reference images (documented, unused here)
                  **{f"input_image_{i}": Field("file") for i in range(4)}}
_SDXL_FIELDS = {"prompt": _PROMPT, "negative_prompt": Field("string"),
                "width": Field("integer", 256, 2048), "height": Field("integer", 256, 2048),
                "num_steps": Field("integer", 1, 20), "guidance": Field("number"),
                # "a value between 0 and 1" (in the description, not the schema)
                "strength": Field("number", 0, 1), "seed": _SEED,
                # the input picture's file bytes, and the inpainting mask's
                "image": Field("bytes"), "image_b64": Field("string"), "mask": Field("bytes")}

# model id -> {field: Field}: every input each model accepts (docs/workers-ai-models.md).
# "prompt" is required everywhere; any field not listed is refused as Workers AI's
# schemas (additionalProperties: false) do: 400 / 5006 "must NOT have additional
# properties (<name>)". Multipart values arrive as strings and are read as their type.
SCHEMAS: dict[str, dict[str, Field]] = {
    # seed is in the docs examples only; fake.schnell_rejects_seed refuses it.
    SCHNELL: {"prompt": _PROMPT, "steps": Field("integer", 1, 8), "seed": _SEED},
    FLUX_2 + "dev": {**_FLUX_2_FIELDS, "steps": Field("integer", 1, 50)},
    FLUX_2 + "klein-4b": _FLUX_2_FIELDS,  # steps are fixed at 4: not accepted
    FLUX_2 + "klein-9b": _FLUX_2_FIELDS,
    "@cf/leonardo/lucid-origin": {
        "prompt": _PROMPT, "width": Field("integer", 0, 2500),
        "height": Field("integer", 0, 2500), "steps": Field("integer", 1, 40),
        "num_steps": Field("integer", 1, 40), "guidance": Field("number", 0, 10),
        "seed": _SEED_MIN_0},
    "@cf/leonardo/phoenix-1.0": {
        "prompt": _PROMPT, "negative_prompt": Field("string", 1),
        "width": Field("integer", 0, 2048), "height": Field("integer", 0, 2048),
        "num_steps": Field("integer", 1, 50), "guidance": Field("number", 2, 10),
        "seed": _SEED_MIN_0},
    "@cf/stabilityai/stable-diffusion-xl-base-1.0": _SDXL_FIELDS,
    "@cf/bytedance/stable-diffusion-xl-lightning": _SDXL_FIELDS,
    "@cf/lykon/dreamshaper-8-lcm": _SDXL_FIELDS,
    IMG2IMG: _SDXL_FIELDS,
    INPAINTING: _SDXL_FIELDS,
}
assert SCHEMAS.keys() == MODELS.keys()

_MULTIPART_INTEGER = re.compile(r"-?[0-9]+")
_MULTIPART_NUMBER = re.compile(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?")
IMAGE_CACHE_SIZE = 64  # answers (and gradients) kept; the least recently used go first

ROUTES = ("ai", "kv_put", "kv_get", "optimizer", "models")
POLL_SECONDS = 0.02  # how often a waiting fault looks for a hang-up or a reset


# --- faults ----------------------------------------------------------------

@dataclass(frozen=True)
class Fault:
    """One planned misbehaviour; build them with the functions below."""

    kind: str  # status | delay | hang | malformed | drop | trickle | stall | echo | image
    status: int = 0
    errors: tuple = ()
    headers: dict = field(default_factory=dict)
    body: bytes | None = None
    seconds: float = 0.0
    malformed: str = ""
    content_type: str = "application/json"
    rate: float = 0.0  # trickle: bytes per second
    first_bytes: int = 0  # stall: body bytes sent before stalling
    code: int = 0  # echo: the Cloudflare error code


def status(code: int, errors=None, headers=None, body: bytes | str | None = None) -> Fault:
    """Answer with this HTTP status and a Cloudflare error envelope (or ``body``)."""
    if isinstance(body, str):
        body = body.encode()
    errors = tuple(errors) if errors else ((_default_code(code), f"fake error {code}"),)
    return Fault("status", status=code, errors=errors, headers=dict(headers or {}), body=body)


def delay(seconds: float) -> Fault:
    """Wait, then answer normally."""
    return Fault("delay", seconds=seconds)


def hang(seconds: float = 30.0) -> Fault:
    """Send nothing for ``seconds`` (longer than the client waits), then close."""
    return Fault("hang", seconds=seconds)


def malformed(kind: str) -> Fault:
    """A 200 that is broken: "json" (not JSON), "base64" (bad base64 image) or
    "not_image" (well-formed, but the bytes are not an image)."""
    assert kind in ("json", "base64", "not_image"), kind
    return Fault("malformed", malformed=kind)


def drop() -> Fault:
    """Close the connection without answering."""
    return Fault("drop")


def trickle(bytes_per_second: float = 1.0, total_seconds: float = 30.0) -> Fault:
    """The real answer's status and headers (with its true Content-Length) at
    once, then its body one byte at a time at ``bytes_per_second``; closes the
    connection, body unfinished, after ``total_seconds`` or when the client goes."""
    assert bytes_per_second > 0, bytes_per_second
    return Fault("trickle", rate=bytes_per_second, seconds=total_seconds)


def trickle_headers(seconds_per_line: float = 0.2, total_seconds: float = 30.0) -> Fault:
    """A status line, then one harmless header line every ``seconds_per_line``,
    never ending the head; closes after ``total_seconds`` or when the client goes.
    Socket read timeouts never fire on it: only a deadline for the whole call does."""
    return Fault("trickle_headers", rate=1.0 / seconds_per_line, seconds=total_seconds)


def stall_after_headers(seconds: float = 30.0, first_bytes: int = 8) -> Fault:
    """The real answer's status, headers (true Content-Length) and its first
    ``first_bytes`` body bytes, then nothing for ``seconds``, then close."""
    return Fault("stall", seconds=seconds, first_bytes=first_bytes)


def html_error(status: int = 502, host: str = "api.cloudflare.com") -> Fault:
    """A 5xx page as Cloudflare's edge serves it: text/html, not JSON."""
    title = EDGE_ERRORS.get(status) or _phrase(status)
    ray = secrets.token_hex(8)
    page = EDGE_PAGE.format(host=host, status=status, title=title, title_lower=title.lower(),
                            ray=ray,
                            when=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    return Fault("status", status=status, body=page.encode(),
                 content_type="text/html; charset=UTF-8",
                 headers={"Server": "cloudflare", "CF-RAY": f"{ray}-SJC",
                          "Cache-Control": "private, max-age=0, no-store, no-cache"})


def echo(status: int = 400, code: int = 5006) -> Fault:
    """An error whose message repeats what the client sent: its Authorization
    header, the full request path and (on "ai" and "optimizer") the prompt. On
    "optimizer" the body is OpenAI's ``{"error": {"message": ...}}``."""
    return Fault("echo", status=status, code=code)


def image_answer(data: bytes) -> Fault:
    """A 200 answering ``data`` as the requested model answers images: base64 in
    ``result.image`` for base64 models, raw bytes with the model's declared
    Content-Type for binary ones (raw octet-stream on the KV routes)."""
    return Fault("image", body=bytes(data))


# The errors Cloudflare documents (dcd:/workers-ai/platform/errors and
# CLOUDFLARE_API.md §1, §6). Messages are the docs' descriptions unless noted.

def model_agreement(headers=None) -> Fault:
    """403 / 5016: the account has not agreed to the model's terms."""
    return status(403, [(5016, "User has not agreed to Llama3.2 model terms")], headers)


def account_blocked(headers=None) -> Fault:
    """403 / 3023: the account may not use Workers AI."""
    return status(403, [(3023, "Service unavailable for account")], headers)


def unknown_model_404(headers=None) -> Fault:
    """404 / 3042: "Invalid model ID"."""
    return status(404, [(3042, "The model name is invalid")], headers)


def unknown_model(model: str = "@cf/unknown/model", headers=None) -> Fault:
    """400 / 5007: "No such model ${model} or task"."""
    return status(400, [(5007, f"No such model {model} or task")], headers)


def daily_allowance_used(headers=None) -> Fault:
    """429 / 3036: the free 10,000 neurons of the day are used up (until 00:00 UTC)."""
    return status(429, [(3036, "You have used up your daily free allocation of 10,000 "
                               "neurons. Please upgrade to Cloudflare's Workers Paid plan "
                               "if you would like to continue usage.")], headers)


def capacity(headers=None) -> Fault:
    """429 / 3040: out of capacity. The errors table says "No more data centers
    to forward the request to"; this is the text workers-ai/features/reject-if-busy
    quotes, which is what a busy model answers."""
    return status(429, [(3040, "Capacity temporarily exceeded, please try again.")], headers)


def nsfw(headers=None) -> Fault:
    """400 / 3030 (third-party reports; not in Cloudflare's table)."""
    return status(400, [(3030, "Input prompt contains NSFW content.")], headers)


def too_large(headers=None) -> Fault:
    """413 / 3006: the request is too large."""
    return status(413, [(3006, "Request is too large")], headers)


def invalid_base64(headers=None) -> Fault:
    """400 / 8006: an input image is not valid base64 (CLOUDFLARE_API.md §6)."""
    return status(400, [(8006, "Invalid data for image - invalid base64 encoding")], headers)


def _phrase(http_status: int) -> str:
    try:
        return HTTPStatus(http_status).phrase
    except ValueError:
        return "Error"


def _default_code(http_status: int) -> int:
    return {401: 10000, 403: 10000, 404: 7003, 408: 3007, 413: 3006,
            429: 3040}.get(http_status, 5006 if http_status < 500 else 1000)


# --- Cloudflare's edge error pages (for html_error) ---------------------------

# Titles of the error pages Cloudflare's edge answers for these statuses.
EDGE_ERRORS = {
    500: "Internal server error", 502: "Bad gateway", 503: "Service unavailable",
    504: "Gateway time-out", 520: "Web server is returning an unknown error",
    521: "Web server is down", 522: "Connection timed out",
    523: "Origin is unreachable", 524: "A timeout occurred",
}

EDGE_PAGE = """<!DOCTYPE html>
<!--[if lt IE 7]> <html class="no-js ie6 oldie" lang="en-US"> <![endif]-->
<!--[if IE 7]>    <html class="no-js ie7 oldie" lang="en-US"> <![endif]-->
<!--[if IE 8]>    <html class="no-js ie8 oldie" lang="en-US"> <![endif]-->
<!--[if gt IE 8]><!--> <html class="no-js" lang="en-US"> <!--<![endif]-->
<head>
<title>{host} | {status}: {title}</title>
<meta charset="UTF-8" />
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
<meta http-equiv="X-UA-Compatible" content="IE=Edge" />
<meta name="robots" content="noindex, nofollow" />
<meta name="viewport" content="width=device-width,initial-scale=1" />
<link rel="stylesheet" id="cf_styles-css" href="/cdn-cgi/styles/main.css" />
</head>
<body>
<div id="cf-wrapper">
  <div id="cf-error-details" class="p-0">
    <header class="mx-auto pt-10 lg:pt-6 lg:px-8 w-240 lg:w-full mb-8">
      <h1 class="inline-block sm:block sm:mb-2 font-light text-60 lg:text-4xl text-black-dark leading-tight mr-2">
        <span class="inline-block">{title}</span>
        <span class="code-label">Error code {status}</span>
      </h1>
      <div>
        Visit <a href="https://www.cloudflare.com/5xx-error-landing?utm_source=errorcode_{status}&utm_campaign={host}" target="_blank" rel="noopener noreferrer">cloudflare.com</a> for more information.
      </div>
      <div class="mt-3">{when}</div>
    </header>
    <div class="my-8 bg-gradient-gray">
      <div class="w-240 lg:w-full mx-auto">
        <div class="clearfix md:px-8">
          <div id="cf-browser-status" class="relative w-1/3 md:w-full py-15 md:p-0 md:py-8 md:text-left md:border-solid md:border-0 md:border-b md:border-gray-400 overflow-hidden float-left md:float-none text-center">
            <span class="md:block w-full truncate">You</span>
            <h3 class="md:inline-block mt-3 md:mt-0 text-2xl text-gray-600 font-light leading-1.3">Browser</h3>
            <span class="leading-1.3 text-2xl text-green-success">Working</span>
          </div>
          <div id="cf-cloudflare-status" class="relative w-1/3 md:w-full py-15 md:p-0 md:py-8 md:text-left md:border-solid md:border-0 md:border-b md:border-gray-400 overflow-hidden float-left md:float-none text-center">
            <span class="md:block w-full truncate">San Jose</span>
            <h3 class="md:inline-block mt-3 md:mt-0 text-2xl text-gray-600 font-light leading-1.3">Cloudflare</h3>
            <span class="leading-1.3 text-2xl text-green-success">Working</span>
          </div>
          <div id="cf-host-status" class="cf-error-source relative w-1/3 md:w-full py-15 md:p-0 md:py-8 md:text-left md:border-solid md:border-0 md:border-b md:border-gray-400 overflow-hidden float-left md:float-none text-center">
            <span class="md:block w-full truncate">{host}</span>
            <h3 class="md:inline-block mt-3 md:mt-0 text-2xl text-gray-600 font-light leading-1.3">Host</h3>
            <span class="leading-1.3 text-2xl text-red-error">Error</span>
          </div>
        </div>
      </div>
    </div>
    <div class="w-240 lg:w-full mx-auto mb-8 lg:px-8">
      <div class="clearfix">
        <div class="w-1/2 md:w-full float-left pr-6 md:pb-10 md:pr-0 leading-relaxed">
          <h2 class="text-3xl font-normal leading-1.3 mb-4">What happened?</h2>
          <p>The web server reported a {title_lower} error.</p>
        </div>
        <div class="w-1/2 md:w-full float-left leading-relaxed">
          <h2 class="text-3xl font-normal leading-1.3 mb-4">What can I do?</h2>
          <p class="mb-6">Please try again in a few minutes.</p>
        </div>
      </div>
    </div>
    <div class="cf-error-footer cf-wrapper w-240 lg:w-full py-10 sm:py-4 sm:px-8 mx-auto text-center sm:text-left border-solid border-0 border-t border-gray-300">
      <p class="text-13">
        <span class="cf-footer-item sm:block sm:mb-1">Cloudflare Ray ID: <strong class="font-semibold">{ray}</strong></span>
        <span class="cf-footer-separator sm:hidden">&bull;</span>
        <span id="cf-footer-item-ip" class="cf-footer-item hidden sm:block sm:mb-1">Your IP: <span class="hidden" id="cf-footer-ip">127.0.0.1</span></span>
        <span class="cf-footer-separator sm:hidden">&bull;</span>
        <span class="cf-footer-item sm:block sm:mb-1"><span>Performance &amp; security by</span> <a rel="noopener noreferrer" href="https://www.cloudflare.com/5xx-error-landing?utm_source=errorcode_{status}&utm_campaign={host}" id="brand_link" target="_blank">Cloudflare</a></span>
      </p>
    </div>
  </div>
</div>
</body>
</html>
"""  # noqa: E501 (Cloudflare's edge error page as served, long lines included)


# --- records ---------------------------------------------------------------

@dataclass
class Call:
    """One request the fake received."""

    route: str
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes
    json: dict | None = None
    form: dict | None = None
    model: str | None = None
    account: str | None = None  # Workers AI: the account in the path
    gateway: str | None = None  # AI Gateway: the gateway id in the path
    status: int | None = None  # what Workers AI answered (set once it has)


@dataclass
class FakeAccount:
    """One Cloudflare account: its token, its counters and its dials."""

    token: str
    exhaust_after: int | None = None
    busy: int = 0
    busy_retry_after: int | None = None
    refused: bool = False
    images: int = 0


@dataclass
class FakeGateway:
    token: str | None = None
    cache: dict = field(default_factory=dict)  # cache key -> the answer


SCHNELL_NEURONS_PER_TILE = (4.80, 9.60)  # per tile, per tile-step (docs/accounts-and-neurons.md)


def envelope(result=None, errors=(), success=True) -> bytes:
    return json.dumps({"result": result, "success": success,
                       "errors": [{"code": c, "message": m} for c, m in errors],
                       "messages": []}).encode()


@dataclass
class _KvEntry:
    """One write of a KV key; ``previous`` is what GET shows until it is visible."""

    value: bytes
    expires: float | None  # unix seconds
    visible_at: float  # time.monotonic()
    previous: _KvEntry | None = None

    def expired(self) -> bool:
        return self.expires is not None and self.expires <= time.time()


@dataclass
class _Answer:
    """What a handler would have sent, kept to send it slowly."""

    status: int
    body: bytes
    content_type: str
    headers: dict


_WRONG_TYPE = object()  # what _read answers for a value not of the type asked


def _read(raw, kind: str, multipart: bool):
    """``raw`` as a value of JSON Schema type ``kind``, or _WRONG_TYPE. JSON
    values are taken as ajv takes them (a boolean is no number, 2.0 is an
    integer, 2.5 is not); multipart values are strings, read as decimals."""
    if kind == "file":
        return raw
    if multipart:
        if not isinstance(raw, str):  # a part sent with a filename: bytes
            return _WRONG_TYPE
        if kind == "integer":
            return int(raw) if _MULTIPART_INTEGER.fullmatch(raw) else _WRONG_TYPE
        if kind == "number":
            return float(raw) if _MULTIPART_NUMBER.fullmatch(raw) else _WRONG_TYPE
        return raw if kind == "string" else _WRONG_TYPE
    if kind == "string":
        return raw if isinstance(raw, str) else _WRONG_TYPE
    if kind == "array":
        return raw if isinstance(raw, list) else _WRONG_TYPE
    if kind == "bytes":  # an array of numbers 0..255: a file's bytes
        if not isinstance(raw, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in raw):
            return _WRONG_TYPE
        return bytes(raw)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        return _WRONG_TYPE
    if kind == "integer":
        return int(raw) if float(raw).is_integer() else _WRONG_TYPE
    return raw


def _decoded(data) -> Image.Image | None:
    """A whole PNG, JPEG or WEBP image from bytes (a multipart file, an
    array's bytes), or None."""
    if not isinstance(data, (bytes, bytearray)):
        return None
    try:
        with Image.open(io.BytesIO(data), formats=["PNG", "JPEG", "WEBP"]) as picture:
            picture.load()
            return picture.copy()
    except Exception:
        return None


def input_pictures(call: Call) -> list[Image.Image]:
    """The pictures a Workers AI call carried, in order: FLUX.2 references,
    then an SD init image (the mask is ``input_mask``)."""
    inputs = call.form if call.form is not None else call.json or {}
    names = sorted(n for n in inputs if n.startswith("input_image_")) + ["image"]
    found = [_decoded(bytes(inputs[n]) if isinstance(inputs.get(n), list) else inputs.get(n))
             for n in names if n in inputs]
    return [p for p in found if p is not None]


def input_mask(call: Call) -> Image.Image | None:
    mask = (call.json or {}).get("mask")
    return _decoded(bytes(mask)) if isinstance(mask, list) else None


def _bound(cache: dict) -> None:
    """Drop the least recently used (first) entries past IMAGE_CACHE_SIZE."""
    while len(cache) > IMAGE_CACHE_SIZE:
        del cache[next(iter(cache))]


def _seed_tint(seed: int) -> tuple[tuple[int, int, int], tuple[float, float]]:
    """A colour and a place (fractions of the free width and height) from a seed."""
    digest = hashlib.blake2b(str(seed).encode(), digest_size=8).digest()
    return (digest[0], digest[1], digest[2]), (digest[3] / 255, digest[4] / 255)


# --- the server --------------------------------------------------------------

class FakeCloudflare:
    """Start with ``with FakeCloudflare() as fake:``; see the module docstring."""

    def __init__(self, latency: float = 0.0, image_padding: int = 0):
        self.latency = latency
        self.image_padding = image_padding
        self.optimizer_reply = "{prompt}, highly detailed, soft light"
        self.kv_visibility_delay = 0.0
        self.kv_negative_cache_seconds = 0.0
        self.schnell_rejects_seed = False
        self.accounts = {ACCOUNT_ID: FakeAccount(API_TOKEN)}
        self.gateways: dict[tuple[str, str], FakeGateway] = {}
        self.calls: list[Call] = []
        self._faults: dict[str, list[Fault]] = {}
        self._kv: dict[str, _KvEntry] = {}
        self._kv_ttls: dict[str, int | None] = {}
        self._kv_misses: dict[str, float] = {}  # key -> time.monotonic() of the cached miss
        self._images: dict[tuple, bytes] = {}  # least recently used first
        self._gradients: dict[tuple[int, int], Image.Image] = {}  # by size, the same way
        self._lock = threading.Lock()
        # Set to wake every waiting fault; replaced by a fresh one on reset().
        self._halt = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> FakeCloudflare:
        handler = type("Handler", (_Handler,), {"fake": self})
        server = _Server(("127.0.0.1", 0), handler, bind_and_activate=False)
        server.request_queue_size = 1024
        server.daemon_threads = True
        server.server_bind()
        server.server_activate()
        self._halt = threading.Event()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fake-cloudflare",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._halt.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeCloudflare:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_base(self) -> str:
        return self.base + "/client/v4"

    @property
    def optimizer_base(self) -> str:
        return self.base

    # test controls
    def reset(self) -> None:
        """Forget calls, faults and KV; restore defaults; end every waiting fault."""
        with self._lock:
            self.calls.clear()
            self._faults.clear()
            self._kv.clear()
            self._kv_ttls.clear()
            self._kv_misses.clear()
            halt, self._halt = self._halt, threading.Event()
        halt.set()
        self.accounts = {ACCOUNT_ID: FakeAccount(API_TOKEN)}
        self.gateways = {}
        self.latency = 0.0
        self.optimizer_reply = "{prompt}, highly detailed, soft light"
        self.kv_visibility_delay = 0.0
        self.kv_negative_cache_seconds = 0.0
        self.schnell_rejects_seed = False

    def add_account(self, account_id: str, token: str, **dials) -> FakeAccount:
        account = FakeAccount(token, **dials)
        with self._lock:
            self.accounts[account_id] = account
        return account

    def add_gateway(self, account_id: str, gateway_id: str, token: str | None = None
                    ) -> FakeGateway:
        gateway = FakeGateway(token)
        with self._lock:
            self.gateways[(account_id, gateway_id)] = gateway
        return gateway

    @property
    def gateway_base(self) -> str:
        return self.base + "/gateway/v1"

    def inject(self, route: str, *faults: Fault) -> None:
        assert route in ROUTES, route
        with self._lock:
            self._faults.setdefault(route, []).extend(faults)

    def calls_to(self, route: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.route == route]

    def seeds_seen(self, model: str | None = None) -> list:
        """The seed each Workers AI call carried (to ``model``, or to any), in
        order: an int when it reads as one (multipart too), None when absent,
        else the raw value."""
        seeds = []
        for call in self.calls_to("ai"):
            if model is not None and call.model != model:
                continue
            inputs = call.json if isinstance(call.json, dict) else call.form or {}
            seed = inputs.get("seed")
            multipart = not isinstance(call.json, dict)
            value = _read(seed, "integer", multipart) if seed is not None else None
            seeds.append(seed if value is _WRONG_TYPE else value)
        return seeds

    def kv_value(self, key: str) -> bytes | None:
        """The value last written under key (None: never, or expired), visible
        to GET or not yet."""
        with self._lock:
            entry = self._kv.get(key)
        if entry is None or entry.expired():
            return None
        return entry.value

    def kv_ttl(self, key: str) -> int | None:
        """The expiration_ttl the key was last written with (None: none given)."""
        with self._lock:
            return self._kv_ttls.get(key)

    # internals used by the handler
    def _record(self, call: Call) -> tuple[Fault | None, threading.Event]:
        with self._lock:
            self.calls.append(call)
            queue = self._faults.get(call.route)
            return (queue.pop(0) if queue else None), self._halt

    def _kv_write(self, key: str, value: bytes, ttl: int | None) -> None:
        now = time.monotonic()
        expires = time.time() + ttl if ttl is not None else None
        with self._lock:
            previous = self._kv.get(key)
            # Keep the chain short: nothing older than the newest visible write matters.
            last = previous
            while last is not None and last.visible_at > now:
                last = last.previous
            if last is not None:
                last.previous = None
            self._kv[key] = _KvEntry(value, expires, now + self.kv_visibility_delay, previous)
            self._kv_ttls[key] = ttl

    def _kv_read(self, key: str) -> _KvEntry | None:
        """What a GET sees now, after visibility delay and negative caching."""
        now = time.monotonic()
        with self._lock:
            missed = self._kv_misses.get(key)
            if missed is not None and now < missed + self.kv_negative_cache_seconds:
                return None  # a cached miss; asking again does not extend it
            entry = self._kv.get(key)
            while entry is not None and entry.visible_at > now:
                entry = entry.previous
            if entry is None or entry.expired():
                self._kv_misses[key] = now
                return None
            return entry

    def image(self, width: int, height: int, fmt: str, enveloped: bool = False,
              seed: int | None = None, base: Image.Image | None = None) -> bytes:
        """The image bytes, or the whole base64 envelope, kept for the last
        IMAGE_CACHE_SIZE (size, format, padding, envelope, seed) asked (so that,
        under load, the fake spends little CPU of its own).

        Without a seed it is a grey gradient, always the same. A seed tints it
        and lays a block on it, both coloured and placed by the seed: the same
        seed gives the same bytes, two seeds give different pixels. With a
        ``base`` (the first picture sent in) it is that picture stretched to
        the size, tinted the same way: an edit looks like what it edited."""
        key = (width, height, fmt, self.image_padding, enveloped, seed)
        with self._lock:
            cached = self._images.pop(key, None) if base is None else None
            if cached is not None:
                self._images[key] = cached  # now the most recently used
                return cached
        if base is None:
            picture = self._gradient(width, height)
        else:
            picture = base.convert("RGB").resize((width, height))
        if seed is not None:
            colour, (across, down) = _seed_tint(seed)
            picture = Image.blend(picture, Image.new("RGB", (width, height), colour), 0.3)
            block_w, block_h = max(1, width // 3), max(1, height // 3)
            left, top = round(across * (width - block_w)), round(down * (height - block_h))
            picture.paste(colour, (left, top, left + block_w, top + block_h))
        out = io.BytesIO()
        picture.save(out, fmt, quality=80) if fmt == "JPEG" else picture.save(out, fmt)
        # Decoders ignore bytes after the end marker, so padding keeps it valid.
        made = out.getvalue() + b"\0" * self.image_padding
        if enveloped:
            made = envelope({"image": base64.b64encode(made).decode()})
        if base is not None:
            return made
        with self._lock:
            self._images[key] = made
            _bound(self._images)
        return made

    def _gradient(self, width: int, height: int) -> Image.Image:
        """The unseeded picture (never changed in place: seeds draw on a copy)."""
        with self._lock:
            picture = self._gradients.pop((width, height), None)
            if picture is not None:
                self._gradients[width, height] = picture
                return picture
        picture = Image.linear_gradient("L").resize((width, height)).convert("RGB")
        with self._lock:
            self._gradients[width, height] = picture
            _bound(self._gradients)
        return picture


class _Server(ThreadingHTTPServer):
    """Names its connection threads so tests can tell them from the app's."""

    def process_request(self, request, client_address) -> None:
        threading.Thread(target=self.process_request_thread, args=(request, client_address),
                         name="fake-cloudflare-connection", daemon=True).start()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without this, Nagle and
    # delayed ACKs add 40 ms to small answers, which real servers do not.
    disable_nagle_algorithm = True
    fake: FakeCloudflare
    _halt: threading.Event = threading.Event()  # the fake's, taken per request
    _captured: list | None = None  # when a list, _send records instead of sending
    _server_header: str | None = None

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    # plumbing
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _head(self, code: int, length: int, content_type: str, headers: dict | None) -> None:
        headers = dict(headers or {})
        self._server_header = headers.pop("Server", None)  # replaces BaseHTTP's own
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def version_string(self) -> str:
        return self._server_header or super().version_string()

    def _send(self, code: int, body: bytes, content_type: str = "application/json",
              headers: dict | None = None) -> None:
        if self._captured is not None:
            self._captured.append(_Answer(code, body, content_type, dict(headers or {})))
            return
        self._head(code, len(body), content_type, headers)
        self.wfile.write(body)

    def _error(self, code: int, cf_code: int, message: str, headers: dict | None = None) -> None:
        self._send(code, envelope(None, [(cf_code, message)], success=False), headers=headers)

    def _gateway_error(self, code: int, gateway_code: int, message: str) -> None:
        self._send(code, json.dumps({
            "success": False, "result": [], "messages": [],
            "error": [{"code": gateway_code, "message": message}],
            "name": "AiGatewayError", "httpCode": code, "internalCode": gateway_code}).encode())

    def _authorized(self, token: str) -> bool:
        return self.headers.get("Authorization") == f"Bearer {token}"

    def _client_gone(self) -> bool:
        """Whether the client has closed its end (a readable socket with no data)."""
        try:
            poller = select.poll()  # unlike select.select, fine with any descriptor number
            poller.register(self.connection, select.POLLIN)
            if not poller.poll(0):
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _idle(self, seconds: float, deadline: float = math.inf) -> bool:
        """Wait ``seconds``; False if cut short by reset()/stop(), the client
        hanging up, or the ``deadline`` (time.monotonic()) passing first."""
        end = min(time.monotonic() + seconds, deadline)
        while True:
            if self._halt.is_set() or self._client_gone():
                return False
            left = end - time.monotonic()
            if left <= 0:
                return end < deadline
            self._halt.wait(min(left, POLL_SECONDS))

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        body = self._body()
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = url.path
        match = re.fullmatch(r"/client/v4/accounts/([^/]+)/ai/run/(.+)", path)
        gateway = re.fullmatch(r"/gateway/v1/([^/]+)/([^/]+)/workers-ai/(.+)", path)
        models = re.fullmatch(r"/client/v4/accounts/([^/]+)/ai/models/search", path)
        kv = re.fullmatch(r"/client/v4/accounts/([^/]+)/storage/kv/namespaces/([^/]+)/values/(.+)",
                          path)
        if method == "POST" and match:
            call = Call("ai", method, path, query, headers, body, model=unquote(match[2]),
                        account=match[1])
            self._parse_body(call)
            handler = lambda: self._ai(call, match[1])  # noqa: E731
        elif method == "POST" and gateway:
            call = Call("ai", method, path, query, headers, body, model=unquote(gateway[3]),
                        account=gateway[1], gateway=gateway[2])
            self._parse_body(call)
            handler = lambda: self._through_gateway(call, gateway[1], gateway[2])  # noqa: E731
        elif method == "GET" and models:
            call = Call("models", method, path, query, headers, body, account=models[1])
            handler = lambda: self._models(call, models[1])  # noqa: E731
        elif kv and method in ("PUT", "GET"):
            route = "kv_put" if method == "PUT" else "kv_get"
            call = Call(route, method, path, query, headers, body)
            handler = lambda: self._kv(call, kv[1], kv[2], unquote(kv[3]))  # noqa: E731
        elif method == "POST" and path in ("/v1/chat/completions", "/chat/completions"):
            call = Call("optimizer", method, path, query, headers, body)
            self._parse_body(call)
            handler = lambda: self._optimizer(call)  # noqa: E731
        else:
            self._error(404, 7003, "Could not route to " + path
                        + ", perhaps your object identifier is invalid?")
            return
        fault, self._halt = self.fake._record(call)
        if fault is None:
            handler()
        else:
            self._fault(fault, call, handler)

    def _parse_body(self, call: Call) -> None:
        content_type = call.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            try:
                call.json = json.loads(call.body)
            except ValueError:
                call.json = None
        elif content_type.startswith("multipart/form-data"):
            message = BytesParser(policy=HTTP).parsebytes(
                b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + call.body)
            call.form = {part.get_param("name", header="content-disposition"):
                         part.get_content() for part in message.iter_parts()}

    # faults
    def _fault(self, fault: Fault, call: Call, handler) -> None:
        if fault.kind == "drop":
            self.close_connection = True
        elif fault.kind == "hang":
            self._idle(fault.seconds)
            self.close_connection = True
        elif fault.kind == "delay":
            if self._idle(fault.seconds):
                handler()
            else:
                self.close_connection = True
        elif fault.kind == "status":
            body = fault.body if fault.body is not None else envelope(
                None, fault.errors, success=False)
            self._send(fault.status, body, fault.content_type, headers=fault.headers)
        elif fault.kind == "malformed":
            if fault.malformed == "json":
                self._send(200, b'{"result": {"image": "abc', "application/json")
            elif fault.malformed == "base64":
                self._send(200, envelope({"image": "%%% not base64 %%%"}))
            else:
                self._send(200, envelope({"image": base64.b64encode(b"hello").decode()}))
        elif fault.kind in ("trickle", "stall"):
            self._slowly(fault, self._capture(handler))
        elif fault.kind == "trickle_headers":
            self._trickle_head(fault)
        elif fault.kind == "echo":
            self._echo(fault, call)
        elif fault.kind == "image":
            self._image_answer(fault.body, call)
        else:
            raise AssertionError(f"unknown fault kind {fault.kind!r}")

    def _capture(self, handler) -> _Answer:
        """What ``handler`` would send, without sending it (captures nest)."""
        outer, self._captured = self._captured, []
        try:
            handler()
            return self._captured[0]
        finally:
            self._captured = outer

    def _slowly(self, fault: Fault, answer: _Answer) -> None:
        """Send ``answer``'s head at once and its body a trickle, or stall."""
        body = answer.body
        deadline = time.monotonic() + fault.seconds
        sent = 0
        try:
            self._head(answer.status, len(body), answer.content_type, answer.headers)
            if fault.kind == "stall":
                sent = min(fault.first_bytes, len(body))
                self.wfile.write(body[:sent])
                self._idle(fault.seconds)
            else:
                interval = 1.0 / fault.rate
                while sent < len(body):
                    self.wfile.write(body[sent:sent + 1])
                    sent += 1
                    if sent < len(body) and not self._idle(interval, deadline):
                        break
        except OSError:  # the client went away
            pass
        if sent < len(body):
            self.close_connection = True

    def _trickle_head(self, fault: Fault) -> None:
        deadline = time.monotonic() + fault.seconds
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            line = 0
            while self._idle(1.0 / fault.rate, deadline):
                line += 1
                self.wfile.write(f"X-Slow-{line}: still coming\r\n".encode())
        except OSError:  # the client went away
            pass
        self.close_connection = True

    def _echo(self, fault: Fault, call: Call) -> None:
        authorization = self.headers.get("Authorization")
        prompt = self._prompt(call)
        if call.route == "optimizer":
            message = (f"Invalid request: got {authorization} on {self.path} "
                       f"for prompt {prompt!r}")
            return self._send(fault.status, json.dumps({"error": {
                "message": message, "type": "invalid_request_error", "param": None,
                "code": None}}).encode())
        if call.route == "ai":
            message = (f"AiError: Bad input: Error: got {authorization} on {self.path} "
                       f"for prompt {prompt!r}")
        else:
            verb = "put" if call.route == "kv_put" else "get"
            message = f"{verb}: got {authorization} on {self.path}"
        self._send(fault.status, envelope(None, [(fault.code, message)], success=False))

    @staticmethod
    def _prompt(call: Call) -> str | None:
        if call.route == "optimizer":
            messages = (call.json or {}).get("messages") or []
            return next((str(m.get("content", "")) for m in reversed(messages)
                         if isinstance(m, dict) and m.get("role") == "user"), None)
        inputs = call.json if isinstance(call.json, dict) else call.form or {}
        prompt = inputs.get("prompt")
        return prompt if prompt is None or isinstance(prompt, str) else str(prompt)

    def _image_answer(self, data: bytes, call: Call) -> None:
        spec = MODELS.get(call.model or "")
        if call.route != "ai":
            self._send(200, data, "application/octet-stream")
        elif spec is not None and spec[1] == "binary":
            self._send(200, data, spec[3])
        else:
            self._send(200, envelope({"image": base64.b64encode(data).decode()}))

    # Workers AI
    # AI Gateway
    def _through_gateway(self, call: Call, account: str, gateway_id: str) -> None:
        gateway = self.fake.gateways.get((account, gateway_id))
        if gateway is None:
            return self._gateway_error(404, 2001, "Gateway not found")
        if gateway.token is not None and (
                call.headers.get("cf-aig-authorization") != f"Bearer {gateway.token}"):
            return self._gateway_error(401, 2009, "Unauthorized")
        if call.form is not None:
            return self._error(500, 7000, "Internal server error")
        key = call.headers.get("cf-aig-cache-key")
        if call.headers.get("cf-aig-skip-cache", "").lower() == "true":
            key = None
        with self.fake._lock:
            cached = gateway.cache.get(key) if key else None
        if cached is not None:
            return self._send(cached.status, cached.body, cached.content_type,
                              {**cached.headers, "cf-aig-cache-status": "HIT"})
        answer = self._capture(lambda: self._ai(call, account))
        if key and answer.status == 200:
            with self.fake._lock:
                gateway.cache[key] = answer
        self._send(answer.status, answer.body, answer.content_type,
                   {**answer.headers, "cf-aig-cache-status": "MISS"})

    # Workers AI
    def _account_refusal(self, account_id: str) -> bool:
        """Answer Cloudflare's refusal of this token or account, if it refuses."""
        account = self.fake.accounts.get(account_id)
        if account is None:
            if not any(self._authorized(known.token) for known in self.fake.accounts.values()):
                self._error(401, 10000, "Authentication error")
            else:
                self._error(404, 7003, "Could not route to /accounts/" + account_id
                            + ", perhaps your object identifier is invalid?")
            return True
        if account.refused or not self._authorized(account.token):
            self._error(401, 10000, "Authentication error")
            return True
        return False

    def _models(self, call: Call, account_id: str) -> None:
        """Model Search: the models the account may run (one page)."""
        if self._account_refusal(account_id):
            return
        per_page = int(call.query.get("per_page", "20") or 20)
        names = list(MODELS)[:max(1, per_page)]
        self._send(200, envelope([{"name": name, "task": {"name": "Text-to-Image"}}
                                  for name in names]))

    def _ai(self, call: Call, account_id: str) -> None:
        answer = self._capture(lambda: self._run(call, account_id))
        call.status = answer.status
        self._send(answer.status, answer.body, answer.content_type, answer.headers)

    def _run(self, call: Call, account_id: str) -> None:
        if self._account_refusal(account_id):
            return
        account = self.fake.accounts[account_id]
        with self.fake._lock:
            busy = account.busy > 0
            account.busy -= busy
            limit = account.exhaust_after
            exhausted = limit is not None and account.images >= limit
        if exhausted:
            return self._error(429, 3036, "You have used up your daily free allocation of "
                               "10,000 neurons. Please upgrade to Cloudflare's Workers Paid plan "
                               "if you would like to continue usage.")
        if busy:
            retry = account.busy_retry_after
            return self._error(429, 3040, "Capacity temporarily exceeded, please try again.",
                               {"Retry-After": str(retry)} if retry is not None else None)
        self._draw(call)
        if self._captured and self._captured[-1].status == 200:
            with self.fake._lock:
                account.images += 1

    def _draw(self, call: Call) -> None:
        spec = MODELS.get(call.model)
        if spec is None:
            return self._error(400, 5007, f"No such model {call.model} or task")
        encoding, output, fmt, declared = spec
        if encoding == "multipart":
            if call.form is None:
                return self._error(400, 5006, "AiError: Bad input: Error: multipart form "
                                   "data is required")
            inputs = dict(call.form)
        else:
            if not isinstance(call.json, dict):
                return self._error(400, 5006, "AiError: Bad input: Error: body must be JSON")
            inputs = call.json
        values, problem = self._check_inputs(call.model, inputs, encoding == "multipart")
        if problem:
            return self._error(400, 5006, "AiError: Bad input: Error: " + problem)
        pictures, problem = self._pictures(call.model, values)
        if problem:
            return self._error(*problem)
        if NSFW_TRIGGER in values["prompt"]:
            return self._error(400, 3030, "Input prompt contains NSFW content.")
        if self.fake.latency:
            self._halt.wait(self.fake.latency)
        width, height = self._size(call.model, values)
        seed = values.get("seed")
        base = pictures[0] if pictures else None
        if output == "binary":
            self._send(200, self.fake.image(width, height, fmt, seed=seed, base=base), declared)
            return
        headers = None
        if call.model == SCHNELL:  # 1024x1024: four tiles
            per_tile, per_tile_step = SCHNELL_NEURONS_PER_TILE
            neurons = 4 * (per_tile + per_tile_step * values.get("steps", 4))
            headers = {"cf-ai-neurons": f"{neurons:.2f}"}
        self._send(200, self.fake.image(width, height, fmt, enveloped=True, seed=seed,
                                        base=base), headers=headers)

    def _pictures(self, model: str, values: dict
                  ) -> tuple[list[Image.Image], tuple[int, int, str] | None]:
        """The pictures a call sent, decoded, or the error Workers AI answers:
        FLUX.2 references must be images within REFERENCE_SIDE a side; the SD
        models' image (bytes or base64) and mask must be images, the mask as
        large as the image; inpainting needs both, img2img its image."""
        def bad(why: str) -> tuple[list, tuple[int, int, str]]:
            return [], (400, 5006, "AiError: Bad input: Error: " + why)

        pictures = []
        for name in sorted(n for n in values if n.startswith("input_image_")):
            picture = _decoded(values[name])
            if picture is None:
                return bad(f"{name} is not a valid image")
            if max(picture.size) > REFERENCE_SIDE:
                return bad(f"{name} must be smaller than {REFERENCE_SIDE}x{REFERENCE_SIDE}")
            pictures.append(picture)
        raw = values.get("image")
        if "image_b64" in values:
            try:
                raw = base64.b64decode(values["image_b64"], validate=True)
            except ValueError:
                return [], (400, 5004, "Invalid data type for base64 input: image_b64")
        if raw is not None:
            picture = _decoded(raw)
            if picture is None:
                return bad("image is not a valid image")
            pictures.append(picture)
        if "mask" in values:
            mask = _decoded(values["mask"])
            if mask is None or raw is None or mask.size != pictures[-1].size:
                return bad("mask must be an image of the input image's size")
        if model in (IMG2IMG, INPAINTING) and raw is None:
            return [], (400, 3030, "AiError: AiError: Model input is not valid: missing "
                                   "required input image")
        if model == INPAINTING and "mask" not in values:
            return [], (400, 3030, "AiError: AiError: Model input is not valid: missing "
                                   "required input mask_image")
        return pictures, None

    def _check_inputs(self, model: str, inputs: dict,
                      multipart: bool) -> tuple[dict, str | None]:
        """The inputs read as the model's schema (SCHEMAS) types them, or the
        first thing wrong with them, worded as Workers AI's validator does."""
        schema = SCHEMAS[model]
        if model == SCHNELL and self.fake.schnell_rejects_seed:
            schema = {name: spec for name, spec in schema.items() if name != "seed"}
        if "prompt" not in inputs:
            return {}, "must have required property 'prompt'"
        extra = next((name for name in inputs if name not in schema), None)
        if extra is not None:
            return {}, f"must NOT have additional properties ({extra})"
        values = {}
        for name, raw in inputs.items():
            spec = schema[name]
            value = _read(raw, spec.type, multipart)
            if value is _WRONG_TYPE:  # bytes: an array of numbers to the schema
                return {}, f"{name} must be {'array' if spec.type == 'bytes' else spec.type}"
            if spec.type == "string":
                if spec.minimum is not None and len(value) < spec.minimum:
                    return {}, f"{name} must NOT have fewer than {spec.minimum} characters"
                if spec.maximum is not None and len(value) > spec.maximum:
                    return {}, f"{name} must NOT have more than {spec.maximum} characters"
            elif spec.type in ("integer", "number"):
                if spec.minimum is not None and value < spec.minimum:
                    return {}, f"{name} must be >= {spec.minimum}"
                if spec.maximum is not None and value > spec.maximum:
                    return {}, f"{name} must be <= {spec.maximum}"
            values[name] = value
        return values, None

    def _size(self, model: str, values: dict) -> tuple[int, int]:
        if model == SCHNELL:
            return 1024, 1024  # no width/height: always square
        default = next((s for prefix, s in DEFAULT_SIZES.items() if model.startswith(prefix)),
                       (1024, 1024))
        return values.get("width") or default[0], values.get("height") or default[1]

    # Workers KV
    def _kv(self, call: Call, account: str, namespace: str, key: str) -> None:
        if not self._authorized(API_TOKEN):
            return self._error(401, 10000, "Authentication error")
        if account != ACCOUNT_ID:
            return self._error(404, 7003, "Could not route to /accounts/" + account)
        if namespace != NAMESPACE_ID:
            return self._error(404, 10013, "get: 'namespace not found'")
        if call.method == "PUT":
            ttl = call.query.get("expiration_ttl")
            if ttl is not None and (not ttl.isdigit() or int(ttl) < 60):
                return self._error(400, 10019, "Invalid expiration_ttl of " + ttl
                                   + ". Expiration TTL must be at least 60.")
            self.fake._kv_write(key, call.body, int(ttl) if ttl is not None else None)
            return self._send(200, envelope({}))
        entry = self.fake._kv_read(key)
        if entry is None:
            return self._error(404, 10009, "get: 'key not found'")
        headers = {"expiration": str(int(entry.expires))} if entry.expires is not None else {}
        self._send(200, entry.value, "application/octet-stream", headers)

    # the OpenAI-compatible optimizer
    def _optimizer(self, call: Call) -> None:
        if not self._authorized(OPTIMIZER_KEY):
            return self._send(401, json.dumps({"error": {
                "message": "Incorrect API key provided.", "type": "invalid_request_error",
                "param": None, "code": "invalid_api_key"}}).encode())
        messages = (call.json or {}).get("messages") or []
        user = next((m.get("content", "") for m in reversed(messages)
                     if m.get("role") == "user"), "")
        prompt = str(user).split("\n\n(Image size", 1)[0].strip()
        reply = {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": (call.json or {}).get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "refusal": None,
                                     "content": self.fake.optimizer_reply.format(prompt=prompt)}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        self._send(200, json.dumps(reply).encode())

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_GET(self) -> None:
        self._route("GET")
