"""The real UI in Debian's Chromium, driven by Playwright: register with an invite, log in,
paint from text, paint from a photo, cancel, switch language, delete a picture; screenshots go
to tests/artifacts/. The page must ask nothing of any other origin and break no CSP rule."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

import pytest
from samples import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, PASSWORD, tiny_photo

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed"),
]

playwright_api = pytest.importorskip("playwright.sync_api")
TIMEOUT = 60_000


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Watch:
    """Every request the page makes and every console complaint about the CSP."""

    def __init__(self, page, origin: str) -> None:
        self.origin = origin
        self.foreign: list[str] = []
        self.csp: list[str] = []
        page.on("request", self._request)
        page.on("console", self._console)

    def _request(self, request) -> None:
        url = request.url
        if url.startswith(("data:", "blob:")):
            return
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            self.foreign.append(url)

    def _console(self, message) -> None:
        if "Content Security Policy" in message.text:
            self.csp.append(message.text)


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def result_images(page) -> int:
    return page.locator("#result img[src^='data:image/png']").count()


def wait_for_result(page, before: int = 0) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll(\"#result img[src^='data:image/png']\").length > n",
        arg=before, timeout=TIMEOUT,
    )


def set_small(page, tab: str) -> None:
    """Open the tab's settings and ask for 64 px and 2 steps (the demo model is tiny)."""
    panel = page.locator(f"#tab-{tab}")
    panel.get_by_role("button", name=re.compile("Settings|设置")).first.click()
    panel.locator("#steps input").first.fill("2")
    if tab == "txt2img":
        panel.locator("#width input").first.fill("64")
        panel.locator("#height input").first.fill("64")


