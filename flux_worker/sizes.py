"""Sizes and prompt flags: the aspect ratio, `--no …` and `--seed N` a prompt
carries, an OpenAI `size`, and the pixels each becomes for a model."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from .errors import InvalidRequest
from .models import ImageModel


@dataclass(frozen=True)
class Ratio:
    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}:{self.height}"


# The seed Worker's table: these ratios keep their historical sizes.
SEED_SIZES: dict[Ratio, tuple[int, int]] = {
    Ratio(1, 1): (1024, 1024),
    Ratio(1, 2): (512, 1024),
    Ratio(3, 2): (768, 512),
    Ratio(3, 4): (768, 1024),
    Ratio(16, 9): (1024, 576),
    Ratio(9, 16): (576, 1024),
}
# Ratios people write that would otherwise look like a time of day (the seed's
# own ratios, such as 9:16, always count as ratios unless a word says time).
_COMMON_TWO_DIGIT = {Ratio(16, 10), Ratio(10, 16), Ratio(21, 10), Ratio(32, 10)}
# A word just before "10:30" that makes it a time, score or verse, not a ratio.
_CONTEXT_BEFORE = {
    "at", "@", "around", "about", "by", "until", "till", "before", "after", "from", "since",
    "to", "score", "scored", "scores", "won", "lost", "beat", "beats", "verse", "chapter",
    "ch", "psalm", "psalms", "john", "genesis", "exodus", "matthew", "mark", "luke", "acts",
    "romans", "proverbs", "isaiah", "revelation", "corinthians", "um", "à", "las", "в",
}
_CONTEXT_AFTER = {"am", "pm", "a.m.", "p.m.", "o'clock", "h", "hrs", "uhr", "heures", "utc"}

_END_PUNCTUATION = ".!?。！？"
# What may follow a ratio at the end of a prompt: punctuation, closing
# brackets and quotes ("A cat (16:9)", "A cat 16:9…").
_TRAILING = _END_PUNCTUATION + ",;…)]}\"'”’」』）"
# Not \w before the number: "一只猫16:9" has a ratio after CJK text.
_TOKEN = re.compile(r"(?<![0-9A-Za-z_:.,/-])(\d{1,4})\s?[:：]\s?(\d{1,4})(?![\w:/]|[.,-]\d)")
_EXPLICIT = re.compile(r"(?:^|\s)--(?:ar|aspect)\s+(\S+)", re.IGNORECASE)
_NEGATIVE = re.compile(r"(?:^|\s)--no\s+(.+?)(?=\s--\w|\n|$)", re.IGNORECASE)
_SEED = re.compile(r"(?:^|\s)--seed\s+(\S+)", re.IGNORECASE)
# Seeds are unsigned 32-bit, as image UIs write them. Cloudflare documents an
# integer (minimum 0 for Leonardo's models) and no maximum for any model.
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class ParsedPrompt:
    text: str
    ratio: Ratio | None
    negative: str = ""
    seed: int | None = None


def parse_prompt(prompt: str, param: str = "messages") -> ParsedPrompt:
    """Take the aspect ratio, `--no …` negative text and `--seed N` out of a prompt.

    A ratio is recognised as `--ar W:H` anywhere, as `W:H` at the very end,
    or as one of the seed's six ratios followed by a space. Text that only
    looks like a ratio (a time, a score, a Bible verse) stays in the prompt.

    :raises InvalidRequest: for an explicit `--ar` that is not a ratio, or a
        `--seed` that is not a whole number from 0 to MAX_SEED.
    """
    text = prompt
    negative = ""
    seed = None
    match = _NEGATIVE.search(text)  # first: it ends where the next flag begins
    if match:
        negative = match.group(1).strip()
        text = _cut(text, match.start(), match.end())
    match = _SEED.search(text)
    if match:
        value = match.group(1).rstrip(_TRAILING)  # "--seed 7." keeps its full stop
        seed = check_seed(value, param, flag=True)
        text = _cut(text, match.start(), match.start(1) + len(value))
    match = _EXPLICIT.search(text)
    if match:
        ratio = _to_ratio(match.group(1).rstrip(_TRAILING))
        if ratio is None:
            raise InvalidRequest(f"--ar expects a ratio like 16:9, got {match.group(1)!r}",
                                 param=param, code="invalid_aspect_ratio")
        return ParsedPrompt(_cut(text, match.start(), match.end()), ratio, negative, seed)
    # Past this index only spaces and closing punctuation remain (found once:
    # looking at the rest of the text for every match would be quadratic).
    tail = len(text.rstrip(string.whitespace + _TRAILING))
    for match in _TOKEN.finditer(text):
        ratio = Ratio(int(match.group(1)), int(match.group(2)))
        at_end = match.end() >= tail
        followed_by_space = text[match.end():match.end() + 1].isspace()
        if not (at_end or (followed_by_space and ratio in SEED_SIZES)):
            continue
        if ratio.width == 0 or ratio.height == 0 or _looks_like_time(text, match):
            continue
        return ParsedPrompt(_cut(text, match.start(), match.end()), ratio, negative, seed)
    return ParsedPrompt(text.strip(), None, negative, seed)


def check_seed(value: object, param: str, flag: bool = False) -> int:
    """Return a seed a client gave (`seed` field, or `--seed N` text when flag).

    :raises InvalidRequest: for anything but a whole number from 0 to MAX_SEED.
    """
    written = value
    if flag and isinstance(value, str) and value.isascii() and value.isdigit():
        digits = value.lstrip("0") or "0"
        value = int(digits) if len(digits) <= 10 else -1  # int() of a huge text is slow
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        shown = f"--seed {str(written)[:24]}" if flag else "seed"
        raise InvalidRequest(f"{shown} must be a whole number from 0 to {MAX_SEED}.",
                             param=param, code="invalid_seed")
    return value


def _to_ratio(token: str) -> Ratio | None:
    found = re.fullmatch(r"(\d{1,4})[:：x](\d{1,4})", token.strip())
    if not found or int(found.group(1)) == 0 or int(found.group(2)) == 0:
        return None
    return Ratio(int(found.group(1)), int(found.group(2)))


def _looks_like_time(text: str, match: re.Match) -> bool:
    minutes = match.group(2)
    if _word_before(text, match.start()).lower().rstrip(",") in _CONTEXT_BEFORE:
        return True
    if _word_after(text, match.end()).lower().rstrip(",.") in _CONTEXT_AFTER:
        return True
    ratio = Ratio(int(match.group(1)), int(minutes))
    return minutes.startswith("0") or (len(minutes) == 2 and int(match.group(1)) <= 24
                                       and int(minutes) < 60 and ratio not in _COMMON_TWO_DIGIT
                                       and ratio not in SEED_SIZES)


_WINDOW = 64  # longer than any context word: look no further (linear time)


def _word_before(text: str, index: int) -> str:
    """The whole word that ends before index (spaces between allowed), or ""."""
    start = max(0, index - _WINDOW)
    words = text[start:index].split()
    if not words or (start and not text[start - 1].isspace() and len(words) == 1
                     and not text[start].isspace()):
        return ""  # the window began inside a word longer than any context word
    return words[-1]


def _word_after(text: str, index: int) -> str:
    """The whole word that starts after index (spaces between allowed), or ""."""
    end = index + _WINDOW
    words = text[index:end].split()
    if not words or (end < len(text) and not text[end].isspace() and len(words) == 1
                     and not text[end - 1].isspace()):
        return ""
    return words[0]


_PAIRS = {"(": ")", "[": "]", "（": "）", '"': '"', "'": "'"}


def _cut(text: str, start: int, end: int) -> str:
    """Remove text[start:end] and tidy what it leaves: one space where there
    were two, brackets or quotes left empty, a dangling comma; line breaks
    elsewhere stay. Linear in the text: no regex that could backtrack."""
    before, after = start, end
    while True:  # "(16:9)" leaves "()": step over spaces and empty pairs, by index
        while before and text[before - 1] in " \t":
            before -= 1
        while after < len(text) and text[after] in " \t":
            after += 1
        if before and after < len(text) and _PAIRS.get(text[before - 1]) == text[after]:
            before, after = before - 1, after + 1
        else:
            break
    left, right = text[:before], text[after:]
    gap = " " if left and right and not (left.endswith("\n") or right.startswith("\n")) else ""
    joined = (left + gap + right).rstrip()
    # "A cat, 16:9." leaves "A cat, .": drop what dangles before the end punctuation.
    body = joined.rstrip(_END_PUNCTUATION + "…")
    core = body.rstrip(" \t\r\n,;")
    if core != body:
        joined = core + joined[len(body):]
    return joined.strip()


def size_for(ratio: Ratio | None, model: ImageModel, param: str = "messages") -> tuple[int, int]:
    """Return the pixel size a model should deliver for a ratio (none: its default).

    The seed's ratios keep their table sizes; other ratios keep the long side
    at 1024 (or the model's maximum) and round the short side to the model's
    step.

    :raises InvalidRequest: when the model cannot make that ratio.
    """
    if ratio is None:
        return model.native_size
    if ratio in SEED_SIZES:
        width, height = SEED_SIZES[ratio]
    else:
        long_side = min(1024, model.max_side)
        scale = long_side / max(ratio.width, ratio.height)
        step = model.size_step
        width = round_to(ratio.width * scale, step)
        height = round_to(ratio.height * scale, step)
    if min(width, height) < model.min_side or max(width, height) > model.max_side:
        raise InvalidRequest(
            f"The aspect ratio {ratio} is too extreme for {model.id}: it would need "
            f"{width}x{height}, and this model makes sides from {model.min_side} to "
            f"{model.max_side} pixels.", param=param, code="unsupported_aspect_ratio")
    return width, height


def round_to(value: float, step: int) -> int:
    """The nearest multiple of step, at least step."""
    return max(step, int(round(value / step)) * step)


def parse_size(size: str) -> tuple[int, int] | None:
    """Read an OpenAI `size`: `WxH` as a pair, `auto` as None.

    :raises InvalidRequest: when the size is neither.
    """
    if size.strip().lower() == "auto":
        return None
    found = re.fullmatch(r"\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*", size)
    if not found or int(found.group(1)) == 0 or int(found.group(2)) == 0:
        raise InvalidRequest("size must look like 1024x1024 (width x height) or be 'auto'",
                             param="size", code="invalid_size")
    return int(found.group(1)), int(found.group(2))


def exact_size(width: int, height: int, model: ImageModel) -> tuple[int, int] | None:
    """Check that a model can deliver exactly width x height, and return what
    it must be asked to draw when that differs (its sides rounded to its step;
    the image is then fitted to the exact size). None: draw it as asked.

    Models without width/height draw their fixed size, which is cropped and
    resized (scaled up to twice at most).

    :raises InvalidRequest: naming `size` and the range, when out of range.
    """
    low, high = model.min_side, model.max_delivered_side
    if min(width, height) < low or max(width, height) > high:
        raise InvalidRequest(f"size {width}x{height} is out of range for {model.id}: each side "
                             f"must be from {low} to {high} pixels.", param="size",
                             code="unsupported_size")
    if not model.takes_size:
        return None
    drawn = (_step_within(width, model), _step_within(height, model))
    return drawn if drawn != (width, height) else None


def _step_within(side: int, model: ImageModel) -> int:
    low, high = model.min_side, model.max_side
    step = model.size_step
    rounded = round_to(side, step)
    if rounded > high:
        rounded -= step
    if rounded < low:
        rounded += step
    return rounded
