"""HTTP endpoints: thin views that parse, call and shape.

`bp` holds the pages (welcome page, images, health); `api` holds the OpenAI
endpoints and is mounted at /v1, at / and at /v1/v1, since clients disagree on
where /v1 goes.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate

from flask import Blueprint, Response, current_app, jsonify, render_template, request
from werkzeug.exceptions import RequestEntityTooLarge

from . import access, chat, images_api, openai_format, responses_api, sse
from .auth import check_api_key
from .cloudflare import utc_day
from .errors import FluxWorkerError, InvalidRequest, NotFound, UpstreamError, UpstreamTimeout
from .generation import ImageService
from .image_sources import PictureReader
from .input_images import InputImage, check_count, load_image
from .key_usage import key_id
from .links import LinkOrigins, looks_internal
from .models import ModelCatalog
from .planning import ImageJob
from .readiness import Readiness
from .settings import Settings
from .shared_state import SharedState
from .store import ImageStore
from .version import __version__

log = logging.getLogger(__name__)

bp = Blueprint("pages", __name__)
api = Blueprint("api", __name__)

IMAGE_KEY = re.compile(r"^[A-Za-z0-9_-]{22}$")  # secrets.token_urlsafe(16)


@dataclass
class Services:
    """What the views use, built once in create_app; `close` ends it all."""

    settings: Settings
    catalog: ModelCatalog
    images: ImageService
    store: ImageStore
    links: LinkOrigins
    pictures: PictureReader
    state: SharedState  # what every worker shares: accounts' state, usage per key
    readiness: Readiness

    def close(self) -> None:
        """Stop the pool and close every session and connection (worker exit)."""
        self.images.close()
        for client in (self.images.accounts, self.images.optimizer):
            if client is not None:
                client.close()
        self.store.close()
        self.state.close()
        self.readiness.close()
        log.info("closed the generation pool, upstream sessions and store")


def services() -> Services:
    return current_app.extensions["flux_worker"]


def image_base_url() -> str:
    """Where image links point: PUBLIC_BASE_URL, or this request's origin (proxy-aware)."""
    return services().links.origin_for(request.host_url.rstrip("/"))


def allow_pictures() -> None:
    """Raise this request's body limit to what a request carrying pictures may
    need (MAX_UPLOAD_MB), one byte over as create_app sets the default one."""
    request.max_content_length = services().settings.max_upload_bytes + 1


