"""Chat front ends' own requests: titles, tags, follow-ups, search queries,
summaries and the like, sent to the chat model beside the user's pictures.

Each is recognised by what it asks for (the JSON key or schema it wants, or
the instruction a known client sends) and answered the way that client
parses it, from the conversation, without ever paying for an image. The
clients' templates and sources are in docs/clients.md.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .errors import InvalidRequest
from .prompts import between, message_text, user_words
from .replies import load_texts
from .sizes import parse_prompt

TITLE_WORDS = 5  # "3-5 words" (Open WebUI), "four to five" (NextChat), "5 or less" (LibreChat)
TITLE_CHARS = 60
SUMMARY_PROMPTS = 5  # pictures listed in a summary
TRANSCRIPT_TURNS = 50  # user turns read from a transcript: the first and the last ones
# Only the head of a message is searched for an instruction: every template's
# instruction comes first, and a megabyte prompt costs no more to look at.
INSTRUCTION_CHARS = 4000


@dataclass(frozen=True)
class SideRequest:
    kind: str  # title, tags, follow_ups, queries, image_prompt, …: the access log's name
    answer: str  # the whole reply text


def side_request(messages: list[dict], response_format: object = None,
                 language: str = "en") -> SideRequest | None:
    """Recognise a front end's side request and answer it, or None for a picture."""
    conversation = _Conversation(messages, load_texts(language))
    schema = _response_schema(response_format)
    if schema is not None:
        return conversation.from_schema(schema)
    for message in _system_messages(messages):
        shown = _image_context(message)
        if shown is not None:
            return conversation.image_context(*shown)
    instruction = conversation.instruction
    key = _requested_json_key(instruction)
    if key is not None:
        return conversation.json_task(key)
    system_texts = [_text(m) for m in _system_messages(messages)]
    for text in (instruction, *system_texts):
        inline = _inline_schema(text)
        if inline is not None:
            return conversation.from_schema(inline)
    head = _instruction_head(instruction)
    for kind, pattern in _LAST_MESSAGE_TASKS:
        if pattern.search(head):
            return conversation.plain_task(kind)
    for text in system_texts:
        for kind, pattern in _SYSTEM_TASKS:
            if pattern.search(text[:INSTRUCTION_CHARS]):
                return conversation.plain_task(kind)
    if _is_conversation_data(conversation.last_user):
        return conversation.plain_task("title")  # Cherry Studio sends the chat as JSON to name it
    return None


# Open WebUI's "### Task:" templates (and admins' own) ask for JSON with one key.
_JSON_KEY = re.compile(r'\{\s*"([A-Za-z_][\w-]{0,40})"\s*:')
_DATA_OPENINGS = ("<chat_history>", "<context>", "<conversation>")


def _requested_json_key(text: str) -> str | None:
    """The key a task template asks for: a `### Task:` or <chat_history>
    template that wants JSON, and the first `{ "key":` before its data (the
    chat, retrieved documents), which may hold JSON of their own."""
    head = text.lstrip()[:INSTRUCTION_CHARS * 4]
    if not (head.startswith("### Task:") or "<chat_history>" in head):
        return None
    cuts = [cut for cut in (head.find(tag) for tag in _DATA_OPENINGS) if cut >= 0]
    head = head[:min(cuts)] if cuts else head
    if "json" not in head.lower():
        return None
    match = _JSON_KEY.search(head)
    return match.group(1) if match else None


def _inline_schema(text: str) -> dict | None:
    """A JSON schema written into the instruction, answered like response_format
    (Chatbox's search decision: "JSON schema: {…} You MUST answer with a JSON object")."""
    marker = text.find("JSON schema:", 0, INSTRUCTION_CHARS * 4)
    if marker < 0 or "answer with a JSON object" not in text[marker:marker + INSTRUCTION_CHARS]:
        return None
    start = text.find("{", marker)
    try:
        schema, _ = json.JSONDecoder().raw_decode(text[:marker + INSTRUCTION_CHARS], start)
    except (ValueError, IndexError, RecursionError):
        return None
    return schema if isinstance(schema, dict) and isinstance(schema.get("properties"), dict) \
        else None


