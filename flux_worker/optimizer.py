"""Prompt optimization through any OpenAI-compatible chat endpoint."""

from __future__ import annotations

import requests

from . import http_session
from .errors import UpstreamError

SERVICE = "The prompt optimizer"

DEFAULT_SYSTEM_MESSAGE = (
    "You turn a short image request into one prompt for a text-to-image model. "
    "Write it in English whatever language the request is in. Keep every subject, "
    "object, colour, style and mood the user asked for, and add concrete visual "
    "detail: composition, lighting, materials, camera or medium. Do not add text, "
    "logos or people that were not asked for. Answer with the prompt alone: no "
    "preamble, no quotes, no markdown, at most 120 words."
)


class PromptOptimizer:
    """Asks an external chat model to rewrite a prompt for the image model."""

    def __init__(self, *, api_base: str, model: str, api_key: str, session: requests.Session,
                 system_message: str = "", timeout: float = 20.0, connect_timeout: float = 5.0):
        base = api_base.rstrip("/")
        # Accept a base with or without the /v1 that OpenAI-style bases carry.
        self._url = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self._system = system_message or DEFAULT_SYSTEM_MESSAGE
        self._session = session
        self._timeout = (connect_timeout, timeout)

    def optimize(self, prompt: str, width: int, height: int) -> str:
        """Return the rewritten prompt.

        :raises UpstreamError: on any failure; callers fall back to the original.
        """
        body = {
            "model": self.model,
            "stream": False,
            "messages": [
                {"role": "system", "content": self._system},
                {"role": "user", "content": f"{prompt}\n\n(Image size: {width}x{height})"},
            ],
        }
        response = http_session.call(self._session, "POST", self._url, service=SERVICE,
                                   timeout=self._timeout, json=body, headers=self._headers)
        if response.status_code != 200:
            raise UpstreamError(f"{SERVICE} failed (HTTP {response.status_code}).")
        try:
            text = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise UpstreamError(f"{SERVICE} returned an unexpected answer.") from None
        text = _unquote(text.strip()) if isinstance(text, str) else ""
        if not text:
            raise UpstreamError(f"{SERVICE} returned an empty prompt.")
        return text

    def close(self) -> None:
        self._session.close()


def _unquote(text: str) -> str:
    """Drop one pair of quotes wrapped around the whole answer, and only that:
    a prompt may end in quoted text (a sign that reads "OPEN")."""
    if len(text) >= 2 and text[0] == text[-1] == '"' and '"' not in text[1:-1]:
        return text[1:-1].strip()
    return text
