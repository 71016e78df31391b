"""Follow-up edits in a conversation: when a message asks to change the
picture we drew before it ("make it blue", "same but 16:9"), that picture is
the reference, so a picture can be refined turn by turn in any chat client.

The rule (README, "Pictures in"): the assistant message just before the
user's last one holds one of our image links, the user's message has no
picture of its own, and its words read as a change, not a new picture:
- nothing but a size, ratio or flags ("16:9", "--seed 7"); or
- after fillers ("please", "ok", "now", "can you"), it opens with a word of
  change (make, change, add, remove, same, but, instead, more, without, …,
  or in Chinese 把, 改, 换, 加, 去掉, 再, …); or
- it is short (at most 8 words) and points at the picture ("it", "the
  image", "this one", "same").
Anything else ("A red fox in snow") is drawn from scratch.
"""

from __future__ import annotations

import re

from .errors import InvalidRequest
from .image_sources import OUR_LINK
from .prompts import message_text
from .sizes import parse_prompt

_CHANGE_WORDS = frozenset([
    "make", "change", "turn", "add", "remove", "replace", "use", "keep", "set", "swap", "switch",
    "recolor", "recolour", "color", "colour", "edit", "adjust", "fix", "move", "zoom", "crop",
    "rotate", "flip", "mirror", "brighten", "darken", "lighten", "enlarge", "shrink", "erase",
    "delete", "take", "same", "but", "instead", "again", "also", "more", "less", "without",
    "with", "try", "redo", "retry", "increase", "decrease", "reduce", "convert", "transform",
    "restyle", "upscale", "extend", "expand", "widen", "invert", "tint", "blur", "sharpen",
    "apply", "let", "give", "put", "place", "dress"])
# "give me a dragon", "make a poster", "try a cyberpunk city": new pictures
_NOT_WITH = {"give": ("me", "us"), "put": ("me", "us"), "make": ("a", "an", "me"),
             "try": ("a", "an")}
_REQUESTS = ("can you", "could you", "would you")
_FILLERS = re.compile(
    r"^(?:(?:please|pls|ok|okay|now|then|and|so|hmm|great|nice|cool|good|thanks|thank you|"
    r"can you|could you|would you|can we|could we|let's|lets|i want you to|i'd like you to|"
    r"i would like you to|i want|i'd like|try to)\b[\s,.!:;-]*)+")
_CHINESE_OPENERS = ("把", "让", "将", "改", "换", "加", "添", "去掉", "删", "变", "再", "同样",
                    "一样", "保持", "给它", "给他", "给她", "调", "放大", "缩小", "请把", "请将")
_POINTS_AT_PICTURE = re.compile(
    r"\b(?:it|its|same|(?:the|this|that) (?:picture|image|photo|drawing|one))\b")
SHORT_WORDS = 8
_LINK = re.compile(r"https?://[^\s()<>\"'\]]+")


def previous_picture(messages: list[dict], user_index: int) -> str | None:
    """The last of our image links in the assistant message just before the
    user's message at `user_index`, if that message has one."""
    for index in range(user_index - 1, -1, -1):
        if messages[index]["role"] == "assistant":
            try:
                text = message_text(messages[index], index)
            except InvalidRequest:  # malformed content: no link to find
                return None
            links = [url for url in _LINK.findall(text) if OUR_LINK.search(url)]
            return links[-1] if links else None
    return None


def asks_for_change(words: str) -> bool:
    """Whether a follow-up's words change the previous picture (see the module)."""
    try:
        parsed = parse_prompt(words)
    except InvalidRequest:  # a bad --seed: planning says so
        return False
    text = parsed.text.strip().lower()
    original = text
    if not text:
        return True  # only a size, a ratio or flags: the same picture, redrawn
    text = _FILLERS.sub("", text).lstrip()
    if not text or text.endswith(("?", "？")) and not original.startswith(_REQUESTS):
        return False  # "thanks!", "what is it?": no change asked for
    if text.startswith(_CHINESE_OPENERS):
        return True
    first, *rest = text.split(maxsplit=2)
    first = first.strip(",.!:;")
    if first in _CHANGE_WORDS and not (rest and rest[0] in _NOT_WITH.get(first, ())):
        return True
    return len(text.split()) <= SHORT_WORDS and bool(_POINTS_AT_PICTURE.search(text))
