"""From chat text to what is drawn: ratios, negative text, side requests,
the reply template in every language, image fitting."""

from __future__ import annotations

import io
import re
import string

import pytest
from PIL import Image

from conftest import AUTH
from flux_worker.errors import InvalidRequest
from flux_worker.generation import fit_prompt, new_image_key
from flux_worker.imaging import prepare_image, sniff_content_type
from flux_worker.prompts import last_user_text
from flux_worker.replies import LOCALES, ReplyText, load_texts
from flux_worker.settings import LANGUAGES
from flux_worker.sizes import MAX_SEED, Ratio, parse_prompt, parse_size


class TestRatios:
    @pytest.mark.parametrize("prompt,text,ratio", [
        ("A cute cat 16:9", "A cute cat", Ratio(16, 9)),
        ("A cute cat 9:16", "A cute cat", Ratio(9, 16)),
        ("A cat 3:2.", "A cat.", Ratio(3, 2)),
        ("A cat 1:2 in the snow", "A cat in the snow", Ratio(1, 2)),  # seed ratio + space
        ("A cat --ar 5:4 sleeping", "A cat sleeping", Ratio(5, 4)),
        ("Skyline 21:9", "Skyline", Ratio(21, 9)),
        ("Skyline 16：9", "Skyline", Ratio(16, 9)),  # full-width colon
        ("A cat", "A cat", None),
        ("A cat --ar 16:9.", "A cat", Ratio(16, 9)),
        ("A cat (16:9)", "A cat", Ratio(16, 9)),
        ('A cat "16:9"', "A cat", Ratio(16, 9)),
        ("A cat 16:9,", "A cat", Ratio(16, 9)),
        ("A cat 16:9…", "A cat…", Ratio(16, 9)),
        ("a cat, 16:9", "a cat", Ratio(16, 9)),
        ("一只猫16:9", "一只猫", Ratio(16, 9)),
        ("A cat 16:9\n\nphotorealistic", "A cat\n\nphotorealistic", Ratio(16, 9)),
    ])
    def test_ratio_is_taken_out(self, prompt, text, ratio):
        parsed = parse_prompt(prompt)
        assert (parsed.text, parsed.ratio) == (text, ratio)

    @pytest.mark.parametrize("prompt", [
        "Clock tower at 10:30 in Paris", "Meeting 9:30 am", "Psalm 23:4 calligraphy",
        "Score 2:1 at half time", "A clock showing 12:05", "Ratio 5:4 poster of a dog",
    ])
    def test_text_that_only_looks_like_a_ratio_stays(self, prompt):
        parsed = parse_prompt(prompt)
        assert (parsed.text, parsed.ratio) == (prompt, None)

    def test_negative_text(self):
        parsed = parse_prompt("A forest --no people, cars 16:9")
        assert (parsed.text, parsed.negative) == ("A forest", "people, cars 16:9")
        parsed = parse_prompt("A forest 16:9 --no people")
        assert (parsed.text, parsed.ratio, parsed.negative) == ("A forest", Ratio(16, 9), "people")

    def test_negative_text_ends_at_a_line_break(self):
        parsed = parse_prompt("A cat --no text\nin the style of X")
        assert (parsed.text, parsed.negative) == ("A cat\nin the style of X", "text")

    def test_bad_explicit_ratio_is_400(self):
        with pytest.raises(InvalidRequest) as caught:
            parse_prompt("A cat --ar wide")
        assert caught.value.code == "invalid_aspect_ratio"

    @pytest.mark.parametrize("size,pixels", [
        ("1792x1024", (1792, 1024)), (" 512 X 512 ", (512, 512)), ("auto", None),
        ("AUTO", None), ("1000×400", (1000, 400)),
    ])
    def test_openai_sizes_are_read_as_pixels(self, size, pixels):
        assert parse_size(size) == pixels

    @pytest.mark.parametrize("size", ["big", "0x10", "10x", "1024*1024", "123456x1"])
    def test_bad_sizes(self, size):
        with pytest.raises(InvalidRequest) as caught:
            parse_size(size)
        assert (caught.value.param, caught.value.code) == ("size", "invalid_size")

    @pytest.mark.parametrize("prompt,text,seed", [
        ("A cat --seed 42", "A cat", 42),
        ("A cat --seed 7 16:9", "A cat", 7),
        ("--SEED 0 A cat", "A cat", 0),
        (f"A cat --seed {MAX_SEED}.", "A cat.", MAX_SEED),
        ("A cat with seeds", "A cat with seeds", None),
    ])
    def test_seed_flag_is_taken_out(self, prompt, text, seed):
        parsed = parse_prompt(prompt)
        assert (parsed.text, parsed.seed) == (text, seed)

    @pytest.mark.parametrize("value", ["-1", "1.5", "abc", str(MAX_SEED + 1), "9" * 40, "٣"])
    def test_bad_seed_flag_is_400(self, value):
        with pytest.raises(InvalidRequest) as caught:
            parse_prompt(f"A cat --seed {value}", param="prompt")
        assert (caught.value.param, caught.value.code) == ("prompt", "invalid_seed")
        assert f"--seed {value[:24]} must be" in caught.value.message  # what was written

    def test_a_zero_padded_seed_is_that_number(self):
        assert parse_prompt("A cat --seed 00000000001").seed == 1

    def test_a_seed_after_no_ends_the_negative_text(self):
        parsed = parse_prompt("a cat --no dogs --seed 5 on a sofa")
        assert (parsed.text, parsed.negative, parsed.seed) == ("a cat on a sofa", "dogs", 5)


