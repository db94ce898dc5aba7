"""The web page in Debian's headless Chromium, driven through its own controls as a person
would, against a real server with the built-in model: behind TLS and a token, zero-shot
ranking of real photos, search over a folder's worth of them, errors in plain words, a
phone-sized screen, and images dropped onto the page."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from clipserve.server.app import RunningServer, loopback_config, running_server
from tests.web.conftest import PHOTO_CAPTIONS

pytestmark = pytest.mark.browser
TOKEN = "open sesame 42"
TIMEOUT_MS = 120_000  # a failsafe on a busy machine: every wait is on the page's own state


@pytest.fixture(scope="module")
def secured_server(builtin_model, tls_pair) -> Iterator[RunningServer]:
    config = loopback_config(
        model="builtin", tls_cert=str(tls_pair.cert), tls_key=str(tls_pair.key),
        auth_token=TOKEN, protocols=("http", "websocket"),
    )  # fmt: skip
    with running_server(config, model=builtin_model) as server:
        yield server


@pytest.fixture
def page(chromium) -> Iterator[object]:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    viewport = {"width": 1280, "height": 900}
    context = chromium.new_context(ignore_https_errors=True, viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.errors = errors  # type: ignore[attr-defined]
    yield page
    context.close()


def choose_files(page, button_text: str, files: list[Path]) -> None:
    """Click the button that opens the file chooser, and pick ``files`` in it."""
    with page.expect_file_chooser() as chooser:
        page.get_by_text(button_text, exact=True).click()
    chooser.value.set_files([str(f) for f in files])


def test_zero_shot_and_search_behind_tls_and_a_token(secured_server, page, photo_files, artifacts):
    from playwright.sync_api import expect

    seen_urls: list[str] = []
    page.on("request", lambda request: seen_urls.append(request.url))
    page.on("websocket", lambda socket: seen_urls.append(socket.url))
    status = page.locator("#status")
    page.goto(f"https://127.0.0.1:{secured_server.http_port}/")

    # a token is asked for; a wrong one is refused in plain words, the right one works
    expect(page.get_by_text("This server needs a token.")).to_be_visible()
    token = page.get_by_label("Token")
    token.fill("not the token")
    page.get_by_role("button", name="Connect").click()
    expect(status).to_have_text("The server refused the token. Check it and connect again.")
    token.fill(TOKEN)
    token.press("Enter")
    expect(status).to_contain_text("Connected to builtin")
    expect(page.locator('[data-fact="model"]')).to_have_text(secured_server.model.name)
    expect(page.locator('[data-fact="dim"]')).to_have_text(str(secured_server.model.dim))
    expect(page.locator('[data-fact="connection"]')).to_have_text("WebSocket, TLS")

    # zero-shot: captions typed, photos chosen; the right caption ranks first for each
    captions = [*PHOTO_CAPTIONS.values(), "a photo of a dog", "a bowl of soup"]
    page.get_by_label("Captions, one per line").fill("\n".join(captions))
    choose_files(page, "Choose images", [photo_files[name] for name in PHOTO_CAPTIONS])
    zeroshot = page.locator("#zeroshot-status")
    expect(zeroshot).to_have_text(f"Ranked {len(captions)} captions for 4 images.")
    for name, caption in PHOTO_CAPTIONS.items():
        ranking = page.locator(f'#zeroshot-results [data-image="{name}"] .ranking li')
        expect(ranking).to_have_count(len(captions))
        expect(ranking.first).to_have_attribute("data-caption", caption)
    heatmap = page.get_by_role("region", name=re.compile("^Heat map"))
    expect(heatmap.locator("tbody tr")).to_have_count(4)
    expect(heatmap.locator("tbody td")).to_have_count(4 * len(captions))
    expect(heatmap.locator("td.best")).to_have_count(4)

    # the keyboard path: edit the captions (fewer, other order), Ctrl+Enter ranks again
    page.get_by_label("Captions, one per line").fill("\n".join(reversed(captions[:5])))
    page.get_by_label("Captions, one per line").press("Control+Enter")
    expect(zeroshot).to_have_text("Ranked 5 captions for 4 images.")
    for name, caption in PHOTO_CAPTIONS.items():
        first = page.locator(f'#zeroshot-results [data-image="{name}"] .ranking li').first
        expect(first).to_have_attribute("data-caption", caption)

    # search: six files (one broken) embedded once with a progress bar; queries sort them
    choose_files(page, "Add images", list(photo_files.values()))
    expect(page.locator("#index-count")).to_have_text("5 of 6 images embedded, 1 could not be read")
    expect(page.get_by_label("Embedded")).to_have_js_property("value", 6)
    query = page.get_by_label("Search query")
    results = page.locator("#search-results li")
    for text, best in [
        ("a photo of a cat", "chelsea.jpg"),
        ("a rocket launch", "rocket.jpg"),
        ("a cup of coffee", "coffee.jpg"),
        ("an astronaut in a space suit", "astronaut.png"),
    ]:
        query.fill(text)
        expect(page.locator("#search-status")).to_contain_text(f"for “{text}”")
        expect(results).to_have_count(5)
        expect(results.first).to_have_attribute("data-image", best)
        scores = results.evaluate_all("items => items.map(i => Number(i.dataset.score))")
        assert scores == sorted(scores, reverse=True)
    page.screenshot(path=str(artifacts / "page-desktop.png"), full_page=True)

    # a phone-sized screen: nothing wider than the screen, still usable
    page.set_viewport_size({"width": 390, "height": 844})
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone screen"
    page.screenshot(path=str(artifacts / "page-phone.png"), full_page=True)

    # the token was never put in a URL; every control has a label; no script errors
    assert seen_urls and not [u for u in seen_urls if "sesame" in u or "open%20" in u]
    unlabeled = page.evaluate(
        """[...document.querySelectorAll('input, textarea, button, select')]
             .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                          && !e.textContent.trim())
             .map(e => e.outerHTML)"""
    )
    assert unlabeled == []
    assert page.errors == []  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def open_server(builtin_model) -> Iterator[RunningServer]:
    config = loopback_config(model="builtin", protocols=("http",))
    with running_server(config, model=builtin_model) as server:
        yield server


def test_images_dropped_on_an_open_server_over_http(open_server, page, photo_files, artifacts):
    """No token needed: the page connects by itself, over HTTP when WebSocket is not
    served; images dropped on the zone are ranked like chosen ones."""
    from playwright.sync_api import expect

    page.goto(f"http://127.0.0.1:{open_server.http_port}/")
    expect(page.locator("#status")).to_contain_text("Connected to builtin")
    expect(page.get_by_label("Token")).to_be_hidden()
    expect(page.locator('[data-fact="token"]')).to_have_text("not needed")
    expect(page.locator('[data-fact="connection"]')).to_have_text("HTTP")
    names = ["chelsea.jpg", "coffee.jpg"]
    encoded = {n: base64.b64encode(photo_files[n].read_bytes()).decode() for n in names}
    files = [{"name": n, "type": "image/jpeg", "data": data} for n, data in encoded.items()]
    transfer = page.evaluate_handle(
        """files => {
            const transfer = new DataTransfer();
            for (const f of files) {
              const bytes = Uint8Array.from(atob(f.data), c => c.charCodeAt(0));
              transfer.items.add(new File([bytes], f.name, {type: f.type}));
            }
            return transfer;
        }""",
        files,
    )
    page.get_by_label("Captions, one per line").fill("a cup of coffee\na photo of a cat")
    page.locator("#zeroshot-drop").dispatch_event("drop", {"dataTransfer": transfer})
    expect(page.locator("#zeroshot-status")).to_have_text("Ranked 2 captions for 2 images.")
    for name, caption in [("chelsea.jpg", "a photo of a cat"), ("coffee.jpg", "a cup of coffee")]:
        first = page.locator(f'#zeroshot-results [data-image="{name}"] .ranking li').first
        expect(first).to_have_attribute("data-caption", caption)
    assert page.errors == []  # type: ignore[attr-defined]


def test_clipserve_js_in_the_browser_with_shrunk_images(secured_server, page, photo_files):
    """The module as a JavaScript developer imports it from the server, in Chromium: both
    transports with the token, and ``imageMaxSide`` shrinking a photo before it is sent
    (a smaller upload, nearly the same embedding)."""
    page.goto(f"https://127.0.0.1:{secured_server.http_port}/")
    photo = base64.b64encode(photo_files["chelsea.jpg"].read_bytes()).decode()
    outcome = page.evaluate(
        """async ({token, photo}) => {
            const js = await import('/static/clipserve.js');
            const bytes = Uint8Array.from(atob(photo), c => c.charCodeAt(0));
            const file = new File([bytes], 'chelsea.jpg', {type: 'image/jpeg'});
            const sent = [];
            const fetch = (url, init = {}) => {
              if (init.method === 'POST') sent.push(init.body.byteLength);
              return globalThis.fetch(url, init);
            };
            const origin = window.location.origin;
            const http = new js.Client(origin, {token, fetch});
            const small = new js.Client(origin, {token, fetch, imageMaxSide: 128});
            const ws = new js.Client(origin.replace('https:', 'wss:'), {token});
            const [full] = await http.encode([file]);
            const [shrunk] = await small.encode([file]);
            const [overWs, text] = await ws.encode([file, 'a photo of a cat']);
            ws.close();
            return {
              sent, dim: full.length, canShrink: js.canShrinkImages(),
              fullVsShrunk: js.cosine(full, shrunk), httpVsWs: js.cosine(full, overWs),
              textVsImage: js.cosine(text, full),
            };
        }""",
        {"token": TOKEN, "photo": photo},
    )
    assert outcome["canShrink"] and outcome["dim"] == secured_server.model.dim
    original = photo_files["chelsea.jpg"].stat().st_size
    full_request, shrunk_request = outcome["sent"]
    assert full_request > original > shrunk_request * 3, outcome["sent"]
    assert outcome["httpVsWs"] > 0.99999
    assert 0.9 < outcome["fullVsShrunk"] < 0.99999, outcome  # shrunk, yet the same picture
    assert outcome["textVsImage"] > 0.5
    assert page.errors == []  # type: ignore[attr-defined]
