"""The OpenAI Images API: POST /v1/images/generations."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

import fake_cloudflare as cf
from conftest import AUTH
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
            assert set(item) == {"url"}
            image = fetch_image(client, item["url"])
            assert image.status_code == 200 and picture(image.data).size == (1024, 1024)

    def test_b64_json_is_the_default_for_gpt_image(self, client, fake):
        (item,) = generate(client, prompt="A castle", model="gpt-image-1")["data"]
        assert set(item) == {"b64_json"}
        assert picture(base64.b64decode(item["b64_json"])).format == "JPEG"

    def test_response_format_is_honoured(self, client, fake):
        (item,) = generate(client, prompt="A castle", model="gpt-image-1",
                           response_format="url")["data"]
        assert "url" in item and "b64_json" not in item

    def test_every_route_prefix_serves_it(self, client, fake):
        for path in ("/images/generations", "/v1/v1/images/generations"):
            assert client.post(path, headers=AUTH, json={"prompt": "A"}).status_code == 200

    def test_quality_style_and_user_are_accepted(self, client, fake):
        generate(client, prompt="A castle", quality="hd", style="vivid", user="u1")
        assert fake.calls_to("ai")[0].json == {"prompt": "A castle", "steps": 4}


class TestSizesAndCount:
    @pytest.mark.parametrize("size,expected", [
        ("1792x1024", (1024, 576)),  # nearest: 16:9
        ("1024x1792", (576, 1024)),
        ("1536x1024", (768, 512)),   # 3:2
        ("1024x1024", (1024, 1024)),
        ("auto", (1024, 1024)),
        ("512x512", (1024, 1024)),
    ])
    def test_openai_sizes_map_to_the_nearest_ratio(self, client, fake, size, expected):
        (item,) = generate(client, prompt="A castle", size=size, response_format="b64_json")["data"]
        assert picture(base64.b64decode(item["b64_json"])).size == expected

    def test_n_images_are_made_in_parallel_and_all_differ(self, client, fake):
        fake.latency = 0.3
        data = generate(client, prompt="A castle", n=3)["data"]
        assert len(data) == 3 and len({item["url"] for item in data}) == 3
        assert len(fake.calls_to("ai")) == 3

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
        ({"prompt": "A", "n": 5}, "n"),
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

    def test_more_images_than_the_server_ever_makes_at_once_is_400_not_429(self, make_app, fake):
        client = make_app(max_concurrent_generations=2).test_client()
        response = client.post("/v1/images/generations", headers=AUTH,
                               json={"prompt": "A cat", "n": 3})
        assert_error(response, 400)
        assert response.json["error"]["param"] == "n"

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
