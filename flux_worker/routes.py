"""HTTP endpoints: thin views that parse, call and shape.

`bp` holds the pages (welcome page, images, health); `api` holds the OpenAI
endpoints and is mounted at /v1, at / and at /v1/v1, since clients disagree on
where /v1 goes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from . import chat, images_api, openai_format, sse
from .auth import check_api_key
from .errors import InvalidRequest, NotFound
from .generation import ImageService
from .models import ModelCatalog
from .settings import Settings
from .store import ImageStore

bp = Blueprint("pages", __name__)
api = Blueprint("api", __name__)

IMAGE_KEY = re.compile(r"^[A-Za-z0-9_-]{22}$")  # secrets.token_urlsafe(16)


@dataclass
class Services:
    """What the views use, built once in create_app."""

    settings: Settings
    catalog: ModelCatalog
    images: ImageService
    store: ImageStore


def services() -> Services:
    return current_app.extensions["flux_worker"]


def image_base_url() -> str:
    """Where image links point: PUBLIC_BASE_URL, or this request's origin (proxy-aware)."""
    return services().settings.public_base_url or request.host_url.rstrip("/")


def read_json() -> object:
    """Return the request body parsed as JSON, whatever Content-Type claims.

    :raises InvalidRequest: for an empty body or invalid JSON.
    """
    data = request.get_data(cache=True)
    if not data.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[…
        raise InvalidRequest("The request body is not valid JSON.") from None


@bp.get("/")
def index():
    """The status page and playground; its script is a static file, so CSP can be strict."""
    s = services().settings
    response = Response(render_template(
        "index.html", settings=s, models=services().catalog.offered,
        store="Workers KV" if s.uses_kv else "embedded SQLite"))
    image_sources = " ".join(filter(None, ["'self'", "data:", "blob:", s.public_base_url]))
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        f"img-src {image_sources}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/image/<key>")
def get_image(key: str):
    """Serve stored image bytes; public, since chat clients load them from markdown."""
    if not IMAGE_KEY.match(key):
        raise NotFound("No image with that key.")
    image = services().store.get(key)
    if image is None:
        raise NotFound("No image with that key; it may have expired.")
    response = Response(image.data, mimetype=image.content_type)
    response.headers["Cache-Control"] = (
        f"public, max-age={services().settings.image_expiration}, immutable")
    response.set_etag(key)  # the key names these bytes for good
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response.make_conditional(request)  # 304 for If-None-Match


@api.before_request
def authenticate():
    if request.method != "OPTIONS":  # CORS preflights carry no credentials
        check_api_key(services().settings.api_keys)


@api.get("/models")
def list_models():
    return jsonify(openai_format.model_list(services().catalog.offered))


@api.post("/chat/completions")
def chat_completions():
    svc = services()
    chat_request = chat.parse_chat_request(read_json())
    plan = chat.plan_chat(chat_request, svc.catalog.pick(chat_request.model_name),
                          language=svc.settings.response_language,
                          prompt_model=svc.images.prompt_model)
    if plan.job is not None:
        svc.images.reserve()
    base_url = image_base_url()
    if chat_request.stream:
        frames = chat.stream(svc.images, plan, base_url, svc.settings.sse_keepalive_seconds)
        return Response(frames, mimetype=sse.MIMETYPE, headers=sse.HEADERS)
    return jsonify(chat.complete(svc.images, plan, base_url))


@api.post("/images/generations")
def create_images():
    svc = services()
    images_request = images_api.parse_images_request(read_json())
    job = images_api.plan_images(images_request, svc.catalog.pick(images_request.model_name))
    svc.images.reserve(images_request.n)
    return jsonify(images_api.generate(svc.images, images_request, job, image_base_url()))
