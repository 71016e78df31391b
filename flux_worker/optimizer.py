"""Prompt optimization through any OpenAI-compatible chat endpoint."""

from __future__ import annotations

from .errors import Resend, UpstreamError
from .http_session import Answer, Upstream

SERVICE = "The prompt optimizer"
MAX_PROMPT_CHARS = 4000  # of its answer kept: image models take at most 2,048

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

    def __init__(self, upstream: Upstream, *, api_base: str, model: str, api_key: str,
                 system_message: str = ""):
        self._upstream = upstream
        base = api_base.rstrip("/")
        # Accept a base with or without the /v1 that OpenAI-style bases carry.
        self._url = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self._system = system_message or DEFAULT_SYSTEM_MESSAGE

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
        # A chat call may be billed: sent again only when it cannot have run.
        return self._upstream.call("POST", self._url, self._prompt, idempotent=False, json=body,
                                   headers=self._headers)

    def _prompt(self, answer: Answer) -> str:
        if answer.status != 200:
            raise UpstreamError(f"{SERVICE} failed (HTTP {answer.status}).",
                                resend=_resend_for(answer.status))
        try:
            text = answer.json()["choices"][0]["message"]["content"]  # type: ignore[index]
        except (ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError, RecursionError):
            raise UpstreamError(f"{SERVICE} returned an unexpected answer.") from None
        # Upstream text: secrets it may echo are redacted, and it becomes one
        # line (it is shown in the reply and logged).
        text = " ".join(self._upstream.redact(text).split()) if isinstance(text, str) else ""
        text = _unquote(text)[:MAX_PROMPT_CHARS]
        if not text:
            raise UpstreamError(f"{SERVICE} returned an empty prompt.")
        return text

    def close(self) -> None:
        self._upstream.close()


def _resend_for(status: int) -> Resend:
    """429 and 503 mean the model did not run; anything else may have."""
    return Resend.ALWAYS if status in (429, 503) else Resend.NEVER


def _unquote(text: str) -> str:
    """Drop one pair of quotes wrapped around the whole answer, and only that:
    a prompt may end in quoted text (a sign that reads "OPEN")."""
    if len(text) >= 2 and text[0] == text[-1] == '"' and '"' not in text[1:-1]:
        return text[1:-1].strip()
    return text
