"""Reading the picture prompt out of a chat request: the user's own words,
without what chat front ends wrap around them (retrieved documents, attached
files, search results, quotes). Where each front end puts them: docs/clients.md.
"""

from __future__ import annotations

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
    """Return the user's own words in the last user message.

    Content may be a string or a list of parts whose `text` parts are joined
    (attached files sent as parts of their own are left out); earlier turns
    (our own image replies among them) are ignored.

    :raises InvalidRequest: for a missing, malformed or empty prompt.
    """
    messages = chat_messages(messages)
    users = [index for index, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise InvalidRequest("messages has no user message to take the prompt from.",
                             param="messages")
    text = user_words(" ".join(_words_parts(text_parts(messages[users[-1]], users[-1]))))
    if not text:
        raise InvalidRequest("The last user message has no text to draw.", param="messages")
    return text


def message_text(message: dict, index: int = 0) -> str:
    """Return a message's whole text: the string, or its `text` parts joined."""
    return " ".join(text_parts(message, index))


def text_parts(message: dict, index: int = 0) -> list[str]:
    """Return a message's text parts (a string content is one part).

    :raises InvalidRequest: naming messages[index] for malformed content.
    """
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if content is None:
        return []
    if not isinstance(content, list):
        raise InvalidRequest(f"messages[{index}].content must be a string or an array of parts.",
                             param=f"messages[{index}].content")
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
    return texts


# A later text part that is an attached file with no tag of its own: Cherry
# Studio's (its first line the file's name, then the file's text). Tagged
# ones (Chatbox's <ATTACHMENT_FILE>, Open WebUI's <attached_files>) are taken
# out by user_words, whichever part they are in.
_FILE_PART = re.compile(r"^[^\n/\\]{1,200}\.[A-Za-z][A-Za-z0-9]{0,7}[ \t]*\n")


def _words_parts(parts: list[str]) -> list[str]:
    """The parts that hold the user's words: the first, and any later part
    that is not an attached file."""
    return [part for index, part in enumerate(parts) if not (index and _FILE_PART.match(part))]


def user_words(text: str) -> str:
    """The user's own words in a message a front end may have wrapped.

    Each front end marks them its own way: a tag around them, a heading before
    them, or the end of the block it put in front of them. Unwrapped text is
    returned as it is, stripped.
    """
    for _ in range(_MAX_LAYERS):
        inner = _unwrap_once(text)
        if inner is None:
            break
        text = inner
    return _after_quote(text).strip()


_MAX_LAYERS = 4  # wrappers seen nested: at most two (Open WebUI 0.6.3x); hostile text stops here


def _unwrap_once(text: str) -> str | None:
    """The words inside one wrapper, or None when the text has none."""
    for opening, closing in _AROUND:
        inner = between(text, opening, closing)
        if inner is not None and inner.strip():
            return inner
    for marker in _BEFORE:
        cut = text.find(marker)
        if cut > 0 and text[:cut].strip():
            return text[:cut]
    for opening, marker in _AFTER:
        cut = text.rfind(marker)
        if 0 <= text.find(opening) < cut and text[cut + len(marker):].strip():
            return text[cut + len(marker):]
    for prefix, end in _LEADING:
        cut = text.rfind(end)
        if text.lstrip().startswith(prefix) and cut >= 0 and text[cut + len(end):].strip():
            return text[cut + len(end):]
    return None


# The words inside: LobeChat's knowledge-base <raw_query> (its </user_query>
# has no slash), Open WebUI's <user_query> (0.6.x RAG template), Cherry
# Studio's reference prompt (English and Chinese).
_AROUND = (("<raw_query>", "</raw_query>"), ("<user_query>", "</user_query>"),
           ("## My question is:", "## Reference Materials:"), ("## 我的问题是：", "## 参考资料："))
# The words come first, then the front end's block: LobeChat's system context
# and knowledge-base block, Chatbox's attachment.
_BEFORE = ("<!-- SYSTEM CONTEXT (NOT PART OF USER QUERY) -->", "<knowledge_base_qa_info>",
           "<ATTACHMENT_FILE>")
# The words come last, after the front end's block: Open WebUI's RAG template
# (0.6.37 on: no tag, after </context>), its native-mode file list, Chatbox's
# search results.
_AFTER = (("<context>", "</context>"), ("<attached_files>", "</attached_files>"),
          ("[webpage 1 begin]", "\nUser Message:\n"), ("[document 1 begin]", "\nUser Message:\n"))
# A block that opens the message and ends with a marker: LibreChat's attached
# documents in earlier turns (a Markdown code fence).
_LEADING = (("Attached document(s):", "\n```\n"),)


def _after_quote(text: str) -> str:
    """The words after a quoted passage: `> ` lines, then two blank lines
    (Open WebUI) or a rule of hyphens (Cherry Studio, Chatbox). A quote the
    user writes into the prompt, followed by one blank line, is the prompt."""
    lines = text.strip().splitlines()
    quoted = 0
    while quoted < len(lines) and (lines[quoted].startswith("> ") or lines[quoted] == ">"):
        quoted += 1
    rest = quoted
    while rest < len(lines) and not lines[rest].strip():
        rest += 1
    rule = rest < len(lines) and len(lines[rest].strip()) >= 3 and set(lines[rest].strip()) == {"-"}
    if not quoted or not (rule or rest - quoted >= 2):
        return text
    return "\n".join(lines[rest + rule:]) or text


def between(text: str, opening: str, closing: str) -> str | None:
    """The text between the first opening marker and the next closing one.

    str.find rather than a lazy regex, which takes quadratic time on text
    full of opening markers.
    """
    start = text.find(opening)
    end = text.find(closing, start + len(opening)) if start >= 0 else -1
    return text[start + len(opening):end] if end >= 0 else None


def image_urls(message: dict, index: int) -> list[tuple[object, str]]:
    """The picture URLs in a message's `image_url` parts (a string or
    {"url": …}), each with the param that names it in an error."""
    content = message.get("content")
    if not isinstance(content, list):
        return []
    found = []
    for number, part in enumerate(content):
        if isinstance(part, dict) and part.get("type") == "image_url":
            value = part.get("image_url")
            url = value.get("url") if isinstance(value, dict) else value
            found.append((url, f"messages[{index}].content[{number}].image_url"))
    return found


def last_user_index(messages: list[dict]) -> int | None:
    return next((index for index in range(len(messages) - 1, -1, -1)
                 if messages[index]["role"] == "user"), None)
