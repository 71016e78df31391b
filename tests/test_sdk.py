"""The official openai SDK against the service under gunicorn (from the Procfile)
and the fake Cloudflare: seeds, exact sizes, formats, image streaming and the
Responses API, as the clients in issue 11 use them."""

from __future__ import annotations

import base64
import io
import re

import openai
import pytest
import requests
from PIL import Image

from shapes import assert_shape

IMAGE_LINK = re.compile(r"!\[[^\]]*\]\((?P<url>http[^)]+)\)")
SEED_LINE = re.compile(r"🎲 Seed: (\d+)")


def decoded(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def chat_image(sdk, **options) -> tuple[bytes, int]:
    completion = sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "A cute cat"}], **options)
    content = completion.choices[0].message.content
    image = requests.get(IMAGE_LINK.search(content).group("url"), timeout=10)
    return image.content, int(SEED_LINE.search(content).group(1))


class TestSeeds:
    def test_regenerate_gives_another_picture_and_seed(self, sdk, fake):
        first, first_seed = chat_image(sdk)
        second, second_seed = chat_image(sdk)  # what a chat UI's regenerate sends
        assert first_seed != second_seed
        assert first != second
        assert [call.json["seed"] for call in fake.calls_to("ai")] == [first_seed, second_seed]

    def test_a_client_seed_reproduces_the_request_upstream(self, sdk, fake):
        first, seed = chat_image(sdk, seed=1234)
        again, _ = chat_image(sdk, seed=1234)
        assert seed == 1234 and first == again
        one, two = fake.calls_to("ai")
        assert one.json == two.json == {"prompt": "A cute cat", "steps": 4, "seed": 1234}

    def test_ten_images_have_ten_seeds(self, sdk, fake):
        result = sdk.images.generate(model="gpt-image-1", prompt="A castle", n=10)
        assert len(result.data) == 10
        seeds = {call.json["seed"] for call in fake.calls_to("ai")}
        assert len(seeds) == 10
        assert len({item.b64_json for item in result.data}) == 10


class TestSizes:
    def test_512_on_schnell_and_flux_2_dev(self, sdk, fake):
        for model in ("flux-1-schnell", "flux-2-dev"):
            result = sdk.images.generate(model=model, prompt="A castle", size="512x512",
                                         response_format="b64_json")
            assert decoded(result.data[0].b64_json).size == (512, 512)
        schnell, flux_2 = fake.calls_to("ai")
        assert "width" not in schnell.json
        assert (flux_2.form["width"], flux_2.form["height"]) == ("512", "512")

    def test_1792x1024_on_flux_2_dev(self, sdk, fake):
        result = sdk.images.generate(model="@cf/black-forest-labs/flux-2-dev", prompt="A castle",
                                     size="1792x1024", response_format="b64_json")
        assert decoded(result.data[0].b64_json).size == (1792, 1024)
        (call,) = fake.calls_to("ai")
        assert (call.form["width"], call.form["height"]) == ("1792", "1024")


class TestImagesApi:
    def test_output_format_png(self, sdk, fake):
        result = sdk.images.generate(model="dall-e-3", prompt="A castle", output_format="png",
                                     response_format="b64_json")
        assert decoded(result.data[0].b64_json).format == "PNG"
        assert result.output_format == "png"
        assert_shape("ImagesResponse", result.model_dump(exclude_none=True))

    def test_stream_yields_a_completed_event_whose_image_decodes(self, sdk, fake):
        events = list(sdk.images.generate(model="gpt-image-1", prompt="A cute cat 16:9",
                                          stream=True, partial_images=1))
        (event,) = events
        assert event.type == "image_generation.completed"
        image = decoded(event.b64_json)
        assert (image.size, image.format) == ((1024, 576), "PNG")
        assert event.usage.input_tokens > 0


