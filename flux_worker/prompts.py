"""Reading the prompt out of a chat request, and spotting clients' side requests."""

from __future__ import annotations

import json
import re

from .errors import InvalidRequest


def chat_messages(messages: object) -> list[dict]:
    """Return `messages` once checked to be a non-empty list of objects with a string role.

    :raises InvalidRequest: for anything else, naming the first bad message.
    """
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty array of chat messages.",
                             param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages[{index}] must be an object with a string role.",
                                 param=f"messages[{index}]")
    return messages


def last_user_text(messages: object) -> str:
    """Return the text of the last user message.

    Content may be a string or a list of parts whose `text` parts are joined;
    earlier turns (our own image replies among them) are ignored.

    :raises InvalidRequest: for a missing, malformed or empty prompt.
    """
    messages = chat_messages(messages)
    user_messages = [m for m in messages if m["role"] == "user"]
    if not user_messages:
        raise InvalidRequest("messages has no user message to take the prompt from.",
                             param="messages")
    text = message_text(user_messages[-1], len(messages) - 1)
    if not text.strip():
        raise InvalidRequest("The last user message has no text to draw.", param="messages")
    return text.strip()


def message_text(message: dict, index: int = 0) -> str:
    """Return a message's text: the string, or its `text` parts joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict):
                raise InvalidRequest(f"messages[{index}].content parts must be objects.",
                                     param=f"messages[{index}].content")
            if part.get("type", "text") == "text":
                if not isinstance(part.get("text"), str):
                    raise InvalidRequest(f"messages[{index}].content text parts need a string"
                                         " `text`.", param=f"messages[{index}].content")
                texts.append(part["text"])
        return " ".join(texts)
    if content is None:
        return ""
    raise InvalidRequest(f"messages[{index}].content must be a string or an array of parts.",
                         param=f"messages[{index}].content")


# Chat clients send their own title/tag/summary requests to the chat model:
# Open WebUI's "### Task:" prompts, NextChat's "four to five word title" and
# summary, LibreChat's title. Answering them with an image would cost money.
_TASK = re.compile(r"^\s*###\s*Task:", re.IGNORECASE)
_HOUSEKEEPING = re.compile(
    # An instruction that opens the prompt, not a picture with a title in it
    # ("A movie poster with a three word title" is a picture).
    r"^\s*(please\s+)?(generate|write|create|suggest|give|make)\b.{0,60}\bword(-or-less)? title\b"
    r"|\btitle\b.{0,80}\b(for|of|summari[sz]ing) (the|this|our) (conversation|chat|discussion)"
    r"|\bsummari[sz]e (the|this|our) (discussion|conversation|chat)",
    re.IGNORECASE | re.DOTALL,
)


def is_housekeeping(prompt: str) -> bool:
    """Tell whether a prompt is a client's side request rather than a picture."""
    return bool(_TASK.search(prompt) or _HOUSEKEEPING.search(prompt[:600]))


def housekeeping_reply(prompt: str, messages: list) -> str:
    """Answer a side request with short text made from the conversation."""
    subject = _conversation_subject(prompt, messages)
    title = " ".join(subject.split()[:5]).strip(" .,:;!?\"'") or "Image generation"
    if _TASK.search(prompt):
        lowered = prompt.lower()
        if "follow" in lowered:
            return json.dumps({"follow_ups": []})
        if "tag" in lowered and "title" not in lowered:
            return json.dumps({"tags": ["Image generation"]})
        return json.dumps({"title": title}, ensure_ascii=False)
    return title


def _conversation_subject(prompt: str, messages: list) -> str:
    # Open WebUI puts the chat in the task prompt; others send it as messages.
    history = _between(prompt, "<chat_history>", "</chat_history>")
    if history is not None:
        for line in history.splitlines():
            if line.strip().upper().startswith("USER:"):
                return line.split(":", 1)[1]
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            try:
                text = message_text(message)
            except InvalidRequest:
                continue
            if text.strip() and not is_housekeeping(text):
                return re.sub(r"\s\d{1,4}:\d{1,4}\s*$", "", text)
    return ""


def _between(text: str, opening: str, closing: str) -> str | None:
    """The text between the first opening tag and the next closing one (any case).

    str.find rather than a lazy regex, which takes quadratic time on text
    full of opening tags.
    """
    lowered = text.lower()
    start = lowered.find(opening)
    end = lowered.find(closing, start + len(opening)) if start >= 0 else -1
    return text[start + len(opening):end] if end >= 0 else None
