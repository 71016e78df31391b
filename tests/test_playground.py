"""The playground at / in a real browser (Playwright + Debian's Chromium), against
the app under gunicorn and the fake Cloudflare.

Set UPDATE_SCREENSHOT=1 to rewrite docs/playground.png.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import fake_cloudflare
from harness import API_KEY, ROOT, Gunicorn, gunicorn_env

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the browser tests are optional where playwright is missing
    pytest.skip("playwright is not installed", allow_module_level=True)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    pytest.skip("no chromium executable on PATH", allow_module_level=True)

SCREENSHOT = ROOT / "docs" / "playground.png"
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def server(fake_server, tmp_path_factory):
    """A gunicorn of our own; short retry backoff so failure tests stay quick."""
    tmp = tmp_path_factory.mktemp("playground")
    app = Gunicorn(gunicorn_env(fake_server, tmp, RETRY_BACKOFF_SECONDS="0.01"), tmp)
    yield app
    app.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--disable-gpu",
                                           "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server, fake):
    """A fresh browser context (empty localStorage) on the playground, recording
    console errors and CSP violations."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    # Init scripts run through the DevTools protocol, so the page's CSP does not block them.
    context.add_init_script(
        "window.__csp = [];"
        "document.addEventListener('securitypolicyviolation',"
        " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))
    page.goto(server.url + "/")
    yield page
    context.close()


def fill_form(page, key: str, prompt: str, ratio: str = "1:1") -> None:
    page.fill("#api-key", key)
    page.fill("#prompt", prompt)
    page.select_option("#ratio", ratio)


def wait_for_image(page) -> dict:
    page.wait_for_function(
        "() => { const i = document.getElementById('result-image');"
        " return i.complete && i.naturalWidth > 0 && !document.getElementById('result').hidden; }")
    return page.eval_on_selector("#result-image",
                                 "i => ({w: i.naturalWidth, h: i.naturalHeight, alt: i.alt})")


def test_streamed_generation_shows_progress_then_image(page, fake):
    fake.latency = 1.5  # Workers AI is slow, so progress must come first
    fill_form(page, API_KEY, "A lighthouse", "16:9")
    page.click("#generate")
    expect(page.locator("#progress")).to_contain_text("1024x576", timeout=5_000)
    # The progress arrived while Workers AI was still working: no image yet.
    assert page.locator("#result").is_hidden()
    assert "A lighthouse" in page.text_content("#progress")

    size = wait_for_image(page)
    assert (size["w"], size["h"]) == (1024, 576)
    assert "A lighthouse" in size["alt"]
    href = page.get_attribute("#download", "href")
    assert "/image/" in href and page.get_attribute("#download", "download") is not None
    assert page.get_attribute("#result-image", "src") == href
    recent = page.locator("#recent li")
    expect(recent).to_have_count(1)
    expect(recent.first).to_contain_text("A lighthouse")
    expect(recent.first).to_contain_text("expires in")
    assert page.locator("#error").is_hidden()


def test_non_stream_generation_with_a_custom_ratio(page, fake):
    fill_form(page, API_KEY, "A tall tower", "custom")
    expect(page.locator("#custom-ratio")).to_be_visible()
    page.fill("#custom-ratio", "1:2")
    page.uncheck("#stream")
    page.click("#generate")
    size = wait_for_image(page)
    assert size["h"] == 2 * size["w"]
    (call,) = fake.calls_to("ai")
    assert call.json["prompt"] == "A tall tower"  # the ratio was taken out of the prompt
    assert "/image/" in page.get_attribute("#download", "href")


def test_an_uploaded_picture_is_edited_then_the_result_refined(page, fake, tmp_path):
    from PIL import Image
    upload = tmp_path / "red.png"
    Image.new("RGB", (600, 300), (220, 20, 20)).save(upload)
    page.fill("#api-key", API_KEY)
    page.set_input_files("#picture", str(upload))
    expect(page.locator("#picture-chosen")).to_be_visible()
    assert page.input_value("#ratio") == "auto"  # the picture's own shape
    page.fill("#prompt", "make it blue")
    page.click("#generate")
    size = wait_for_image(page)
    assert (size["w"], size["h"]) == (1024, 512)  # 2:1, as the picture
    (call,) = fake.calls_to("ai")
    sent = fake_cloudflare.input_pictures(call)
    assert len(sent) == 1 and sent[0].getpixel((5, 5))[0] > 200  # the red upload
    assert call.form["prompt"] == "make it blue"
    expect(page.locator("#progress")).to_contain_text("Changing the picture you attached")

    first = page.get_attribute("#result-image", "src")
    page.click("#edit-result")  # refine the result: our own link, read from the store
    assert page.get_attribute("#picture-preview", "src") == first
    page.fill("#prompt", "add a hat")
    page.click("#generate")
    expect(page.locator("#progress")).to_contain_text("Changing the picture at " + first)
    page.wait_for_function(f"() => document.getElementById('result-image').src !== {first!r}")
    wait_for_image(page)
    assert len(fake.calls_to("ai")) == 2
    assert len(fake_cloudflare.input_pictures(fake.calls_to("ai")[1])) == 1
    page.click("#picture-clear")
    assert page.locator("#picture-chosen").is_hidden()
    assert page.console_errors == []


def test_wrong_key_shows_a_readable_error(page):
    fill_form(page, "not-the-key", "A lighthouse")
    page.click("#generate")
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("API key")
    assert '{"error"' not in error.text_content()
    assert page.get_attribute("#error", "role") == "alert"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_workers_ai_failure_shows_a_readable_error(page, fake, stream):
    """Streamed, the failure is an error event after the headers; otherwise an HTTP 502."""
    fake.inject("ai", *[fake_cloudflare.status(500)] * 4)
    fill_form(page, API_KEY, "A lighthouse")
    page.set_checked("#stream", stream)
    page.click("#generate")
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("Workers AI failed")
    assert '{"error"' not in error.text_content()
    assert page.locator("#result").is_hidden()


def test_network_failure_shows_a_readable_error(page):
    page.route("**/v1/chat/completions", lambda route: route.abort("internetdisconnected"))
    fill_form(page, API_KEY, "A lighthouse")
    page.click("#generate")
    expect(page.locator("#error")).to_contain_text("Could not reach the server")
    expect(page.locator("#generate")).to_be_enabled()  # ready to try again


def test_page_is_clean_under_csp_and_keeps_the_key(page, server):
    expect(page.locator("#status")).to_contain_text("flux-1-schnell")
    expect(page.locator("#status")).to_contain_text("embedded SQLite")
    assert page.get_attribute("#app", "data-image-expiration") == "1800"
    # Every control has a label.
    for control in ("api-key", "prompt", "ratio", "custom-ratio", "model", "stream"):
        assert page.locator(f"label[for='{control}']").count() == 1, control
    assert page.get_attribute("#api-key", "type") == "password"

    page.fill("#api-key", API_KEY)
    # The model list is refilled from /v1/models once the key is known.
    page.wait_for_function("() => document.querySelectorAll('#model option').length > 1")
    page.reload()
    assert page.input_value("#api-key") == API_KEY
    assert page.evaluate("localStorage.getItem('flux-worker.apiKey')") == API_KEY
    page.wait_for_function("() => document.querySelectorAll('#model option').length > 1")
    assert page.evaluate("window.__csp") == []
    assert page.console_errors == []


def test_recent_images_show_time_left(page, server):
    """Entries from earlier visits come back, with their time to expiry."""
    page.evaluate("""() => {
        const now = Date.now();
        localStorage.setItem('flux-worker.recent', JSON.stringify([
            {url: '/image/aaaaaaaaaaaaaaaaaaaaaa', prompt: 'fresh', created: now - 6 * 60000},
            {url: '/image/bbbbbbbbbbbbbbbbbbbbbb', prompt: 'old', created: now - 31 * 60000}]));
    }""")
    page.reload()
    items = page.locator("#recent li")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_contain_text("expires in 24 min")
    expect(items.nth(1)).to_contain_text("expired")


def test_phone_width_has_no_sideways_scroll_and_works_by_keyboard(page):
    page.set_viewport_size({"width": 360, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    # Keyboard only: type into the fields, then Ctrl+Enter in the prompt submits.
    page.focus("#api-key")
    page.keyboard.type("not-the-key")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "prompt"
    page.keyboard.type("A lighthouse")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#error")).to_contain_text("API key")


@pytest.mark.skipif(os.environ.get("UPDATE_SCREENSHOT") != "1",
                    reason="set UPDATE_SCREENSHOT=1 to rewrite docs/playground.png")
def test_screenshot(page):
    fill_form(page, API_KEY, "A lighthouse on a cliff at dusk", "16:9")
    page.click("#generate")
    wait_for_image(page)
    page.mouse.move(0, 0)  # no hover effects in the picture
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))  # the 1280x900 viewport
    assert Path(SCREENSHOT).stat().st_size > 0
