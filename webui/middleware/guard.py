"""The access guard in front of Gradio: who may reach which route, and whose files and
sessions are whose.

Gradio ties nothing to a user: any cached file can be fetched by URL, and ``cancel``,
``heartbeat``, ``stream`` and ``reset`` answer anyone who names a session or event id. This
guard:

* lets only the public paths through without a login (the login and register pages,
  ``/healthz``, Gradio's static front-end files); HTML pages redirect to ``/login``, the rest
  get 401;
* refuses any path with ``.`` or ``..`` segments or doubled slashes, so the path it checks is the
  path Gradio serves (``scope["path"]`` is already percent-decoded and is never decoded again);
* refuses routes Obscura never uses (proxying other servers, monitoring, MCP, "vibe" editing,
  ``/run`` outside the queue, run history, deep links, which copy a session's state into a link
  that anyone could open) and serves only the ``/gradio_api`` routes the UI and
  ``gradio_client`` need (``API_ROUTES``); a ``deep_link`` query is refused everywhere;
* takes a query parameter the guard checks (``session_hash``, ``upload_id``) only when it is
  given exactly once: Starlette would read the last of several, the guard another;
* binds each Gradio ``session_hash`` to the first user who uses it, and each queued
  ``event_id`` to the user who started it; another user naming them gets 403;
* records the paths ``/gradio_api/upload`` returns as the uploader's, and serves
  ``/gradio_api/file=`` only for the uploader's own uploads (outputs never are files);
* binds each upload's client-chosen ``upload_id`` to its user, so that only they can follow
  ``/gradio_api/upload_progress`` (which names the file).
"""

from __future__ import annotations

import json
import posixpath
import re
import threading
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webui.uploads import UploadOwners

Identify = Callable[[Scope], Awaitable[str | None]]

API = "/gradio_api"
PUBLIC_EXACT = frozenset({"/login", "/register", "/healthz", "/favicon.ico", "/robots.txt"})
PUBLIC_PREFIXES = ("/assets/", "/static/", "/svelte/", f"{API}/assets/", f"{API}/static/")
REFUSED = re.compile(
    rf"^(?:{API})?/(?:proxy=|monitoring|mcp|vibe-|undo-vibe-|run/|api/|runs|run-history|"
    r"dev/reload|process_recording|custom_component/|file/|deep_link)"
)
# What Gradio 6's front end and gradio_client call under /gradio_api; anything else is 404.
API_ROUTES = re.compile(
    r"^/(?:info|app_id|theme\.css|queue/join|queue/data|upload|upload_progress|cancel|reset|"
    r"component_server)/?$|^/(?:heartbeat|stream|call)/[^/]|^/file=."
)
MAX_BODY = 64 * 1024 * 1024


