"""Pictures in (issue 13): decoding what people send, /v1/images/edits and
/variations, pictures attached in chat, and refining a picture turn by turn.
The fake Cloudflare checks each model's picture inputs as the real one does."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image, ImageStat

import fake_cloudflare as cf
import hostile_images as hostile
from conftest import AUTH
from flux_worker.errors import InvalidRequest
from flux_worker.input_images import load_image, load_mask, reference_png
from flux_worker.refinement import asks_for_change
from test_routes import fetch_image, image_url

KLEIN_4B = "@cf/black-forest-labs/flux-2-klein-4b"
FLUX_2_DEV = "@cf/black-forest-labs/flux-2-dev"


def png(width: int, height: int, colour=(200, 40, 40), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), colour).save(out, "PNG")
    return out.getvalue()


def data_url(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def mean_colour(picture: Image.Image) -> tuple[int, ...]:
    return picture.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))


def close(a: tuple[int, ...], b: tuple[int, ...], within: int = 60) -> bool:
    return all(abs(x - y) <= within for x, y in zip(a, b, strict=True))


def chat(client, messages: list[dict], **extra):
    return client.post("/v1/chat/completions", headers=AUTH, json={"messages": messages, **extra})


def user(text: str, *pictures: str) -> dict:
    if not pictures:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "text", "text": text}, *[
        {"type": "image_url", "image_url": {"url": url, "detail": "auto"}} for url in pictures]]}


def reply_of(response) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json["choices"][0]["message"]["content"]


class TestDecoding:
    def test_a_photo_is_turned_upright_and_kept_within_bounds(self):
        photo = Image.new("RGB", (4000, 3000), (10, 200, 10))
        exif = photo.getexif()
        exif[0x0112] = 6  # rotated 90° clockwise
        out = io.BytesIO()
        photo.save(out, "JPEG", exif=exif)
        picture = load_image(out.getvalue(), "image")
        assert picture.source_size == (3000, 4000)  # upright: portrait
        assert max(picture.size) <= 2048 and picture.size[0] < picture.size[1]

    def test_transparency_is_flattened_onto_white(self):
        picture = load_image(png(8, 8, (0, 0, 0, 0), mode="RGBA"), "image")
        assert picture.image.mode == "RGB"
        assert picture.image.getpixel((0, 0)) == (255, 255, 255)

    @pytest.mark.parametrize("data, code", [
        (b"", "invalid_image"),
        (hostile.not_an_image(), "invalid_image"),
        (hostile.gif(16, 16), "invalid_image"),
        (hostile.truncated_png(64, 64), "invalid_image"),
        (hostile.truncated_jpeg(64, 64), "invalid_image"),
        (hostile.png_bomb(), "image_too_large"),
        (hostile.png_header_claiming(20000, 10), "image_too_large"),
    ])
    def test_bad_pictures_are_400_naming_the_field(self, data, code):
        with pytest.raises(InvalidRequest) as raised:
            load_image(data, "image[1]")
        assert raised.value.param == "image[1]" and raised.value.code == code

    def test_references_fit_within_the_models_side_keeping_the_ratio(self):
        picture = load_image(png(1600, 900), "image")
        with Image.open(io.BytesIO(reference_png(picture, 512))) as fitted:
            assert fitted.size == (512, 288)

    def test_openai_masks_become_white_where_the_picture_may_change(self):
        picture = load_image(png(40, 20), "image")
        mask = Image.new("RGBA", (40, 20), (0, 0, 0, 255))
        mask.paste((0, 0, 0, 0), (0, 0, 20, 20))  # the left half transparent: edit it
        out = io.BytesIO()
        mask.save(out, "PNG")
        converted = load_mask(out.getvalue(), "mask", picture)
        assert converted.mode == "L" and converted.size == picture.size
        assert converted.getpixel((5, 5)) == 255 and converted.getpixel((35, 5)) == 0

    def test_a_mask_of_another_size_is_refused(self):
        picture = load_image(png(40, 20), "image")
        with pytest.raises(InvalidRequest) as raised:
            load_mask(png(20, 20, mode="L", colour=255), "mask", picture)
        assert raised.value.param == "mask" and "same size" in raised.value.message


class TestEdits:
    def test_a_reference_edit_sends_the_picture_to_flux_2(self, client, fake):
        response = client.post("/v1/images/edits", headers=AUTH, data={
            "prompt": "make it blue", "image": (io.BytesIO(png(1200, 800)), "cat.png")})
        assert response.status_code == 200, response.get_data(as_text=True)
        (call,) = fake.calls_to("ai")
        assert call.model == KLEIN_4B
        (sent,) = cf.input_pictures(call)
        assert sent.size == (512, 341)  # within 512x512, its ratio kept
        assert close(mean_colour(sent), (200, 40, 40), 5)
        assert call.form["prompt"] == "make it blue"
        assert (int(call.form["width"]), int(call.form["height"])) == (1024, 688)  # 3:2 kept
        item = response.json["data"][0]
        assert set(item) >= {"b64_json"} and "url" not in item  # edits answer base64
        with Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))) as made:
            assert made.size == (1024, 688)
            red, green, _ = ImageStat.Stat(made.convert("RGB")).median
            assert red > green + 30  # the fake draws over the red picture it got

    def test_several_pictures_become_several_references(self, client, fake):
        files = [(io.BytesIO(png(64, 64, colour)), f"{index}.png")
                 for index, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)])]
        response = client.post("/v1/images/edits", headers=AUTH, data={
            "prompt": "all three together", "image[]": files, "model": FLUX_2_DEV,
            "size": "512x512", "n": "2", "response_format": "url"})
        assert response.status_code == 200, response.get_data(as_text=True)
        calls = fake.calls_to("ai")
        assert [call.model for call in calls] == [FLUX_2_DEV] * 2
        assert [mean_colour(p) for p in cf.input_pictures(calls[0])] == [
            (255, 0, 0), (0, 255, 0), (0, 0, 255)]
        assert all("url" in item for item in response.json["data"])

    def test_a_mask_goes_to_the_inpainting_model(self, client, fake):
        mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
        mask.paste((0, 0, 0, 0), (0, 0, 32, 64))
        out = io.BytesIO()
        mask.save(out, "PNG")
        response = client.post("/v1/images/edits", headers=AUTH, data={
            "prompt": "a hat", "image": (io.BytesIO(png(64, 64)), "a.png"),
            "mask": (io.BytesIO(out.getvalue()), "mask.png")})
        assert response.status_code == 200, response.get_data(as_text=True)
        (call,) = fake.calls_to("ai")
        assert call.model == cf.INPAINTING
        sent_mask = cf.input_mask(call)
        assert sent_mask.size == (512, 512) == cf.input_pictures(call)[0].size
        assert sent_mask.convert("L").getpixel((10, 10)) == 255  # transparent: repaint
        assert sent_mask.convert("L").getpixel((500, 10)) == 0

    def test_img2img_gets_the_picture_and_a_strength(self, client, fake):
        response = client.post("/v1/images/edits", headers=AUTH, data={
            "prompt": "oil painting", "image": (io.BytesIO(png(300, 300)), "a.png"),
            "model": "stable-diffusion-v1-5-img2img", "strength": "0.4", "seed": "7"})
        assert response.status_code == 200, response.get_data(as_text=True)
        (call,) = fake.calls_to("ai")
        assert call.model == cf.IMG2IMG
        assert call.json["strength"] == 0.4 and call.json["seed"] == 7
        assert cf.input_pictures(call)[0].size == (512, 512)

    def test_the_json_form_takes_image_urls(self, client, fake):
        response = client.post("/v1/images/edits", headers=AUTH, json={
            "prompt": "make it blue", "images": [{"image_url": data_url(png(64, 64))}]})
        assert response.status_code == 200, response.get_data(as_text=True)
        assert len(cf.input_pictures(fake.calls_to("ai")[0])) == 1

    def test_a_picture_sent_as_a_form_text_field(self, client, fake):
        response = client.post("/v1/images/edits", headers=AUTH, data={
            "prompt": "make it blue", "image": data_url(png(64, 64))})
        assert response.status_code == 200, response.get_data(as_text=True)
        assert len(cf.input_pictures(fake.calls_to("ai")[0])) == 1

    def test_a_variation_needs_no_prompt(self, client, fake):
        response = client.post("/v1/images/variations", headers=AUTH, data={
            "image": (io.BytesIO(png(64, 64)), "a.png"), "n": "1"})
        assert response.status_code == 200, response.get_data(as_text=True)
        assert "url" in response.json["data"][0]  # DALL-E 2's default, as OpenAI
        assert fake.calls_to("ai")[0].form["prompt"] == "The same picture"

    def test_edits_stream_image_edit_events(self, client, fake):
        response = client.post("/v1/images/edits", headers=AUTH, data={
            "prompt": "blue", "image": (io.BytesIO(png(64, 64)), "a.png"), "stream": "true"})
        events = [json.loads(line[6:]) for line in response.get_data(as_text=True).splitlines()
                  if line.startswith("data: ")]
        assert [event["type"] for event in events] == ["image_edit.completed"]

    @pytest.mark.parametrize("data, param, code", [
        ({"prompt": "x"}, "image", None),
        ({"prompt": "x", "image": (io.BytesIO(b"<html>"), "a.png")}, "image", "invalid_image"),
        ({"prompt": "x", "image[]": [(io.BytesIO(png(8, 8)), f"{i}.png") for i in range(5)]},
         "image", "too_many_images"),
        ({"prompt": "x", "image": (io.BytesIO(png(8, 8)), "a.png"), "n": "two"}, "n", None),
        ({"prompt": "x", "image": (io.BytesIO(png(8, 8)), "a.png"), "strength": "2"},
         "strength", None),
        ({"prompt": "x", "image": (io.BytesIO(png(8, 8)), "a.png"), "n": "1_0"}, "n", None),
        ({"prompt": "x", "image": (io.BytesIO(png(8, 8)), "a.png"), "strength": "nan"},
         "strength", None),
        ({"prompt": "x", "image": (io.BytesIO(png(8, 8)), "a.png"),
          "mask": (io.BytesIO(png(4, 4)), "m.png")}, "mask", "invalid_image"),
        ({"image": (io.BytesIO(png(8, 8)), "a.png")}, "prompt", None),
    ])
    def test_bad_edits_are_400_naming_the_field(self, client, fake, data, param, code):
        response = client.post("/v1/images/edits", headers=AUTH, data=data)
        assert response.status_code == 400, response.get_data(as_text=True)
        error = response.json["error"]
        assert error["param"] == param and (code is None or error["code"] == code)
        assert fake.calls_to("ai") == []

    def test_the_inpainting_model_named_without_a_mask_is_400(self, client, fake):
        response = client.post("/v1/images/edits", headers=AUTH, data={
            "prompt": "x", "image": (io.BytesIO(png(8, 8)), "a.png"),
            "model": "stable-diffusion-v1-5-inpainting"})
        assert response.status_code == 400 and response.json["error"]["param"] == "mask"

    def test_a_model_that_needs_a_picture_is_400_for_a_generation(self, client, fake):
        response = client.post("/v1/images/generations", headers=AUTH, json={
            "prompt": "a cat", "model": "stable-diffusion-v1-5-img2img"})
        assert response.status_code == 400 and response.json["error"]["param"] == "model"
        assert fake.calls_to("ai") == []


class TestChatPictures:
    def test_an_attached_picture_is_changed(self, client, fake):
        text = reply_of(chat(client, [user("make it blue", data_url(png(640, 480)))]))
        (call,) = fake.calls_to("ai")
        assert call.model == KLEIN_4B and call.form["prompt"] == "make it blue"
        assert close(mean_colour(cf.input_pictures(call)[0]), (200, 40, 40), 5)
        assert "Changing the picture you attached." in text
        assert "1024x768" in text  # 4:3, as the picture

    def test_a_picture_alone_is_redrawn(self, client, fake):
        reply_of(chat(client, [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(png(64, 64))}}]}]))
        assert fake.calls_to("ai")[0].form["prompt"] == "The same picture"

    def test_our_own_link_is_read_from_the_store_not_fetched(self, client, fake):
        first = reply_of(chat(client, [user("A cute cat")]))
        link = image_url(first)
        stored = Image.open(io.BytesIO(fetch_image(client, link).data))
        text = reply_of(chat(client, [user("in watercolour", link)]))
        sent = cf.input_pictures(fake.calls_to("ai")[-1])[0]
        assert close(mean_colour(sent), mean_colour(stored), 3)
        assert f"Changing the picture at {link}" in text

    def test_a_link_with_line_breaks_is_echoed_on_one_line(self, client, fake):
        link = image_url(reply_of(chat(client, [user("A cute cat")])))
        text = reply_of(chat(client, [user("blue", link + "?x=\n\n<!--")]))
        assert f"Changing the picture at {link}?x= <!--" in text
        assert text.rstrip().endswith(")")  # the image link still closes the reply

    def test_three_turns_refine_the_same_picture(self, client, fake):
        messages = [user("A cute cat")]
        links = []
        for follow_up in ("make it blue", "add a hat", None):
            text = reply_of(chat(client, messages))
            links.append(image_url(text))
            if follow_up is None:
                break
            messages += [{"role": "assistant", "content": text}, user(follow_up)]
        first, second, third = fake.calls_to("ai")
        assert cf.input_pictures(first) == []
        for call, previous in ((second, links[0]), (third, links[1])):
            made = Image.open(io.BytesIO(fetch_image(client, previous).data))
            (sent,) = cf.input_pictures(call)
            assert close(mean_colour(sent), mean_colour(made), 3)
            assert sent.size[0] <= 512 and sent.size[1] <= 512
        assert "Changing the previous picture: " + links[1] in text

    def test_a_new_prompt_after_a_picture_draws_from_scratch(self, client, fake):
        text = reply_of(chat(client, [user("A cute cat")]))
        reply_of(chat(client, [user("A cute cat"), {"role": "assistant", "content": text},
                               user("A red fox in the snow")]))
        second = fake.calls_to("ai")[1]
        assert second.model == "@cf/black-forest-labs/flux-1-schnell"
        assert cf.input_pictures(second) == []

    def test_a_size_alone_redraws_the_previous_picture(self, client, fake):
        text = reply_of(chat(client, [user("A cute cat")]))
        again = reply_of(chat(client, [user("A cute cat"), {"role": "assistant", "content": text},
                                       user("16:9")]))
        call = fake.calls_to("ai")[1]
        assert len(cf.input_pictures(call)) == 1 and call.form["width"] == "1024"
        assert "1024x576" in again

    def test_an_expired_previous_picture_draws_from_the_words(self, client, fake):
        gone = {"role": "assistant", "content": "![x](http://host/image/" + "A" * 22 + ")"}
        reply_of(chat(client, [user("A cute cat"), gone, user("make it a blue cat")]))
        assert cf.input_pictures(fake.calls_to("ai")[0]) == []
        response = chat(client, [user("A cute cat"), gone, user("16:9")])  # nothing else to draw
        assert response.status_code == 400 and response.json["error"]["param"] == "messages"

    @pytest.mark.parametrize("words", ["thanks!", "ok", "cool.", "What is it?"])
    def test_a_thank_you_after_a_picture_is_no_edit_and_no_500(self, client, fake, words):
        text = reply_of(chat(client, [user("A cute cat")]))
        reply_of(chat(client, [user("A cute cat"), {"role": "assistant", "content": text},
                               user(words)]))
        assert cf.input_pictures(fake.calls_to("ai")[-1]) == []

    def test_too_many_chat_pictures_are_refused_before_decoding(self, client, fake):
        response = chat(client, [user("x", *["data:image/png;base64,%%%"] * 5)])
        assert response.status_code == 400
        assert response.json["error"]["code"] == "too_many_images"

    def test_a_remote_link_is_refused_by_default(self, client, fake):
        response = chat(client, [user("make it blue", "http://169.254.169.254/latest/x.png")])
        assert response.status_code == 400
        assert response.json["error"]["code"] == "invalid_image_url"
        assert "ALLOW_REMOTE_IMAGES" in response.json["error"]["message"]
        assert response.json["error"]["param"] == "messages[0].content[1].image_url"

    def test_a_bad_data_url_names_its_part(self, client, fake):
        response = chat(client, [user("x", "data:image/png;base64,%%%")])
        assert response.status_code == 400
        assert response.json["error"]["param"] == "messages[0].content[1].image_url"

    def test_the_responses_api_takes_input_images(self, client, fake):
        response = client.post("/v1/responses", headers=AUTH, json={"input": [
            {"role": "user", "content": [
                {"type": "input_text", "text": "make it blue"},
                {"type": "input_image", "image_url": data_url(png(64, 64))}]}]})
        assert response.status_code == 200, response.get_data(as_text=True)
        assert len(cf.input_pictures(fake.calls_to("ai")[0])) == 1


class TestFollowUpRule:
    @pytest.mark.parametrize("words", [
        "make it blue", "Same but 16:9", "16:9", "please add a hat", "give it a hat",
        "now make the sky pink", "can you remove the background?", "把它变成蓝色",
        "without the glasses", "more contrast"])
    def test_changes(self, words):
        assert asks_for_change(words)

    @pytest.mark.parametrize("words", [
        "A red fox in snow", "Now a dog", "Give me a dragon", "一只猫", "Cute puppy",
        "Make a picture of a dog", "Try a cyberpunk city", "What is it?", "thanks", "ok",
        "A lighthouse at dusk, oil painting, dramatic sky over the sea"])
    def test_new_pictures(self, words):
        assert not asks_for_change(words)


class TestTheFakeChecksPictures:
    def test_a_reference_over_512_is_refused(self, fake):
        import requests
        response = requests.post(
            f"{fake.api_base}/accounts/{cf.ACCOUNT_ID}/ai/run/{KLEIN_4B}",
            headers={"Authorization": f"Bearer {cf.API_TOKEN}"}, timeout=5,
            files={"prompt": (None, "x"), "input_image_0": ("a.png", png(600, 100), "image/png")})
        assert response.status_code == 400
        assert "smaller than 512x512" in response.json()["errors"][0]["message"]

    @pytest.mark.parametrize("inputs, code", [
        ({"image": [1, 2, 3]}, 5006),  # not an image's bytes
        ({"image": [300]}, 5006),  # not a byte
        ({"image_b64": "%%%"}, 5004),
        ({"strength": 1.5}, 5006),
        ({}, 3030),  # img2img needs a picture
    ])
    def test_img2img_inputs(self, fake, inputs, code):
        import requests
        response = requests.post(
            f"{fake.api_base}/accounts/{cf.ACCOUNT_ID}/ai/run/{cf.IMG2IMG}",
            headers={"Authorization": f"Bearer {cf.API_TOKEN}"}, timeout=5,
            json={"prompt": "x", **inputs})
        assert response.status_code == 400
        assert response.json()["errors"][0]["code"] == code

    def test_inpainting_needs_a_mask(self, fake):
        import requests
        response = requests.post(
            f"{fake.api_base}/accounts/{cf.ACCOUNT_ID}/ai/run/{cf.INPAINTING}",
            headers={"Authorization": f"Bearer {cf.API_TOKEN}"}, timeout=5,
            json={"prompt": "x", "image": list(png(8, 8))})
        assert response.status_code == 400
        assert "mask_image" in response.json()["errors"][0]["message"]