def _response_schema(response_format: object) -> dict | None:
    """The schema a request's response_format asks for ({} for json_object)."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return {}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return schema if isinstance(schema, dict) else {}
    return None


# Open WebUI's legacy image generation: its own engine made the picture, and
# the chat turn that follows carries a system <context> saying so.
_IMAGE_MADE = re.compile(r"<context>\s*(The requested image has been (created|edited)"
                         r"|User is shown the generated image)")
_IMAGE_FAILED = re.compile(r"<context>\s*(Image generation was (attempted but failed"
                           r"|requested but the feature is currently disabled)"
                           r"|Unable to generate an image)")
_ERROR_NAMED = "the following error occurred:"


def _image_context(message: dict) -> tuple[bool, str] | None:
    text = _text(message)[:INSTRUCTION_CHARS * 4]
    if _IMAGE_MADE.search(text):
        return True, ""
    if _IMAGE_FAILED.search(text):
        error = between(text, _ERROR_NAMED, "</context>")
        return False, " ".join(error.split())[:300] if error else ""
    return None


def _phrases(*texts: str) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(t) for t in texts), re.IGNORECASE)


# "the conversation" is the thing named, not "the conversation between two cats".
_CHAT_ENDS = r"(\s+(so far|above|below)\b|\s*([.,:;!?]|$))"

# Instructions in the request's last message (user or system), by client.
_LAST_MESSAGE_TASKS: list[tuple[str, re.Pattern[str]]] = [
    # Open WebUI's emoji (voice calls) and merge-responses (MoA) prompts.
    ("emoji", re.compile(r"through a fitting emoji.*Message:\s*```", re.DOTALL)),
    ("merge", _phrases("set of responses from various models to the latest user query")),
    # Cherry Studio's search-intent and translate prompts.
    ("search_intent", _phrases("You are an AI question rephraser")),
    ("translate", _phrases("<translate_input>")),
    # SillyTavern's image-generation prompts ask the model to write the prompt.
    ("image_prompt", _phrases("comma-delimited list of keywords",
                              "comma-delimited list of concise keywords",
                              "comma-separated list of tags describing",
                              "a brief recap of recent events in the story",
                              "provide ONLY the last chat message string back")),
    # SillyTavern's continue nudge and impersonation.
    ("continue", _phrases("[Continue your last message without repeating",
                          "[Continue the following message. Do not include ANY parts",
                          "[Write your next reply from the point of view of")),
    ("summary", _phrases(
        # NextChat's summary, in each of its locales.
        "Summarize the discussion briefly in 200 words or less",
        "to summarise the conversation in at most 200 words",
        "Resuma a discussão brevemente em 200 palavras", "Stručne zhrňte diskusiu",
        "简要总结一下对话内容", "対話の内容を簡潔に要約し",
        "Fassen Sie den Gesprächsinhalt zusammen",
        "Faites un résumé succinct de la discussion", "Resume brevemente el contenido de la conv",
        "Riassumi brevemente il contenuto della conv", "Кратко подведите итоги содержимого беседы",
        "قم بتلخيص محتوى الدردشة باختصار", "আলোচনার বিষয়বস্তু সংক্ষিপ্তভাবে সারাংশ করুন",
        "Stručně shrňte obsah konverzace", "Skriv et kort resumé (under 200 ord)",
        "Berikan ringkasan singkat tentang konten obrolan", "대화 내용을 간략히 요약하여",
        "Oppsummer samtalen kort", "Sohbet içeriğini kısaca özetleyin",
        "Tóm tắt nội dung cuộc trò chuyện một cách ngắn gọn",
        # LibreChat's context checkpoint, SillyTavern's and LobeChat's summaries.
        "I need you to write me a checkpoint", "update your checkpoint",
        "Summarize the most important facts and events",
        "Summarize the most important parts of the message",
        "Please summarize the above conversation")),
    ("title", _phrases(
        # NextChat's topic, in each of its locales.
        "four to five word title summarizing our conversation",
        "to generate a title (at most 6 words) summarizing our conversation",
        "título de quatro a cinco palavras", "štvor- až päťslovný titul",
        "使用四到五个字直接返回这句话的简要主题",
        "この文の簡潔なテーマを四から五文字で返してください",
        "kurzes Thema in vier bis fünf Wörtern", "quatre à cinq mots pour retourner le sujet",
        "tema breve de esta frase en cuatro a cinco", "in modo conciso con quattro o cinque parole",
        "краткую тему этого сообщения в четырех-пяти",
        "네 글자에서 다섯 글자로 이 문장의 간략한 주제",
        "Find en kort overskrift med 4-5 ord", "استخدم أربع إلى خمس كلمات",
        "চার থেকে পাঁচটি শব্দ ব্যবহার করে", "Použijte čtyři až pět slov",
        "Gunakan empat hingga lima kata", "Bruk fire til fem ord",
        "dört ila beş kelimelik kısa başlığını", "Sử dụng bốn đến năm từ để trả lại chủ đề",
        # LibreChat (current and legacy), LobeChat, LibreChat's structured title.
        "5-word-or-less title", "<task>\nGenerate a concise title",
        # Chatbox names its conversations.
        "give this conversation a name",
        "Analyze this conversation and provide:\n1. The detected language")),
    # An Open WebUI task whose (admin-written) template does not ask for JSON.
    ("title", re.compile(r"^\s*###\s*Task:\s*[^\n]{0,120}\btitle\b", re.IGNORECASE)),
    ("tags", re.compile(r"^\s*###\s*Task:\s*[^\n]{0,120}\btags\b", re.IGNORECASE)),
    ("follow_ups", re.compile(r"^\s*###\s*Task:\s*[^\n]{0,120}\bfollow-up", re.IGNORECASE)),
    # Any client's plain request for a title or a summary of the chat, as long
    # as it opens with the instruction ("A movie poster with a three word
    # title" is a picture).
    ("title", re.compile(
        r"^\s*(please\s+)?(generate|write|create|suggest|give|provide)\b.{0,40}\btitle\b"
        r".{0,60}\b(for|of|summari[sz]ing) (the|this|our) (conversation|chat|discussion)"
        + _CHAT_ENDS, re.IGNORECASE | re.DOTALL)),
    ("summary", re.compile(r"^\s*(please\s+)?summari[sz]e (the|this|our) (discussion|conversation|"
                           r"chat)" + _CHAT_ENDS, re.IGNORECASE)),
]

# Instructions a client puts in the system message, the user message being
# the data (LobeChat, Cherry Studio, SillyTavern's raw prompts). Only at the
# start of a system message: a user's own system prompt may name them too.
def _opening(*texts: str) -> re.Pattern[str]:
    return re.compile(r"^\s*(Ignore previous instructions\.\s*)?("
                      + "|".join(re.escape(t) for t in texts) + ")", re.IGNORECASE)


_SYSTEM_TASKS: list[tuple[str, re.Pattern[str]]] = [
    ("title", _opening("You are a professional conversation summarizer",
                       "Summarize the conversation into a title",
                       "You are an assistant skilled in conversation. You need to summarize",
                       "总结给出的会话，将其总结为",
                       "You are a senior AI art creator and language master")),
    ("summary", _opening("You're an assistant who's good at extracting key takeaways",
                         "You are a conversation summarizer",
                         "Summarize the conversation for future reference",
                         "Summarize the most important facts and events",
                         "Summarize the most important parts of the message",
                         "You are an assistant skilled at summarizing skills")),
    ("tags", _opening("You are an assistant skilled at extracting conversation tags")),
    ("emoji", _opening("You are an emoji expert")),
    ("search_intent", _opening("You are an AI question rephraser")),
    # Open WebUI's legacy tool choice: no tool.
    ("tool_selection", re.compile(r'^\s*Available Tools:.*"tool_calls"', re.DOTALL)),
]


def _is_conversation_data(text: str) -> bool:
    """Cherry Studio names a topic by sending the chat as a JSON array of
    {role, mainText} (its instruction, in the user's language, is the system
    message)."""
    if not text.startswith("[{"):
        return False
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, list) and bool(data) and all(
        isinstance(item, dict) and "mainText" in item for item in data)


class _Conversation:
    """What the answers are made of: the request's instruction and the pictures
    the user asked for, wherever the client put the chat."""

    def __init__(self, messages: list[dict], texts: dict[str, str]):
        self.messages = messages
        self.texts = texts
        self.instruction = _text(messages[-1])
        users = [m for m in messages if m.get("role") == "user"]
        self.last_user = _text(users[-1]).strip() if users else ""
        self._pictures: list[str] | None = None

    # --- the answers ------------------------------------------------------

    def json_task(self, key: str) -> SideRequest:
        kind = _JSON_KINDS.get(key, "task")
        value: object
        if key == "title":
            value = self.title()
        elif key == "tags":
            value = [self.texts["topic"]]
        elif key == "prompt":
            value = self.picture_prompt()
        elif key in ("follow_ups", "queries") or _asks_for_list(self.instruction, key):
            value = []
        else:
            value = ""  # autocomplete's "text": no suggestion
        return SideRequest(kind, _json({key: value}))

    def from_schema(self, schema: dict) -> SideRequest:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        answer = {key: self._schema_value(key, spec) for key, spec in properties.items()}
        kind = next((_SCHEMA_KINDS[k] for k in properties if k in _SCHEMA_KINDS), "task")
        return SideRequest(kind, _json(answer))

    def plain_task(self, kind: str) -> SideRequest:
        answer = {
            "title": self.title,
            "tags": lambda: self.texts["topic"],
            "follow_ups": lambda: "",
            "summary": self.summary,
            "emoji": lambda: "🎨",
            "merge": self.merged,
            "search_intent": lambda: ("<websearch><question>not_needed</question></websearch>"
                                      "<knowledge><question>not_needed</question></knowledge>"),
            "translate": self.untranslated,
            "image_prompt": self.picture_prompt,
            "continue": lambda: "",
            "tool_selection": lambda: _json({"tool_calls": []}),
        }[kind]()
        return SideRequest(kind, answer)

    def image_context(self, made: bool, error: str) -> SideRequest:
        if made:
            return SideRequest("image_shown", self.texts["success"] + "\n")
        message = error or self.texts["image_not_made"]
        return SideRequest("image_failed", self.texts["failed"].format(message=message) + "\n")

    def _schema_value(self, key: str, spec: object) -> object:
        spec = spec if isinstance(spec, dict) else {}
        if isinstance(spec.get("enum"), list) and spec["enum"]:
            choices = spec["enum"]
            return "proceed" if "proceed" in choices else choices[0]  # Chatbox: no search
        if spec.get("type") == "array":
            return [self.texts["topic"]] if key == "tags" else []
        if spec.get("type") in ("number", "integer"):
            return 0
        if spec.get("type") == "boolean":
            return False
        if spec.get("type") == "object":
            return {}
        return {"title": self.title, "description": self.summary, "summary": self.summary,
                "language": lambda: "English"}.get(key, lambda: "")()

    # --- what they are made of ------------------------------------------

    def title(self) -> str:
        """A few words of the first picture asked for, its ratio and flags taken out."""
        prompts = self.pictures()
        words = (prompts[0] if prompts else "").split()[:TITLE_WORDS]
        # Scripts without spaces between words come as one long "word".
        title = " ".join(words)[:TITLE_CHARS].strip(" .,:;!?\"'“”«»*`")
        # Open WebUI's browser turns ' and ` into " before parsing the JSON.
        title = re.sub(r"['`‘’]", "ʼ", title)
        return title or self.texts["topic"]

    def summary(self) -> str:
        prompts = self.pictures()[:SUMMARY_PROMPTS]
        if not prompts:
            return self.texts["topic"]
        return self.texts["summary"].format(prompts="; ".join(prompts))

    def picture_prompt(self) -> str:
        """The picture the user asked for last, as they wrote it (ratio and
        flags kept: our Images API reads them)."""
        turns = self._user_turns()
        return turns[-1] if turns else self.last_user

    def merged(self) -> str:
        """Open WebUI's merge of several models' answers: the one with a picture."""
        answers = self.instruction.split('"""')[1::2]
        with_image = [a for a in answers if "![" in a]
        return (with_image or answers or [self.texts["topic"]])[0].strip()

    def untranslated(self) -> str:
        """The text to translate, as it is (Cherry Studio's prompt names its tag
        before the tagged text)."""
        end = self.instruction.find("</translate_input>")
        start = self.instruction.rfind("<translate_input>", 0, max(end, 0))
        if end < 0 or start < 0:
            return self.last_user
        return self.instruction[start + len("<translate_input>"):end].strip()

    def pictures(self) -> list[str]:
        """The pictures asked for, in order, without ratio, seed or --no text."""
        if self._pictures is None:
            self._pictures = self._find_pictures()
        return self._pictures

    def _find_pictures(self) -> list[str]:
        pictures = []
        for turn in self._user_turns():
            try:
                text = parse_prompt(turn).text
            except InvalidRequest:
                text = turn
            text = " ".join(text.split())
            if text:
                pictures.append(text)
        return pictures

    def _user_turns(self) -> list[str]:
        """The user's turns: from a transcript inside the instruction (Open
        WebUI, LibreChat, LobeChat, Cherry Studio), else the earlier messages."""
        turns = _transcript_turns(self.instruction) or _transcript_turns(self.last_user)
        if not turns:  # the chat as messages; a lone message is its own subject
            turns = [_text(m) for m in self.messages[:-1] if m.get("role") == "user"]
            turns = turns or [self.last_user]
        if len(turns) > TRANSCRIPT_TURNS:
            turns = turns[:TRANSCRIPT_TURNS - 1] + turns[-1:]
        words = [user_words(turn) for turn in turns]
        return [w for w in words if w and not _is_chore(w)]