class TestChatText:
    def test_last_user_message_parts_are_joined(self):
        messages = [{"role": "user", "content": "old"}, {"role": "assistant", "content": "x"},
                    {"role": "user", "content": [{"type": "text", "text": "A"},
                                                 {"type": "image_url", "image_url": {"url": "u"}},
                                                 {"type": "text", "text": "fox"}]}]
        assert last_user_text(messages) == "A fox"

    @pytest.mark.parametrize("messages", [None, [], [{"role": "system", "content": "x"}],
                                          [{"role": "user", "content": 5}],
                                          [{"role": "user", "content": [{"type": "image_url"}]}]])
    def test_no_usable_user_text_is_400(self, messages):
        with pytest.raises(InvalidRequest):
            last_user_text(messages)


class TestReplies:
    def test_every_language_has_every_text_with_the_same_placeholders(self):
        english = load_texts("en")
        assert {path.stem for path in LOCALES.glob("*.json")} == set(LANGUAGES)
        for language in LANGUAGES:
            texts = load_texts(language)
            assert texts.keys() == english.keys(), language
            for key, text in texts.items():
                fields = {f for _, f, _, _ in string.Formatter().parse(text) if f}
                english_fields = {f for _, f, _, _ in string.Formatter().parse(english[key]) if f}
                assert fields == english_fields, (language, key)

    @pytest.mark.parametrize("language", LANGUAGES)
    def test_each_language_builds_a_whole_reply(self, language):
        reply = ReplyText(language, original="A cat", width=1024, height=576, prompt_model=None)
        text = (reply.opening() + reply.optimized("A cat, soft light")
                + reply.generating("@cf/x/flux-1-schnell") + reply.result("http://h/image/k"))
        assert "A cat" in text and "1024x576" in text and "flux-1-schnell" in text
        assert text.endswith("](http://h/image/k)\n")
        assert load_texts(language)["original_prompt_model"] in text
        assert "{" not in text

    def test_english_follows_the_seed_wording(self):
        reply = ReplyText("en", original="A cat", width=1024, height=1024, prompt_model="gpt-4o")
        assert reply.opening().split("\n\n") == [
            "🎨 Original prompt: A cat", "💬 Prompt generation model: gpt-4o",
            "📐 Image specifications: 1024x1024", ""]
        assert "🌟 Image generation successful!" in reply.result("u")

    def test_response_language_setting_picks_the_template(self, make_app, fake):
        client = make_app(response_language="de").test_client()
        response = client.post("/v1/chat/completions", headers=AUTH,
                               json={"messages": [{"role": "user", "content": "Ein Fuchs"}]})
        assert load_texts("de")["success"] in response.json["choices"][0]["message"]["content"]


class TestImaging:
    @staticmethod
    def image(fmt: str, size=(1024, 1024)) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", size, "red").save(out, fmt)
        return out.getvalue()

    @pytest.mark.parametrize("fmt,mime", [("JPEG", "image/jpeg"), ("PNG", "image/png"),
                                          ("WEBP", "image/webp"), ("GIF", "image/gif")])
    def test_types_come_from_the_bytes(self, fmt, mime):
        assert sniff_content_type(self.image(fmt)) == mime

    def test_not_an_image(self):
        assert sniff_content_type(b"<html>") is None

    @pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
    def test_fit_crops_and_keeps_the_format(self, fmt):
        fitted = Image.open(io.BytesIO(prepare_image(self.image(fmt), 768, 512).data))
        assert fitted.size == (768, 512) and fitted.format == fmt

    def test_right_size_is_not_re_encoded(self):
        data = self.image("JPEG", (576, 1024))
        assert prepare_image(data, 576, 1024).data is data

    def test_long_prompts_are_cut_at_a_word(self):
        cut = fit_prompt("word " * 1000, 2048)
        assert len(cut) <= 2048 and cut.endswith("word")

    def test_keys_are_128_bit_url_safe_and_unique(self):
        keys = {new_image_key() for _ in range(1000)}
        assert len(keys) == 1000
        assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", key) for key in keys)
