"""Unit tests for the upstream HTTP clients (Workers AI, Workers KV, the prompt
optimizer) and the shared Cloudflare envelope handling, with `responses`
standing in for the network."""

from __future__ import annotations

import base64
import email
import io
import json

import pytest
import requests
from PIL import Image

from flux_worker import cloudflare
from flux_worker.errors import (
    AllowanceExhausted,
    ContentPolicyViolation,
    InvalidRequest,
    RateLimited,
    UpstreamError,
    UpstreamMisconfigured,
    UpstreamTimeout,
)
from flux_worker.http_session import Answer, RetryPolicy, Upstream
from flux_worker.imaging import prepare_image, sniff_content_type
from flux_worker.kv import KVClient
from flux_worker.models import REGISTRY
from flux_worker.optimizer import DEFAULT_SYSTEM_MESSAGE, PromptOptimizer
from flux_worker.redaction import Redactor
from flux_worker.workers_ai import WorkersAIClient, image_bytes

API = "https://api.cloudflare.test/client/v4"
ACCOUNT = "acc123"
TOKEN = "cf-secret-token-XYZ"
NAMESPACE = "ns456"
AI_RUN = f"{API}/accounts/{ACCOUNT}/ai/run/"
KV_VALUES = f"{API}/accounts/{ACCOUNT}/storage/kv/namespaces/{NAMESPACE}/values/"
LLM = "https://llm.test"
LLM_URL = f"{LLM}/v1/chat/completions"

SCHNELL = REGISTRY["@cf/black-forest-labs/flux-1-schnell"]
FLUX2_DEV = REGISTRY["@cf/black-forest-labs/flux-2-dev"]
FLUX2_KLEIN = REGISTRY["@cf/black-forest-labs/flux-2-klein-4b"]
SDXL = REGISTRY["@cf/stabilityai/stable-diffusion-xl-base-1.0"]
SDXL_LIGHTNING = REGISTRY["@cf/bytedance/stable-diffusion-xl-lightning"]
DREAMSHAPER = REGISTRY["@cf/lykon/dreamshaper-8-lcm"]
PHOENIX = REGISTRY["@cf/leonardo/phoenix-1.0"]


def _image(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, format=fmt)
    return out.getvalue()


JPEG = _image("JPEG")
PNG = _image("PNG")


def envelope(image: bytes) -> dict:
    return {"result": {"image": base64.b64encode(image).decode()}, "success": True,
            "errors": [], "messages": []}


def failure(code: int, message: str) -> dict:
    return {"success": False, "errors": [{"code": code, "message": message}], "messages": [],
            "result": None}


def multipart_fields(request: requests.PreparedRequest) -> dict[str, str]:
    """Parse a multipart/form-data request body into {field name: value}."""
    head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
    message = email.message_from_bytes(head + request.body)
    assert message.is_multipart()
    return {part.get_param("name", header="content-disposition"):
            part.get_payload(decode=True).decode()
            for part in message.get_payload()}


def upstream(session, timeout: float = 42.0) -> Upstream:
    return Upstream("Svc", session, timeout=timeout, connect_timeout=3.0,
                    retry=RetryPolicy(backoff=0), redact=Redactor([TOKEN, ACCOUNT, NAMESPACE]))


@pytest.fixture
def ai(session):
    return WorkersAIClient(upstream(session), api_base=API, account_id=ACCOUNT, api_token=TOKEN)


@pytest.fixture
def kv(session):
    return KVClient(upstream(session), api_base=API, account_id=ACCOUNT, namespace_id=NAMESPACE,
                    api_token=TOKEN)


def run(ai, model, inputs) -> bytes:
    """The image bytes of a successful run, as the service reads them."""
    return image_bytes(ai.generate(model, inputs), model)


def raised(excinfo) -> type:
    return type(excinfo.value)


# --------------------------------------------------------------------------- Workers AI


