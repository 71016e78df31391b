"""The OpenAI Images API: POST /v1/images/generations."""

from __future__ import annotations

import base64
import io
import threading

import pytest
from openai.types import ImageGenCompletedEvent
from PIL import Image

import fake_cloudflare as cf
from conftest import AUTH, parse_sse
from shapes import assert_shape
from test_routes import assert_error, fetch_image

OPTIMIZER = dict(prompt_optimization=True, external_model="gpt-4o-mini",
                 external_api_key=cf.OPTIMIZER_KEY)


def generate(client, **body):
    response = client.post("/v1/images/generations", headers=AUTH, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_shape("ImagesResponse", response.json)
    return response.json


def picture(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


class TestFormats:
    def test_url_is_the_default_for_dall_e_and_unnamed_models(self, client, fake):
        for body in ({"prompt": "A castle"}, {"prompt": "A castle", "model": "dall-e-3"}):
            (item,) = generate(client, **body)["data"]
            assert set(item) == {"url", "seed"}
            image = fetch_image(client, item["url"])
            assert image.status_code == 200 and picture(image.data).size == (1024, 1024)

    def test_b64_json_is_the_default_for_gpt_image(self, client, fake):
        (item,) = generate(client, prompt="A castle", model="gpt-image-1")["data"]
        assert set(item) == {"b64_json", "seed"}
        # As OpenAI's gpt-image answers: PNG unless output_format says otherwise.
        assert picture(base64.b64decode(item["b64_json"])).format == "PNG"

    def test_response_format_is_honoured(self, client, fake):
        (item,) = generate(client, prompt="A castle", model="gpt-image-1",
                           response_format="url")["data"]
        assert "url" in item and "b64_json" not in item

    def test_every_route_prefix_serves_it(self, client, fake):
        for path in ("/images/generations", "/v1/v1/images/generations"):
            assert client.post(path, headers=AUTH, json={"prompt": "A"}).status_code == 200

    def test_gpt_image_fields_are_accepted_and_reported(self, client, fake):
        body = generate(client, prompt="A castle", quality="medium", style="vivid", user="u1",
                        background="auto", moderation="low", partial_images=2,
                        safety_identifier="s1")
        sent = fake.calls_to("ai")[0].json
        assert sent == {"prompt": "A castle", "steps": 4, "seed": sent["seed"]}
        assert (body["quality"], body["background"], body["output_format"]) == (
            "medium", "opaque", "jpeg")
        assert body["usage"]["input_tokens"] > 0

    @pytest.mark.parametrize("fmt,pillow", [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
    def test_output_format_is_the_format_delivered(self, client, fake, fmt, pillow):
        body = generate(client, prompt="A castle", output_format=fmt, response_format="b64_json")
        assert picture(base64.b64decode(body["data"][0]["b64_json"])).format == pillow
        assert body["output_format"] == fmt

    def test_output_compression_makes_a_smaller_jpeg(self, client, fake):
        sizes = []
        for compression in (95, 20, 0):
            body = generate(client, prompt="A castle", output_format="jpeg", size="800x800",
                            output_compression=compression, response_format="b64_json")
            sizes.append(len(base64.b64decode(body["data"][0]["b64_json"])))
        assert sizes[2] < sizes[1] < sizes[0]  # 0 is the lowest quality, not "unset"

    def test_the_models_own_bytes_are_kept_when_nothing_differs(self, client, fake):
        body = generate(client, prompt="A castle", output_format="jpeg", seed=5,
                        response_format="b64_json")
        seed_image = fake.image(1024, 1024, "JPEG", seed=5)
        assert base64.b64decode(body["data"][0]["b64_json"]) == seed_image


class TestSizesAndCount:
    @pytest.mark.parametrize("size,expected", [
        ("1792x1024", (1792, 1024)),  # schnell draws 1024x1024: cropped, then scaled
        ("1024x1792", (1024, 1792)),
        ("1536x1024", (1536, 1024)),
        ("1024x1024", (1024, 1024)),
        ("512x512", (512, 512)),
        ("300x900", (300, 900)),
        ("auto", (1024, 1024)),
    ])
    def test_a_size_is_delivered_exactly_on_a_fixed_size_model(self, client, fake, size,
                                                               expected):
        (item,) = generate(client, prompt="A castle", size=size, response_format="b64_json")["data"]
        assert picture(base64.b64decode(item["b64_json"])).size == expected
        assert set(fake.calls_to("ai")[0].json) == {"prompt", "steps", "seed"}

    @pytest.mark.parametrize("size,drawn", [
        ("1792x1024", (1792, 1024)), ("512x512", (512, 512)), ("1001x610", (1008, 608)),
    ])
    def test_models_with_sizes_are_asked_for_it_rounded_to_their_step(self, client, fake, size,
                                                                      drawn):
        (item,) = generate(client, prompt="A castle", size=size, model="flux-2-dev",
                           response_format="b64_json")["data"]
        width, height = (int(side) for side in size.split("x"))
        assert picture(base64.b64decode(item["b64_json"])).size == (width, height)
        form = fake.calls_to("ai")[0].form
        assert (int(form["width"]), int(form["height"])) == drawn

    def test_a_ratio_in_the_prompt_wins_over_the_size(self, client, fake):
        """Open WebUI sends size 512x512 with every prompt."""
        (item,) = generate(client, prompt="A cute cat 16:9", size="512x512",
                           response_format="b64_json")["data"]
        assert picture(base64.b64decode(item["b64_json"])).size == (1024, 576)

    def test_no_size_is_the_models_default(self, client, fake):
        generate(client, prompt="A castle", model="flux-2-dev")
        form = fake.calls_to("ai")[0].form
        assert (form["width"], form["height"]) == ("1024", "768")

    @pytest.mark.parametrize("model,size,message", [
        ("flux-2-dev", "2048x1024", "from 256 to 1920"),
        ("flux-2-dev", "1024x128", "from 256 to 1920"),
        ("flux-1-schnell", "4096x1024", "from 256 to 2048"),
        ("phoenix-1.0", "2100x2100", "from 256 to 2048"),
    ])
    def test_a_size_the_model_cannot_make_is_400_naming_the_range(self, client, fake, model,
                                                                  size, message):
        response = client.post("/v1/images/generations", headers=AUTH,
                               json={"prompt": "A cat", "model": model, "size": size})
        assert_error(response, 400, "unsupported_size")
        assert response.json["error"]["param"] == "size"
        assert message in response.json["error"]["message"]
        assert fake.calls_to("ai") == []

    def test_n_images_are_made_in_parallel_and_all_differ(self, client, fake):
        fake.latency = 0.3
        data = generate(client, prompt="A castle", n=3)["data"]
        assert len(data) == 3 and len({item["url"] for item in data}) == 3
        assert len(fake.calls_to("ai")) == 3

    def test_ten_images_get_ten_seeds(self, client, fake):
        data = generate(client, prompt="A castle", n=10, response_format="b64_json")["data"]
        sent = [call.json["seed"] for call in fake.calls_to("ai")]
        assert len(set(sent)) == 10 and sorted(sent) == sorted(item["seed"] for item in data)
        assert len({item["b64_json"] for item in data}) == 10

    def test_a_client_seed_is_counted_up_for_each_image(self, client, fake):
        data = generate(client, prompt="A castle", n=3, seed=41)["data"]
        assert [item["seed"] for item in data] == [41, 42, 43]
        assert sorted(call.json["seed"] for call in fake.calls_to("ai")) == [41, 42, 43]

    def test_the_same_prompt_and_seed_send_the_same_request(self, client, fake):
        generate(client, prompt="A castle", seed=7)
        generate(client, prompt="A castle", seed=7)
        first, second = fake.calls_to("ai")
        assert first.json == second.json == {"prompt": "A castle", "steps": 4, "seed": 7}

    def test_a_run_takes_the_slots_that_are_free_rather_than_a_429(self, make_app, fake):
        app = make_app(max_concurrent_generations=3)
        capacity = app.extensions["flux_worker"].images.capacity
        assert capacity.acquire_up_to(2) == 2  # others' generations in flight
        data = generate(app.test_client(), prompt="A cat", n=4)["data"]
        assert len(data) == 4 and capacity.in_use == 2
        capacity.release(2)

    def test_a_bad_seed_field_is_400_even_with_a_seed_in_the_prompt(self, client, fake):
        response = client.post("/v1/images/generations", headers=AUTH,
                               json={"prompt": "A cat --seed 5", "seed": -5})
        assert_error(response, 400, "invalid_seed")

    def test_more_images_than_the_cap_are_made_that_many_at_a_time(self, make_app, fake,
                                                                    monkeypatch):
        app = make_app(max_concurrent_generations=2)
        service = app.extensions["flux_worker"].images
        real, busy, most = service.make_image, [0], [0]
        lock = threading.Lock()

        def counted(*args):
            with lock:
                busy[0] += 1
                most[0] = max(most[0], busy[0])
            try:
                return real(*args)
            finally:
                with lock:
                    busy[0] -= 1

        monkeypatch.setattr(service, "make_image", counted)
        fake.latency = 0.1
        data = generate(app.test_client(), prompt="A cat", n=5)["data"]
        assert len(data) == 5 and most[0] == 2 and service.capacity.in_use == 0

    def test_images_that_were_made_are_returned_when_a_sibling_fails(self, client, fake):
        fake.inject("ai", cf.status(400, [(5006, "AiError: Bad input: Error: nope")]))
        data = generate(client, prompt="A castle", n=2)["data"]
        assert len(data) == 1


class TestOptimizer:
    def test_revised_prompt_is_the_optimized_one(self, make_app, fake):
        client = make_app(**OPTIMIZER, external_api_base=fake.optimizer_base).test_client()
        (item,) = generate(client, prompt="A castle 16:9")["data"]
        assert item["revised_prompt"] == "A castle, highly detailed, soft light"
        assert "1024x576" in fake.calls_to("optimizer")[0].json["messages"][-1]["content"]

    def test_no_revised_prompt_when_optimization_failed(self, make_app, fake):
        client = make_app(**OPTIMIZER, external_api_base=fake.optimizer_base).test_client()
        fake.inject("optimizer", *[cf.status(500)] * 4)
        (item,) = generate(client, prompt="A castle")["data"]
        assert "revised_prompt" not in item
        assert fake.calls_to("ai")[0].json["prompt"] == "A castle"


class TestErrors:
    @pytest.mark.parametrize("body,param", [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "A", "n": 0}, "n"),
        ({"prompt": "A", "n": 11}, "n"),
        ({"prompt": "A", "output_format": "gif"}, "output_format"),
        ({"prompt": "A", "output_compression": 101}, "output_compression"),
        ({"prompt": "A", "partial_images": 4}, "partial_images"),
        ({"prompt": "A", "background": "clear"}, "background"),
        ({"prompt": "A", "quality": "ultra"}, "quality"),
        ({"prompt": "A", "moderation": "none"}, "moderation"),
        ({"prompt": "A", "stream": "yes"}, "stream"),
        ({"prompt": "A", "seed": -1}, "seed"),
        ({"prompt": "A", "seed": 2**32}, "seed"),
        ({"prompt": "A", "seed": "7"}, "seed"),
        ({"prompt": "A --seed x"}, "prompt"),
        ({"prompt": "A", "n": "2"}, "n"),
        ({"prompt": "A", "size": "big"}, "size"),
        ({"prompt": "A", "response_format": "png"}, "response_format"),
        ({"prompt": "A", "model": 3}, "model"),
        ({"prompt": "x" * 2049}, "prompt"),
    ])
    def test_bad_bodies_are_400_naming_the_field(self, client, fake, body, param):
        response = client.post("/v1/images/generations", headers=AUTH, json=body)
        assert_error(response, 400)
        assert response.json["error"]["param"] == param
        assert fake.calls_to("ai") == []

    @pytest.mark.parametrize("body,param", [
        ({"prompt": "A cat", "size": "4096x100"}, "size"),
        ({"prompt": "A cat --ar wide"}, "prompt"),
        ({"prompt": "A line 20:1"}, "prompt"),
    ])
    def test_size_errors_name_the_images_fields(self, client, fake, body, param):
        response = client.post("/v1/images/generations", headers=AUTH, json=body)
        assert_error(response, 400)
        assert response.json["error"]["param"] == param

    def test_a_bug_in_one_image_keeps_the_others(self, app, client, fake, monkeypatch):
        store = app.extensions["flux_worker"].images.store
        real_put, calls = store.put, []

        def flaky_put(key, data, ttl):
            calls.append(key)
            if len(calls) == 1:
                raise RuntimeError("database is locked")
            real_put(key, data, ttl)

        monkeypatch.setattr(store, "put", flaky_put)
        assert len(generate(client, prompt="A castle", n=3)["data"]) == 2

    def test_needs_auth(self, client):
        assert_error(client.post("/v1/images/generations", json={"prompt": "A"}), 401,
                     "invalid_api_key")

    def test_workers_ai_failure_is_502(self, client, fake):
        fake.inject("ai", *[cf.status(500)] * 4)
        assert_error(client.post("/v1/images/generations", headers=AUTH, json={"prompt": "A"}),
                     502, retry="true")

    def test_capacity_is_released_after_errors(self, app, client, fake):
        fake.inject("ai", *[cf.status(500)] * 8)
        response = client.post("/v1/images/generations", headers=AUTH, json={"prompt": "A", "n": 2})
        assert response.status_code == 502
        assert app.extensions["flux_worker"].images.capacity.in_use == 0


class TestStreaming:
    """`stream: true` as OpenAI's image streaming: one completed event per image."""

    def stream(self, client, **body):
        response = client.post("/v1/images/generations", headers=AUTH,
                               json={"stream": True, **body})
        assert response.status_code == 200
        assert response.mimetype == "text/event-stream"
        return parse_sse(response.get_data(as_text=True), named=True)

    def test_each_image_is_a_completed_event_the_sdk_types_accept(self, client, fake):
        events, _ = self.stream(client, prompt="A cute cat 16:9", n=2, partial_images=2,
                                model="gpt-image-1")
        assert [event["type"] for event in events] == ["image_generation.completed"] * 2
        for event in events:
            parsed = ImageGenCompletedEvent.model_validate(event, strict=True)
            image = picture(base64.b64decode(parsed.b64_json))
            assert image.size == (1024, 576) and image.format == "PNG"
            assert (parsed.size, parsed.output_format, parsed.background) == (
                "1024x576", "png", "opaque")
        assert len({event["b64_json"] for event in events}) == 2

    def test_keep_alive_comments_are_sent_while_waiting(self, make_app, fake):
        client = make_app(sse_keepalive_seconds=0.05).test_client()
        fake.latency = 0.3
        events, comments = self.stream(client, prompt="A castle")
        assert comments and len(events) == 1

    def test_a_failure_after_the_headers_is_an_error_event(self, client, fake):
        fake.inject("ai", cf.nsfw())
        events, _ = self.stream(client, prompt="A castle")
        (event,) = events
        assert event["type"] == "error"
        assert event["error"]["code"] == "content_policy_violation"

    def test_bad_input_is_still_a_plain_400(self, client, fake):
        response = client.post("/v1/images/generations", headers=AUTH,
                               json={"prompt": "A", "stream": True, "n": 0})
        assert_error(response, 400)
