"""Workers AI REST client: run a text-to-image model, get image bytes back."""

from __future__ import annotations

import base64
import binascii
import threading
from dataclasses import dataclass

import requests

from . import cloudflare, http_session
from .errors import ContentPolicyViolation, InvalidRequest, UpstreamError
from .imaging import sniff_content_type
from .models import BASE64, MULTIPART, ImageModel

SERVICE = "Workers AI"
# Answers read and decoded at once per process. Reading, JSON and base64 are
# CPU work that holds the GIL, so more at once is no faster; but each holds a
# few times the image in memory, so a burst of answers arriving together
# would otherwise multiply the peak memory by the number of requests.
BODY_SLOTS = 4


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    content_type: str  # from the bytes, never from the upstream header


class WorkersAIClient:
    """Calls `POST {base}/accounts/{account}/ai/run/{model}`."""

    def __init__(self, *, api_base: str, account_id: str, api_token: str,
                 session: requests.Session, timeout: float = 120.0, connect_timeout: float = 10.0):
        self._url = f"{api_base}/accounts/{account_id}/ai/run/"
        self._headers = {"Authorization": f"Bearer {api_token}"}
        self._session = session
        self._timeout = (connect_timeout, timeout)
        self._body_slots = threading.BoundedSemaphore(BODY_SLOTS)

    def generate(self, model: ImageModel, inputs: dict[str, object]) -> GeneratedImage:
        """Run the model and return the image it made.

        :raises ContentPolicyViolation: when Cloudflare flagged prompt or image.
        :raises InvalidRequest: when Cloudflare refused the input.
        :raises RateLimited: when Cloudflare is still rate limiting after retries.
        :raises UpstreamError: for refused credentials, 5xx and malformed answers.
        :raises UpstreamTimeout: when no answer came in time.
        """
        if model.encoding == MULTIPART:
            # requests writes the multipart boundary itself; no Content-Type here.
            body = {"files": {name: (None, str(value)) for name, value in inputs.items()}}
        else:
            body = {"json": inputs}
        # stream=True: the wait for the image holds no memory; the body is
        # read only once a slot is free (until then it waits in the socket).
        response = http_session.call(self._session, "POST", self._url + model.id, service=SERVICE,
                                     timeout=self._timeout, headers=self._headers, stream=True,
                                     **body)
        with self._body_slots:
            http_session.read_body(response, SERVICE)
            if response.status_code != 200:
                _raise_for_failure(response)
            data = _image_bytes(response, model)
        content_type = sniff_content_type(data)
        if content_type is None:
            raise UpstreamError("Workers AI returned data that is not an image.")
        return GeneratedImage(data, content_type)

    def close(self) -> None:
        self._session.close()


def _image_bytes(response: requests.Response, model: ImageModel) -> bytes:
    # Branch on what came back, not on what the model should send: JSON means
    # the envelope, anything else is the image itself.
    if "application/json" not in response.headers.get("Content-Type", ""):
        return response.content
    try:
        body = response.json()
    except ValueError:
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


def _raise_for_failure(response: requests.Response) -> None:
    errors = cloudflare.envelope_errors(response)
    message = "; ".join(text for _, text in errors if text) or f"HTTP {response.status_code}"
    if any(code == 3030 or "nsfw" in text.lower() or "flagged" in text.lower()
           for code, text in errors):
        raise ContentPolicyViolation(
            f"Workers AI flagged this prompt or its image as unsafe ({message}). "
            "Rephrase the prompt and try again.", param="prompt")
    cloudflare.raise_for_common_failure(response, SERVICE)
    if response.status_code in (400, 413, 422):
        raise InvalidRequest(f"Workers AI rejected the request: {message}", param="prompt",
                             code="upstream_validation_error")
    raise UpstreamError(f"Workers AI failed (HTTP {response.status_code}: {message}).")
