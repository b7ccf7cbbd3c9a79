"""Refuse requests whose ``Origin`` is not this server (cross-site request forgery, and
cross-site WebSocket hijacking).

Browsers send ``Origin`` on every cross-origin request, on every POST and on every WebSocket
handshake. A request is allowed when it has no ``Origin`` (same-origin GETs, scripts such as
``gradio_client``) or when the ``Origin``'s host and port equal the ``Host`` the request was
sent to. ``Origin: null`` is refused, except when the browser itself vouches for the request
with ``Sec-Fetch-Site: same-origin`` (a header pages cannot set): under
``Referrer-Policy: no-referrer`` Chromium sends ``Origin: null`` for our own login form's POST.
Gradio, by contrast, reflects any ``Origin`` with credentials allowed.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _host_port(netloc: str, scheme: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port if port is not None else DEFAULT_PORTS.get(scheme, 80)


def is_same_origin(origin: str, host: str, scheme: str) -> bool:
    """Whether the ``Origin`` header names the same host and port as the ``Host`` header."""
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return False
    wanted = _host_port(host, scheme)
    got = _host_port(parsed.netloc, parsed.scheme)
    return wanted is not None and wanted == got


class SameOriginMiddleware:
    """403 for HTTP requests, and a refused handshake for WebSockets, from a foreign origin."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        scheme = scope.get("scheme", "http")
        host = headers.get("host", "")
        http_scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        vouched = origin == "null" and headers.get("sec-fetch-site") == "same-origin"
        if vouched or is_same_origin(origin, host, http_scheme):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        response = PlainTextResponse("Cross-origin request refused.", status_code=403)
        await response(scope, receive, send)
