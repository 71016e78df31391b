"""A fake Cloudflare on 127.0.0.1: Workers AI, Workers KV and an
OpenAI-compatible prompt optimizer, faithful to the facts the service relies on.

Workers AI (POST /client/v4/accounts/{account}/ai/run/{model}):
- Bearer auth, else 401 with code 10000; another account is 404 / 7003;
  an unknown model is 400 / 5007.
- flux-1-schnell takes JSON {prompt 1..2048 chars, steps 1..8} and always
  answers a 1024x1024 JPEG as base64 in ``result.image`` inside the envelope.
- flux-2-* take multipart only (JSON is 400 / 5006) and answer base64 at the
  exact width x height asked (256..1920); lucid-origin answers base64 JPEG.
- phoenix-1.0 answers raw image/jpeg and refuses an empty negative_prompt;
  SDXL base and dreamshaper answer raw PNG; SDXL lightning answers JPEG
  bytes labelled image/png.
- A prompt holding "nsfw-trigger" is 400 / 3030.

Workers KV (/client/v4/accounts/{account}/storage/kv/namespaces/{ns}/values/{key}):
- PUT stores the raw body; expiration_ttl under 60 is 400 / 10019.
- GET answers raw application/octet-stream, or 404 / 10009 when missing or
  expired; another namespace is 404 / 10013.

Faults are queued per route ("ai", "kv_put", "kv_get", "optimizer") with
``inject`` and consumed one per request, first in first out.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
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
}
FLUX_2 = "@cf/black-forest-labs/flux-2-"
SIZE_RANGES = {FLUX_2: (256, 1920), "@cf/leonardo/lucid-origin": (0, 2500),
               "@cf/leonardo/phoenix-1.0": (0, 2048)}
DEFAULT_SIZES = {FLUX_2: (1024, 768), "@cf/leonardo/lucid-origin": (1120, 1120)}
MAX_STEPS = {"@cf/black-forest-labs/flux-1-schnell": ("steps", 8),
             "@cf/leonardo/lucid-origin": ("steps", 40),
             "@cf/leonardo/phoenix-1.0": ("num_steps", 50)}


# --- faults ----------------------------------------------------------------

@dataclass(frozen=True)
class Fault:
    kind: str  # status | delay | hang | malformed | drop
    status: int = 0
    errors: tuple = ()
    headers: dict = field(default_factory=dict)
    body: bytes | None = None
    seconds: float = 0.0
    malformed: str = ""


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


def _default_code(http_status: int) -> int:
    return {401: 10000, 403: 10000, 404: 7003, 408: 3007, 413: 3006,
            429: 3040}.get(http_status, 5006 if http_status < 500 else 1000)


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


def envelope(result=None, errors=(), success=True) -> bytes:
    return json.dumps({"result": result, "success": success,
                       "errors": [{"code": c, "message": m} for c, m in errors],
                       "messages": []}).encode()


# --- the server --------------------------------------------------------------

class FakeCloudflare:
    """Start with ``with FakeCloudflare() as fake:``; see the module docstring."""

    def __init__(self, latency: float = 0.0, image_padding: int = 0):
        self.latency = latency
        self.image_padding = image_padding
        self.optimizer_reply = "{prompt}, highly detailed, soft light"
        self.calls: list[Call] = []
        self._faults: dict[str, list[Fault]] = {}
        self._kv: dict[str, tuple[bytes, float | None]] = {}
        self._kv_ttls: dict[str, int | None] = {}
        self._images: dict[tuple, bytes] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> "FakeCloudflare":
        handler = type("Handler", (_Handler,), {"fake": self})
        server = _Server(("127.0.0.1", 0), handler, bind_and_activate=False)
        server.request_queue_size = 1024
        server.daemon_threads = True
        server.server_bind()
        server.server_activate()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fake-cloudflare",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeCloudflare":
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
        with self._lock:
            self.calls.clear()
            self._faults.clear()
            self._kv.clear()
            self._kv_ttls.clear()
        self.latency = 0.0
        self.optimizer_reply = "{prompt}, highly detailed, soft light"

    def inject(self, route: str, *faults: Fault) -> None:
        assert route in ("ai", "kv_put", "kv_get", "optimizer"), route
        with self._lock:
            self._faults.setdefault(route, []).extend(faults)

    def calls_to(self, route: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.route == route]

    def kv_value(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._kv.get(key)
        if entry is None or (entry[1] is not None and entry[1] <= time.time()):
            return None
        return entry[0]

    def kv_ttl(self, key: str) -> int | None:
        """The expiration_ttl the key was last written with (None: none given)."""
        with self._lock:
            return self._kv_ttls.get(key)

    # internals used by the handler
    def _record(self, call: Call) -> Fault | None:
        with self._lock:
            self.calls.append(call)
            queue = self._faults.get(call.route)
            return queue.pop(0) if queue else None

    def image(self, width: int, height: int, fmt: str, enveloped: bool = False) -> bytes:
        """The image bytes, or the whole base64 envelope, made once per size
        (so that, under load, the fake spends little CPU of its own)."""
        key = (width, height, fmt, self.image_padding, enveloped)
        with self._lock:
            cached = self._images.get(key)
        if cached is None:
            picture = Image.linear_gradient("L").resize((width, height)).convert("RGB")
            out = io.BytesIO()
            picture.save(out, fmt, quality=80) if fmt == "JPEG" else picture.save(out, fmt)
            # Decoders ignore bytes after the end marker, so padding keeps it valid.
            cached = out.getvalue() + b"\0" * self.image_padding
            if enveloped:
                cached = envelope({"image": base64.b64encode(cached).decode()})
            with self._lock:
                self._images[key] = cached
        return cached


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

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    # plumbing
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, code: int, body: bytes, content_type: str = "application/json",
              headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, code: int, cf_code: int, message: str) -> None:
        self._send(code, envelope(None, [(cf_code, message)], success=False))

    def _authorized(self, token: str) -> bool:
        return self.headers.get("Authorization") == f"Bearer {token}"

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        body = self._body()
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = url.path
        match = re.fullmatch(r"/client/v4/accounts/([^/]+)/ai/run/(.+)", path)
        kv = re.fullmatch(r"/client/v4/accounts/([^/]+)/storage/kv/namespaces/([^/]+)/values/(.+)",
                          path)
        if method == "POST" and match:
            call = Call("ai", method, path, query, headers, body, model=unquote(match[2]))
            self._parse_body(call)
            handler = lambda: self._ai(call, match[1])  # noqa: E731
        elif kv and method in ("PUT", "GET"):
            route = "kv_put" if method == "PUT" else "kv_get"
            call = Call(route, method, path, query, headers, body)
            handler = lambda: self._kv(call, kv[1], kv[2], unquote(kv[3]))  # noqa: E731
        elif method == "POST" and path in ("/v1/chat/completions", "/chat/completions"):
            call = Call("optimizer", method, path, query, headers, body)
            self._parse_body(call)
            handler = lambda: self._optimizer(call)  # noqa: E731
        else:
            self._error(404, 7003, "Could not route to " + path + ", perhaps your object identifier is invalid?")
            return
        fault = self.fake._record(call)
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

    def _fault(self, fault: Fault, call: Call, handler) -> None:
        if fault.kind == "drop":
            self.close_connection = True
        elif fault.kind == "hang":
            time.sleep(fault.seconds)
            self.close_connection = True
        elif fault.kind == "delay":
            time.sleep(fault.seconds)
            handler()
        elif fault.kind == "status":
            body = fault.body if fault.body is not None else envelope(
                None, fault.errors, success=False)
            self._send(fault.status, body, headers=fault.headers)
        elif fault.kind == "malformed":
            if fault.malformed == "json":
                self._send(200, b'{"result": {"image": "abc', "application/json")
            elif fault.malformed == "base64":
                self._send(200, envelope({"image": "%%% not base64 %%%"}))
            else:
                self._send(200, envelope({"image": base64.b64encode(b"hello").decode()}))

    # Workers AI
    def _ai(self, call: Call, account: str) -> None:
        if not self._authorized(API_TOKEN):
            return self._error(401, 10000, "Authentication error")
        if account != ACCOUNT_ID:
            return self._error(404, 7003, "Could not route to /accounts/" + account
                               + "/ai/run, perhaps your object identifier is invalid?")
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
        problem = self._check_inputs(call.model, inputs)
        if problem:
            return self._error(400, 5006, "AiError: Bad input: Error: " + problem)
        if NSFW_TRIGGER in str(inputs.get("prompt", "")):
            return self._error(400, 3030, "Input prompt contains NSFW content.")
        if self.fake.latency:
            time.sleep(self.fake.latency)
        width, height = self._size(call.model, inputs)
        if output == "binary":
            self._send(200, self.fake.image(width, height, fmt), declared)
        else:
            self._send(200, self.fake.image(width, height, fmt, enveloped=True))

    def _check_inputs(self, model: str, inputs: dict) -> str | None:
        prompt = inputs.get("prompt")
        if not isinstance(prompt, str) or not 1 <= len(prompt) <= 2048:
            return "prompt must be a string of 1 to 2048 characters"
        if model in MAX_STEPS:
            name, most = MAX_STEPS[model]
            if name in inputs:
                steps = inputs[name]
                if not isinstance(steps, int) or not 1 <= steps <= most:
                    return f"{name} must be an integer from 1 to {most}"
        if "negative_prompt" in inputs and inputs["negative_prompt"] == "" \
                and model == "@cf/leonardo/phoenix-1.0":
            return "negative_prompt must NOT have fewer than 1 characters"
        low, high = next((r for prefix, r in SIZE_RANGES.items() if model.startswith(prefix)),
                         (256, 2048))
        for side in ("width", "height"):
            if side in inputs:
                try:
                    value = int(inputs[side])
                except (TypeError, ValueError):
                    return f"{side} must be an integer"
                if not low <= value <= high:
                    return f"{side} must be between {low} and {high}"
        return None

    def _size(self, model: str, inputs: dict) -> tuple[int, int]:
        if model == "@cf/black-forest-labs/flux-1-schnell":
            return 1024, 1024  # no width/height: always square
        default = next((s for prefix, s in DEFAULT_SIZES.items() if model.startswith(prefix)),
                       (1024, 1024))
        return int(inputs.get("width") or default[0]), int(inputs.get("height") or default[1])

    # Workers KV
    def _kv(self, call: Call, account: str, namespace: str, key: str) -> None:
        if not self._authorized(API_TOKEN):
            return self._error(401, 10000, "Authentication error")
        if account != ACCOUNT_ID:
            return self._error(404, 7003, "Could not route to /accounts/" + account)
        if namespace != NAMESPACE_ID:
            return self._error(404, 10013, "get: 'namespace not found'")
        fake = self.fake
        if call.method == "PUT":
            ttl = call.query.get("expiration_ttl")
            expires = None
            if ttl is not None:
                if not ttl.isdigit() or int(ttl) < 60:
                    return self._error(400, 10019, "Invalid expiration_ttl of " + ttl
                                       + ". Expiration TTL must be at least 60.")
                expires = time.time() + int(ttl)
            with fake._lock:
                fake._kv[key] = (call.body, expires)
                fake._kv_ttls[key] = int(ttl) if ttl is not None else None
            return self._send(200, envelope({}))
        value = fake.kv_value(key)
        if value is None:
            return self._error(404, 10009, "get: 'key not found'")
        self._send(200, value, "application/octet-stream")

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
