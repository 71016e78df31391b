"""OpenAI wire formats: the bodies we answer with, in one place."""

from __future__ import annotations

import secrets
import time

from .models import ImageModel


def completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def estimate_tokens(text: str) -> int:
    """A rough token count (4 characters each); clients only display it."""
    return max(1, (len(text) + 3) // 4)


def usage(prompt: str, completion: str) -> dict:
    prompt_tokens, completion_tokens = estimate_tokens(prompt), estimate_tokens(completion)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_completion(*, id: str, model: str, content: str, prompt: str,
                    created: int | None = None) -> dict:
    """A whole `chat.completion` object."""
    return {
        "id": id,
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": usage(prompt, content),
    }


class ChunkFactory:
    """Makes the `chat.completion.chunk` objects of one stream (same id, model, created)."""

    def __init__(self, *, id: str, model: str, created: int | None = None):
        self.base = {"id": id, "object": "chat.completion.chunk",
                     "created": created or int(time.time()), "model": model}

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> dict:
        return {**self.base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish_reason}]}

    def role(self) -> dict:
        return self._chunk({"role": "assistant", "content": ""})

    def content(self, text: str) -> dict:
        return self._chunk({"content": text})

    def stop(self) -> dict:
        return self._chunk({}, "stop")

    def usage(self, prompt: str, completion: str) -> dict:
        return {**self.base, "choices": [], "usage": usage(prompt, completion)}


def model_list(models: list[ImageModel]) -> dict:
    return {"object": "list",
            "data": [{"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by}
                     for m in models]}


def images_response(items: list[dict], created: int | None = None) -> dict:
    return {"created": created or int(time.time()), "data": items}