class TestWorkersAIRequest:
    """What goes over the wire: URL, auth, JSON vs multipart, timeouts."""

    def test_schnell_posts_json_prompt_and_steps_only(self, rsps, ai):
        rsps.post(AI_RUN + SCHNELL.id, json=envelope(JPEG))
        assert run(ai, SCHNELL, SCHNELL.inputs("a red fox", 512, 768)) == JPEG

        request = rsps.calls[0].request
        assert request.method == "POST"
        assert request.url == (f"{API}/accounts/{ACCOUNT}/ai/run"
                               "/@cf/black-forest-labs/flux-1-schnell")
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert request.headers["Content-Type"] == "application/json"
        assert json.loads(request.body) == {"prompt": "a red fox", "steps": 4}

    @pytest.mark.parametrize("model", [FLUX2_DEV, FLUX2_KLEIN], ids=lambda m: m.id)
    def test_flux2_posts_multipart_form(self, rsps, ai, model):
        rsps.post(AI_RUN + model.id, json=envelope(PNG))
        assert run(ai, model, model.inputs("a blue bird", 512, 768, steps=20)) == PNG

        request = rsps.calls[0].request
        assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
        fields = multipart_fields(request)
        assert fields["prompt"] == "a blue bird"
        assert (fields["width"], fields["height"]) == ("512", "768")
        assert ("steps" in fields) == (model is FLUX2_DEV)

    def test_timeouts_are_the_connect_bound_and_what_is_left_of_the_deadline(self, rsps, ai):
        rsps.post(AI_RUN + SCHNELL.id, json=envelope(JPEG))
        ai.generate(SCHNELL, SCHNELL.inputs("x", 1024, 1024))
        connect, read = rsps.calls[0].request.req_kwargs["timeout"]
        assert connect == 3.0 and 41.0 < read <= 42.0


class TestWorkersAIImages:
    """Raw-bytes models and the envelope; content_type is sniffed, not trusted."""

    @pytest.mark.parametrize("model, body, header, expected", [
        (SDXL, PNG, "image/png", "image/png"),
        (DREAMSHAPER, PNG, "image/png", "image/png"),
        (PHOENIX, JPEG, "image/jpeg", "image/jpeg"),
        (SDXL_LIGHTNING, JPEG, "image/png", "image/jpeg"),  # mislabelled upstream
        (SDXL, PNG, "application/octet-stream", "image/png"),
    ], ids=["sdxl", "dreamshaper", "phoenix", "sdxl-lightning-mislabelled", "octet-stream"])
    def test_raw_bytes_models(self, rsps, ai, model, body, header, expected):
        rsps.post(AI_RUN + model.id, body=body, content_type=header)
        data = run(ai, model, model.inputs("a lighthouse", 512, 512, negative_prompt="blur"))
        assert data == body and sniff_content_type(data) == expected
        assert json.loads(rsps.calls[0].request.body)["negative_prompt"] == "blur"

    def test_envelope_image_is_base64_decoded(self, rsps, ai):
        rsps.post(AI_RUN + SCHNELL.id, json=envelope(PNG),
                  content_type="application/json; charset=utf-8")
        assert run(ai, SCHNELL, {"prompt": "x"}) == PNG

    @pytest.mark.parametrize("kwargs", [
        {"body": "{not json", "content_type": "application/json"},
        {"json": {"result": {"image": "!!!not base64!!!"}, "success": True}},
        {"json": {"result": {"image": base64.b64encode(b"hello, not an image").decode()}}},
        {"json": {"result": {}, "success": True, "errors": [], "messages": []}},
        {"json": {"result": {"image": ""}}},
        {"json": ["not", "an", "object"]},
        {"body": b"<html>gateway</html>", "content_type": "text/html"},
        {"body": b"", "content_type": "image/png"},
    ], ids=["malformed-json", "bad-base64", "not-an-image-b64", "no-image", "empty-image",
            "json-list", "html", "empty-bytes"])
    def test_nonsense_answer_is_upstream_error(self, rsps, ai, kwargs):
        """Read, decoded and verified as the service does: never an image."""
        rsps.post(AI_RUN + SCHNELL.id, status=200, **kwargs)
        with pytest.raises(UpstreamError) as excinfo:
            prepare_image(run(ai, SCHNELL, {"prompt": "x"}), 8, 8)
        assert raised(excinfo) is UpstreamError
        assert excinfo.value.retryable

    def test_invalid_base64_is_rejected_not_decoded_leniently(self, rsps, ai):
        encoded = base64.b64encode(PNG).decode()
        rsps.post(AI_RUN + SCHNELL.id, json={"result": {"image": "*" + encoded}})
        with pytest.raises(UpstreamError, match="not valid base64"):
            run(ai, SCHNELL, {"prompt": "x"})


