"""Workers AI REST client: run a text-to-image model, get its answer back."""

from __future__ import annotations

import base64
import binascii

from . import cloudflare
from .errors import UpstreamError
from .http_session import Answer, Upstream
from .models import BASE64, MULTIPART, ImageModel

SERVICE = "Workers AI"


class WorkersAIClient:
    """Calls `POST {base}/accounts/{account}/ai/run/{model}`.

    A run may make (and bill) an image, so it is sent again only when
    Cloudflare cannot have done the work (see cloudflare.BY_CODE).
    """

    def __init__(self, upstream: Upstream, *, api_base: str, account_id: str, api_token: str):
        self._upstream = upstream
        self._url = f"{api_base}/accounts/{account_id}/ai/run/"
        self._headers = {"Authorization": f"Bearer {api_token}"}

    def generate(self, model: ImageModel, inputs: dict[str, object],
                 files: dict[str, bytes] | None = None) -> Answer:
        """Run the model and return its whole, successful answer (see `image_bytes`).
        `files` are PNG parts of a multipart model's form (reference images).

        :raises FluxWorkerError: as cloudflare.BY_CODE maps Cloudflare's failures.
        :raises UpstreamTimeout: when no whole answer came within the deadline.
        """
        if model.encoding == MULTIPART:
            # requests writes the multipart boundary itself; no Content-Type here.
            parts: dict[str, tuple] = {name: (None, str(value)) for name, value in inputs.items()}
            parts.update({name: (f"{name}.png", data, "image/png")
                          for name, data in (files or {}).items()})
            body: dict = {"files": parts}
        else:
            assert not files, "JSON models take their pictures as fields"
            body = {"json": inputs}
        return self._upstream.call("POST", self._url + model.id, self._check, idempotent=False,
                                   headers=self._headers, **body)

    def _check(self, answer: Answer) -> Answer:
        if answer.status != 200:
            raise cloudflare.error_for(answer, SERVICE, self._upstream.redact)
        return answer

    def close(self) -> None:
        self._upstream.close()


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