@pytest.fixture(scope="module")
def session(browser, accounts_server):
    context = browser.new_context(locale="en-GB", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    watch = Watch(page, accounts_server.url)
    yield page, watch
    context.close()


def test_register_with_an_invite_and_log_in(session, accounts_server):
    page, watch = session
    page.goto(accounts_server.url + "/")
    assert page.url.endswith("/login")
    page.get_by_role("link", name=re.compile("invite")).click()
    page.fill("#invite", accounts_server.invite)
    page.fill("#username", "frank")
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    shot(page, "01-register")
    page.click("#register")
    page.wait_for_url(re.compile(r"/login\?registered"))
    page.fill("#username", "frank")
    page.fill("#password", PASSWORD)
    shot(page, "02-login")
    page.click("#login")
    page.wait_for_selector("#txt2img-go")
    assert page.get_by_role("tab", name="Text → picture").is_visible()


def test_paint_from_text(session):
    page, _ = session
    set_small(page, "txt2img")
    page.locator("#txt2img-prompt textarea").fill("a paper boat on a pond")
    page.click("#txt2img-go")
    wait_for_result(page)
    assert "seed" in page.locator("#tab-txt2img #status").inner_text()
    shot(page, "03-text-to-picture")


def test_paint_from_a_photo(session, tmp_path):
    page, _ = session
    page.get_by_role("tab", name="Photo → picture").click()
    photo = tmp_path / "beach.jpg"
    photo.write_bytes(tiny_photo(size=(96, 64)))
    page.locator("#img2img-photo input[type=file]").set_input_files(str(photo))
    page.locator("#img2img-photo img").first.wait_for()
    set_small(page, "img2img")
    page.locator("#img2img-prompt textarea").fill("oil painting")
    page.click("#img2img-go")
    page.wait_for_function(
        "() => document.querySelectorAll(\"#tab-img2img #result img[src^='data:image/png']\")"
        ".length > 0", timeout=TIMEOUT)
    shot(page, "04-photo-to-picture")


def test_cancel_stops_a_long_job(session):
    page, _ = session
    page.get_by_role("tab", name="Text → picture").click()
    panel = page.locator("#tab-txt2img")
    panel.locator("#steps input").first.fill("150")
    panel.locator("#width input").first.fill("256")
    panel.locator("#height input").first.fill("256")
    page.click("#txt2img-go")
    # Running, past its first step (step updates come at most 4 a second, so which step numbers
    # show depends on the machine's speed).
    panel.locator("#status").filter(
        has_text=re.compile(r"step (?:[2-9]|[1-9]\d+) of 150")).wait_for()
    panel.locator("#cancel").click()
    panel.locator("#status").filter(has_text="Cancelled").wait_for(timeout=15_000)
    shot(page, "05-cancelled")
    panel.locator("#steps input").first.fill("2")
    panel.locator("#width input").first.fill("64")
    panel.locator("#height input").first.fill("64")


def key_files(server) -> int:
    return len(list((server.data_dir / "gallery").rglob("*.key")))


def test_gallery_shows_my_pictures_and_deletes_one(session, accounts_server):
    page, _ = session
    stored = key_files(accounts_server)
    page.get_by_role("tab", name="Gallery").click()
    page.click("#gallery-refresh")
    thumbs = page.locator("#gallery img[src^='data:image']")
    thumbs.first.wait_for()
    before = thumbs.count()
    assert before >= 2  # one from text, one from the photo
    shot(page, "06-gallery")
    thumbs.first.click()
    page.click("#gallery-delete")
    page.locator("#gallery-status").filter(has_text="Deleted").wait_for()
    assert key_files(accounts_server) == stored - 1


def test_privacy_page_says_what_is_stored(session):
    page, _ = session
    page.get_by_role("tab", name="Privacy").click()
    page.click("#privacy-refresh")
    summary = page.locator("#privacy-summary")
    summary.filter(has_text="User name: frank").wait_for()
    shot(page, "07-privacy")


def test_switch_language_to_chinese(session):
    page, _ = session
    page.click("#lang-zh")
    page.get_by_role("tab", name="文字生图").wait_for()
    assert page.get_by_role("tab", name="照片生图").is_visible()
    shot(page, "08-chinese")
    page.click("#lang-en")
    page.get_by_role("tab", name="Text → picture").wait_for()


def test_the_page_asked_nothing_of_any_other_origin_and_broke_no_csp_rule(session):
    _, watch = session
    assert watch.foreign == []
    assert watch.csp == []


def test_bob_sees_none_of_franks_pictures(browser, accounts_server):
    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(accounts_server.url + "/login")
    page.fill("#username", "bob")
    page.fill("#password", PASSWORD)
    page.click("#login")
    page.wait_for_selector("#txt2img-go")
    page.get_by_role("tab", name="Gallery").click()
    page.click("#gallery-refresh")
    page.locator("#gallery-status").filter(has_text="empty").wait_for()
    assert page.locator("#gallery img[src^='data:image']").count() == 0
    assert not page.get_by_role("tab", name="Admin").is_visible()
    shot(page, "09-bob-gallery")
    context.close()


def test_no_connection_left_the_server_during_the_browser_session(accounts_server):
    assert accounts_server.net_attempts() == []




def test_inpaint_by_painting_a_mask(browser, accounts_server, tmp_path):
    context = browser.new_context(locale="en-GB", viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(accounts_server.url + "/login")
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.click("#login")
    page.get_by_role("tab", name="Inpaint").click()
    photo = tmp_path / "room.png"
    from PIL import Image

    Image.new("RGB", (64, 64), (30, 160, 90)).save(photo)
    canvas = page.locator("#inpaint-editor canvas").first
    canvas.wait_for()  # the painter is ready
    placeholder = page.locator("#inpaint-editor").get_by_text("Upload an image")
    for _ in range(3):
        page.locator("#inpaint-editor input[type=file]").first.set_input_files(str(photo))
        try:
            placeholder.wait_for(state="hidden", timeout=5_000)
            break
        except playwright_api.TimeoutError:
            continue
    page.wait_for_timeout(300)
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 30, cy)
    page.mouse.down()
    for dx in range(-30, 31, 5):
        page.mouse.move(cx + dx, cy + dx / 3)
    page.mouse.up()
    set_small(page, "inpaint")
    page.locator("#inpaint-prompt textarea").fill("a window")
    page.click("#inpaint-go")
    try:
        page.wait_for_function(
            "() => document.querySelectorAll(\"#tab-inpaint #result img[src^='data:image/png']\")"
            ".length > 0", timeout=TIMEOUT)
    finally:
        shot(page, "10-inpaint")
    context.close()


def test_download_all_and_delete_all_my_pictures(browser, accounts_server):
    context = browser.new_context(locale="en-GB", accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(accounts_server.url + "/login")
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.click("#login")
    page.get_by_role("tab", name="Privacy").click()
    with page.expect_download() as download:
        page.click("#download-all")
    import zipfile

    archive = zipfile.ZipFile(download.value.path())
    names = archive.namelist()
    assert names and all(name.endswith(".png") for name in names)
    stored = key_files(accounts_server)
    page.locator("#delete-confirm textarea, #delete-confirm input").first.fill("DELETE")
    page.click("#delete-all")
    page.locator("#privacy-status").filter(has_text=f"Deleted {len(names)} picture").wait_for()
    assert key_files(accounts_server) == stored - len(names)  # only alice's went
    page.locator("#privacy-summary").filter(has_text="encrypted gallery: 0").wait_for()
    shot(page, "11-deleted-all")
    context.close()


def test_a_chinese_browser_gets_chinese_without_choosing(browser, accounts_server):
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(accounts_server.url + "/login")
    assert page.locator("h1").inner_text() == "登录 Obscura"
    page.fill("#username", "bob")
    page.fill("#password", PASSWORD)
    page.click("#login")
    page.get_by_role("tab", name="文字生图").wait_for()
    context.close()


def test_after_the_browser_session_no_plaintext_picture_or_exif_is_left(accounts_server):
    from leftovers import files_in, plaintext_images, wait_until

    # every upload (photos, the painter's layers) was taken out of the cache when submitted
    left = accounts_server.ram_dir / "gradio"
    assert wait_until(lambda: files_in(left) == []), files_in(left)
    assert plaintext_images(accounts_server.ram_dir) == []
    skip = (accounts_server.data_dir / "models",)
    assert plaintext_images(accounts_server.data_dir, skip=skip) == []
    assert plaintext_images(accounts_server.system_tmp) == []
    assert accounts_server.net_attempts() == []


def test_admin_makes_an_invite_and_an_api_token_that_gradio_client_can_use(browser,
                                                                          accounts_server):
    from gradio_client import Client

    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(accounts_server.url + "/login")
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.click("#login")
    page.get_by_role("tab", name="Admin").click()
    page.click("#admin-refresh")
    page.locator("#admin-users").get_by_text("bob").first.wait_for()
    secret = page.locator("#admin-secret textarea, #admin-secret input").first
    page.click("#admin-invite")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#admin-secret textarea, #admin-secret input')]"
        ".some(e => e.value.startsWith('Invite code'))")
    code = secret.input_value().split(": ", 1)[1]
    page.click("#admin-token")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#admin-secret textarea, #admin-secret input')]"
        ".some(e => e.value.startsWith('API token'))")
    token = secret.input_value().split(": ", 1)[1]
    shot(page, "12-admin")
    context.close()
    with accounts_server.client() as http:
        form = {"invite": code, "username": "grace", "password": PASSWORD,
                "password2": PASSWORD}
        assert http.post("/register", data=form).status_code == 303
    client = Client(accounts_server.url + "/", headers={"Authorization": f"Bearer {token}"},
                    verbose=False)
    pictures, _, _ = client.predict(prompt="a kite", negative_prompt="", style="", model="",
                                    sampler="", num_inference_steps=2, guidance_scale=5.0,
                                    width=64, height=64, seed=1, batch_size=1,
                                    api_name="/txt2img")
    assert pictures[0]["image"]["url"].startswith("data:image/png")


def test_a_member_cannot_use_the_admin_page(browser, accounts_server):
    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(accounts_server.url + "/login")
    page.fill("#username", "bob")
    page.fill("#password", PASSWORD)
    page.click("#login")
    page.wait_for_selector("#txt2img-go")
    assert not page.get_by_role("tab", name="Admin").is_visible()
    context.close()


def test_admin_deletes_an_account_and_its_pictures(browser, accounts_server):
    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(accounts_server.url + "/login")
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.click("#login")
    page.get_by_role("tab", name="Admin").click()
    stored = key_files(accounts_server)
    page.locator("#admin-delete-name textarea, #admin-delete-name input").first.fill("frank")
    page.click("#admin-delete")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#admin-secret textarea, #admin-secret input')]"
        ".some(e => e.value.startsWith('The account is deleted'))")
    assert key_files(accounts_server) < stored  # frank had pictures left
    context.close()
    with accounts_server.client() as http:
        response = http.post("/login", data={"username": "frank", "password": PASSWORD})
        assert response.status_code == 401
