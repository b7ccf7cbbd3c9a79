"""The Portrait page in Debian's Chromium (Playwright): the missing-models sentence is there when
the page loads, in English and in Chinese; with "go on without face-keeping" a photo becomes
styled variants; the page asks nothing of any other origin. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from samples import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

from webui.i18n import catalogue

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed"),
]

playwright_api = pytest.importorskip("playwright.sync_api")
TIMEOUT = 60_000
FACE = Path(__file__).resolve().parents[1] / "data" / "astronaut-256.png"
NOTE = "portrait_needs_face_adapter_sd1"


@pytest.fixture(scope="module")
def page(personal_server):
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = chromium.new_context(locale="en-GB", viewport={"width": 1280, "height": 1000})
        tab = context.new_page()
        tab.set_default_timeout(TIMEOUT)
        foreign: list[str] = []
        origin = personal_server.url

        def seen(request) -> None:
            if not request.url.startswith(("data:", "blob:", origin)):
                foreign.append(request.url)

        tab.on("request", seen)
        yield tab, foreign
        context.close()
        chromium.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def open_portrait(page, url: str, tab_name: str) -> None:
    page.goto(url)
    page.get_by_role("tab", name=tab_name).click()


def test_the_missing_models_sentence_is_there_at_page_load_in_both_languages(page, personal_server):
    tab, _ = page
    open_portrait(tab, personal_server.url + "/?lang=en", "Portrait")
    note = tab.locator("#portrait-missing")
    note.filter(has_text="ip-adapter-plus-face_sd15.safetensors").wait_for()
    assert "IP-Adapter Plus-Face" in note.inner_text()
    # the pose sentence shows only once "keep the pose" is switched on
    pose = tab.locator("#portrait-pose-note")
    assert "Canny" not in pose.inner_text()
    tab.locator("#portrait-keep-pose input[type=checkbox]").check()
    pose.filter(has_text="Canny or ControlNet-Union").wait_for()
    shot(tab, "21-portrait-missing-en")
    open_portrait(tab, personal_server.url + "/?lang=zh", "人像")
    zh = catalogue("zh")["errors"][NOTE]
    tab.locator("#portrait-missing").filter(has_text=zh[:12]).wait_for()
    shot(tab, "22-portrait-missing-zh")


def test_a_photo_becomes_styled_variants_without_face_keeping(page, personal_server):
    tab, _ = page
    open_portrait(tab, personal_server.url + "/?lang=en", "Portrait")
    tab.locator("#portrait-photo input[type=file]").set_input_files(str(FACE))
    tab.locator("#portrait-photo img").first.wait_for()
    tab.locator("#portrait-without-face input[type=checkbox]").check()
    tab.click("#portrait-go")
    panel = tab.locator("#tab-portrait")
    tab.wait_for_function(
        "() => document.querySelectorAll(\"#tab-portrait #result img[src^='data:image/png']\")"
        ".length >= 4", timeout=TIMEOUT * 3)
    assert re.search(r"seed", panel.locator("#status").inner_text())
    shot(tab, "23-portrait-variants")


def test_the_page_asked_nothing_of_any_other_origin(page):
    _, foreign = page
    assert foreign == []
