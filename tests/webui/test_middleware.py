"""Security headers and the same-origin guard, each on a bare Starlette app."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from webui.middleware.headers import SecurityHeadersMiddleware
from webui.middleware.origin import SameOriginMiddleware, is_same_origin


async def hello(request):
    return PlainTextResponse("hi", headers={"cache-control": "max-age=3600"})


async def echo(websocket: WebSocket):
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


def bare_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/", hello, methods=["GET", "POST"]),
            Route("/assets/app.js", hello),
            WebSocketRoute("/ws", echo),
        ]
    )


def csp_directives(value: str) -> dict[str, list[str]]:
    out = {}
    for part in value.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


def test_every_response_carries_a_csp_that_allows_no_other_origin():
    client = TestClient(SecurityHeadersMiddleware(bare_app()))
    response = client.get("/")
    csp = csp_directives(response.headers["content-security-policy"])
    assert csp["default-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["connect-src"] == ["'self'"]
    for sources in csp.values():
        for source in sources:
            # only keywords and data:/blob: schemes; no host, no https:, no wildcard
            assert source.startswith("'") or source in {"data:", "blob:"}, source
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    assert "strict-transport-security" not in response.headers


def test_user_content_is_no_store_and_hashed_assets_keep_their_caching():
    client = TestClient(SecurityHeadersMiddleware(bare_app()))
    assert client.get("/").headers["cache-control"] == "no-store"
    assert client.get("/assets/app.js").headers["cache-control"] == "max-age=3600"


def test_hsts_only_under_tls():
    app = bare_app()
    assert "strict-transport-security" in TestClient(
        SecurityHeadersMiddleware(app), base_url="https://testserver"
    ).get("/").headers
    assert "strict-transport-security" in TestClient(
        SecurityHeadersMiddleware(app, hsts=True)
    ).get("/").headers


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://127.0.0.1:7860", "127.0.0.1:7860", True),
        ("http://LOCALHOST:7860", "localhost:7860", True),
        ("https://studio.lan", "studio.lan:443", True),
        ("http://127.0.0.1:7861", "127.0.0.1:7860", False),
        ("http://evil.example", "127.0.0.1:7860", False),
        ("null", "127.0.0.1:7860", False),
        ("http://127.0.0.1:7860.evil.example", "127.0.0.1:7860", False),
        ("file://", "127.0.0.1:7860", False),
    ],
)
def test_origin_comparison(origin, host, same):
    assert is_same_origin(origin, host, "http" if "443" not in host else "https") is same


def test_cross_origin_post_is_refused_and_same_origin_passes():
    client = TestClient(SameOriginMiddleware(bare_app()))
    assert client.post("/", headers={"origin": "http://evil.example"}).status_code == 403
    assert client.post("/", headers={"origin": "http://testserver"}).status_code == 200
    assert client.post("/").status_code == 200  # scripts send no Origin
    assert client.post("/", headers={"origin": "null"}).status_code == 403


def test_origin_null_passes_only_when_the_browser_says_same_origin():
    # Chromium sends Origin: null for a form POST under Referrer-Policy: no-referrer.
    client = TestClient(SameOriginMiddleware(bare_app()))
    same = {"origin": "null", "sec-fetch-site": "same-origin"}
    assert client.post("/", headers=same).status_code == 200
    cross = {"origin": "null", "sec-fetch-site": "cross-site"}
    assert client.post("/", headers=cross).status_code == 403


def test_cross_origin_websocket_is_refused():
    client = TestClient(SameOriginMiddleware(bare_app()))
    with client.websocket_connect("/ws", headers={"origin": "http://testserver"}) as ws:
        assert ws.receive_text() == "hello"
    with pytest.raises(WebSocketDisconnect):
        with client.websocket_connect("/ws", headers={"origin": "http://evil.example"}) as ws:
            ws.receive_text()


# -- forged state changes (issue 9 item 3) -------------------------------------------------------

COOKIE = {"cookie": "obscura_session=abc"}


def test_a_state_change_with_the_session_cookie_needs_a_same_origin_page():
    client = TestClient(SameOriginMiddleware(bare_app()))
    # the browser vouches for its own pages: Origin, or Sec-Fetch-Site: same-origin
    assert client.post("/", headers={**COOKIE, "origin": "http://testserver"}).status_code == 200
    assert client.post("/", headers={**COOKIE, "sec-fetch-site": "same-origin"}).status_code == 200
    # another port of this host is same-site, not same-origin
    for fetch_site in ("same-site", "cross-site", "none"):
        response = client.post("/", headers={**COOKIE, "sec-fetch-site": fetch_site})
        assert response.status_code == 403, fetch_site
        same_origin_claim = {"origin": "http://testserver", "sec-fetch-site": fetch_site}
        assert client.post("/", headers=same_origin_claim).status_code == 403, fetch_site
    # neither header: a form an old browser sends is refused ...
    for content_type in ("application/x-www-form-urlencoded", "multipart/form-data; b=x",
                         "text/plain", None):
        headers = {**COOKIE, **({"content-type": content_type} if content_type else {})}
        assert client.post("/", headers=headers).status_code == 403, content_type
    # ... what no page can send without a preflight (JSON, Authorization) passes
    assert client.post("/", headers={**COOKIE, "content-type": "application/json"}).status_code == 200
    assert client.post("/", headers={**COOKIE, "content-type": "text/plain",
                                     "x-gradio-user": "api"}).status_code == 200


def test_requests_without_the_cookie_and_reads_pass_without_origin():
    client = TestClient(SameOriginMiddleware(bare_app()))
    assert client.post("/", headers={"content-type": "text/plain"}).status_code == 200  # curl
    assert client.post("/", headers={"authorization": "Bearer x"}).status_code == 200
    # a GET changes nothing: an <img> from another port of this host may load it
    assert client.get("/", headers={**COOKIE, "sec-fetch-site": "same-site"}).status_code == 200


# -- the guard's ownership maps --------------------------------------------------------------------


def test_ownership_expires_by_age_never_by_pressure():
    from webui.middleware.guard import Ownership, OwnershipFull

    now = [0.0]
    keys = Ownership(limit=3, per_user=10, max_age=100, clock=lambda: now[0])
    assert keys.claim("alice-1", "alice") and keys.claim("alice-2", "alice")
    assert keys.claim("bob-1", "bob")
    with pytest.raises(OwnershipFull):  # full: a new key is refused, no old key is forgotten
        keys.claim("mallory-1", "mallory")
    assert keys.owner("alice-1") == "alice"
    assert not keys.claim("alice-1", "mallory")
    now[0] = 60
    assert keys.claim("alice-1", "alice")  # used again: lives on
    now[0] = 150  # alice-2 and bob-1 are idle for 150 s, past max_age
    assert keys.claim("mallory-1", "mallory")
    assert keys.owner("alice-1") == "alice" and keys.owner("bob-1") is None


def test_one_users_many_keys_push_out_only_their_own():
    from webui.middleware.guard import Ownership

    keys = Ownership(limit=1000, per_user=3)
    assert keys.claim("victim", "alice")
    for number in range(50):
        assert keys.claim(f"spam-{number}", "mallory")
    assert keys.owner("victim") == "alice"
    assert len(keys) == 4
    assert not keys.claim("victim", "mallory")


# -- one caller identity (issue 10) ------------------------------------------------------------------


def test_the_caller_is_identified_once_per_request_in_a_worker_thread(tmp_path):
    import threading

    from privacy.accounts import Accounts
    from privacy.passwords import make_hasher
    from webui.auth import Gate
    from webui.middleware.identity import IdentityMiddleware, identity_of

    accounts = Accounts(tmp_path / "obscura.db", hasher=make_hasher(
        time_cost=1, memory_cost=1024, parallelism=1))
    user_id = accounts.create_user("alice", "correct horse battery staple")
    token = accounts.create_token(user_id, "t")
    gate = Gate(accounts)
    calls: list[str] = []
    original = gate.identify

    def counting(*args, **kwargs):
        calls.append(threading.current_thread().name)
        return original(*args, **kwargs)

    gate.identify = counting  # type: ignore[method-assign]

    loop_threads: list[str] = []

    async def who(request):
        loop_threads.append(threading.current_thread().name)
        first = gate.viewer_of(request)
        again = gate.viewer_of(request)  # read from the scope: no second look-up
        viewer, _ = identity_of(request.scope)
        assert first is again is viewer
        return PlainTextResponse(viewer.user_id if viewer else "nobody")

    app = IdentityMiddleware(Starlette(routes=[Route("/", who)]), gate=gate)
    client = TestClient(app)
    assert client.get("/", headers={"authorization": f"Bearer {token}"}).text == user_id
    assert client.get("/", headers={"authorization": "Bearer wrong"}).text == "nobody"
    assert len(calls) == 2  # once per request
    assert loop_threads and not set(calls) & set(loop_threads)  # never on the event loop
    accounts.close()


def test_a_throttled_caller_gets_429_with_retry_after_from_the_guard(tmp_path):
    from privacy.throttle import LoginThrottledError
    from webui.auth import Gate
    from webui.middleware.guard import AccessGuard
    from webui.middleware.identity import IdentityMiddleware
    from webui.uploads import UploadOwners

    class Throttled(Gate):
        def identify(self, headers, cookies, client=None):
            raise LoginThrottledError("login_throttled", "Too many attempts; wait.", 42)

    gate = Throttled(None)
    guarded = AccessGuard(bare_app(), gate=gate, uploads=UploadOwners(tmp_path))
    client = TestClient(IdentityMiddleware(guarded, gate=gate))
    response = client.get("/sdapi/v1/sd-models", headers={"authorization": "Bearer x"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "42"
    assert response.json() == {"error": "Too many attempts; wait."}


def test_an_upload_past_the_memory_bound_is_refused_and_not_left_in_the_cache(tmp_path):
    from starlette.responses import JSONResponse

    from webui.auth import Gate
    from webui.middleware.guard import AccessGuard
    from webui.middleware.identity import IdentityMiddleware
    from webui.uploads import UploadOwners

    written = []

    async def gradio_upload(request):  # what Gradio's /gradio_api/upload does
        data = await request.body()
        folder = tmp_path / f"h{len(written)}"
        folder.mkdir()
        (folder / "photo.jpg").write_bytes(data)
        written.append(folder / "photo.jpg")
        return JSONResponse([str(folder / "photo.jpg")])

    gate = Gate(None)
    uploads = UploadOwners(tmp_path, max_held=10)
    app = Starlette(routes=[Route("/gradio_api/upload", gradio_upload, methods=["POST"])])
    client = TestClient(IdentityMiddleware(AccessGuard(app, gate=gate, uploads=uploads), gate=gate))
    first = client.post("/gradio_api/upload", content=b"12345678")
    assert first.status_code == 200 and not written[0].exists()
    assert uploads.held(first.json()[0], "personal") == b"12345678"
    second = client.post("/gradio_api/upload", content=b"12345678")
    assert second.status_code == 503
    assert second.json()["error"].startswith("Too many uploads are waiting")
    assert not written[1].exists() and not written[1].parent.exists()
