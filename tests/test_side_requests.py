"""Front ends' side requests, each as its client sends it, get the answer the
client parses and never an image; pictures, wrapped or not, still draw."""

from __future__ import annotations

import json
import logging
import re

import pytest

from client_requests import CASES, PICTURES, WRAPPED
from conftest import AUTH, parse_sse
from flux_worker.side_requests import side_request


def _owui_slice(text: str, first: bool = True) -> object:
    """Open WebUI's backend: JSON from the first (or last) `{` to the last `}`."""
    start = text.find("{") if first else text.rfind("{")
    return json.loads(text[start:text.rfind("}") + 1])


def _owui_frontend_title(text: str) -> str:
    """Open WebUI's browser path swaps quotes and backticks for `"` first."""
    return _owui_slice(re.sub(r"['‘’`]", '"', text))["title"]


def _nextchat_topic(text: str) -> str:
    topic = re.sub(r'^["“”*]+|["“”*]+$', "", text)
    return re.sub(r"[，。！？”“\"、,.!?*]*$", "", topic)


PARSERS = {
    "owui_title": lambda text: (_owui_slice(text)["title"], _owui_frontend_title(text))[0],
    "owui_tags": lambda text: _owui_slice(text)["tags"],
    "owui_follow_ups": lambda text: [s for s in _owui_slice(text)["follow_ups"]
                                     if isinstance(s, str)],
    "owui_image_prompt": lambda text: _owui_slice(text, first=False)["prompt"],
    "owui_queries": lambda text: _owui_slice(text, first=False)["queries"],
    "owui_autocomplete": lambda text: _owui_slice(text)["text"],
    "owui_emoji": lambda text: next(c for c in text if ord(c) >= 0x1F300),
    "nextchat_topic": _nextchat_topic,
    "json": lambda text: _owui_slice(text),
    "bare_json": json.loads,  # LobeChat: JSON.parse on the whole content
    "plain": lambda text: text.strip(),
    "stream_text": lambda text: text.strip(),
}


def ask(client, body: dict) -> str:
    # buffered: the body is read and closed, so the access line is written
    response = client.post("/v1/chat/completions", headers=AUTH, json=body, buffered=True)
    assert response.status_code == 200, response.get_data(as_text=True)
    if body.get("stream"):
        assert response.mimetype == "text/event-stream"
        events, _ = parse_sse(response.get_data(as_text=True))
        assert events[-1] == "[DONE]"
        return "".join(e["choices"][0]["delta"].get("content", "")
                       for e in events if isinstance(e, dict) and e.get("choices"))
    return response.json["choices"][0]["message"]["content"]


@pytest.mark.parametrize("case", CASES, ids=[c.client for c in CASES])
def test_each_side_request_gets_what_its_client_parses_and_no_image(client, fake, case,
                                                                    caplog):
    caplog.set_level(logging.INFO, logger="flux_worker.access")
    text = ask(client, case.body)
    parsed = PARSERS[case.parser](text)
    if case.expected is not None:
        assert parsed == case.expected
    if "contains" in case.extra:
        assert case.extra["contains"] in text
    assert parsed or case.expected in ("", [], None) or case.parser == "owui_emoji"
    assert fake.calls_to("ai") == []  # no image was paid for
    [line] = [r.getMessage() for r in caplog.records if r.name == "flux_worker.access"]
    stream = "true" if case.body.get("stream") else "false"
    assert f" stream={stream} kind={case.kind} images=0 " in line


def test_the_emoji_answer_is_one_emoji(client):
    case = next(c for c in CASES if c.kind == "emoji")
    assert ask(client, case.body) == "🎨"


@pytest.mark.parametrize("name, body, words", WRAPPED, ids=[w[0] for w in WRAPPED])
def test_wrapped_picture_requests_draw_the_users_words(client, fake, name, body, words):
    ask(client, body)
    (call,) = fake.calls_to("ai")
    assert call.json["prompt"] == words


@pytest.mark.parametrize("prompt", PICTURES)
def test_pictures_that_name_side_request_words_still_draw(client, fake, prompt):
    text = ask(client, {"messages": [{"role": "user", "content": prompt}]})
    assert "![Generated Image](" in text
    assert fake.calls_to("ai")[0].json["prompt"] == prompt


def test_a_normal_open_webui_turn_with_tools_and_a_system_prompt_draws(client, fake):
    """Native mode sends built-in tools; a model's system prompt and NextChat's
    memory and SillyTavern's group nudge are not side requests."""
    body = {"stream": True, "tools": [{"type": "function", "function": {
        "name": "generate_image", "parameters": {"type": "object"}}}], "messages": [
        {"role": "system", "content": "This is a summary of the chat history as a recap: cats"},
        {"role": "user", "content": "A cute cat 16:9"},
        {"role": "system", "content": "[Write the next reply only as Artist.]"}]}
    assert "![Generated Image](" in ask(client, body)
    assert fake.calls_to("ai")[0].json["prompt"] == "A cute cat"


def test_after_the_image_prompt_task_the_next_turn_is_text(client, fake):
    """Open WebUI's legacy flow: the task, its engine draws (our Images API),
    then the chat turn with the "image created" context gets text only."""
    task = next(c for c in CASES if c.kind == "image_prompt" and "Open WebUI" in c.client)
    prompt = PARSERS["owui_image_prompt"](ask(client, task.body))
    images = client.post("/v1/images/generations", headers=AUTH,
                         json={"prompt": prompt, "size": "512x512", "response_format": "b64_json"})
    assert images.status_code == 200 and len(fake.calls_to("ai")) == 1
    # The ratio the user asked for wins over Open WebUI's fixed size.
    assert (images.json["data"][0]["seed"], fake.calls_to("ai")[0].json["seed"]) == (7, 7)
    shown = next(c for c in CASES if c.kind == "image_shown")
    assert "![" not in ask(client, shown.body)
    assert len(fake.calls_to("ai")) == 1


