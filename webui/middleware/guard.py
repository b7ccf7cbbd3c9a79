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
* binds each Gradio ``session_hash`` to the first user who POSTs with it (a GET, which any page
  can make with the person's cookie, only uses an unclaimed or own one and never claims), and
  each queued ``event_id`` to the user who started it; another user naming them gets 403;
* records the paths ``/gradio_api/upload`` returns as the uploader's and, before the answer
  leaves, moves each file out of Gradio's cache into memory (:meth:`UploadOwners.hold`); serves
  ``/gradio_api/file=`` only for the uploader's own uploads, from memory (outputs never are
  files);
* binds each upload's client-chosen ``upload_id`` to its user, so that only they can follow
  ``/gradio_api/upload_progress`` (which names the file);
* reads every body it checks (``queue/join``, ``call/*``, ``cancel``, ``reset``) as a JSON
  object and refuses one it cannot read (400): it never lets through what it could not check;
  an ``fn_index`` that names no event is 422 (Gradio answers 500 with a traceback);
* refuses (422, one sentence) any file a body names that is not an upload of this user's in
  Gradio's cache: a ``path`` or ``url`` that is a link (Gradio would download it, DNS look-up
  included), another user's upload or any other local file. ``url`` may also be a ``data:``
  URL (what the UI sends back of a picture it was shown);
* keeps its ownership maps by age (sessions a week since last use, event ids a day, upload ids
  an hour), never by pressure: past the size limit a new one is refused (503), and one user's
  many sessions push out only their own;
* closes ``/gradio_api/component_server``: the only server function of the UI's components is
  the mask painter's ``accept_blobs``, whose blobs were keyed by a client-chosen id, tied to no
  user and never swept. Without it the painter uploads its layers like any other file.

Who the caller is comes from :mod:`webui.middleware.identity` (found once per request, in a
worker thread); a caller the login throttle holds back gets 429 with ``retry-after``.
"""

from __future__ import annotations

import json
import mimetypes
import posixpath
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webui.auth import Gate
from webui.i18n import language_of, text
from webui.middleware.identity import identify
from webui.uploads import UploadOwners

API = "/gradio_api"
PUBLIC_EXACT = frozenset({"/login", "/register", "/healthz", "/favicon.ico", "/robots.txt"})
PUBLIC_PREFIXES = ("/assets/", "/static/", "/svelte/", f"{API}/assets/", f"{API}/static/")
REFUSED = re.compile(
    rf"^(?:{API})?/(?:proxy=|monitoring|mcp|vibe-|undo-vibe-|run/|api/|runs|run-history|"
    r"dev/reload|process_recording|custom_component/|file/|deep_link)"
)
# What Gradio 6's front end and gradio_client call under /gradio_api; anything else is 404.
API_ROUTES = re.compile(
    r"^/(?:info|app_id|theme\.css|queue/join|queue/data|upload|upload_progress|cancel|reset)/?$"
    r"|^/(?:heartbeat|stream|call)/[^/]|^/file=."
)
MAX_BODY = 64 * 1024 * 1024
MAX_DEPTH = 64  # nesting of a checked JSON body (Gradio's values nest a few levels)
FILE_URL = f"{API}/file="
# A 401 for the AUTOMATIC1111 API, or for a caller who sent HTTP Basic credentials, asks for
# them again as A1111's --api-auth does; a browser's own fetches (no credentials, not the API)
# never get it, so a lapsed session shows no Basic dialog.
BASIC_REALM = 'Basic realm="Obscura API", charset="UTF-8"'


class OwnershipFull(Exception):
    """No new key can be recorded until old ones expire."""


class Ownership:
    """First user to use a key owns it (session hashes, event ids) for ``max_age`` seconds
    after its last use. Never forgets a live key under pressure: past ``limit`` keys a new key
    is refused (:class:`OwnershipFull`); one user's keys past ``per_user`` push out only that
    user's oldest."""

    def __init__(
        self,
        limit: int = 100_000,
        *,
        per_user: int = 2_000,
        max_age: float = 7 * 86400,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._owner: dict[str, tuple[str, float]] = {}
        self._by_user: dict[str, OrderedDict[str, None]] = {}
        self._lock = threading.Lock()
        self._limit = limit
        self._per_user = per_user
        self._max_age = max_age
        self._clock = clock

    def claim(self, key: str, user: str) -> bool:
        """Whether ``key`` is ``user``'s (recording it for them when nobody holds it)."""
        now = self._clock()
        with self._lock:
            entry = self._live(key, now)
            if entry is not None:
                if entry[0] != user:
                    return False
                self._owner[key] = (user, now)
                self._by_user[user].move_to_end(key)
                return True
            if len(self._owner) >= self._limit:
                self._expire(now)
                if len(self._owner) >= self._limit:
                    raise OwnershipFull
            mine = self._by_user.setdefault(user, OrderedDict())
            while len(mine) >= self._per_user:
                oldest, _ = mine.popitem(last=False)
                self._owner.pop(oldest, None)
            self._owner[key] = (user, now)
            mine[key] = None
            return True

    def owner(self, key: str) -> str | None:
        with self._lock:
            entry = self._live(key, self._clock())
        return entry[0] if entry else None

    def allows(self, key: str, user: str) -> bool:
        """Whether ``user`` may use ``key`` without claiming it: nobody owns it yet, or they do.
        For GETs, which any page can make with the person's cookie (``<img src>``): only a
        POST, which needs one of our pages (webui/middleware/origin.py), claims."""
        owner = self.owner(key)
        return owner is None or owner == user

    def __len__(self) -> int:
        with self._lock:
            return len(self._owner)

    def _live(self, key: str, now: float) -> tuple[str, float] | None:
        entry = self._owner.get(key)
        if entry is not None and now - entry[1] > self._max_age:
            self._drop(key, entry[0])
            return None
        return entry

    def _drop(self, key: str, user: str) -> None:
        self._owner.pop(key, None)
        mine = self._by_user.get(user)
        if mine is not None:
            mine.pop(key, None)
            if not mine:
                del self._by_user[user]

    def _expire(self, now: float) -> None:
        for key, (user, used) in list(self._owner.items()):
            if now - used > self._max_age:
                self._drop(key, user)


class BadBody(Exception):
    """A body the guard cannot read; it is refused, never passed on unchecked."""


class AccessGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        gate: Gate,
        uploads: UploadOwners,
        sessions: Ownership | None = None,
        events: Ownership | None = None,
        functions: Callable[[], Collection[int]] = frozenset,
        api_names: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        self.app = app
        self.gate = gate
        self.uploads = uploads
        self.sessions = sessions or Ownership()
        # An event id matters while its job runs and its results wait (minutes): a day is ample.
        self.events = events or Ownership(max_age=86400)
        self.upload_ids = Ownership(max_age=3600)  # an upload's progress: while it is sent
        self.joined = Ownership()  # sessions that queued an event (queue/data has a stream)
        self.functions = functions  # Gradio's event ids (fn_index) that exist
        self.api_names = api_names  # and their names (for /gradio_api/call/NAME)

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
        viewer, throttled = await identify(self.gate, scope)
        if throttled is not None:
            headers = {"retry-after": str(throttled.retry_after)} if throttled.retry_after else {}
            await _deny(scope, receive, send, 429, str(throttled), headers)
            return
        if viewer is None:
            await self._not_logged_in(scope, receive, send)
            return
        if not path.startswith(API):
            await self.app(scope, receive, send)
            return
        try:
            await self._gradio_api(scope, receive, send, path[len(API):], viewer.user_id)
        except OwnershipFull:
            await _deny(scope, receive, send, 503, "The server is busy; try again in a few minutes.")

    async def _not_logged_in(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        if scope["type"] == "http" and scope["method"] == "GET" and "text/html" in headers.get(
            "accept", ""
        ):
            query = scope.get("query_string", b"").decode("latin-1")
            target = "/login" + (f"?{query}" if query.startswith("lang=") else "")
            await RedirectResponse(target, status_code=303)(scope, receive, send)
            return
        basic = headers.get("authorization", "").strip().lower().startswith("basic ")
        asks = basic or scope.get("path", "").startswith(("/sdapi/", "/controlnet/"))
        await _deny(scope, receive, send, 401, "Log in first.",
                    {"www-authenticate": BASIC_REALM} if asks else None)

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
            held = self.uploads.held(path, user)
            if held is not None:  # the upload lives in memory only (webui.uploads)
                kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
                await Response(held, media_type=kind, headers={"cache-control": "no-store"})(
                    scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if route.startswith("/heartbeat/"):
            if not self.sessions.allows(route.split("/")[2], user):
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
                allowed = self.sessions.allows(key, user)
            if not allowed:
                await _deny(scope, receive, send, 403, "Not your stream.")
                return
            await self.app(scope, receive, send)
            return
        if route.rstrip("/") == "/queue/data":
            session = _single(scope, "session_hash")
            if not session or self.sessions.owner(session) != user:
                await _deny(scope, receive, send, 403, "Not your session.")
                return
            if self.joined.owner(session) != user:
                # Nothing was ever queued in it: Gradio fails mid-stream, with a traceback.
                await _deny(scope, receive, send, 404, "Not found.")
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
            await self.app(scope, receive, self._record_uploads(scope, send, user))
            return
        if route.startswith("/call/") and route.split("/")[2] not in self.api_names():
            await _deny(scope, receive, send, 404, "Not found.")  # Gradio: 500, traceback
            return
        if scope["type"] == "http" and scope["method"] == "POST" and (
            route.rstrip("/") in ("/queue/join", "/cancel", "/reset")
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

        try:
            data = _json_object(body)
        except BadBody:
            await _deny(scope, receive, send, 400, "The request body could not be read.")
            return
        fn_index = data.get("fn_index")
        if fn_index is not None and (
            type(fn_index) is not int or fn_index not in self.functions()
        ):
            await _deny(scope, receive, send, 422, "There is no such function.")
            return
        if self._foreign_file(data, user):
            sentence = text("file_not_uploaded", language_of(Request(scope)))
            await _deny(scope, receive, send, 422, sentence)
            return
        session, event_id = _ids(data)
        if session is not None and not self.sessions.claim(session, user):
            await _deny(scope, receive, send, 403, "Not your session.")
            return
        if route.rstrip("/") in ("/cancel", "/reset") and event_id is not None:
            if self.events.owner(event_id) != user:
                await _deny(scope, receive, send, 403, "Not your job.")
                return
        if route.rstrip("/") == "/queue/join" or route.startswith("/call/"):
            await self.app(scope, replay, self._record_event(send, user, session))
            return
        await self.app(scope, replay, send)

    def _foreign_file(self, data: object, user: str) -> bool:
        """Whether a value names a file that is not one of ``user``'s uploads (a link, a
        path elsewhere, another user's upload)."""
        for item in _dicts(data):
            path, url = item.get("path"), item.get("url")
            if path is not None and not (isinstance(path, str) and self.uploads.owns(path, user)):
                return True
            if url is not None and not (isinstance(url, str) and self._own_url(url, user)):
                return True
        return False

    def _own_url(self, url: str, user: str) -> bool:
        if url.startswith("data:"):
            return True
        try:
            parts = urlsplit(url)
        except ValueError:
            return False
        if parts.scheme not in ("", "http", "https") or parts.query or parts.fragment:
            return False
        route = unquote(parts.path)
        return route.startswith(FILE_URL) and self.uploads.owns(route[len(FILE_URL):], user)

    def _record_event(self, send: Send, user: str, session: str | None) -> Send:
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    try:
                        event_id = json.loads(b"".join(chunks)).get("event_id")
                        if isinstance(event_id, str):
                            self.events.claim(event_id, user)
                            if session is not None:
                                self.joined.claim(session, user)
                    except (ValueError, AttributeError):
                        pass
            await send(message)

        return capture

    def _record_uploads(self, scope: Scope, send: Send, user: str) -> Send:
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
            held = True
            for path in paths if isinstance(paths, list) else []:
                if isinstance(path, str):
                    # Out of Gradio's cache into memory before anyone learns the path.
                    held = await anyio.to_thread.run_sync(self.uploads.hold, path, user) and held
            if not held:
                sentence = text("uploads_waiting_full", language_of(Request(scope)))
                refusal = JSONResponse({"error": sentence}, status_code=503)
                start = {"type": "http.response.start", "status": 503,
                         "headers": refusal.raw_headers}
                body = bytes(refusal.body)
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


def _json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object (empty: ``{}``); :class:`BadBody` for anything else."""
    if not body.strip():
        return {}
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        raise BadBody from None
    if not isinstance(parsed, dict):
        raise BadBody
    if _depth_over(parsed, MAX_DEPTH):
        raise BadBody
    return parsed


def _depth_over(value: object, limit: int) -> bool:
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def _dicts(value: object) -> Iterator[dict[str, Any]]:
    """Every JSON object inside ``value`` (itself included), however deeply nested."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _ids(data: dict[str, Any]) -> tuple[str | None, str | None]:
    """The ``session_hash`` and ``event_id`` a request body names."""
    session = data.get("session_hash")
    event_id = data.get("event_id")
    return (
        session if isinstance(session, str) else None,
        event_id if isinstance(event_id, str) else None,
    )


async def _deny(
    scope: Scope, receive: Receive, send: Send, status: int, message: str,
    headers: dict[str, str] | None = None,
) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    response = (
        PlainTextResponse(message, status_code=status, headers=headers)
        if status == 404
        else JSONResponse({"error": message}, status_code=status, headers=headers)
    )
    await response(scope, receive, send)
