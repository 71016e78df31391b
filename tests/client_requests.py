"""Requests chat front ends send on their own, as each client lays them out.

Our own fixtures: each follows its client's template in structure (roles,
where the instruction and the chat sit, the stream flag, max_tokens, the
JSON asked for) and keeps the phrase the template is recognised by; the rest
is reworded. docs/clients.md names each template's source. `PARSERS` read
an answer the way the client does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

PICTURE = "A cute cat playing piano at dusk 16:9 --seed 7"
TITLE = "A cute cat playing piano"  # five words, ratio and flags gone
OUR_REPLY = ("🎨 Original prompt: A cute cat playing piano at dusk 16:9 --seed 7\n\n"
             "🌟 Image generation successful!\n\n![Generated Image](https://flux.example/image/k)\n")


@dataclass(frozen=True)
class SideRequestCase:
    client: str
    kind: str  # the access log's kind
    body: dict
    parser: str  # how the client reads the answer (a key of PARSERS)
    expected: object = None  # what the parser must return, when it is exact
    extra: dict = field(default_factory=dict)


def _owui_task(instruction: str, output: str, history: str) -> str:
    """Open WebUI's task layout: header, guidelines, output spec, chat history."""
    return (f"### Task:\n{instruction}\n### Guidelines:\n- Keep to the chat's language.\n"
            f"- Answer with the JSON object alone, with no text around it.\n"
            f"### Output:\n{output}\n### Chat History:\n<chat_history>\n{history}\n"
            "</chat_history>")


def _one_user(content: str, **body) -> dict:
    return {"model": "flux", "messages": [{"role": "user", "content": content}], **body}


NEW_CHAT = f"USER: {PICTURE}\nASSISTANT: "  # the title runs while the answer is made
AFTER_REPLY = f"USER: {PICTURE}\nASSISTANT: {OUR_REPLY}"

