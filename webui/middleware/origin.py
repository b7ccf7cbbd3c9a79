"""Refuse requests whose ``Origin`` is not this server (cross-site request forgery, and
cross-site WebSocket hijacking).

Browsers send ``Origin`` on every cross-origin request, on every POST and on every WebSocket
handshake. A request is allowed when it has no ``Origin`` (same-origin GETs, scripts such as
``gradio_client``) or when the ``Origin``'s host and port equal the ``Host`` the request was
sent to. ``Origin: null`` is refused, except when the browser itself vouches for the request
with ``Sec-Fetch-Site: same-origin`` (a header pages cannot set): under
``Referrer-Policy: no-referrer`` Chromium sends ``Origin: null`` for our own login form's POST.
Gradio, by contrast, reflects any ``Origin`` with credentials allowed.

That alone does not stop forged state changes: ``SameSite=Strict`` does not tell ports of one
host apart (they are the same site), and a browser sends no ``Origin`` with an ``<img>`` or a
link. So every request that can change something (any method but ``GET``, ``HEAD`` and
``OPTIONS``) must in addition show that a page of this server sent it:

* a ``Sec-Fetch-Site`` other than ``same-origin`` (``same-site``, ``cross-site``, ``none``) is
  refused, ``Origin`` or not: the browser says the request did not come from our pages;
* a request carrying our session cookie but neither ``Origin`` nor ``Sec-Fetch-Site`` is
  refused unless no page could have sent it without asking first (CORS preflight, which
  carries ``Origin`` and is refused above): a ``Content-Type`` other than the three a form can
  send, or a header a form cannot set (``Authorization``, ``X-Gradio-User``). ``gradio_client``
  and scripts send JSON; a form's POST from an old browser that sends neither header is refused;
* a request without the session cookie (``curl``, ``webuiapi``, ``gradio_client`` with a token
  or before it logs in) passes: a request authenticated only by a token is not forgeable.
  One exception: ``POST /gradio_api/upload`` (multipart) may come without either header with
  the cookie (``gradio_client`` logged in with a password): it only adds a file to the caller's
  own unsubmitted uploads, which are swept unused.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_COOKIE = "obscura_session"
# What a <form> (or a no-cors fetch) can send without a preflight ("": no body type at all).
SIMPLE_TYPES = ("", "application/x-www-form-urlencoded", "multipart/form-data", "text/plain")
UNFORMABLE_HEADERS = ("authorization", "x-gradio-user")
UPLOAD = "/gradio_api/upload"


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
        if _allowed(scope, Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        response = PlainTextResponse("Cross-origin request refused.", status_code=403)
        await response(scope, receive, send)


def _allowed(scope: Scope, headers: Headers) -> bool:
    origin = headers.get("origin")
    fetch_site = headers.get("sec-fetch-site")
    if origin is not None:
        scheme = str(scope.get("scheme", "http"))
        http_scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        vouched = origin == "null" and fetch_site == "same-origin"
        if not (vouched or is_same_origin(origin, headers.get("host", ""), http_scheme)):
            return False
    changes = scope["type"] == "websocket" or scope.get("method", "GET") not in SAFE_METHODS
    if not changes:
        return True
    if fetch_site is not None:
        return fetch_site == "same-origin"
    if origin is not None or not _has_session_cookie(headers):
        return True
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in SIMPLE_TYPES or any(h in headers for h in UNFORMABLE_HEADERS):
        return True
    return content_type == "multipart/form-data" and scope.get("path", "").rstrip("/") == UPLOAD


def _has_session_cookie(headers: Headers) -> bool:
    for value in headers.getlist("cookie"):
        for pair in value.split(";"):
            if pair.split("=", 1)[0].strip() == SESSION_COOKIE:
                return True
    return False