class TestWorkersAIErrors:
    """Cloudflare's error envelopes become the right error of ours."""

    @pytest.mark.parametrize("status, code, message, expected, our_code, retryable", [
        (400, 5006, "Type mismatch of '/width'", InvalidRequest, "upstream_validation_error",
         False),
        (400, 3030, "AiError: input rejected by safety filter", ContentPolicyViolation,
         "content_policy_violation", False),
        (400, 1000, "NSFW image detected", ContentPolicyViolation,
         "content_policy_violation", False),
        (400, 1000, "Output image was flagged", ContentPolicyViolation,
         "content_policy_violation", False),
        (401, 10000, "Authentication error", UpstreamMisconfigured, "upstream_auth_failed", False),
        (403, 10000, "Authentication error", UpstreamMisconfigured, "upstream_auth_failed", False),
        (404, 7003, "Could not route to /accounts/x/ai/run", UpstreamMisconfigured,
         "upstream_misconfigured", False),
        (500, 3043, "Internal server error", UpstreamError, "upstream_error", True),
        (502, None, "Bad gateway", UpstreamError, "upstream_error", True),
        (504, None, "Gateway timeout", UpstreamTimeout, "upstream_timeout", True),
        (408, 3007, "Request timeout", UpstreamTimeout, "upstream_timeout", True),
        (403, 5016, "User has not agreed to the model terms", UpstreamMisconfigured,
         "model_agreement_required", False),
        (403, 3023, "Service unavailable for account", UpstreamMisconfigured, "account_blocked",
         False),
        (404, 3042, "The model name is invalid", UpstreamMisconfigured, "model_unavailable",
         False),
        (400, 5007, "No such model @cf/x or task", UpstreamMisconfigured, "model_unavailable",
         False),
        (429, 3036, "You have used up your daily free allocation of 10,000 neurons",
         AllowanceExhausted, "insufficient_quota", False),
    ], ids=["5006", "3030", "nsfw-text", "flagged-text", "401", "403", "7003", "500", "502",
            "504", "408", "5016", "3023", "3042", "5007", "3036"])
    def test_envelope_errors_map(self, rsps, ai, status, code, message, expected, our_code,
                                 retryable):
        body = failure(code, message) if code else {"success": False, "errors": []}
        rsps.post(AI_RUN + SCHNELL.id, status=status, json=body)
        with pytest.raises(expected) as excinfo:
            ai.generate(SCHNELL, {"prompt": "x"})
        assert raised(excinfo) is expected
        assert excinfo.value.code == our_code
        assert excinfo.value.retryable is retryable
        assert len(rsps.calls) == 1  # none of these may be sent again: no double payment

    def test_daily_allowance_says_when_it_resets(self, rsps, ai):
        rsps.post(AI_RUN + SCHNELL.id, status=429, json=failure(3036, "daily allocation"))
        with pytest.raises(AllowanceExhausted) as excinfo:
            ai.generate(SCHNELL, {"prompt": "x"})
        assert abs(excinfo.value.retry_after - cloudflare.seconds_until_utc_midnight()) <= 2

    @pytest.mark.parametrize("code", [5016, 3023, 3042, 5007])
    def test_operator_problems_tell_the_operator(self, rsps, ai, code, caplog):
        rsps.post(AI_RUN + SCHNELL.id, status=400, json=failure(code, f"{TOKEN} problem"))
        with pytest.raises(UpstreamMisconfigured) as excinfo:
            ai.generate(SCHNELL, {"prompt": "x"})
        assert excinfo.value.param is None  # not the client's prompt
        assert "operator" in excinfo.value.message
        assert any(r.levelname == "ERROR" for r in caplog.records)

    def test_validation_error_carries_cloudflare_text(self, rsps, ai):
        rsps.post(AI_RUN + SCHNELL.id, status=400,
                  json=failure(5006, "Error: oneOf at '/' not met, 0 matches: required properties"))
        with pytest.raises(InvalidRequest) as excinfo:
            ai.generate(SCHNELL, {"prompt": "x"})
        assert "oneOf at '/' not met" in excinfo.value.message
        assert excinfo.value.status == 400

    def test_auth_failure_does_not_leak_the_token(self, rsps, ai):
        rsps.post(AI_RUN + SCHNELL.id, status=401,
                  json=failure(10000, f"Authentication error for Bearer {TOKEN}"))
        with pytest.raises(UpstreamMisconfigured) as excinfo:
            ai.generate(SCHNELL, {"prompt": "x"})
        assert TOKEN not in excinfo.value.message
        assert TOKEN not in str(excinfo.value)

    def test_429_is_rate_limited_after_retries_with_retry_after(self, rsps, ai):
        rsps.post(AI_RUN + SCHNELL.id, status=429, headers={"Retry-After": "0"},
                  json=failure(3040, "Capacity temporarily exceeded"))
        with pytest.raises(RateLimited) as excinfo:
            ai.generate(SCHNELL, {"prompt": "x"})
        assert excinfo.value.retry_after == 0
        assert excinfo.value.retryable
        assert len(rsps.calls) == 4  # first try + 3 retries

    def test_429_without_retry_after_has_none(self, rsps, ai):
        rsps.post(AI_RUN + SCHNELL.id, status=429)
        with pytest.raises(RateLimited) as excinfo:
            ai.generate(SCHNELL, {"prompt": "x"})
        assert excinfo.value.retry_after is None

    def test_retry_after_longer_than_the_deadline_is_answered_at_once(self, rsps, session):
        client = WorkersAIClient(upstream(session, timeout=2.0), api_base=API,
                                 account_id=ACCOUNT, api_token=TOKEN)
        rsps.post(AI_RUN + SCHNELL.id, status=429, headers={"Retry-After": "30"})
        with pytest.raises(RateLimited) as excinfo:
            client.generate(SCHNELL, {"prompt": "x"})
        assert excinfo.value.retry_after == 30 and len(rsps.calls) == 1

    def test_transient_503_is_retried_to_success(self, rsps, ai):
        rsps.post(AI_RUN + SCHNELL.id, status=503)
        rsps.post(AI_RUN + SCHNELL.id, json=envelope(JPEG))
        assert run(ai, SCHNELL, {"prompt": "x"}) == JPEG
        assert len(rsps.calls) == 2

    def test_error_without_envelope_reports_http_status(self, rsps, ai):
        rsps.post(AI_RUN + SCHNELL.id, status=400, body="bad", content_type="text/plain")
        with pytest.raises(InvalidRequest, match="HTTP 400"):
            ai.generate(SCHNELL, {"prompt": "x"})

    def test_read_timeout_is_upstream_timeout_and_not_repeated(self, rsps, ai):
        rsps.post(AI_RUN + SCHNELL.id, body=requests.ReadTimeout("timed out"))
        with pytest.raises(UpstreamTimeout) as excinfo:
            ai.generate(SCHNELL, {"prompt": "x"})
        assert excinfo.value.status == 504 and len(rsps.calls) == 1

    def test_connect_timeout_is_repeated_since_nothing_was_sent(self, rsps, ai):
        rsps.post(AI_RUN + SCHNELL.id, body=requests.ConnectTimeout("no route"))
        with pytest.raises(UpstreamError, match="could not be reached"):
            ai.generate(SCHNELL, {"prompt": "x"})
        assert len(rsps.calls) == 4

    def test_secrets_in_error_text_are_redacted(self, rsps, ai):
        echo = f"AiError: Bad input: got Bearer {TOKEN} on /accounts/{ACCOUNT}/ai/run for 'x'"
        rsps.post(AI_RUN + SCHNELL.id, status=400, json=failure(5006, echo))
        with pytest.raises(InvalidRequest) as excinfo:
            ai.generate(SCHNELL, {"prompt": "x"})
        assert TOKEN not in excinfo.value.message and ACCOUNT not in excinfo.value.message
        assert "[redacted]" in excinfo.value.message

    def test_connection_error_is_upstream_error_without_url(self, rsps, ai):
        rsps.post(AI_RUN + SCHNELL.id, body=requests.ConnectionError(f"cannot reach {AI_RUN}"))
        with pytest.raises(UpstreamError) as excinfo:
            ai.generate(SCHNELL, {"prompt": "x"})
        assert raised(excinfo) is UpstreamError
        assert ACCOUNT not in excinfo.value.message


