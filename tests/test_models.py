"""Every Workers AI text-to-image model, driven through the app against the
fake Cloudflare (which checks each model's real inputs and answers in each
model's real output form), and real sizes for every ratio."""

from __future__ import annotations

import io

import pytest
from PIL import Image

import fake_cloudflare
from conftest import AUTH
from flux_worker.models import REGISTRY
from flux_worker.sizes import SEED_SIZES
from test_routes import fetch_image, image_url

SCHNELL = "@cf/black-forest-labs/flux-1-schnell"
FLUX_2 = ["@cf/black-forest-labs/flux-2-dev", "@cf/black-forest-labs/flux-2-klein-4b",
          "@cf/black-forest-labs/flux-2-klein-9b"]
SDXL_LIKE = ["@cf/stabilityai/stable-diffusion-xl-base-1.0",
             "@cf/bytedance/stable-diffusion-xl-lightning", "@cf/lykon/dreamshaper-8-lcm"]


def chat(client, content: str, model: str | None = None):
    body = {"messages": [{"role": "user", "content": content}]}
    if model:
        body["model"] = model
    response = client.post("/v1/chat/completions", headers=AUTH, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json["choices"][0]["message"]["content"]


def served(client, content: str, model: str | None = None):
    """Generate, then fetch what the link serves: (reply text, response, PIL image)."""
    text = chat(client, content, model)
    image = fetch_image(client, image_url(text))
    assert image.status_code == 200
    return text, image, Image.open(io.BytesIO(image.data))


SD15 = ["@cf/runwayml/stable-diffusion-v1-5-img2img",
        "@cf/runwayml/stable-diffusion-v1-5-inpainting"]


def test_registry_holds_every_image_model():
    assert set(REGISTRY) == {SCHNELL, *FLUX_2, *SDXL_LIKE, *SD15, "@cf/leonardo/lucid-origin",
                             "@cf/leonardo/phoenix-1.0"}


def test_what_each_model_takes_in():
    assert {m.id for m in REGISTRY.values() if m.reference_images == 4} == set(FLUX_2)
    assert {m.id for m in REGISTRY.values() if m.init_image} == set(SD15)
    assert {m.id for m in REGISTRY.values() if m.takes_mask} == {SD15[1]}
    assert {m.id for m in REGISTRY.values() if m.needs_image} == set(SD15)


class TestRequestShapes:
    def test_schnell_gets_prompt_steps_and_seed_only(self, client, fake):
        chat(client, "A cute cat 16:9")
        (call,) = fake.calls_to("ai")
        assert call.model == SCHNELL
        assert call.headers["content-type"].startswith("application/json")
        assert call.json == {"prompt": "A cute cat", "steps": 4, "seed": call.json["seed"]}
        assert 0 <= call.json["seed"] < 2**31

    @pytest.mark.parametrize("message", [
        "AiError: Bad input: Error: /seed must be <= 2147483647",  # a value, not the field
        "AiError: Bad input: Error: a sunflower seed must NOT have fewer than 1 characters",
        "AiError: Bad input: Error: must NOT have additional properties (width)",
    ])
    def test_other_refusals_that_mention_seeds_switch_nothing_off(self, app, client, fake,
                                                                  message):
        fake.inject("ai", fake_cloudflare.status(400, [(5006, message)]))
        response = client.post("/v1/images/generations", headers=AUTH,
                               json={"prompt": "a sunflower seed", "seed": 3000000000})
        assert response.status_code == 400
        assert len(fake.calls_to("ai")) == 1
        chat(client, "A cat --seed 42")
        assert fake.calls_to("ai")[-1].json["seed"] == 42
        assert app.extensions["flux_worker"].images.seedless_models == set()

    def test_a_failed_retry_without_the_seed_switches_nothing_off(self, app, client, fake):
        refusal = fake_cloudflare.status(400, [(5006, "AiError: Bad input: Error: must NOT "
                                                      "have additional properties")])
        fake.inject("ai", refusal, refusal)
        response = client.post("/v1/images/generations", headers=AUTH, json={"prompt": "A cat"})
        assert response.status_code == 400
        assert ["seed" in call.json for call in fake.calls_to("ai")] == [True, False]
        assert app.extensions["flux_worker"].images.seedless_models == set()

    def test_a_model_that_refuses_the_seed_is_asked_again_without_it(self, app, client, fake):
        """flux-1-schnell's schema lists no seed: should Cloudflare enforce that, the
        refused call (which makes and bills nothing) is sent again without one, and
        the model gets none from then on."""
        fake.schnell_rejects_seed = True
        first = chat(client, "A cute cat")
        chat(client, "A cute dog")
        calls = fake.calls_to("ai")
        assert ["seed" in call.json for call in calls] == [True, False, False]
        assert "🎲" not in first
        assert app.extensions["flux_worker"].images.seedless_models == {SCHNELL}

    def test_flux_num_steps_sets_the_default_models_steps(self, make_app, fake):
        chat(make_app(flux_num_steps=8).test_client(), "A cat")
        assert fake.calls_to("ai")[0].json["steps"] == 8

    @pytest.mark.parametrize("model", FLUX_2)
    def test_flux_2_is_multipart_with_the_exact_size(self, client, fake, model):
        text, image, picture = served(client, "A cute cat 16:9", model)
        (call,) = fake.calls_to("ai")
        assert call.headers["content-type"].startswith("multipart/form-data")
        assert call.json is None
        assert call.form["prompt"] == "A cute cat"
        assert (call.form["width"], call.form["height"]) == ("1024", "576")
        # klein's steps are fixed upstream; dev keeps Cloudflare's default.
        assert "steps" not in call.form
        assert picture.size == (1024, 576) and "1024x576" in text

    def test_lucid_origin_is_json_with_size_and_base64_back(self, client, fake):
        _, image, picture = served(client, "A fox 3:4", "@cf/leonardo/lucid-origin")
        call = fake.calls_to("ai")[0]
        assert (call.json["width"], call.json["height"]) == (768, 1024)
        assert image.content_type == "image/jpeg" and picture.size == (768, 1024)

    def test_phoenix_never_gets_an_empty_negative_prompt(self, client, fake):
        _, image, picture = served(client, "A fox", "@cf/leonardo/phoenix-1.0")
        call = fake.calls_to("ai")[0]
        assert "negative_prompt" not in call.json
        assert image.content_type == "image/jpeg" and picture.format == "JPEG"

    def test_phoenix_gets_the_negative_prompt_when_given(self, client, fake):
        served(client, "A fox --no snow, trees", "@cf/leonardo/phoenix-1.0")
        call = fake.calls_to("ai")[0]
        assert call.json["prompt"] == "A fox"
        assert call.json["negative_prompt"] == "snow, trees"

    @pytest.mark.parametrize("model", SDXL_LIKE)
    def test_sdxl_family_answers_raw_bytes_typed_by_their_content(self, client, fake, model):
        _, image, picture = served(client, "A fox 9:16", model)
        call = fake.calls_to("ai")[0]
        assert (call.json["width"], call.json["height"]) == (576, 1024)
        assert "steps" not in call.json and "negative_prompt" not in call.json
        # lightning sends JPEG bytes labelled image/png: we serve what the bytes are.
        expected = "image/jpeg" if "lightning" in model else "image/png"
        assert image.content_type == expected
        assert picture.format == expected.split("/")[1].upper()
        assert picture.size == (576, 1024)

    def test_short_model_names_pick_a_model_and_others_fall_back(self, client, fake):
        chat(client, "A fox", "dreamshaper-8-lcm")
        chat(client, "A fox", "dall-e-3")
        assert [c.model for c in fake.calls_to("ai")] == ["@cf/lykon/dreamshaper-8-lcm", SCHNELL]

    def test_a_model_not_offered_falls_back_to_the_default(self, make_app, fake):
        client = make_app(image_models=(SCHNELL,)).test_client()
        chat(client, "A fox", "@cf/lykon/dreamshaper-8-lcm")
        assert fake.calls_to("ai")[0].model == SCHNELL


class TestRealSizes:
    @pytest.mark.parametrize("ratio,size", [(f"{r}", s) for r, s in SEED_SIZES.items()])
    def test_schnell_images_have_the_seed_tables_size(self, client, fake, ratio, size):
        text, image, picture = served(client, f"A lighthouse {ratio}")
        assert picture.size == size
        assert f"{size[0]}x{size[1]}" in text
        # flux-1-schnell answers JPEG; it stays JPEG and is served as such.
        assert picture.format == "JPEG" and image.content_type == "image/jpeg"

    def test_no_ratio_is_square(self, client, fake):
        assert served(client, "A lighthouse")[2].size == (1024, 1024)

    @pytest.mark.parametrize("prompt,size", [
        ("A banner 21:9", (1024, 440)),
        ("A poster --ar 2:3 in oil", (680, 1024)),
        ("A strip 4:1", (1024, 256)),
    ])
    def test_any_ratio_keeps_the_long_side_at_1024(self, client, fake, prompt, size):
        text, _, picture = served(client, prompt)
        assert picture.size == size and f"{size[0]}x{size[1]}" in text

    def test_flux_2_rounds_to_its_step_of_16(self, client, fake):
        _, _, picture = served(client, "A banner 21:9", FLUX_2[0])
        assert picture.size == (1024, 432)
        assert fake.calls_to("ai")[0].form["height"] == "432"

    def test_a_ratio_the_model_cannot_make_is_400(self, client, fake):
        response = client.post("/v1/chat/completions", headers=AUTH,
                               json={"messages": [{"role": "user", "content": "A line 20:1"}]})
        assert response.status_code == 400
        assert response.json["error"]["code"] == "unsupported_aspect_ratio"
        assert fake.calls_to("ai") == []

    @pytest.mark.parametrize("prompt", ["Clock tower at 10:30 in Paris",
                                        "Final score 3:2 for Spain", "John 3:16 on a wall",
                                        "Train at 9:45 pm"])
    def test_text_that_only_looks_like_a_ratio_stays(self, client, fake, prompt):
        text, _, picture = served(client, prompt)
        assert fake.calls_to("ai")[0].json["prompt"] == prompt
        assert picture.size == (1024, 1024)
