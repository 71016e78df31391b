"""The chat reply as strict CommonMark renders it: one paragraph per line, the
image on its own, and a failure that ends its line (terminal clients such as
`llm` print the SDK's error right after the text)."""

from __future__ import annotations

import pytest
from markdown_it import MarkdownIt

import fake_cloudflare
from conftest import AUTH, parse_sse

COMMONMARK = MarkdownIt("commonmark")
CAT = {"messages": [{"role": "user", "content": "A cute cat 16:9"}]}


def paragraphs(markdown: str) -> list[str]:
    """The inline content of each rendered paragraph, as HTML."""
    tokens = COMMONMARK.parse(markdown)
    return [COMMONMARK.renderer.render(token.children or [], COMMONMARK.options, {})
            for token in tokens if token.type == "inline"]


def streamed_text(client, body: dict) -> str:
    response = client.post("/v1/chat/completions", headers=AUTH, json={**body, "stream": True})
    events, _ = parse_sse(response.get_data(as_text=True))
    return "".join(e["choices"][0]["delta"].get("content", "")
                   for e in events if isinstance(e, dict) and e.get("choices"))


@pytest.mark.parametrize("stream", [False, True])
def test_every_line_is_its_own_paragraph_and_the_image_an_image(client, stream):
    if stream:
        text = streamed_text(client, CAT)
    else:
        text = client.post("/v1/chat/completions", headers=AUTH,
                           json=CAT).json["choices"][0]["message"]["content"]
    rendered = paragraphs(text)
    assert [p.split(":")[0] for p in rendered[:6]] == [
        "🎨 Original prompt", "💬 Prompt generation model", "📐 Image specifications",
        "🌐 Optimized prompt", "⏳ Generating the image with flux-1-schnell…",
        "🌟 Image generation successful!"]
    assert rendered[6].startswith("🎲 Seed: ") and rendered[7] == "Here's the result:"
    assert rendered[8].startswith('<img src="http://localhost/image/')
    assert rendered[8].endswith('" alt="Generated Image" />')
    assert len(rendered) == 9 and text.endswith(")\n")


def test_a_failure_is_its_own_paragraph_and_ends_with_a_newline(client, fake):
    fake.inject("ai", *[fake_cloudflare.status(500)] * 4)
    text = streamed_text(client, CAT)
    rendered = paragraphs(text)
    assert rendered[-1].startswith("❌ Image generation failed: ")
    assert rendered[-2].startswith("⏳ Generating the image")
    assert text.endswith(".\n")


@pytest.mark.parametrize("prompt", ["A cat\n<!-- hidden", "A sign that reads\n```hello```\n```",
                                    "A cat\n\n# big\n<script>", "A cat\n<pre>"])
def test_a_prompt_with_markdown_blocks_cannot_swallow_the_image(client, prompt):
    text = client.post("/v1/chat/completions", headers=AUTH, json={
        "messages": [{"role": "user", "content": prompt}]}).json["choices"][0]["message"]["content"]
    assert '<img src="http://localhost/image/' in COMMONMARK.render(text)