# --------------------------------------------------------------------------- Workers KV


class TestKVPut:
    """PUT raw bytes to the url-quoted key with a TTL of at least 60 s."""

    @pytest.mark.parametrize("ttl, sent", [(10, "60"), (0, "60"), (60, "60"), (3600, "3600")])
    def test_put_sends_raw_bytes_with_ttl(self, rsps, kv, ttl, sent):
        rsps.put(KV_VALUES + "img-1", json={"success": True, "errors": [], "result": None})
        kv.put("img-1", PNG, ttl)

        request = rsps.calls[0].request
        assert request.url == f"{KV_VALUES}img-1?expiration_ttl={sent}"
        assert request.body == PNG
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert request.headers["Content-Type"] == "application/octet-stream"

    def test_key_is_url_quoted_including_slashes(self, rsps, kv):
        rsps.put(KV_VALUES + "a%2Fb%20c%3F%23", json={"success": True})
        kv.put("a/b c?#", b"v", 120)
        assert rsps.calls[0].request.path_url.startswith(
            f"/client/v4/accounts/{ACCOUNT}/storage/kv/namespaces/{NAMESPACE}/values/a%2Fb%20c%3F%23?")

    @pytest.mark.parametrize("status, body, expected", [
        (400, failure(10019, "Invalid expiration_ttl of 10"), UpstreamError),  # ours, not a 400
        (401, failure(10000, "Authentication error"), UpstreamMisconfigured),
        (404, failure(10013, "namespace not found"), UpstreamMisconfigured),
        (500, failure(10001, "Internal error"), UpstreamError),
    ], ids=["400", "401", "404-namespace", "500"])
    def test_put_failures(self, rsps, kv, status, body, expected):
        rsps.put(KV_VALUES + "k", status=status, json=body)
        with pytest.raises(expected) as excinfo:
            kv.put("k", b"v", 60)
        assert raised(excinfo) is expected

    def test_put_failure_message_carries_cloudflare_text(self, rsps, kv):
        rsps.put(KV_VALUES + "k", status=400, json=failure(10019, "Invalid expiration_ttl"))
        with pytest.raises(UpstreamError, match=r"rejected the request: Invalid expiration_ttl"):
            kv.put("k", b"v", 60)

    def test_put_is_retried_on_503(self, rsps, kv):
        rsps.put(KV_VALUES + "k", status=503)
        rsps.put(KV_VALUES + "k", json={"success": True})
        kv.put("k", b"v", 60)
        assert len(rsps.calls) == 2


