"""The guard's changes seen from Debian's Chromium: logging out is a button that POSTs (a GET
only shows it), and a page on another port of this host can neither log anyone out nor change
anything with the person's cookie."""

from __future__ import annotations

import http.server
import os
import re
import threading

import pytest
from samples import CHROMIUM, CHROMIUM_ARGS, PASSWORD

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


def attacker_page(target: str) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A page on another port of 127.0.0.1 (same site, other origin) that tries to log the
    visitor out: an image, a form posted at once, a fetch."""
    html = f"""<!doctype html><html><body>
<img src="{target}/logout">
<form id="f" method="post" action="{target}/logout" target="sink"></form>
<iframe name="sink"></iframe>
<script>
fetch("{target}/logout", {{method: "POST", mode: "no-cors", credentials: "include"}});
document.getElementById("f").submit();
</script></body></html>""".encode()

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def log_in(page, url: str, username: str) -> None:
    page.goto(url + "/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login")
    page.wait_for_selector("#txt2img-go")


def test_a_page_on_another_port_cannot_log_the_visitor_out(browser, accounts_server):
    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    log_in(page, accounts_server.url, "bob")
    server, evil = attacker_page(accounts_server.url)
    try:
        other = context.new_page()
        other.goto(evil)
        other.wait_for_timeout(1500)
    finally:
        server.shutdown()
    page.goto(accounts_server.url + "/")
    page.wait_for_selector("#txt2img-go")  # still logged in
    context.close()


def test_the_logout_button_asks_and_then_logs_out(browser, accounts_server):
    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    log_in(page, accounts_server.url, "carol")
    page.click("#logout")
    page.wait_for_selector("#logout-confirm")
    page.goto(accounts_server.url + "/")  # looking at the question changed nothing
    page.wait_for_selector("#txt2img-go")
    page.click("#logout")
    page.click("#logout-confirm")
    page.wait_for_url(re.compile(r"/login"))
    page.goto(accounts_server.url + "/")
    assert page.url.endswith("/login")
    context.close()