class Ownership:
    """First user to use a key owns it (session hashes, event ids); bounded in size."""

    def __init__(self, limit: int = 100_000) -> None:
        self._owner: dict[str, str] = {}
        self._lock = threading.Lock()
        self._limit = limit

    def claim(self, key: str, user: str) -> bool:
        with self._lock:
            owner = self._owner.setdefault(key, user)
            if len(self._owner) > self._limit:
                for old in list(self._owner)[: self._limit // 10]:
                    self._owner.pop(old, None)
            return owner == user

    def owner(self, key: str) -> str | None:
        with self._lock:
            return self._owner.get(key)


class AccessGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        identify: Identify,
        uploads: UploadOwners,
        sessions: Ownership | None = None,
        events: Ownership | None = None,
    ) -> None:
        self.app = app
        self.identify = identify
        self.uploads = uploads
        self.sessions = sessions or Ownership()
        self.events = events or Ownership()
        self.upload_ids = Ownership()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if not _is_normal(path) or _given(scope, "deep_link"):
            await _deny(scope, receive, send, 404, "Not found.")
            return
        if path in PUBLIC_EXACT or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        if REFUSED.match(path):
            await _deny(scope, receive, send, 404, "Not found.")
            return
        user = await self.identify(scope)
        if user is None:
            await self._not_logged_in(scope, receive, send)
            return
        scope.setdefault("state", {})["obscura_user"] = user
        if not path.startswith(API):
            await self.app(scope, receive, send)
            return
        await self._gradio_api(scope, receive, send, path[len(API):], user)

    async def _not_logged_in(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        if scope["type"] == "http" and scope["method"] == "GET" and "text/html" in headers.get(
            "accept", ""
        ):
            query = scope.get("query_string", b"").decode("latin-1")
            target = "/login" + (f"?{query}" if query.startswith("lang=") else "")
            await RedirectResponse(target, status_code=303)(scope, receive, send)
            return
        await _deny(scope, receive, send, 401, "Log in first.")

    async def _gradio_api(
        self, scope: Scope, receive: Receive, send: Send, route: str, user: str
    ) -> None:
        if not API_ROUTES.match(route):
            await _deny(scope, receive, send, 404, "Not found.")
            return
        if route.startswith("/file="):
            path = route[len("/file="):]  # already decoded once, as Gradio reads it
            if not self.uploads.owns(path, user):
                await _deny(scope, receive, send, 404, "Not found.")
                return
            await self.app(scope, receive, send)
            return
        if route.startswith("/heartbeat/"):
            if not self.sessions.claim(route.split("/")[2], user):
                await _deny(scope, receive, send, 403, "Not your session.")
                return
            await self.app(scope, receive, send)
            return
        if route.startswith("/stream/"):
            parts = route.split("/")
            key = parts[2] if len(parts) > 2 else ""
            if scope["method"] == "POST":
                allowed = self.events.owner(key) == user
            else:
                allowed = self.sessions.claim(key, user)
            if not allowed:
                await _deny(scope, receive, send, 403, "Not your stream.")
                return
            await self.app(scope, receive, send)
            return
        if route.rstrip("/") == "/queue/data":
            session = _single(scope, "session_hash")
            if not session or not self.sessions.claim(session, user):
                await _deny(scope, receive, send, 403, "Not your session.")
                return
            await self.app(scope, receive, send)
            return
        if route.rstrip("/") in ("/upload", "/upload_progress") and _given(scope, "upload_id"):
            upload_id = _single(scope, "upload_id")
            if not upload_id or not self.upload_ids.claim(upload_id, user):
                await _deny(scope, receive, send, 403, "Not your upload.")
                return
        elif route.rstrip("/") == "/upload_progress":
            await _deny(scope, receive, send, 403, "Not your upload.")
            return
        if route.startswith("/call/") and scope["method"] == "GET":
            event_id = route.rstrip("/").split("/")[-1]
            if self.events.owner(event_id) != user:
                await _deny(scope, receive, send, 403, "Not your job.")
                return
            await self.app(scope, receive, send)
            return
        if route.rstrip("/") == "/upload" and scope["method"] == "POST":
            await self.app(scope, receive, self._record_uploads(send, user))
            return
        if scope["type"] == "http" and scope["method"] == "POST" and (
            route.rstrip("/") in ("/queue/join", "/cancel", "/reset", "/component_server")
            or route.startswith("/call/")
        ):
            await self._check_body(scope, receive, send, route, user)
            return
        await self.app(scope, receive, send)

    async def _check_body(
        self, scope: Scope, receive: Receive, send: Send, route: str, user: str
    ) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY:
                await _deny(scope, receive, send, 413, "Too large.")
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        session, event_id = await _ids_in_body(scope, body)
        if session is not None and not self.sessions.claim(session, user):
            await _deny(scope, receive, send, 403, "Not your session.")
            return
        if route.rstrip("/") in ("/cancel", "/reset") and event_id is not None:
            if self.events.owner(event_id) != user:
                await _deny(scope, receive, send, 403, "Not your job.")
                return
        if route.rstrip("/") == "/queue/join" or route.startswith("/call/"):
            await self.app(scope, replay, self._record_event(send, user))
            return
        await self.app(scope, replay, send)

    def _record_event(self, send: Send, user: str) -> Send:
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    try:
                        event_id = json.loads(b"".join(chunks)).get("event_id")
                        if isinstance(event_id, str):
                            self.events.claim(event_id, user)
                    except (ValueError, AttributeError):
                        pass
            await send(message)

        return capture

    def _record_uploads(self, send: Send, user: str) -> Send:
        chunks: list[bytes] = []
        start: Message | None = None

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message  # held back until the paths are recorded
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            try:
                paths = json.loads(body)
            except ValueError:
                paths = []
            for path in paths if isinstance(paths, list) else []:
                if isinstance(path, str):
                    self.uploads.record(path, user)
            if start is not None:
                await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": False})

        return capture


def _is_normal(path: str) -> bool:
    """No ``.`` or ``..`` segment and no doubled slash (a trailing slash is fine)."""
    trimmed = path.rstrip("/") or "/"
    return path.startswith("/") and posixpath.normpath(trimmed) == trimmed and "//" not in path


def _query(scope: Scope) -> list[tuple[str, str]]:
    """The query string's pairs, parsed as Starlette parses it."""
    return parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


def _given(scope: Scope, name: str) -> bool:
    return any(key == name for key, _ in _query(scope))


def _single(scope: Scope, name: str) -> str | None:
    """The value of query parameter ``name`` when it is given exactly once, else ``None``."""
    values = [value for key, value in _query(scope) if key == name]
    return values[0] if len(values) == 1 else None


async def _ids_in_body(scope: Scope, body: bytes) -> tuple[str | None, str | None]:
    """The ``session_hash`` and ``event_id`` a JSON or multipart request body names."""
    content_type = Headers(scope=scope).get("content-type", "")
    data: dict[str, object] = {}
    if content_type.startswith("multipart/form-data"):
        sent = False

        async def once() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        request = Request(scope, once)
        try:
            form = await request.form(max_files=1000, max_fields=1000)
            data = {key: value for key, value in form.items() if isinstance(value, str)}
            await form.close()
        except Exception:  # noqa: BLE001  (an unparsable body: Gradio refuses it too)
            data = {}
    elif body:
        try:
            parsed = json.loads(body)
            data = parsed if isinstance(parsed, dict) else {}
        except ValueError:
            data = {}
    session = data.get("session_hash")
    event_id = data.get("event_id")
    return (
        session if isinstance(session, str) else None,
        event_id if isinstance(event_id, str) else None,
    )


async def _deny(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    response = (
        JSONResponse({"error": message}, status_code=status)
        if status in (401, 403)
        else PlainTextResponse(message, status_code=status)
    )
    await response(scope, receive, send)
