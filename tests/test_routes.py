"""The HTTP surface through Flask's test client, against the fake Cloudflare."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

import fake_cloudflare
from conftest import API_KEY, AUTH
from flux_worker.version import __version__
from shapes import assert_shape

CAT = {"messages": [{"role": "user", "content": "A cute cat 16:9"}]}
IMAGE_LINK = re.compile(r"!\[Generated Image\]\((?P<url>[^)]+)\)")


def image_url(content: str) -> str:
    match = IMAGE_LINK.search(content)
    assert match, content
    return match.group("url")


def fetch_image(client, url: str):
    path = url.split("://", 1)[1].split("/", 1)[1]
    return client.get("/" + path)


def assert_error(response, status: int, code: str | None = None, retry: str = "false"):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type.startswith("application/json")
    assert_shape("Error", response.json)
    if code is not None:
        assert response.json["error"]["code"] == code
    assert response.headers["x-should-retry"] == retry


class TestPages:
    def test_index_reports_status_without_secrets(self, make_app):
        """The welcome page says model, store, optimization and credentials, never a secret."""
        app = make_app(cf_kv_namespace_id=fake_cloudflare.NAMESPACE_ID)
        page = app.test_client().get("/")
        text = page.get_data(as_text=True)
        assert page.status_code == 200 and page.content_type.startswith("text/html")
        assert "flux-1-schnell" in text and "Workers KV" in text
        assert fake_cloudflare.API_TOKEN not in text and API_KEY not in text

    def test_index_works_without_any_cloudflare_settings(self, make_app):
        app = make_app(cf_account_id="", cf_api_token="")
        text = app.test_client().get("/").get_data(as_text=True)
        assert "not configured" in text

    def test_healthz(self, client):
        assert client.get("/healthz").json == {"status": "ok", "version": __version__}


class TestAuth:
    @pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"},
                                         {"Authorization": API_KEY}])
    def test_missing_or_wrong_key_is_401(self, client, headers):
        assert_error(client.get("/v1/models", headers=headers), 401, "invalid_api_key")

    def test_any_of_several_keys_works(self, make_app):
        client = make_app(api_keys=("first", "second")).test_client()
        second = {"Authorization": "Bearer second"}
        assert client.get("/v1/models", headers=second).status_code == 200

    def test_no_api_key_configured_fails_closed(self, make_app):
        client = make_app(api_keys=()).test_client()
        response = client.get("/v1/models", headers={"Authorization": "Bearer anything"})
        assert_error(response, 503, "not_configured")
        assert "API_KEY" in response.json["error"]["message"]


class TestModels:
    @pytest.mark.parametrize("path", ["/v1/models", "/models", "/v1/v1/models"])
    def test_lists_models_on_every_prefix(self, client, path):
        response = client.get(path, headers=AUTH)
        assert response.status_code == 200
        assert_shape("ModelList", response.json)
        ids = [model["id"] for model in response.json["data"]]
        assert ids[0] == "@cf/black-forest-labs/flux-1-schnell"

    def test_image_models_setting_restricts_the_list(self, make_app):
        client = make_app(image_models=("@cf/lykon/dreamshaper-8-lcm",)).test_client()
        ids = [m["id"] for m in client.get("/v1/models", headers=AUTH).json["data"]]
        # The default model comes first: clients that take the first one get it.
        assert ids == ["@cf/black-forest-labs/flux-1-schnell", "@cf/lykon/dreamshaper-8-lcm"]


class TestChat:
    def test_generates_a_jpeg_of_the_ratio_asked_for(self, client, fake):
        """The seed's reply text, an absolute link, and an image that really is 1024x576."""
        response = client.post("/v1/chat/completions", headers=AUTH, json=CAT)
        assert response.status_code == 200
        assert_shape("ChatCompletion", response.json)
        content = response.json["choices"][0]["message"]["content"]
        assert content.startswith("🎨 Original prompt: A cute cat 16:9\n\n"
                                  "💬 Prompt generation model: Original Prompt\n\n"
                                  "📐 Image specifications: 1024x576\n\n"
                                  "🌐 Optimized prompt: A cute cat\n\n")
        (call,) = fake.calls_to("ai")
        seed = call.json["seed"]
        assert (f"🌟 Image generation successful!\n\n🎲 Seed: {seed} (add --seed {seed} to "
                "the prompt to get this picture again)\n\nHere's the result:\n\n") in content
        url = image_url(content)
        assert url.startswith("http://localhost/image/")
        assert call.model == "@cf/black-forest-labs/flux-1-schnell"
        assert call.json == {"prompt": "A cute cat", "steps": 4, "seed": seed}
        image = fetch_image(client, url)
        assert image.status_code == 200 and image.content_type == "image/jpeg"
        assert image.headers["X-Content-Type-Options"] == "nosniff"
        max_age = int(re.search(r"max-age=(\d+)", image.headers["Cache-Control"]).group(1))
        assert 1790 <= max_age <= 1800 and image.headers["Expires"].endswith(" GMT")
        assert Image.open(io.BytesIO(image.data)).size == (1024, 576)

    def test_content_parts_are_joined_and_old_turns_ignored(self, client, fake):
        body = {"messages": [
            {"role": "system", "content": "You are helpful"},
            {"role": "user", "content": "A dog"},
            {"role": "assistant", "content": "![Generated Image](http://x/image/abc)"},
            {"role": "user", "content": [{"type": "text", "text": "A red"},
                                         {"type": "text", "text": "fox 9:16"}]},
        ], "model": "gpt-4o", "temperature": 0.7, "stream_options": {"include_usage": True},
            "presence_penalty": 0, "user": "u1", "tools": []}
        response = client.post("/chat/completions", headers=AUTH, json=body)
        assert response.status_code == 200
        assert fake.calls_to("ai")[0].json["prompt"] == "A red fox"
        assert "576x1024" in response.json["choices"][0]["message"]["content"]
        assert response.json["model"] == "@cf/black-forest-labs/flux-1-schnell"

    def test_body_is_read_whatever_the_content_type(self, client):
        response = client.post("/v1/v1/chat/completions", headers=AUTH,
                               data='{"messages":[{"role":"user","content":"A cat"}]}',
                               content_type="text/plain")
        assert response.status_code == 200

    def test_public_base_url_makes_the_links(self, make_app):
        client = make_app(public_base_url="https://img.example.org").test_client()
        content = client.post("/v1/chat/completions", headers=AUTH, json=CAT).json[
            "choices"][0]["message"]["content"]
        assert image_url(content).startswith("https://img.example.org/image/")

    def test_links_follow_one_proxy_hop(self, client):
        headers = {**AUTH, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "flux.example.com"}
        content = client.post("/v1/chat/completions", headers=headers, json=CAT).json[
            "choices"][0]["message"]["content"]
        assert image_url(content).startswith("https://flux.example.com/image/")

    @pytest.mark.parametrize("prompt", [
        "Please generate a four to five word title summarizing our conversation without any "
        "lead-in, punctuation, quotation marks, periods, symbols, bold text, or additional text.",
        "### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history."
        "\n<chat_history>\nUSER: A cute cat 16:9\n</chat_history>",
    ])
    def test_client_housekeeping_requests_make_no_image(self, client, fake, prompt):
        body = {"messages": [{"role": "user", "content": "A cute cat 16:9"},
                             {"role": "assistant", "content": "..."},
                             {"role": "user", "content": prompt}]}
        response = client.post("/v1/chat/completions", headers=AUTH, json=body)
        assert response.status_code == 200
        assert_shape("ChatCompletion", response.json)
        assert "A cute cat" in response.json["choices"][0]["message"]["content"]
        assert fake.calls_to("ai") == []


