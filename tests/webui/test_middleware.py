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
