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
                 prompt_model: str | None, drawn: tuple[int, int] | None = None):
        self._t = load_texts(language)
        self.original = original
        self.size = f"{width}x{height}"
        if drawn:  # the model's step made it draw another size; the image is fitted
            self.size = self._t["size_drawn"].format(size=self.size, drawn="{}x{}".format(*drawn))
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

    def result(self, url: str, seed: int | None = None) -> str:
        t = self._t
        seed_line = t["seed"].format(seed=seed) + "\n" if seed is not None else ""
        return f"{t['success']}\n{seed_line}{t['result']}\n\n![{t['image_alt']}]({url})"

    def failure(self, message: str) -> str:
        return "\n" + self._t["failed"].format(message=message)
