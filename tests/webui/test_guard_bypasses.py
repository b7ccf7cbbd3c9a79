"""Ways around the guard that a security review found: DNS rebinding (a foreign ``Host``),
Gradio's deep links, the upload progress stream, repeated query parameters and paths that the
guard and Gradio read differently. Each test fails without its fix."""

from __future__ import annotations

import http.client
import os
import time
from contextlib import closing
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import httpx
import pytest
from gradio_client import Client
from samples import PASSWORD, tiny_photo
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from webui.config import Settings, load_settings
from webui.middleware.host import AllowedHostMiddleware, allowed_hosts, host_name
from webui.tls import make_self_signed

SMALL = dict(num_inference_steps=2, guidance_scale=5.0, seed=3, sampler="", model="",
             style="", negative_prompt="", batch_size=1, width=64, height=64)
SECRET = "SECRET-LIGHTHOUSE-PROMPT"


def port_of(server) -> int:
    return int(urlsplit(server.url).port or 0)


# -- M1: DNS rebinding --------------------------------------------------------------------------


def test_a_rebound_host_name_gets_nothing_from_a_personal_server(personal_server):
    port = port_of(personal_server)
    rebound = {"host": f"attacker.example:{port}", "origin": f"http://attacker.example:{port}"}
    with personal_server.client() as http:
        for path in ("/sdapi/v1/progress", "/config", "/", "/gradio_api/info", "/healthz"):
            response = http.get(path, headers=rebound)
            assert response.status_code == 421, path
            assert response.text == "This server is not known by that name; open it at its own address."
        txt2img = http.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1}, headers=rebound)
        assert txt2img.status_code == 421
        queue = http.post("/gradio_api/queue/join", json={}, headers=rebound)
        assert queue.status_code == 421


def test_the_loopback_names_still_reach_a_personal_server(personal_server):
    port = port_of(personal_server)
    with personal_server.client() as http:
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
            response = http.get("/sdapi/v1/progress", headers={"host": host})
            assert response.status_code == 200, host


def test_a_personal_server_answers_to_loopback_names_only():
    names = allowed_hosts(Settings(host="127.0.0.1", tls="auto"), personal=True)
    assert names == {"127.0.0.1", "localhost", "::1"}
    extra = allowed_hosts(Settings(allowed_hosts=["Proxy.Example."]), personal=True)
    assert extra == {"127.0.0.1", "localhost", "::1", "proxy.example"}


def test_an_accounts_server_answers_to_its_address_its_certificate_and_loopback(tmp_path):
    make_self_signed(tmp_path / "tls", host="paint.studio.lan")
    wildcard = allowed_hosts(Settings(data_dir=tmp_path, host="0.0.0.0", tls="auto"),
                             personal=False)
    assert {"127.0.0.1", "localhost", "::1", "paint.studio.lan"} <= wildcard
    assert "attacker.example" not in wildcard and "0.0.0.0" not in wildcard
    fixed = allowed_hosts(Settings(data_dir=tmp_path, host="192.168.1.20"), personal=False)
    assert fixed == {"127.0.0.1", "localhost", "::1", "192.168.1.20"}


def test_allowed_hosts_come_from_the_environment_or_the_config_file(tmp_path, monkeypatch):
    monkeypatch.delenv("OBSCURA_CONFIG", raising=False)
    monkeypatch.setenv("OBSCURA_ALLOWED_HOSTS", "paint.example, art.example,")
    assert load_settings({"data_dir": tmp_path}).allowed_hosts == ["paint.example", "art.example"]
    monkeypatch.delenv("OBSCURA_ALLOWED_HOSTS")
    (tmp_path / "obscura.toml").write_text('allowed_hosts = ["paint.example"]\n')
    assert load_settings({"data_dir": tmp_path}).allowed_hosts == ["paint.example"]