class TestBadInput:
    @pytest.mark.parametrize("data, param", [
        ("not json", None),
        ("", None),
        ("[1, 2]", None),
        ('{"messages": "hi"}', "messages"),
        ('{"messages": []}', "messages"),
        ('{"messages": [{"role": "system", "content": "x"}]}', "messages"),
        ('{"messages": [{"role": "user", "content": "   "}]}', "messages"),
        ('{"messages": [{"role": "user", "content": 42}]}', "messages[0].content"),
        ('{"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}',
         "messages[0].content"),
        ('{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}',
         "messages[0].content[0].image_url"),
        ('{"messages": [{"content": "hi"}]}', "messages[0]"),
        ('{"messages": [{"role": "user", "content": "cat"}], "stream": "yes"}', "stream"),
        ('{"messages": [{"role": "user", "content": "cat"}], "temperature": "hot"}', "temperature"),
        ('{"messages": [{"role": "user", "content": "cat"}], "model": 7}', "model"),
        ('{"messages": [{"role": "user", "content": "16:9"}]}', "messages"),
        ('{"messages": [{"role": "user", "content": "A strip 20:1"}]}', "messages"),
    ])
    def test_bad_chat_bodies_are_400(self, client, fake, data, param):
        response = client.post("/v1/chat/completions", headers=AUTH, data=data,
                               content_type="application/json")
        assert_error(response, 400)
        assert response.json["error"]["param"] == param
        assert fake.calls_to("ai") == []

    def test_prompt_over_the_model_limit_is_400(self, client):
        body = {"messages": [{"role": "user", "content": "cat " * 600}]}
        assert_error(client.post("/v1/chat/completions", headers=AUTH, json=body), 400,
                     "prompt_too_long")

    def test_deeply_nested_json_is_400(self, client):
        response = client.post("/v1/chat/completions", headers=AUTH, data="[" * 100000)
        assert_error(response, 400)

    def test_body_over_one_mib_is_413(self, client):
        body = '{"prompt": "' + "x" * (1024 * 1024) + '"}'
        response = client.post("/v1/images/generations", headers=AUTH, data=body,
                               content_type="application/json")
        assert_error(response, 413, "request_too_large")
        assert "1 MiB" in response.json["error"]["message"]

    def test_chat_takes_bodies_with_pictures_up_to_the_upload_limit(self, make_app):
        client = make_app(max_upload_bytes=2 * 1024 * 1024).test_client()
        words = "x" * (1536 * 1024)  # over the 1 MiB of a text-only endpoint
        body = {"messages": [{"role": "user", "content": words}]}
        response = client.post("/v1/chat/completions", headers=AUTH, json=body)
        assert_error(response, 400, "prompt_too_long")  # read, then refused for its words
        body["messages"][0]["content"] += "x" * (1024 * 1024)
        response = client.post("/v1/chat/completions", headers=AUTH, json=body)
        assert_error(response, 413, "request_too_large")
        assert "2 MiB" in response.json["error"]["message"]

    def test_unknown_route_is_json_404(self, client):
        assert_error(client.get("/v1/nothing-here"), 404, "not_found")

    def test_wrong_method_is_json_405(self, client):
        assert_error(client.get("/v1/chat/completions", headers=AUTH), 405, "method_not_allowed")


