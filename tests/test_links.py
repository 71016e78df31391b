"""Image links for server-side callers: internal-looking origins are logged
once and shown on the status page while PUBLIC_BASE_URL is unset."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from conftest import AUTH
from flux_worker.links import looks_internal
from test_routes import image_url

CAT = {"messages": [{"role": "user", "content": "A cute cat"}]}


@pytest.mark.parametrize("origin", [
    "http://flux-internal:8000", "http://localhost:8000", "http://127.0.0.1:8000",
    "http://10.0.0.5", "http://192.168.1.20:8000", "http://172.17.0.2:8000", "http://[::1]:8000",
    "http://[fd00::5]", "http://flux.internal", "http://printer.local", "http://flux.svc",
    "http://flux.default.svc.cluster.local:8000", "http://169.254.1.1"])
def test_internal_origins(origin):
    assert looks_internal(origin)


@pytest.mark.parametrize("origin", ["https://flux.example.com", "http://8.8.8.8:8000",
                                    "https://images.example.co.uk:8443", "http://[2606:4700::1]"])
def test_public_origins(origin):
    assert not looks_internal(origin)


def test_a_server_side_caller_gets_internal_links_and_a_warning_once(client, caplog):
    caplog.set_level(logging.WARNING, logger="flux_worker.links")
    for _ in range(2):
        content = client.post("/v1/chat/completions", headers=AUTH, json=CAT,
                              base_url="http://flux-internal:8000").json[
            "choices"][0]["message"]["content"]
        assert image_url(content).startswith("http://flux-internal:8000/image/")
    warnings = [r.getMessage() for r in caplog.records if r.name == "flux_worker.links"]
    assert len(warnings) == 1 and "http://flux-internal:8000" in warnings[0]
    assert "PUBLIC_BASE_URL" in warnings[0]
    # The operator opens the (public) status page from outside: it counts, the log names.
    page = client.get("/", base_url="https://flux.example.com").get_data(as_text=True)
    assert 'id="link-warning"' in page and "from 1 internal-looking" in page
    assert "flux-internal" not in page


def test_a_client_rotating_host_names_cannot_flood_the_log(client, caplog):
    caplog.set_level(logging.WARNING, logger="flux_worker.links")
    for number in range(20):
        client.post("/v1/chat/completions", headers={**AUTH, "X-Forwarded-Host": f"h{number}"},
                    json=CAT)
    assert len([r for r in caplog.records if r.name == "flux_worker.links"]) == 8


def test_side_requests_build_no_link_and_warn_nothing(client, caplog):
    caplog.set_level(logging.WARNING, logger="flux_worker.links")
    client.post("/v1/chat/completions", headers=AUTH, base_url="http://flux-internal:8000",
                json={"messages": [{"role": "user", "content": "Please generate a four to five "
                                    "word title summarizing our conversation"}]})
    assert not [r for r in caplog.records if r.name == "flux_worker.links"]


def test_the_status_page_warns_about_its_own_internal_host(client):
    page = client.get("/", base_url="http://192.168.1.20:8000").get_data(as_text=True)
    assert 'id="link-warning"' in page and "<code>http://192.168.1.20:8000</code>" in page


def test_no_warning_from_a_public_host(client):
    page = client.get("/", base_url="https://flux.example.com").get_data(as_text=True)
    assert 'id="link-warning"' not in page


def test_public_base_url_silences_it_and_wins(make_app, caplog):
    caplog.set_level(logging.WARNING, logger="flux_worker.links")
    client = make_app(public_base_url="https://flux.example.com").test_client()
    content = client.post("/v1/chat/completions", headers=AUTH, json=CAT,
                          base_url="http://flux-internal:8000").json[
        "choices"][0]["message"]["content"]
    assert image_url(content).startswith("https://flux.example.com/image/")
    page = client.get("/", base_url="http://flux-internal:8000").get_data(as_text=True)
    assert 'id="link-warning"' not in page and "(PUBLIC_BASE_URL)" in page
    assert not [r for r in caplog.records if r.name == "flux_worker.links"]


def test_readme_says_when_to_set_public_base_url():
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Links for server-side callers"):]
    section = section[:section.index("\n## ")]
    assert all(name in section for name in ("Open WebUI", "LiteLLM", "PUBLIC_BASE_URL"))
