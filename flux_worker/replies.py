"""The chat reply's text, in the configured language: one template for all modes.

Streams send these pieces as they become true; non-stream replies join the
same pieces, so both read the same. Every line is its own paragraph (a blank
line after it): CommonMark joins lines split by a single newline into one
paragraph, and strict renderers show them run together.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from .input_images import InputImage

LOCALES = Path(__file__).with_name("locales")


@cache
def load_texts(language: str) -> dict[str, str]:
    """Return the reply texts for a language (see locales/*.json)."""
    return json.loads((LOCALES / f"{language}.json").read_text(encoding="utf-8"))


def _one_line(prompt: str) -> str:
    """A prompt as it is echoed: on one line, so that none of its lines can open
    a Markdown block (an HTML comment, a code fence) that swallows the image."""
    return " ".join(prompt.split())


def _paragraphs(*lines: str) -> str:
    """Lines as separate Markdown paragraphs; the text ends with a blank line."""
    return "".join(line + "\n\n" for line in lines)


class ReplyText:
    """Builds the pieces of one reply; each piece ends with a blank line but the
    last (the image, or the failure), which ends with a newline."""

    def __init__(self, language: str, *, original: str, width: int, height: int,
                 prompt_model: str | None, drawn: tuple[int, int] | None = None,
                 pictures: Sequence[InputImage] = ()):
        self._t = load_texts(language)
        self.original = _one_line(original)
        self.size = f"{width}x{height}"
        if drawn:  # the model's step made it draw another size; the image is fitted
            self.size = self._t["size_drawn"].format(size=self.size, drawn="{}x{}".format(*drawn))
        self.prompt_model = prompt_model or self._t["original_prompt_model"]
        self.pictures = pictures

    def opening(self) -> str:
        """What is known before any upstream call: prompt, prompt model, size."""
        t = self._t
        return _paragraphs(t["original_prompt"].format(prompt=self.original),
                           *self._pictures_line(),
                           t["prompt_model"].format(model=self.prompt_model),
                           t["image_size"].format(size=self.size))

    def _pictures_line(self) -> list[str]:
        """Which picture is being changed: the reply says so, in one line."""
        if not self.pictures:
            return []
        first = self.pictures[0]
        if len(self.pictures) > 1:
            return [self._t["input_many"].format(count=len(self.pictures))]
        if first.origin == "previous":
            return [self._t["input_previous"].format(url=_one_line(first.link or ""))]
        if first.origin == "link":
            return [self._t["input_link"].format(url=_one_line(first.link or ""))]
        return [self._t["input_attached"]]

    def optimized(self, prompt: str, failed: bool = False) -> str:
        lines = [self._t["optimized_prompt"].format(prompt=_one_line(prompt))]
        return _paragraphs(*lines, *([self._t["optimization_failed"]] if failed else []))

    def generating(self, model_id: str) -> str:
        return _paragraphs(self._t["generating"].format(model=model_id.rsplit("/", 1)[-1]))

    def result(self, url: str, seed: int | None = None) -> str:
        t = self._t
        seed_line = [t["seed"].format(seed=seed)] if seed is not None else []
        return _paragraphs(t["success"], *seed_line, t["result"]) + f"![{t['image_alt']}]({url})\n"

    def failure(self, message: str) -> str:
        return self._t["failed"].format(message=message) + "\n"