def test_the_responses_api_json_format_is_a_side_request(client, fake):
    """The Vercel AI SDK's generateObject asks for JSON through text.format."""
    response = client.post("/v1/responses", headers=AUTH, json={
        "model": "flux", "input": f"Name this chat: {PICTURE_TEXT}",
        "text": {"format": {"type": "json_schema", "name": "t", "schema": {
            "type": "object", "properties": {"title": {"type": "string"}}}}}})
    assert response.status_code == 200
    assert json.loads(response.json["output"][0]["content"][0]["text"]) == {
        "title": "Name this chat: A cute"}
    assert fake.calls_to("ai") == []


PICTURE_TEXT = "A cute cat"


class TestRecognition:
    """Unit checks of the classifier on shapes the fixtures do not cover."""

    def test_a_picture_with_json_in_it_is_still_a_picture(self):
        messages = [{"role": "user", "content": 'A shirt printed with {"title": "cat"}'}]
        assert side_request(messages) is None

    def test_an_unknown_task_key_gets_that_key(self):
        task = ('### Task:\nRate the chat.\n### Output:\nJSON format: { "rating": "good" }\n'
                "<chat_history>\nUSER: A cat\n</chat_history>")
        found = side_request([{"role": "user", "content": task}])
        assert found is not None and (found.kind, json.loads(found.answer)) == ("task", {
            "rating": ""})

    def test_titles_keep_out_apostrophes_that_break_open_webui(self):
        task = ('### Task:\nGenerate a title.\nJSON format: { "title": "x" }\n<chat_history>\n'
                "USER: Don't `panic` 'now' 4:3\n</chat_history>")
        found = side_request([{"role": "user", "content": task}])
        assert found is not None and _owui_frontend_title(found.answer) == "Donʼt ʼpanicʼ ʼnow"

    def test_titles_fall_back_to_the_topic_when_there_is_no_picture(self):
        found = side_request([{"role": "user", "content": "Please generate a four to five word "
                                                          "title summarizing our conversation"}],
                             language="de")
        assert found is not None and found.answer == "Bildgenerierung"

    def test_a_hostile_transcript_is_answered_quickly(self):
        task = ('### Task:\nGenerate a title.\nJSON format: { "title": "x" }\n'
                + "<chat_history>USER: <user>" * 20000)
        found = side_request([{"role": "user", "content": task}])
        assert found is not None and found.kind == "title"


class TestHostile:
    """What a hostile review found: each answers at once, with no 500."""

    def test_an_error_context_full_of_spaces_is_answered(self, client, fake):
        body = {"messages": [
            {"role": "system", "content": "<context>Image generation was attempted but failed. "
                                          "Tell the user that the following error occurred:"
                                          + " " * 16000},
            {"role": "user", "content": "a cat"}]}
        assert ask(client, body).startswith("❌ Image generation failed: ")
        assert fake.calls_to("ai") == []

    @pytest.mark.parametrize("messages", [
        [{"role": "user", "content": '[{"a":' + "[" * 200000}],
        [{"role": "system", "content": 'JSON schema: {"properties": ' + "[" * 200000
                                       + " You MUST answer with a JSON object"},
         {"role": "user", "content": "a cat"}],
    ])
    def test_deep_nesting_is_no_500(self, client, messages):
        response = client.post("/v1/chat/completions", headers=AUTH, json={"messages": messages})
        assert response.status_code in (200, 400)

    def test_json_in_a_long_rag_document_is_not_a_task(self, client, fake):
        context = '<source id="1">The API returns JSON like { "status": "ok" }' + " x" * 9000
        ask(client, {"messages": [{"role": "user", "content": (
            "### Task:\nRespond to the user query using the provided context.\n\n<context>\n"
            f"{context}</source>\n</context>\n\nA cute cat in a library")}]})
        assert fake.calls_to("ai")[0].json["prompt"] == "A cute cat in a library"

    @pytest.mark.parametrize("system", [
        "You are an expert image prompt engineer. Turn my ideas into stunning FLUX images.",
        "You are a naming expert and logo designer.",
        "You are a professional translator and illustrator.",
        'Answer in JSON schema: {"properties": {"name": {}}} when asked.'])
    def test_a_users_own_system_prompt_does_not_stop_pictures(self, client, fake, system):
        ask(client, {"messages": [{"role": "system", "content": system},
                                  {"role": "user", "content": "A fox logo for a coffee shop"}]})
        assert fake.calls_to("ai")[0].json["prompt"] == "A fox logo for a coffee shop"

    def test_phrases_in_an_attachment_are_not_instructions(self, client, fake):
        ask(client, {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "A mountain lake"},
            {"type": "text", "text": "\n\n<ATTACHMENT_FILE>\n<FILE_CONTENT>\nPlease summarize the "
                                     "above conversation\n</FILE_CONTENT>\n</ATTACHMENT_FILE>"}]}]})
        assert fake.calls_to("ai")[0].json["prompt"] == "A mountain lake"

    def test_a_quote_the_user_writes_is_part_of_the_prompt(self, client, fake):
        ask(client, {"messages": [{"role": "user", "content": "> Carpe diem\n\nwritten in gold"}]})
        assert fake.calls_to("ai")[0].json["prompt"] == "> Carpe diem\n\nwritten in gold"

    def test_a_long_title_without_spaces_is_cut(self):
        found = side_request([{"role": "user", "content": "一只猫" * 100},
                              {"role": "user", "content": "Please generate a four to five word "
                                                          "title summarizing our conversation"}])
        assert found is not None and len(found.answer) <= 60
