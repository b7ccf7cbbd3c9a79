"""Security headers on every HTTP response.

The Content-Security-Policy allows no third-party origin at all: scripts, styles, fonts,
images and connections come from this server only (plus ``data:``/``blob:`` images, which is how
pictures reach the browser without a file). Gradio's ``index.html`` has inline scripts and
styles, hence ``'unsafe-inline'`` for those two, and the mask painter (pixi.js inside Gradio's
image editor) compiles its shaders with ``new Function``, hence ``'unsafe-eval'``: with inline
scripts already allowed it adds little, and nothing is allowed to be fetched elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline' 'unsafe-eval'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "media-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",  # CSP3: 'self' also covers ws:/wss: to this same host
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

BASE_HEADERS: dict[str, str] = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    # The webcam is the only device the UI uses, and only on this origin.
    "permissions-policy": "camera=(self), microphone=(), geolocation=(), interest-cohort=()",
}

HSTS = "max-age=31536000"

# Gradio's bundled, content-hashed front-end files: the only responses that may be cached.
DEFAULT_CACHEABLE_PREFIXES: tuple[str, ...] = ("/assets/", "/static/", "/svelte/", "/favicon.ico")


class SecurityHeadersMiddleware:
    """Add CSP, nosniff, no-referrer, frame denial, ``no-store`` and (under TLS) HSTS."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        hsts: bool = False,
        cacheable_prefixes: Iterable[str] = DEFAULT_CACHEABLE_PREFIXES,
    ) -> None:
        self.app = app
        self.hsts = hsts
        self.cacheable_prefixes = tuple(cacheable_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        cacheable = path.startswith(self.cacheable_prefixes)
        hsts = self.hsts or scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in BASE_HEADERS.items():
                    headers[name] = value
                if not cacheable:
                    headers["cache-control"] = "no-store"
                    headers["pragma"] = "no-cache"
                if hsts:
                    headers["strict-transport-security"] = HSTS
            await send(message)

        await self.app(scope, receive, send_with_headers)