_JSON_KINDS = {"title": "title", "tags": "tags", "follow_ups": "follow_ups",
               "queries": "queries", "prompt": "image_prompt", "text": "autocomplete"}
_SCHEMA_KINDS = {"title": "title", "completion": "autocomplete", "action": "search_intent",
                 "summary": "summary", "description": "summary", "tags": "tags"}


def _is_chore(text: str) -> bool:
    """Whether an earlier turn was itself a side request (not a picture)."""
    head = _instruction_head(text)
    return _requested_json_key(text) is not None or any(
        pattern.search(head) for _, pattern in _LAST_MESSAGE_TASKS)


# Where a front end's material begins: retrieved documents, attachments.
_MATERIAL = ("<context>", "<!-- SYSTEM CONTEXT", "<ATTACHMENT_FILE>", "<knowledge_base_qa_info>",
             "<attached_files>")


def _instruction_head(text: str) -> str:
    """Where an instruction can be: the head of the message, before any
    documents or files a front end attached (they may quote anything)."""
    head = text[:INSTRUCTION_CHARS]
    cuts = [cut for cut in (head.find(m) for m in _MATERIAL) if cut >= 0]
    return head[:min(cuts)] if cuts else head


def _asks_for_list(instruction: str, key: str) -> bool:
    return re.search(r'"' + re.escape(key) + r'"\s*:\s*\[', instruction) is not None