class TestKVGet:
    """GET answers raw bytes; a missing key is None, a missing namespace an error."""

    def test_get_returns_raw_bytes(self, rsps, kv):
        rsps.get(KV_VALUES + "img%2F1", body=PNG, content_type="application/octet-stream")
        assert kv.get("img/1").data == PNG
        request = rsps.calls[0].request
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert request.body is None

    @pytest.mark.parametrize("kwargs", [
        {"json": failure(10009, "get: 'key not found'")},
        {"body": "Not Found", "content_type": "text/plain"},
    ], ids=["10009", "no-envelope"])
    def test_missing_key_is_none(self, rsps, kv, kwargs):
        rsps.get(KV_VALUES + "gone", status=404, **kwargs)
        assert kv.get("gone") is None

    @pytest.mark.parametrize("status, code, expected, our_code", [
        (404, 10013, UpstreamMisconfigured, "upstream_misconfigured"),
        (404, 7003, UpstreamMisconfigured, "upstream_misconfigured"),
        (401, 10000, UpstreamMisconfigured, "upstream_auth_failed"),
        (500, 10001, UpstreamError, "upstream_error"),
    ], ids=["bad-namespace", "bad-account", "auth", "500"])
    def test_get_failures(self, rsps, kv, status, code, expected, our_code):
        rsps.get(KV_VALUES + "k", status=status, json=failure(code, "nope"))
        with pytest.raises(expected) as excinfo:
            kv.get("k")
        assert raised(excinfo) is expected
        assert excinfo.value.code == our_code

    def test_get_reads_the_expiration_header(self, rsps, kv):
        rsps.get(KV_VALUES + "k", body=PNG, headers={"expiration": "1900000000"})
        assert kv.get("k").expires_at == 1900000000

    @pytest.mark.parametrize("status", [500, 502, 504])
    def test_get_is_repeated_after_a_broken_answer(self, rsps, kv, status):
        rsps.get(KV_VALUES + "k", status=status)
        rsps.get(KV_VALUES + "k", body=PNG)
        assert kv.get("k").data == PNG and len(rsps.calls) == 2

    def test_get_429_is_retried_then_rate_limited(self, rsps, kv):
        rsps.get(KV_VALUES + "k", status=429, headers={"Retry-After": "0"})
        with pytest.raises(RateLimited):
            kv.get("k")
        assert len(rsps.calls) == 4

    def test_get_429_waiting_past_the_deadline_is_answered_at_once(self, rsps, session):
        kv = KVClient(upstream(session, timeout=2.0), api_base=API, account_id=ACCOUNT,
                      namespace_id=NAMESPACE, api_token=TOKEN)
        rsps.get(KV_VALUES + "k", status=429, headers={"Retry-After": "7"})
        with pytest.raises(RateLimited) as excinfo:
            kv.get("k")
        assert excinfo.value.retry_after == 7 and len(rsps.calls) == 1

    def test_get_timeout(self, rsps, kv):
        rsps.get(KV_VALUES + "k", body=requests.ReadTimeout("slow"))
        with pytest.raises(UpstreamTimeout):
            kv.get("k")