class TestImages:
    @pytest.mark.parametrize("key", ["short", "a" * 23, "../../etc/passwd0000000", "a b"])
    def test_key_not_in_our_format_is_404_without_store(self, client, key):
        assert_error(client.get(f"/image/{key}"), 404, "not_found")

    def test_unknown_key_is_404(self, client):
        assert_error(client.get("/image/" + "A" * 22), 404, "not_found")

    def test_served_with_cors_and_no_auth(self, client):
        url = image_url(client.post("/v1/chat/completions", headers=AUTH, json=CAT).json[
            "choices"][0]["message"]["content"])
        response = fetch_image(client, url)
        assert response.headers["Access-Control-Allow-Origin"] == "*"

    def test_caching_headers_and_revalidation(self, client):
        url = image_url(client.post("/v1/chat/completions", headers=AUTH, json=CAT).json[
            "choices"][0]["message"]["content"])
        first = fetch_image(client, url)
        assert first.headers["X-Content-Type-Options"] == "nosniff"
        path = "/" + url.split("://", 1)[1].split("/", 1)[1]
        again = client.get(path, headers={"If-None-Match": first.headers["ETag"]})
        assert again.status_code == 304 and again.data == b""
        assert client.head(path).headers["Content-Type"] == "image/jpeg"


class TestCors:
    def test_preflight_names_authorization(self, client):
        response = client.options("/v1/chat/completions", headers={
            "Origin": "https://app.nextchat.dev", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        assert response.status_code == 200
        allowed = response.headers["Access-Control-Allow-Headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
        assert "POST" in response.headers["Access-Control-Allow-Methods"]


class TestUpstreamFailures:
    def test_workers_ai_not_configured_is_503(self, make_app):
        client = make_app(cf_account_id="", cf_api_token="").test_client()
        assert_error(client.post("/v1/chat/completions", headers=AUTH, json=CAT), 503,
                     "not_configured")

    def test_server_error_is_502(self, client, fake):
        fake.inject("ai", *[fake_cloudflare.status(500)] * 4)
        assert_error(client.post("/v1/chat/completions", headers=AUTH, json=CAT), 502,
                     retry="true")

    def test_refused_credentials_are_502_and_name_no_secret(self, make_app, fake):
        client = make_app(cf_api_token="wrong-token-value").test_client()
        response = client.post("/v1/chat/completions", headers=AUTH, json=CAT)
        assert_error(response, 502, "upstream_auth_failed", retry="false")
        assert "wrong-token-value" not in response.get_data(as_text=True)
        assert "your API key is fine" in response.json["error"]["message"]

    def test_timeout_is_504(self, make_app, fake):
        client = make_app(upstream_timeout_seconds=0.3).test_client()
        fake.inject("ai", fake_cloudflare.hang(2))
        assert_error(client.post("/v1/chat/completions", headers=AUTH, json=CAT), 504,
                     "upstream_timeout", retry="true")

    def test_validation_error_is_400_with_cloudflare_message(self, client, fake):
        fake.inject("ai", fake_cloudflare.status(400, [(5006, "AiError: Bad input: Error: nope")]))
        response = client.post("/v1/chat/completions", headers=AUTH, json=CAT)
        assert_error(response, 400)
        assert "Bad input" in response.json["error"]["message"]

    def test_content_flag_is_a_content_policy_violation_paid_once(self, client, fake):
        """Not sent again: without a seed the same prompt draws the same (flagged)
        image, so a second try would only be paid for twice."""
        flagged = fake_cloudflare.status(400, [(3030, "Input prompt contains NSFW content.")])
        fake.inject("ai", flagged, flagged)
        assert_error(client.post("/v1/chat/completions", headers=AUTH, json=CAT), 400,
                     "content_policy_violation")
        assert len(fake.calls_to("ai")) == 1


class TestOptimizer:
    def optimizer_app(self, make_app, fake, **overrides):
        return make_app(prompt_optimization=True, external_api_base=fake.optimizer_base,
                        external_model="gpt-4o-mini",
                        external_api_key=fake_cloudflare.OPTIMIZER_KEY,
                        **overrides)

    def test_optimized_prompt_is_drawn_and_shown(self, make_app, fake):
        client = self.optimizer_app(make_app, fake).test_client()
        content = client.post("/v1/chat/completions", headers=AUTH, json=CAT).json[
            "choices"][0]["message"]["content"]
        assert "💬 Prompt generation model: gpt-4o-mini\n" in content
        assert "🌐 Optimized prompt: A cute cat, highly detailed, soft light\n" in content
        assert fake.calls_to("ai")[0].json["prompt"] == "A cute cat, highly detailed, soft light"
        sent = fake.calls_to("optimizer")[0].json
        assert sent["model"] == "gpt-4o-mini" and "1024x576" in sent["messages"][1]["content"]

    def test_failure_falls_back_to_the_original_prompt(self, make_app, fake):
        client = self.optimizer_app(make_app, fake).test_client()
        fake.inject("optimizer", *[fake_cloudflare.status(503)] * 4)
        content = client.post("/v1/chat/completions", headers=AUTH, json=CAT).json[
            "choices"][0]["message"]["content"]
        assert "🌐 Optimized prompt: A cute cat\n\n⚠️ Prompt optimization failed" in content
        assert fake.calls_to("ai")[0].json["prompt"] == "A cute cat"


class TestKVStore:
    def test_images_go_to_kv_with_the_ttl(self, make_app, fake):
        client = make_app(cf_kv_namespace_id=fake_cloudflare.NAMESPACE_ID,
                          image_expiration=30).test_client()
        url = image_url(client.post("/v1/chat/completions", headers=AUTH, json=CAT).json[
            "choices"][0]["message"]["content"])
        key = url.rsplit("/", 1)[1]
        assert fake.kv_ttl(key) == 60  # KV refuses less than 60 s
        assert Image.open(io.BytesIO(fake.kv_value(key))).size == (1024, 576)
        assert fetch_image(client, url).status_code == 200

    def test_kv_image_is_served_by_another_machine(self, make_app, fake, tmp_path):
        """Another machine (its own embedded store) reads KV once, then keeps a copy."""
        settings = dict(cf_kv_namespace_id=fake_cloudflare.NAMESPACE_ID)
        writer = make_app(**settings).test_client()
        reader = make_app(**settings, image_store_path=str(tmp_path / "other.sqlite3")
                          ).test_client()
        url = image_url(writer.post("/v1/chat/completions", headers=AUTH, json=CAT).json[
            "choices"][0]["message"]["content"])
        response = fetch_image(reader, url)
        assert response.status_code == 200 and response.content_type == "image/jpeg"
        assert len(fake.calls_to("kv_get")) == 1
        assert fetch_image(reader, url).status_code == 200
        assert len(fake.calls_to("kv_get")) == 1
