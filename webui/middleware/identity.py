"""Who is asking, found once per request, off the event loop.

Every request (but Gradio's static front-end files) passes :meth:`webui.auth.Gate.identify`
once, in a worker thread (it reads SQLite and hashes tokens), and the result is put in the
request's scope, as Starlette's ``AuthenticationMiddleware`` does: the access guard, the
``/sdapi/v1`` routes, Gradio's ``auth_dependency`` and the UI's handlers all read it from there
(:func:`identity_of`, :meth:`webui.auth.Gate.viewer_of`). Throttling and token checks therefore
happen in one place, once.
"""

from __future__ import annotations

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from privacy.throttle import LoginThrottledError
from webui.auth import IDENTIFIED, Gate, Viewer

THROTTLED = "obscura_throttled"  # scope["state"] key: the LoginThrottledError, if any
STATIC = ("/assets/", "/static/", "/svelte/", "/gradio_api/assets/", "/gradio_api/static/")


def identity_of(scope: Scope) -> tuple[Viewer | None, LoginThrottledError | None]:
    """What :class:`IdentityMiddleware` found for this request (``(None, None)`` if nothing)."""
    state = scope.get("state", {})
    return state.get(IDENTIFIED), state.get(THROTTLED)


def is_identified(scope: Scope) -> bool:
    return IDENTIFIED in scope.get("state", {})


async def identify(gate: Gate, scope: Scope) -> tuple[Viewer | None, LoginThrottledError | None]:
    """Identify the caller of ``scope`` in a worker thread (once) and store it in the scope."""
    if is_identified(scope):
        return identity_of(scope)
    connection = HTTPConnection(scope)
    client = connection.client.host if connection.client else None
    headers, cookies = Headers(scope=scope), connection.cookies

    def run() -> tuple[Viewer | None, LoginThrottledError | None]:
        try:
            return gate.identify(headers, cookies, client), None
        except LoginThrottledError as err:
            return None, err

    viewer, throttled = await anyio.to_thread.run_sync(run)
    state = scope.setdefault("state", {})
    state[IDENTIFIED] = viewer
    state[THROTTLED] = throttled
    return viewer, throttled


class IdentityMiddleware:
    """Puts the request's :class:`~webui.auth.Viewer` (or ``None``) in ``scope["state"]``."""

    def __init__(self, app: ASGIApp, *, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not scope.get("path", "").startswith(STATIC):
            await identify(self.gate, scope)
        await self.app(scope, receive, send)