# --------------------------------------------------------------------------- optimizer


def chat_answer(content) -> dict:
    return {"id": "c1", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}]}


def optimizer(session, base: str = LLM, **kwargs) -> PromptOptimizer:
    return PromptOptimizer(upstream(session), api_base=base, model="gpt-4o-mini",
                           api_key=kwargs.pop("api_key", "sk-ext"), **kwargs)


class TestOptimizerRequest:
    """One chat completion to {base}/v1/chat/completions with the prompt and size."""

    @pytest.mark.parametrize("base", [LLM, LLM + "/", LLM + "/v1", LLM + "/v1/"])
    def test_url_has_exactly_one_v1(self, rsps, session, base):
        rsps.post(LLM_URL, json=chat_answer("better"))
        assert optimizer(session, base).optimize("cat", 512, 512) == "better"
        assert rsps.calls[0].request.url == LLM_URL

    def test_body_and_auth(self, rsps, session):
        rsps.post(LLM_URL, json=chat_answer("  A tabby cat on a windowsill, golden light  "))
        text = optimizer(session).optimize("un chat", 1024, 768)

        assert text == "A tabby cat on a windowsill, golden light"
        request = rsps.calls[0].request
        assert request.headers["Authorization"] == "Bearer sk-ext"
        body = json.loads(request.body)
        assert body["model"] == "gpt-4o-mini"
        assert body["stream"] is False
        system, user = body["messages"]
        assert system == {"role": "system", "content": DEFAULT_SYSTEM_MESSAGE}
        assert user["role"] == "user"
        assert "un chat" in user["content"] and "1024x768" in user["content"]

    def test_custom_system_message_and_no_key(self, rsps, session):
        rsps.post(LLM_URL, json=chat_answer("ok"))
        optimizer(session, api_key="", system_message="Be brief.").optimize("x", 256, 256)
        request = rsps.calls[0].request
        assert "Authorization" not in request.headers
        assert json.loads(request.body)["messages"][0]["content"] == "Be brief."

    def test_surrounding_quotes_are_removed(self, rsps, session):
        rsps.post(LLM_URL, json=chat_answer('"A misty forest at dawn"\n'))
        assert optimizer(session).optimize("forest", 512, 512) == "A misty forest at dawn"

    def test_trailing_quoted_text_is_kept(self, rsps, session):
        rsps.post(LLM_URL, json=chat_answer('A neon sign that reads "OPEN"'))
        assert optimizer(session).optimize("sign", 512, 512) == 'A neon sign that reads "OPEN"'


class TestOptimizerFailures:
    """Every failure is an UpstreamError (callers fall back to the original prompt)."""

    @pytest.mark.parametrize("kwargs", [
        {"status": 500, "json": {"error": "boom"}},
        {"status": 401, "json": {"error": {"message": "bad key"}}},
        {"status": 429, "json": {}},
        {"status": 200, "body": "not json", "content_type": "application/json"},
        {"status": 200, "json": {"choices": []}},
        {"status": 200, "json": {"object": "error"}},
        {"status": 200, "json": {"choices": [{"message": None}]}},
        {"status": 200, "json": chat_answer(None)},
        {"status": 200, "json": chat_answer("   ")},
        {"status": 200, "json": chat_answer(["a", "list"])},
    ], ids=["500", "401", "429", "not-json", "no-choices", "no-choices-key", "null-message",
            "null-content", "blank", "list-content"])
    def test_failures_raise_upstream_error(self, rsps, session, kwargs):
        rsps.post(LLM_URL, **kwargs)
        with pytest.raises(UpstreamError) as excinfo:
            optimizer(session).optimize("x", 512, 512)
        assert raised(excinfo) is UpstreamError

    def test_timeout_is_upstream_timeout(self, rsps, session):
        rsps.post(LLM_URL, body=requests.ReadTimeout("slow"))
        with pytest.raises(UpstreamTimeout):
            optimizer(session).optimize("x", 512, 512)

    def test_only_quotes_is_an_empty_prompt(self, rsps, session):
        rsps.post(LLM_URL, json=chat_answer('""'))
        with pytest.raises(UpstreamError):
            optimizer(session).optimize("x", 512, 512)