class TestResponsesApi:
    def test_create_gives_the_chat_reply_and_the_image(self, sdk, fake):
        response = sdk.responses.create(model="gpt-4o", input="A cute cat 16:9",
                                        tools=[{"type": "image_generation"}])
        assert response.status == "completed" and response.error is None
        image_call, message = response.output
        assert image_call.type == "image_generation_call"
        assert decoded(image_call.result).size == (1024, 576)
        assert "📐 Image specifications: 1024x576" in response.output_text
        linked = requests.get(IMAGE_LINK.search(response.output_text).group("url"), timeout=10)
        assert base64.b64decode(image_call.result) == linked.content
        assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0

    def test_streamed_events_come_in_the_documented_order(self, sdk, fake):
        kinds, text = [], []
        for event in sdk.responses.create(model="gpt-4o", input="A cute cat", stream=True):
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                text.append(event.delta)
        assert kinds[:5] == ["response.created", "response.in_progress",
                             "response.output_item.added", "response.content_part.added",
                             "response.output_text.delta"]
        assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                              "response.output_item.done", "response.completed"]
        assert IMAGE_LINK.search("".join(text))

    def test_the_stream_helper_assembles_the_final_response(self, sdk, fake):
        with sdk.responses.stream(model="gpt-4o", input=[
                {"role": "user", "content": [{"type": "input_text", "text": "A red fox"}]}],
                tools=[{"type": "image_generation", "output_format": "webp"}]) as stream:
            final = stream.get_final_response()
        image_call, _ = final.output
        assert decoded(image_call.result).format == "WEBP"
        assert "🎨 Original prompt: A red fox" in final.output_text


def _png(colour, size=(96, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


class TestPicturesIn:
    """openai-python's images.edit and images.create_variation (issue 13)."""

    def test_edit_one_picture(self, sdk, fake):
        result = sdk.images.edit(image=("cat.png", _png((200, 0, 0)), "image/png"),
                                 prompt="make it blue")
        assert decoded(result.data[0].b64_json).size == (1024, 688)  # 3:2, as the picture
        (call,) = fake.calls_to("ai")
        assert call.model == "@cf/black-forest-labs/flux-2-klein-4b"
        assert "input_image_0" in call.form and "input_image_1" not in call.form

    def test_edit_several_pictures(self, sdk, fake):
        images = [_png(colour) for colour in ((255, 0, 0), (0, 255, 0))]
        result = sdk.images.edit(image=images, prompt="both together", size="512x512", n=2)
        assert len(result.data) == 2
        assert all("input_image_1" in call.form for call in fake.calls_to("ai"))

    def test_edit_with_a_mask(self, sdk, fake):
        mask = Image.new("RGBA", (96, 64), (0, 0, 0, 0))
        out = io.BytesIO()
        mask.save(out, "PNG")
        result = sdk.images.edit(image=_png((0, 0, 200)), mask=out.getvalue(), prompt="a hat",
                                 response_format="url")
        assert requests.get(result.data[0].url, timeout=10).status_code == 200
        (call,) = fake.calls_to("ai")
        assert call.model == "@cf/runwayml/stable-diffusion-v1-5-inpainting"
        assert isinstance(call.json["mask"], list) and isinstance(call.json["image"], list)

    @pytest.mark.filterwarnings("ignore::DeprecationWarning")  # DALL-E 2's, in openai>=3.5
    def test_create_variation(self, sdk, fake):
        result = sdk.images.create_variation(image=_png((0, 200, 0)), n=1,
                                             response_format="b64_json")
        assert decoded(result.data[0].b64_json).size == (1024, 688)
        assert len(fake.calls_to("ai")) == 1

    def test_a_bad_picture_is_a_400_the_sdk_raises(self, sdk, fake):
        with pytest.raises(openai.BadRequestError) as raised:
            sdk.images.edit(image=b"not a picture", prompt="x")
        assert raised.value.body["param"] == "image"
        assert fake.calls_to("ai") == []