# A user turn in a transcript: Open WebUI's "USER: …" lines, LibreChat's
# "User: …", LibreChat's legacy '||>User:\n"…"'.
_TURN = re.compile(r"^(?:\|\|>)?(USER|User|user|ASSISTANT|Assistant|AI|SYSTEM|Response)"
                   r":[ \t]?(.*)$")


def _transcript_turns(text: str) -> list[str]:
    """The user turns of a chat transcript written into a prompt."""
    if text.startswith("[{"):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, list):  # Cherry Studio: [{"role", "mainText"}]
            return [str(item.get("mainText", "")) for item in data
                    if isinstance(item, dict) and item.get("role") == "user"]
    tagged = _tagged_turns(text)
    if tagged:
        return tagged
    if text.startswith("Prompts:\n"):  # LobeChat's image page: "1. <prompt>" lines
        return [re.sub(r"^\d+\.\s*", "", line) for line in text.splitlines()[1:] if line.strip()]
    fenced = between(text, "```\n", "\n```")
    if fenced is not None and "give this conversation a name" in text:
        # Chatbox: the first messages, split by a rule; its system prompt may lead.
        return [m for m in fenced.split("\n\n---------\n\n") if not m.startswith("You are ")]
    block = between(text, "<chat_history>", "</chat_history>")
    if block is None:
        cut = text.find("Conversation:")
        block = text[cut:] if cut >= 0 else text
    turns: list[list[str]] = []
    role = None
    for line in block.splitlines():
        match = _TURN.match(line)
        if match:
            role = match.group(1).lower()
            if role == "user":
                turns.append([match.group(2)])
        elif role == "user" and turns:
            turns[-1].append(line)
    return ["\n".join(turn).strip().strip('"') for turn in turns]


def _tagged_turns(text: str) -> list[str]:
    """LobeChat's transcript: <user>…</user> blocks."""
    turns: list[str] = []
    start = text.find("<user>")
    while start >= 0 and len(turns) < TRANSCRIPT_TURNS:
        end = text.find("</user>", start)
        if end < 0:
            break
        turns.append(text[start + len("<user>"):end].strip())
        start = text.find("<user>", end)
    return turns


def _system_messages(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m.get("role") in ("system", "developer")]


def _text(message: dict) -> str:
    try:
        return message_text(message)
    except InvalidRequest:
        return ""


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)