def read_json() -> object:
    """Return the request body parsed as JSON, whatever Content-Type claims.

    :raises InvalidRequest: for an empty body, invalid JSON, or text that
        cannot be encoded again (a lone UTF-16 surrogate such as "\\ud800").
    :raises RequestEntityTooLarge: for a body over the limit, chunked or not.
    """
    data = request.get_data(cache=True)
    if len(data) >= (request.max_content_length or 0):  # chunked or not (see create_app)
        raise RequestEntityTooLarge()
    if not data.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[…
        raise InvalidRequest("The request body is not valid JSON.") from None
    _refuse_lone_surrogates(body)
    return body


def _refuse_lone_surrogates(body: object) -> None:
    """Refuse text that is valid JSON but not Unicode: it would be paid for,
    then fail to encode in the reply.

    :raises InvalidRequest: naming where the text is.
    """
    pending: list[tuple[object, str]] = [(body, "")]
    while pending:
        value, path = pending.pop()
        if isinstance(value, dict):
            pending.extend((item, f"{path}.{key}" if path else str(key))
                           for key, item in value.items())
            pending.extend((key, path or "body") for key in value)
        elif isinstance(value, list):
            pending.extend((item, f"{path}[{index}]") for index, item in enumerate(value))
        elif isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidRequest(f"{path or 'The body'} holds a lone UTF-16 surrogate "
                                     "(an escape such as \\ud800 without its pair); send "
                                     "valid Unicode text.", param=path or None,
                                     code="invalid_unicode") from None


@bp.get("/")
def index():
    """The status page and playground; its script is a static file, so CSP can be strict."""
    s = services().settings
    own_origin = request.host_url.rstrip("/")
    accounts = services().images.accounts
    checks = services().readiness.known()  # never waits on Cloudflare
    response = Response(render_template(
        "index.html", settings=s, models=services().catalog.offered, version=__version__,
        accounts=accounts.status() if accounts else [], checks=checks,
        store="Workers KV" if s.uses_kv else "embedded SQLite",
        # Link origins a browser elsewhere may not reach: this page's own, and
        # how many API callers used (the log names them; this page is public).
        internal_origin=own_origin if looks_internal(own_origin) else None,
        internal_seen=services().links.internal_seen()))
    image_sources = " ".join(filter(None, ["'self'", "data:", "blob:", s.public_base_url]))
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        f"img-src {image_sources}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.app_template_filter("utc_time")
def utc_time(moment: float) -> str:
    """A moment as the status page shows it: HH:MM:SS in UTC."""
    return time.strftime("%H:%M:%S", time.gmtime(moment))


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers. Readiness (Cloudflare, store) is /readyz."""
    return jsonify(status="ok", version=__version__)


@bp.get("/readyz")
def readyz():
    """Readiness: 200 when Cloudflare takes a token, the store writes and KV
    answers (each checked for real, kept a minute); 503 naming what is wrong."""
    checks = services().readiness.run()
    ready = all(check.ok for check in checks)
    return jsonify(status="ready" if ready else "not ready", version=__version__,
                   checks={check.name: check.as_json() for check in checks}), \
        200 if ready else 503


@bp.get("/favicon.ico")
def favicon():
    """Browsers ask for it whatever the page says; an SVG serves them all."""
    return current_app.send_static_file("favicon.svg")


@bp.get("/image/<key>")
def get_image(key: str):
    """Serve stored image bytes; public, since chat clients load them from markdown."""
    if not IMAGE_KEY.match(key):
        raise NotFound("No image with that key.")
    try:
        image = services().store.get(key)
    except FluxWorkerError as exc:
        # Public and unauthenticated: upstream text stays in the log.
        log.warning("image %s could not be read: %s", key, exc.message)
        kind = UpstreamTimeout if isinstance(exc, UpstreamTimeout) else UpstreamError
        raise kind("The image could not be read right now; try again shortly.") from None
    if image is None:
        raise NotFound("No image with that key; it may have expired.")
    response = Response(image.data, mimetype=image.content_type)
    # Caches keep it for the time it has left, not for the whole lifetime.
    now, lifetime = time.time(), services().settings.image_expiration
    expires_at = min(image.expires_at or now + lifetime, now + lifetime)
    seconds_left = max(0, int(expires_at - now))
    response.headers["Cache-Control"] = f"public, max-age={seconds_left}, immutable"
    response.headers["Expires"] = formatdate(expires_at, usegmt=True)
    response.set_etag(key)  # the key names these bytes for good
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response.make_conditional(request)  # 304 for If-None-Match


@api.before_request
def authenticate():
    if request.method != "OPTIONS":  # CORS preflights carry no credentials
        key = check_api_key(services().settings.api_keys)
        access.current_record().key = key_id(key)


@api.get("/usage")
def key_usage():
    """What the caller's own API key has used today, and its quota."""
    svc = services()
    usage = svc.images.usage.today(access.current_record().key or "")
    quota = svc.settings.key_daily_images or None
    if usage is None:  # the shared state is unavailable: unknown, not zero
        return jsonify({"object": "usage", "day": utc_day(time.time()), "images": None,
                        "neurons": None, "daily_images": quota, "images_left": None})
    return jsonify({"object": "usage", "day": usage.day, "images": usage.images,
                    "neurons": round(usage.neurons, 2), "daily_images": quota,
                    "images_left": max(0, quota - usage.images) if quota else None})


@api.get("/models")
def list_models():
    return jsonify(openai_format.model_list(services().catalog.offered))


@api.get("/status")
def account_status():
    """Each Cloudflare account as every worker sees it (ids shortened, no token)."""
    svc = services()
    accounts = svc.images.accounts
    return jsonify({
        "object": "status",
        "day": utc_day(time.time()),
        "daily_neurons": svc.settings.cf_daily_neurons or None,
        "ai_gateway": svc.settings.cf_ai_gateway or None,
        "account_state": "redis" if svc.settings.state_url else "sqlite",
        "accounts": [account.as_json() for account in accounts.status()] if accounts else [],
    })


@api.post("/chat/completions")
def chat_completions():
    svc = services()
    allow_pictures()
    chat_request = chat.parse_chat_request(read_json())
    access.describe_request(stream=chat_request.stream)
    plan = chat.plan_chat(chat_request, svc.catalog, svc.pictures,
                          language=svc.settings.response_language,
                          prompt_model=svc.images.prompt_model)
    access.describe_request(model=plan.model.id, kind=plan.kind)
    base_url = image_base_url() if plan.job else ""  # a side request has no link
    if chat_request.stream:
        frames = chat.stream(svc.images, plan, base_url, svc.settings.sse_keepalive_seconds)
        return Response(frames, mimetype=sse.MIMETYPE, headers=sse.HEADERS)
    return jsonify(chat.complete(svc.images, plan, base_url))


@api.post("/images/generations")
def create_images():
    svc = services()
    images_request = images_api.parse_images_request(read_json())
    access.describe_request(stream=images_request.stream, kind="images")
    job = images_api.plan_images(images_request, svc.catalog.pick(images_request.model_name))
    access.describe_request(model=job.model.id)
    return _images_answer(svc, images_request, job)


@api.post("/images/edits")
def edit_images():
    """Pictures changed as a prompt says: multipart `image`/`image[]` (and
    `mask`), or JSON `images: [{"image_url": …}]`."""
    return _change_pictures("edit")


@api.post("/images/variations")
def vary_images():
    return _change_pictures("variation")


def _change_pictures(kind: str):
    svc = services()
    allow_pictures()
    body, pictures, mask = read_pictures_body()
    images_request = images_api.parse_images_request(body, kind)
    access.describe_request(stream=images_request.stream, kind=f"images_{kind}")
    job = images_api.plan_edit(images_request, svc.catalog, pictures(), mask(),
                               variation=kind == "variation")
    access.describe_request(model=job.model.id)
    return _images_answer(svc, images_request, job)


def read_pictures_body() -> tuple[dict, Callable[[], list[InputImage]], Callable[[], bytes | None]]:
    """An edit's fields, and (read only once the fields are valid) its
    pictures and its mask's bytes: from a multipart form's files, or from
    JSON `images`/`mask` URLs.

    :raises InvalidRequest: for a body that is neither, or malformed parts.
    """
    reader = services().pictures
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        fields = images_api.form_fields(request.form)
        files = [(upload, "image") for upload in request.files.getlist("image")]
        files += [(upload, f"image[{index}]")
                  for index, upload in enumerate(request.files.getlist("image[]"))]
        # A picture sent as a text field rather than a file: a data: URL or a link.
        texts = [(url, "image") for url in request.form.getlist("image")]
        texts += [(url, f"image[{index}]")
                  for index, url in enumerate(request.form.getlist("image[]"))]
        check_count(len(files) + len(texts), "image")
        mask_file, mask_text = request.files.get("mask"), request.form.get("mask")

        def form_pictures() -> list[InputImage]:
            return ([load_image(upload.read(), param) for upload, param in files]
                    + [reader.read(url, param) for url, param in texts])

        def form_mask() -> bytes | None:
            if mask_file is not None:
                return mask_file.read()
            return reader.read_bytes(mask_text, "mask")[0] if mask_text else None

        return fields, form_pictures, form_mask
    body = read_json()
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object or a multipart form.")
    images = body.get("images", [])
    if not isinstance(images, list):
        raise InvalidRequest("images must be an array of {\"image_url\": …} objects.",
                             param="images")
    check_count(len(images), "images")
    urls = [(_image_url(item, f"images[{index}]"), f"images[{index}]")
            for index, item in enumerate(images)]
    mask = body.get("mask")

    def json_pictures() -> list[InputImage]:
        return [reader.read(url, param) for url, param in urls]

    def json_mask() -> bytes | None:
        return reader.read_bytes(_image_url(mask, "mask"), "mask")[0] if mask is not None else None

    return body, json_pictures, json_mask


def _image_url(item: object, param: str) -> object:
    """The URL of one JSON image reference: {"image_url": "…"} or the string itself."""
    if isinstance(item, dict) and "file_id" in item and "image_url" not in item:
        raise InvalidRequest(f"{param}.file_id is not supported here: send image_url with a "
                             "data: URL or a link.", param=param)
    return item.get("image_url") if isinstance(item, dict) else item


def _images_answer(svc: Services, images_request: images_api.ImagesRequest,
                   job: ImageJob) -> Response:
    if images_request.stream:
        frames = images_api.stream(svc.images, images_request, job,
                                   svc.settings.sse_keepalive_seconds)
        return Response(frames, mimetype=sse.MIMETYPE, headers=sse.HEADERS)
    return jsonify(images_api.generate(svc.images, images_request, job, image_base_url()))


@api.post("/responses")
def create_response():
    """The Responses API (the Vercel AI SDK's default): the chat reply as a Response."""
    svc = services()
    allow_pictures()
    return responses_api.respond(svc, read_json(), image_base_url())