CASES = [
    # --- Open WebUI 0.12.4: one user message holding the filled template ------------
    SideRequestCase("Open WebUI title", "title", _one_user(_owui_task(
        "Generate a concise title summarizing the chat history.",
        'JSON format: { "title": "your concise title here" }\n### Examples:\n'
        '- { "title": "Garden Party" },\n- { "title": "Tax Questions" }', NEW_CHAT),
        stream=False, max_tokens=1000), "owui_title", TITLE),
    SideRequestCase("Open WebUI title (0.10, emoji wording: 'precede or follow')", "title",
                    _one_user(_owui_task(
                        "Generate a concise, 3-5 word title with an emoji summarizing the chat "
                        "history.\n- Make sure no text or explanations precede or follow the "
                        "raw JSON output.",
                        'JSON format: { "title": "your concise title here" }', AFTER_REPLY),
                        stream=False, max_tokens=1000), "owui_title", TITLE),
    SideRequestCase("Open WebUI tags", "tags", _one_user(_owui_task(
        "Generate 1-3 broad tags categorizing the main themes of the chat history, along with "
        "1-3 more specific subtopic tags.",
        'JSON format: { "tags": ["tag1", "tag2", "tag3"] }', AFTER_REPLY), stream=False),
        "owui_tags", ["Image generation"]),
    SideRequestCase("Open WebUI follow-ups", "follow_ups", _one_user(_owui_task(
        "Predict 3-5 useful messages this user might naturally send next.",
        'JSON format: { "follow_ups": ["Suggested next message 1", "Suggested next message 2"] }',
        AFTER_REPLY), stream=False), "owui_follow_ups", []),
    SideRequestCase("Open WebUI follow-ups (0.8, 'follow-up questions')", "follow_ups", _one_user(
        _owui_task("Suggest 3-5 relevant follow-up questions or prompts the user might ask next.",
                   'JSON format: { "follow_ups": ["Question 1?", "Question 2?"] }', AFTER_REPLY),
        stream=False), "owui_follow_ups", []),
    SideRequestCase("Open WebUI image prompt (legacy tool mode)", "image_prompt", _one_user(
        _owui_task("Generate a detailed prompt for am image generation task based on the given "
                   "language and context.",
                   'Strictly return in JSON format:\n{\n    "prompt": "Your detailed description '
                   'here."\n}', f"USER: A red fox in the snow\nASSISTANT: {OUR_REPLY}\n"
                                f"USER: {PICTURE}"), stream=False),
        "owui_image_prompt", PICTURE),
    SideRequestCase("Open WebUI search queries", "queries", _one_user(_owui_task(
        "Analyze the chat history to determine the necessity of generating search queries, in "
        "the given language.",
        'Strictly return in JSON format: \n{\n  "queries": ["query1", "query2"]\n}',
        f"USER: {PICTURE}"), stream=False), "owui_queries", []),
    SideRequestCase("Open WebUI autocomplete", "autocomplete", _one_user(
        "### Task:\nYou are an autocompletion system. Continue the text in `<text>` based on the "
        "completion type in `<type>`.\n5. If unsure, return: `{ \"text\": \"\" }`.\n"
        "### **Output Rules**:\n- Respond only in JSON format: `{ \"text\": \"<your_completion>\" "
        "}`.\n---\n### Context:\n<chat_history>\n\n</chat_history>\n<type>search query</type>\n"
        "<text>A cute cat</text>\n#### Output:\n", stream=False), "owui_autocomplete", ""),
    SideRequestCase("Open WebUI emoji (voice call)", "emoji", _one_user(
        "Your task is to reflect the speaker's likely facial expression through a fitting emoji. "
        "Read the feeling in the message (e.g., 😊, 😢).\n\nMessage: ```Here is your picture of "
        "a cat.```", stream=False, max_tokens=4), "owui_emoji"),
    SideRequestCase("Open WebUI merge responses (MoA)", "merge", _one_user(
        'You have been provided with a set of responses from various models to the latest user '
        f'query: "{PICTURE}"\n\nYour task is to synthesize these responses into one.\n\n'
        'Responses from models: """I cannot draw."""\n\n"""' + OUR_REPLY + '"""', stream=True),
        "stream_text", extra={"contains": "![Generated Image](https://flux.example/image/k)"}),
    SideRequestCase("Open WebUI image shown (legacy mode, same turn)", "image_shown", {
        "model": "flux", "stream": True, "messages": [
            {"role": "system", "content": "<context>The requested image has been created by the "
                                          "system successfully and is now being shown to the "
                                          "user.</context>\nYou are a helpful artist."},
            {"role": "user", "content": PICTURE}]},
        "stream_text", extra={"contains": "Image generation successful"}),
    SideRequestCase("Open WebUI image failed (legacy mode)", "image_failed", {
        "model": "flux", "stream": False, "messages": [
            {"role": "system", "content": "<context>Image generation was attempted but failed "
                                          "because of an error. Tell the user that the following "
                                          "error occurred: quota exceeded</context>"},
            {"role": "user", "content": PICTURE}]},
        "plain", extra={"contains": "quota exceeded"}),
    # --- LibreChat --------------------------------------------------------------------
    SideRequestCase("LibreChat title (completion)", "title", _one_user(
        "Provide a concise, 5-word-or-less title for the conversation, using title case "
        f"conventions. Only return the title itself.\n\nConversation:\nUser: {PICTURE}\nAI: ",
        stream=False), "plain", TITLE),
    SideRequestCase("LibreChat title (structured)", "title", _one_user(
        "Analyze this conversation and provide:\n1. The detected language of the conversation\n"
        f"2. A concise title in the detected language\n\nUser: {PICTURE}\nAI: {OUR_REPLY}",
        stream=False, response_format={"type": "json_schema", "json_schema": {
            "name": "extract", "schema": {"type": "object", "properties": {
                "language": {"type": "string"}, "title": {"type": "string"}},
                "required": ["language", "title"]}}}),
        "json", {"language": "English", "title": TITLE}),
    SideRequestCase("LibreChat checkpoint summary", "summary", {
        "model": "flux", "stream": True, "messages": [
            {"role": "user", "content": PICTURE}, {"role": "assistant", "content": OUR_REPLY},
            {"role": "user", "content": "Hold on, before you continue I need you to write me a "
                                        "checkpoint of everything so far.\n\n## Checkpoint\n"}]},
        "stream_text", extra={"contains": "A cute cat playing piano at dusk"}),
    # --- LobeChat ---------------------------------------------------------------------
    SideRequestCase("LobeChat topic title (JSON schema)", "title", {
        "model": "flux", "response_format": {"type": "json_schema", "json_schema": {
            "name": "topic_title", "strict": True, "schema": {
                "type": "object", "additionalProperties": False, "required": ["title"],
                "properties": {"title": {"type": "string"}}}}},
        "messages": [
            {"role": "system", "content": "You are a professional conversation summarizer. "
                                          "Return one JSON object with a title."},
            {"role": "user", "content": "<task>\nGenerate a concise title that captures the "
                                        f"essence of the conversation.\n</task>\n\n<conversation>"
                                        f"\n<user>\n{PICTURE}\n</user>\n<assistant>\n{OUR_REPLY}"
                                        "\n</assistant>\n</conversation>"}]},
        "bare_json", {"title": TITLE}),
    SideRequestCase("LobeChat topic title (older, streamed)", "title", {
        "model": "flux", "stream": True, "messages": [
            {"role": "system", "content": "You are a professional conversation summarizer. "
                                          "Output only the title text."},
            {"role": "user", "content": f"user: {PICTURE}\nassistant: {OUR_REPLY}"}]},
        "stream_text", TITLE),
    SideRequestCase("LobeChat history summary", "summary", {
        "model": "flux", "stream": True, "messages": [
            {"role": "system", "content": "You're an assistant who's good at extracting key "
                                          "takeaways from conversations and summarizing them."},
            {"role": "user", "content": f"<chat_history>\n<user>{PICTURE}</user>\n<assistant>"
                                        f"{OUR_REPLY}</assistant>\n</chat_history>\n\nPlease "
                                        "summarize the above conversation and retain key "
                                        "information."}]},
        "stream_text", extra={"contains": "A cute cat playing piano at dusk"}),
    SideRequestCase("LobeChat input completion", "autocomplete", {
        "model": "flux", "response_format": {"type": "json_schema", "json_schema": {
            "name": "InputCompletion", "schema": {"type": "object", "properties": {
                "completion": {"type": "string"}}, "required": ["completion"]}}},
        "messages": [
            {"role": "system", "content": "You are an autocomplete engine for a chat input box."},
            {"role": "user", "content": 'Before cursor: "A cute"\nAfter cursor: ""'}]},
        "bare_json", {"completion": ""}),
    # --- NextChat: the history as messages, then its instruction ---------------------
    SideRequestCase("NextChat topic", "title", {
        "model": "flux", "stream": False, "temperature": 0.5, "messages": [
            {"role": "user", "content": PICTURE}, {"role": "assistant", "content": OUR_REPLY},
            {"role": "user", "content": "Please generate a four to five word title summarizing "
                                        "our conversation without any lead-in or punctuation."}]},
        "nextchat_topic", TITLE),
    SideRequestCase("NextChat topic (German UI)", "title", {
        "model": "flux", "stream": False, "messages": [
            {"role": "user", "content": "Ein Fuchs im Schnee"},
            {"role": "user", "content": "Geben Sie ein kurzes Thema in vier bis fünf Wörtern "
                                        "zurück, ohne Erklärungen."}]},
        "nextchat_topic", "Ein Fuchs im Schnee"),
    SideRequestCase("NextChat summarize (system last)", "summary", {
        "model": "flux", "stream": True, "messages": [
            {"role": "user", "content": PICTURE}, {"role": "assistant", "content": OUR_REPLY},
            {"role": "system", "content": "Summarize the discussion briefly in 200 words or less "
                                          "to use as a prompt for future context."}]},
        "stream_text", extra={"contains": "A cute cat playing piano at dusk"}),
    # --- Cherry Studio ----------------------------------------------------------------
    SideRequestCase("Cherry Studio topic name", "title", {
        "model": "flux", "stream": True, "messages": [
            {"role": "system", "content": "Summarize the conversation into a title in English "
                                          "within 10 words. Output only the title string."},
            {"role": "user", "content": json.dumps([{"role": "user", "mainText": PICTURE},
                                                    {"role": "assistant", "mainText": "done"}])}]},
        "stream_text", TITLE),
    SideRequestCase("Cherry Studio topic name (another UI language)", "title", {
        "model": "flux", "stream": False, "messages": [
            {"role": "system", "content": "Résume la conversation en un titre de 10 mots."},
            {"role": "user", "content": json.dumps([{"role": "user", "mainText": PICTURE}])}]},
        "plain", TITLE),
    SideRequestCase("Cherry Studio search intent", "search_intent", {
        "model": "flux", "stream": True, "messages": [
            {"role": "system", "content": "You are an AI question rephraser. Put the question "
                                          "in <question> inside <websearch>.\n<conversation>\n"
                                          f"</conversation>\nFollow up question: {PICTURE}\n"
                                          "Rephrased question:"},
            {"role": "user", "content": ""}]},
        "stream_text", extra={"contains": "<question>not_needed</question>"}),
    SideRequestCase("Cherry Studio translate", "translate", _one_user(
        "Translate the text enclosed with <translate_input> into French.\n\n<translate_input>\n"
        "A cute cat\n</translate_input>\n\nTranslate the above text.", stream=True),
        "stream_text", "A cute cat"),
    # --- SillyTavern: the roleplay context, then a quiet prompt as the last system message
    SideRequestCase("SillyTavern summarize", "summary", {
        "model": "flux", "stream": False, "max_tokens": 300, "messages": [
            {"role": "system", "content": "Write Artist's next reply in a fictional chat."},
            {"role": "system", "content": "[Start a new Chat]"},
            {"role": "user", "content": PICTURE}, {"role": "assistant", "content": OUR_REPLY},
            {"role": "system", "content": "Ignore previous instructions. Summarize the most "
                                          "important facts and events in the story so far."}]},
        "plain", extra={"contains": "A cute cat playing piano at dusk"}),
    SideRequestCase("SillyTavern image prompt", "image_prompt", {
        "model": "flux", "stream": False, "max_tokens": 300, "messages": [
            {"role": "system", "content": "[Start a new Chat]"},
            {"role": "user", "content": PICTURE},
            {"role": "system", "content": "In the next response I want you to provide only a "
                                          "detailed comma-delimited list of keywords and phrases "
                                          "which describe Artist."}]},
        "plain", PICTURE),
    SideRequestCase("SillyTavern scene prompt (older, bracketed)", "image_prompt", {
        "model": "flux", "stream": False, "max_tokens": 300, "messages": [
            {"role": "user", "content": PICTURE},
            {"role": "system", "content": "[Pause your roleplay and provide a detailed "
                                          "description for all of the following: a brief recap "
                                          "of recent events in the story, and the place.]"}]},
        "plain", PICTURE),
    SideRequestCase("SillyTavern raw summary (instruction first)", "summary", {
        "model": "flux", "stream": False, "messages": [
            {"role": "system", "content": "Ignore previous instructions. Summarize the most "
                                          "important facts and events in the story so far."},
            {"role": "user", "content": f"User:\n{PICTURE}\n\nArtist:\nDone."}]},
        "plain", extra={"contains": "Pictures asked for in this chat"}),
    # --- Open WebUI's legacy tool choice -----------------------------------------------
    SideRequestCase("Open WebUI tool selection (legacy mode)", "tool_selection", {
        "model": "flux", "stream": False, "messages": [
            {"role": "system", "content": 'Available Tools: [{"name": "get_weather"}]\nReturn '
                                          'only {"tool_calls": [{"name": "…", "parameters": '
                                          '{}}]}, or an empty list when no tool fits.'},
            {"role": "user", "content": f"History:\nUSER: \"\"\"{PICTURE}\"\"\"\nQuery: "
                                        f"{PICTURE}"}]},
        "json", {"tool_calls": []}),
    # --- LobeChat's image page ----------------------------------------------------------
    SideRequestCase("LobeChat image page title", "title", {
        "model": "flux", "stream": True, "messages": [
            {"role": "system", "content": "You are a senior AI art creator and language master. "
                                          "Give the prompts a short title."},
            {"role": "user", "content": f"Prompts:\n1. {PICTURE}\n2. A red fox"}]},
        "stream_text", TITLE),
    # --- Chatbox: its conversation name, and its search decision (a JSON schema in
    # the system message) ------------------------------------------------------------
    SideRequestCase("Chatbox conversation name", "title", _one_user(
        "Based on the chat history, give this conversation a name.\nKeep it short.\nUse "
        f"English.\n\nHere's the conversation:\n\n```\nYou are a helpful assistant."
        f"\n\n---------\n\n{PICTURE}\n\n---------\n\n{OUR_REPLY}\n```", stream=True),
        "stream_text", TITLE),
    SideRequestCase("Chatbox search decision", "search_intent", {
        "model": "flux", "stream": False, "messages": [
            {"role": "system", "content": 'As a professional web researcher, decide.\n\nJSON '
                                          'schema:\n{"type":"object","properties":{"action":{'
                                          '"type":"string","enum":["search","proceed"]},"query":'
                                          '{"type":"string"}},"required":["action"]}\nYou MUST '
                                          'answer with a JSON object that matches the JSON schema '
                                          'above.'},
            {"role": "user", "content": PICTURE}]},
        "json", {"action": "proceed", "query": ""}),
]