@pytest.mark.parametrize(
    ("header", "name"),
    [("127.0.0.1:7860", "127.0.0.1"), ("[::1]:7860", "::1"), ("LocalHost.", "localhost"),
     ("[0:0::1]", "::1"), ("attacker.example:7860", "attacker.example"),
     ("evil@127.0.0.1", None), ("127.0.0.1:notaport", None), ("[::1", None), ("", None)],
)
def test_host_header_names(header, name):
    assert host_name(header) == name


def test_a_websocket_handshake_to_a_foreign_host_is_refused():
    async def hello(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    async def page(request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", page), WebSocketRoute("/ws", hello)])
    guarded = AllowedHostMiddleware(app, allowed=["127.0.0.1"])
    with TestClient(guarded, base_url="http://127.0.0.1:7860") as client:
        with client.websocket_connect("/ws", headers={"host": "127.0.0.1:7860"}) as socket:
            assert socket.receive_text() == "hello"
        assert client.get("/").status_code == 200
        assert client.get("/", headers={"host": "attacker.example"}).status_code == 421
        with pytest.raises(WebSocketDisconnect):
            with client.websocket_connect("/ws", headers={"host": "attacker.example"}):
                pass


# -- M2, S1: deep links, routes the UI never uses, upload progress ----------------------------


@pytest.fixture(scope="module")
def alice_session(accounts_server) -> str:
    """A session of alice's holding a finished picture of SECRET."""
    alice = Client(accounts_server.url + "/", auth=("alice", PASSWORD), verbose=False)
    alice.predict(prompt=SECRET, api_name="/txt2img", **SMALL)
    return alice.session_hash


def test_deep_links_cannot_copy_another_users_session(accounts_server, alice_session):
    with closing(accounts_server.login("bob")) as bob:
        link = bob.get("/gradio_api/deep_link", params={"session_hash": alice_session})
        assert link.status_code == 404 and SECRET not in link.text
        for path in ("/config", "/config/", "/"):
            response = bob.get(path, params={"deep_link": link.text.strip('"') or "x"})
            assert response.status_code == 404, path
            assert SECRET not in response.text
        assert SECRET not in bob.get("/config").text


def test_gradio_routes_the_ui_never_uses_are_closed(accounts_server):
    with closing(accounts_server.login("bob")) as bob:
        for path in ("/gradio_api/openapi.json", "/gradio_api/token", "/gradio_api/user",
                     "/gradio_api/login_check", "/gradio_api/queue/status",
                     "/gradio_api/startup-events", "/gradio_api/deep_link"):
            assert bob.get(path).status_code == 404, path
        assert bob.get("/gradio_api/info").status_code == 200
        assert bob.get("/gradio_api/app_id").status_code == 200


def test_only_the_uploader_can_follow_an_uploads_progress(accounts_server):
    upload_id = "alice-upload-progress-1"
    with closing(accounts_server.login("alice")) as alice, closing(accounts_server.login("bob")) as bob:
        sent = alice.post("/gradio_api/upload", params={"upload_id": upload_id},
                          files={"files": ("holiday-in-lisbon.jpg", tiny_photo(), "image/jpeg")})
        assert sent.status_code == 200, sent.text
        with bob.stream("GET", "/gradio_api/upload_progress",
                        params={"upload_id": upload_id}) as spying:
            assert spying.status_code == 403
            assert b"lisbon" not in spying.read()
        with bob.stream("GET", f"/gradio_api/upload_progress?upload_id=b&upload_id={upload_id}"
                        ) as doubled:
            assert doubled.status_code == 403
        with alice.stream("GET", "/gradio_api/upload_progress",
                          params={"upload_id": upload_id}) as own:
            assert own.status_code == 200
        # Bob cannot take the id over by uploading under it either.
        stolen = bob.post("/gradio_api/upload", params={"upload_id": upload_id},
                          files={"files": ("b.jpg", tiny_photo(), "image/jpeg")})
        assert stolen.status_code == 403


# -- M3: a repeated session_hash ---------------------------------------------------------------


def test_a_second_session_hash_does_not_open_another_users_stream(accounts_server, alice_session):
    with closing(accounts_server.login("bob")) as bob:
        query = f"session_hash=bob-own-session&session_hash={alice_session}"
        with bob.stream("GET", f"/gradio_api/queue/data?{query}") as events:
            assert events.status_code == 403
        with bob.stream("GET", f"/gradio_api/queue/data?session_hash={alice_session}") as events:
            assert events.status_code == 403


# -- M4: paths read differently by the guard and by Gradio -------------------------------------


def upload(client: httpx.Client, name: str, data: bytes) -> str:
    response = client.post("/gradio_api/upload", files={"files": (name, data, "image/jpeg")})
    assert response.status_code == 200, response.text
    return response.json()[0]


def raw_get(server, path: str, cookies: httpx.Cookies) -> tuple[int, bytes]:
    """A GET with the path sent exactly as written (httpx would resolve ``..``)."""
    connection = http.client.HTTPConnection("127.0.0.1", port_of(server), timeout=30)
    cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
    connection.request("GET", path, headers={"cookie": cookie})
    response = connection.getresponse()
    status, body = response.status, response.read()
    connection.close()
    return status, body


def test_a_path_decoded_twice_or_with_dot_segments_reaches_nothing(accounts_server):
    alices_photo = tiny_photo(color=(10, 200, 10))
    with closing(accounts_server.login("alice")) as alice, closing(accounts_server.login("bob")) as bob:
        alices = PurePosixPath(upload(alice, "photo.jpg", alices_photo))
        bobs = PurePosixPath(upload(bob, "photo.jpg", tiny_photo(color=(10, 10, 200))))
        assert alices.name == bobs.name and alices.parent != bobs.parent
        # The guard used to decode %252F once more and resolve the path to bob's own file;
        # Gradio resolved the single-decoded path to alice's.
        sneaky = (f"/gradio_api/file={alices.parent}/..%252F{bobs.parent.name}%252Fx/../"
                  f"{alices.name}")
        status, body = raw_get(accounts_server, sneaky, bob.cookies)
        assert status == 404 and alices_photo not in body
        for path in (f"/gradio_api/file={bobs.parent}/../{alices.parent.name}/{alices.name}",
                     f"/gradio_api/file={bobs.parent}/./{bobs.name}",
                     "/gradio_api/./info", "/gradio_api/x/../info", "//gradio_api/info",
                     "/assets/../config"):
            status, body = raw_get(accounts_server, path, bob.cookies)
            assert status == 404, path
            assert alices_photo not in body and b"components" not in body
        status, body = raw_get(accounts_server, f"/gradio_api/file={bobs}", bob.cookies)
        assert status == 200  # bob's own upload, named plainly, is still served


# -- issue 9 item 2: no server-side fetch of a URL a client sends ------------------------------

LINK = "http://1.1.1.1/holiday.png"
REFUSED_FILE = "Files must be uploaded to this server first"


def file_data(path, url=None) -> dict:
    return {"path": path, "url": url, "orig_name": "holiday.png", "size": None,
            "mime_type": "image/png", "is_stream": False, "meta": {"_type": "gradio.FileData"}}


def api_index(http: httpx.Client, api_name: str) -> int:
    for dependency in http.get("/config").json()["dependencies"]:
        if dependency.get("api_name") == api_name:
            return dependency["id"]
    raise KeyError(api_name)


def img2img_data(image) -> list:
    # ..., VAE, CLIP skip, an edit model's 4 reference pictures
    return [image, "x", "", 0.5, "", "", "", 2, 5.0, 0, 0, 1, 1, "", 1, None, None, None, None]


def test_no_file_input_makes_the_server_fetch_a_link(accounts_server):
    with closing(accounts_server.login("bob")) as bob:
        own = upload(bob, "photo.jpg", tiny_photo())
        index = api_index(bob, "img2img")
        editor = {"background": file_data(LINK), "layers": [file_data(own)],
                  "composite": file_data(own)}
        layered = {"background": file_data(own), "layers": [None, file_data(LINK)],
                   "composite": None}
        values = [
            file_data(LINK),                                    # path is a link
            file_data("https://dns.google/x.png"),
            file_data(own, url=LINK),                           # url is a link
            {"path": LINK},                                     # no meta marker
            editor, layered,                                    # image editor value
            [{"image": file_data(LINK), "caption": None}],      # gallery value
            file_data("/etc/hostname"),                         # a file that is no upload
        ]
        for number, value in enumerate(values):
            body = {"data": img2img_data(value), "fn_index": index, "event_data": None,
                    "session_hash": f"bob-fetch-{number}", "trigger_id": None}
            joined = bob.post("/gradio_api/queue/join", json=body)
            assert joined.status_code == 422, (value, joined.text)
            assert joined.json()["error"].startswith(REFUSED_FILE)
            called = bob.post("/gradio_api/call/img2img", json={"data": img2img_data(value)})
            assert called.status_code == 422, value
        fetched = bob.get(f"/gradio_api/file={LINK}")
        assert fetched.status_code == 404
        # bob's own upload, as the browser names it (path and url), is still accepted
        own_url = f"{accounts_server.url}/gradio_api/file={own}"
        body = {"data": img2img_data(file_data(own, url=own_url)), "fn_index": index,
                "event_data": None, "session_hash": "bob-fetch-own", "trigger_id": None}
        assert bob.post("/gradio_api/queue/join", json=body).status_code == 200
    time.sleep(1.2)  # the server writes its record of connection attempts twice a second
    attempts = accounts_server.net_attempts()
    assert attempts == [], attempts


def test_the_guard_never_passes_a_body_it_cannot_read(accounts_server):
    with closing(accounts_server.login("bob")) as bob:
        index = api_index(bob, "img2img")
        big = "x" * 1_100_000  # over Starlette's 1 MB form field limit
        # multipart on a JSON route, broken JSON, a JSON list: refused, never passed unchecked
        form = bob.post("/gradio_api/queue/join", files={"session_hash": (None, big)},
                        headers={"x-gradio-user": "api"})
        assert form.status_code == 400
        for body in (b'{"session_hash": "x", ', b"[1, 2]", b'{"a":' * 100 + b"1" + b"}" * 100):
            response = bob.post("/gradio_api/queue/join", content=body,
                                headers={"content-type": "application/json"})
            assert response.status_code == 400, body[:20]
        # the route the blob painter used is closed, multipart or not
        blob = bob.post("/gradio_api/component_server", files={"data": (None, big)},
                        headers={"x-gradio-user": "api"})
        assert blob.status_code == 404
        call = {"session_hash": "bob-blob", "component_id": 1, "fn_name": "accept_blobs",
                "data": {}}
        assert bob.post("/gradio_api/component_server", json=call).status_code == 404
        assert index >= 0


# -- issue 9 item 3: logout (and every state change) is not forgeable -------------------------


def test_a_get_or_a_forged_post_cannot_log_anyone_out(accounts_server):
    port = port_of(accounts_server)
    with closing(accounts_server.login("carol")) as carol:
        # <img src=/logout> on a page served from another port of this host
        image = carol.get("/logout", headers={"sec-fetch-site": "same-site",
                                              "sec-fetch-mode": "no-cors"})
        assert image.status_code == 200 and "logout-confirm" in image.text
        assert carol.get("/config").status_code == 200
        forged = [
            {"origin": f"http://127.0.0.1:{port + 1}", "sec-fetch-site": "same-site"},
            {"sec-fetch-site": "same-site"},
            {"sec-fetch-site": "cross-site"},
            {"content-type": "application/x-www-form-urlencoded"},  # neither header: refused
        ]
        for headers in forged:
            response = carol.post("/logout", headers=headers)
            assert response.status_code == 403, headers
            assert carol.get("/config").status_code == 200, headers
        own = carol.post("/logout", headers={"origin": accounts_server.url,
                                             "sec-fetch-site": "same-origin"})
        assert own.status_code == 303
        assert carol.get("/config").status_code == 401


def test_cookie_state_changes_need_a_same_origin_page_but_tokens_and_scripts_pass(accounts_server):
    with closing(accounts_server.login("bob")) as bob:
        form = {"content-type": "text/plain"}
        for path in ("/gradio_api/queue/join", "/gradio_api/cancel", "/sdapi/v1/txt2img"):
            refused = bob.post(path, content=b"{}", headers=form)
            assert refused.status_code == 403, path
            cross = bob.post(path, json={}, headers={"sec-fetch-site": "same-site"})
            assert cross.status_code == 403, path
        # a script (JSON, no Origin) and the UI (Sec-Fetch-Site: same-origin) pass the check
        script = bob.post("/gradio_api/reset", json={"session_hash": "bob-x", "fn_index": 0})
        page = bob.post("/gradio_api/reset", content=b'{"session_hash": "bob-x"}',
                        headers={**form, "sec-fetch-site": "same-origin"})
        for passed in (script, page):
            assert "Cross-origin" not in passed.text and passed.status_code < 500
    # no cookie at all (curl, webuiapi with a token): not forgeable, not refused here
    with accounts_server.client() as anonymous:
        response = anonymous.post("/sdapi/v1/txt2img", content=b"{}", headers=form)
        assert response.status_code == 401


# -- weaker findings: clear 4xx answers, nothing a client sends in the log ---------------------

CANARY = "canaryhost-7f3a"


def raw_request(server, method: str, path: str, headers: dict, body: bytes | None = None):
    """A request sent exactly as written (Host included), answered as (status, headers)."""
    connection = http.client.HTTPConnection("127.0.0.1", port_of(server), timeout=30)
    connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders(body)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}


def server_errors(server) -> int:
    return (server.state_dir / "server.log").read_text().count("Exception in ASGI application")


def api_token(server, username: str) -> str:
    from privacy.accounts import Accounts
    from privacy.passwords import make_hasher

    accounts = Accounts.in_data_dir(server.data_dir, hasher=make_hasher(
        time_cost=1, memory_cost=1024, parallelism=1))
    try:
        return accounts.create_token(accounts.user_id_for(username), f"t-{time.time_ns()}")
    finally:
        accounts.close()


def test_mistakes_get_a_clear_4xx_with_the_security_headers_and_no_traceback(accounts_server):
    before = server_errors(accounts_server)
    host = {"host": f"127.0.0.1:{port_of(accounts_server)}"}
    with closing(accounts_server.login("bob")) as bob:
        cookie = {**host, "cookie": "; ".join(f"{k}={v}" for k, v in bob.cookies.items())}
        answers = [
            raw_request(accounts_server, "GET", "/gradio_api/file=/x%00y", cookie),
            raw_request(accounts_server, "GET", "/gradio_api/file=%00", cookie),
            raw_request(accounts_server, "GET", "/gradio_api/queue/data?session_hash=never-joined",
                        cookie),
        ]
        for fn in (9999, "abc", -1, 10**30):
            body = {"data": [], "fn_index": fn, "session_hash": "bob-fn", "event_data": None}
            response = bob.post("/gradio_api/queue/join", json=body)
            answers.append((response.status_code, response.headers))
        response = bob.post("/gradio_api/call/no-such-function", json={"data": []})
        answers.append((response.status_code, response.headers))
    token = api_token(accounts_server, "bob")
    for auth in ({"authorization": f"Bearer {token}"}, None):
        response = httpx.get(f"{accounts_server.url}/my/pictures.zip", headers=auth,
                             auth=None if auth else ("bob", token))
        assert response.status_code == 403
        assert "password" in response.json()["error"]
        answers.append((response.status_code, response.headers))
    for status, headers in answers:
        assert 400 <= status < 500, status
        assert "content-security-policy" in headers and "x-frame-options" in headers
    time.sleep(0.3)
    assert server_errors(accounts_server) == before


def test_nothing_a_client_sends_reaches_the_log(accounts_server):
    port = port_of(accounts_server)
    ours = {"host": f"127.0.0.1:{port}"}
    with closing(accounts_server.login("bob")) as bob:
        cookie = {**ours, "cookie": "; ".join(f"{k}={v}" for k, v in bob.cookies.items())}
        requests = [
            ("GET", "/", {"host": f"{CANARY}.example"}, None),
            ("GET", "/", {"host": f"{CANARY} .example"}, None),
            ("GET", "/", {**ours, "origin": f"http://{CANARY}.example"}, None),
            ("GET", f"/gradio_api/file=http://{CANARY}.example/x.png", cookie, None),
            ("GET", f"/gradio_api/call/{CANARY}/x", cookie, None),
            ("GET", f"/{CANARY}", cookie, None),
            ("GET", f"/gradio_api/queue/data?session_hash={CANARY}", cookie, None),
            ("GET", "/", {**ours, "x-forwarded-for": CANARY, "x-forwarded-host": CANARY}, None),
            ("POST", "/gradio_api/queue/join", {**cookie, "content-type": "application/json"},
             b'{"data": [], "session_hash": "' + CANARY.encode() + b'"'),
        ]
        for method, path, headers, body in requests:
            if body is not None:
                headers = {**headers, "content-length": str(len(body))}
            status, _ = raw_request(accounts_server, method, path, headers, body)
            assert 400 <= status < 500, path
        index = api_index(bob, "img2img")
        link = file_data(f"http://{CANARY}.example/holiday.png")
        joined = bob.post("/gradio_api/queue/join", json={
            "data": img2img_data(link), "fn_index": index, "session_hash": "bob-canary",
            "event_data": None, "trigger_id": None})
        assert joined.status_code == 422
    time.sleep(0.5)
    log = (accounts_server.state_dir / "server.log").read_text()
    assert CANARY not in log


# -- a kill -9 leaves no upload in the RAM directory ---------------------------------------------


def test_an_upload_is_out_of_gradios_cache_before_its_path_is_known(accounts_server):
    photo = tiny_photo(color=(1, 2, 3))
    with closing(accounts_server.login("bob")) as bob:
        path = upload(bob, "kitchen.jpg", photo)
        on_disk = [p for p in (accounts_server.ram_dir / "gradio").rglob("*") if p.is_file()]
        assert not any(p.read_bytes() == photo for p in on_disk)
        assert not os.path.exists(path) and not os.path.exists(os.path.dirname(path))
        preview = bob.get(f"/gradio_api/file={path}")  # the browser's preview, from memory
        assert preview.status_code == 200 and preview.content == photo
        assert preview.headers["content-type"] == "image/jpeg"
        assert preview.headers["cache-control"] == "no-store"
        with closing(accounts_server.login("carol")) as carol:
            assert carol.get(f"/gradio_api/file={path}").status_code == 404
        index = api_index(bob, "img2img")
        result = bob.post("/gradio_api/queue/join", json={
            "data": img2img_data(file_data(path)), "fn_index": index,
            "session_hash": "bob-held", "event_data": None, "trigger_id": None})
        assert result.status_code == 200
        with bob.stream("GET", "/gradio_api/queue/data?session_hash=bob-held") as events:
            done = next(line for line in events.iter_lines() if "process_completed" in line)
        assert '"success":true' in done.replace(" ", "")
        assert bob.get(f"/gradio_api/file={path}").status_code == 404  # taken once, forgotten


def test_gradio_client_logged_in_with_a_password_still_sends_photos(accounts_server, tmp_path):
    from gradio_client import handle_file

    photo = tmp_path / "balcony.jpg"
    photo.write_bytes(tiny_photo())
    client = Client(accounts_server.url + "/", auth=("bob", PASSWORD), verbose=False)
    small = {k: v for k, v in SMALL.items() if k not in ("width", "height")}
    pictures, *_ = client.predict(image=handle_file(str(photo)), prompt="x", strength=0.5,
                                  width=0, height=0, api_name="/img2img", **small)
    assert pictures[0]["image"]["url"].startswith("data:image/png")
