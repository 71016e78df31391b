"""The chat reply's text, in the configured language: one template for all modes.

Streams send these pieces as they become true; non-stream replies join the
same pieces, so both read the same.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

LOCALES = Path(__file__).with_name("locales")


@cache
def load_texts(language: str) -> dict[str, str]:
    """Return the reply texts for a language (see locales/*.json)."""
    return json.loads((LOCALES / f"{language}.json").read_text(encoding="utf-8"))


class ReplyText:
    """Builds the pieces of one reply; each piece ends with a newline."""

    def __init__(self, language: str, *, original: str, width: int, height: int,
                 prompt_model: str | None):
        self._t = load_texts(language)
        self.original = original
        self.size = f"{width}x{height}"
        self.prompt_model = prompt_model or self._t["original_prompt_model"]

    def opening(self) -> str:
        """What is known before any upstream call: prompt, prompt model, size."""
        t = self._t
        return (t["original_prompt"].format(prompt=self.original) + "\n"
                + t["prompt_model"].format(model=self.prompt_model) + "\n"
                + t["image_size"].format(size=self.size) + "\n")

    def optimized(self, prompt: str, failed: bool = False) -> str:
        line = self._t["optimized_prompt"].format(prompt=prompt) + "\n"
        return line + (self._t["optimization_failed"] + "\n" if failed else "")

    def generating(self, model_id: str) -> str:
        return self._t["generating"].format(model=model_id.rsplit("/", 1)[-1]) + "\n"

    def result(self, url: str) -> str:
        t = self._t
        return f"{t['success']}\n{t['result']}\n\n![{t['image_alt']}]({url})"

    def failure(self, message: str) -> str:
        return "\n" + self._t["failed"].format(message=message)