# --------------------------------------------------------------------------- cloudflare.py


def answer(status: int, body: object = None, headers: dict | None = None) -> Answer:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Answer(status, requests.structures.CaseInsensitiveDict(headers or {}), data)


class TestEnvelopeErrors:
    """envelope_errors tolerates anything, keeps only int codes, and redacts."""

    @pytest.mark.parametrize("body, expected", [
        (failure(5006, "bad"), [(5006, "bad")]),
        ({"errors": [{"code": "x", "message": "m"}, "junk", {"code": 7}]}, [(None, "m"), (7, "")]),
        ({"errors": [{"code": True, "message": "m"}]}, [(None, "m")]),
        ({"errors": None}, []),
        ([1, 2], []),
        (b"<html>", []),
        (b"\xff\xfe", []),
    ], ids=["envelope", "odd-items", "bool-code", "null", "list", "not-json", "not-utf8"])
    def test_parsing(self, body, expected):
        assert cloudflare.envelope_errors(answer(400, body), Redactor()) == expected

    def test_messages_are_redacted_and_repaired(self):
        body = failure(5006, f"token {TOKEN} \ud800")
        ((_, text),) = cloudflare.envelope_errors(answer(400, body), Redactor([TOKEN]))
        assert TOKEN not in text and "\ufffd" in text
        text.encode("utf-8")

    @pytest.mark.parametrize("value, expected", [("12", 12), (" 5 ", 5), ("", None),
                                                 ("Wed, 21 Oct 2015 07:28:00 GMT", None),
                                                 ("9" * 40, 86400), ("100000", 86400)])
    def test_retry_after_seconds(self, value, expected):
        headers = {"Retry-After": value} if value else {}
        assert cloudflare.retry_after_seconds(answer(429, {}, headers)) == expected


class TestErrorTable:
    """error_for: a code wins over the status; what may be sent again."""

    @pytest.mark.parametrize("status, body, expected, resend", [
        (401, b"", UpstreamMisconfigured, "never"),
        (403, failure(9109, "Unauthorized to access requested resource"), UpstreamMisconfigured,
         "never"),
        (404, failure(10013, "namespace"), UpstreamMisconfigured, "never"),
        (429, b"", RateLimited, "always"),
        (429, failure(3040, "Capacity temporarily exceeded"), RateLimited, "always"),
        (429, failure(3036, "daily"), AllowanceExhausted, "never"),
        (503, b"<html>", UpstreamError, "always"),
        (502, b"<html>", UpstreamError, "if_idempotent"),
        (520, b"<html>", UpstreamError, "if_idempotent"),
        (524, b"<html>", UpstreamTimeout, "if_idempotent"),
        (408, b"", UpstreamTimeout, "if_idempotent"),
        (400, failure(5006, "bad"), InvalidRequest, "never"),
    ])
    def test_meaning(self, status, body, expected, resend):
        error = cloudflare.error_for(answer(status, body), "Svc", Redactor())
        assert type(error) is expected and error.resend.value == resend

    def test_html_pages_never_reach_the_message(self):
        page = b"<!DOCTYPE html><title>api.cloudflare.com | 502: Bad gateway</title>"
        error = cloudflare.error_for(answer(502, page), "Svc", Redactor())
        assert "<" not in error.message and error.message == "Svc failed (HTTP 502)."

    def test_a_refused_request_of_ours_is_not_the_clients_fault(self):
        error = cloudflare.error_for(answer(400, failure(10019, "ttl")), "KV", Redactor(),
                                     client_input=False)
        assert type(error) is UpstreamError and error.status == 502

    @pytest.mark.parametrize("now, expected", [
        ("2026-11-23T23:59:30+00:00", 31), ("2026-11-23T00:00:00+00:00", 86401),
        ("2026-11-23T12:00:00+00:00", 43201)])
    def test_seconds_until_utc_midnight(self, now, expected):
        import datetime
        moment = datetime.datetime.fromisoformat(now)
        assert cloudflare.seconds_until_utc_midnight(moment.timestamp()) == expected