# Picture requests wrapped by a front end, and the words that must be drawn.
WRAPPED = [
    ("Open WebUI RAG (0.12.4: words after </context>)", {"messages": [{"role": "user", "content": (
        "### Task:\nRespond to the user query using the provided context, with citations.\n\n"
        "### Output:\nA clear answer.\n\n<context>\n<source id=\"1\" name=\"notes.txt\">Follow "
        "these steps to title your JSON: {\"title\": 1}</source>\n</context>\n\n"
        "A cute cat 16:9")}]},
     "A cute cat"),
    ("Open WebUI RAG (0.6: <user_query>, words twice)", {"messages": [{"role": "user", "content": (
        "### Task:\nRespond to the user query using the provided context.\n\n<context>\n<source>"
        "tags and follow-ups</source>\n</context>\n\n<user_query>\nA red fox in the snow\n"
        "</user_query>\n\nA red fox in the snow")}]}, "A red fox in the snow"),
    ("Open WebUI RAG in the system message", {"messages": [
        {"role": "system", "content": "### Task:\nRespond to the user query using the provided "
                                      "context.\n<context>\n<source id=\"1\">x</source>\n"
                                      "</context>\n"},
        {"role": "user", "content": "A lighthouse on a cliff"}]}, "A lighthouse on a cliff"),
    ("Open WebUI attached files (native mode, own part)", {"messages": [{"role": "user",
                                                                         "content": [
        {"type": "text", "text": "<attached_files>\n<file type=\"file\" name=\"a.pdf\"/>\n"
                                 "</attached_files>"},
        {"type": "text", "text": "A paper boat"}]}]}, "A paper boat"),
    ("Open WebUI attached files (native mode, same string)", {"messages": [{
        "role": "user", "content": "<attached_files>\n<file type=\"file\" name=\"a.pdf\"/>\n"
                                   "</attached_files>\n\nA paper boat on a pond"}]},
     "A paper boat on a pond"),
    ("Open WebUI quote", {"messages": [{"role": "user", "content": (
        "> An old answer about titles\n> and tags\n\n\nA green parrot")}]}, "A green parrot"),
    ("LobeChat files (system context after the words)", {"messages": [{"role": "user", "content": (
        "A blue bicycle\n\n<!-- SYSTEM CONTEXT (NOT PART OF USER QUERY) -->\n<files_info>\n"
        "<files><file name=\"title.txt\">Generate a title</file></files>\n</files_info>\n"
        "<!-- END SYSTEM CONTEXT -->")}]}, "A blue bicycle"),
    ("LobeChat knowledge base (<raw_query>)", {"messages": [{"role": "user", "content": (
        "A snowy village\n\n<knowledge_base_qa_info>\nAnswer from passages.\n<retrieved_chunks>"
        "x</retrieved_chunks>\n<user_query>\n<raw_query>A snowy village</raw_query>\n"
        "<user_query>")}]}, "A snowy village"),
    ("Cherry Studio reference prompt", {"messages": [{"role": "user", "content": (
        "Please answer the question based on the reference materials\n\n## My question is:\n\n"
        "A castle at night\n\n## Reference Materials:\n\n```json\n[{\"id\": 1}]\n```")}]},
     "A castle at night"),
    ("Cherry Studio attached text file (own part)", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "A desert road"},
        {"type": "text", "text": "notes.txt\nGenerate a four to five word title"}]}]},
     "A desert road"),
    ("Chatbox attachment (own part)", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "A mountain lake"},
        {"type": "text", "text": "\n\n<ATTACHMENT_FILE>\n<FILE_NAME>a.txt</FILE_NAME>\n"
                                 "<FILE_CONTENT>\nsummarize the conversation\n</FILE_CONTENT>\n"
                                 "</ATTACHMENT_FILE>"}]}]}, "A mountain lake"),
    ("Chatbox search results", {"messages": [{"role": "user", "content": (
        "[webpage 1 begin]\nTitle: Cats\nURL: https://x\nContent: cats\n[webpage 1 end]\n"
        "User Message:\nA sleeping kitten")}]}, "A sleeping kitten"),
]

# Picture prompts that name a side request's words and must still draw.
PICTURES = ["A movie poster with a three word title", "A follow-up photo of the same cat",
            "Tags on a gift box", "A title card for a western movie",
            "Book cover titled 'Summary'", "An emoji made of fruit",
            "Please generate a four-eyed monster", "A JSON logo on a t-shirt",
            # Found by a hostile review: verbs and words the generic rules once took.
            "Create a movie poster with a bold three word title 'Cats In Space'",
            "Make a YouTube thumbnail with a two word title",
            "Generate a sci-fi poster, 3 word title: STAR CAT RISING",
            "Make a title card for the chat show 'Late Night Talk'",
            "Make a title banner for our discussion forum",
            "Summarize the conversation between two cats as a comic panel",
            "Please summarize our chat in a single illustration",
            "Draw a poster that says </context> in red letters",
            ">_< kawaii cat face with pink background"]
