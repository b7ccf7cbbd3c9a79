"""Make Gradio's front end speak the language the visitor chose.

Gradio translates labels in the browser from ``navigator.language``. This middleware picks
the language on the server (``?lang=`` → ``obscura_lang`` cookie → ``Accept-Language``, see
:mod:`webui.i18n`), remembers an explicit ``?lang=`` choice in the cookie, and puts a tiny
inline script at the top of the app page that presents that language as the browser's, before
Gradio's own scripts run. The language links in the UI are plain ``?lang=`` links.
"""

from __future__ import annotations

import json

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webui.i18n import BROWSER_LOCALES, COOKIE, language_of, normalise

_SCRIPT = (
    "<script>(function(){{var l={locale};try{{"
    'Object.defineProperty(Navigator.prototype,"language",{{get:function(){{return l}},'
    "configurable:true}});"
    'Object.defineProperty(Navigator.prototype,"languages",{{get:function(){{return [l]}},'
    "configurable:true}});}}catch(e){{}}}})();</script>"
)


def language_script(lang: str) -> bytes:
    return _SCRIPT.format(locale=json.dumps(BROWSER_LOCALES[lang])).encode("ascii")


class LanguageMiddleware:
    def __init__(self, app: ASGIApp, *, pages: tuple[str, ...] = ("/",), secure: bool = False):
        self.app = app
        self.pages = pages
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] not in self.pages:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        lang = language_of(request)
        choice = normalise(request.query_params.get("lang"))
        # The page is rewritten below: ask for it uncompressed.
        scope = dict(scope)
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"accept-encoding"]
        start: Message | None = None
        chunks: list[bytes] = []

        async def inject(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            headers = MutableHeaders(scope=start)
            if headers.get("content-type", "").startswith("text/html") and b"<head>" in body:
                body = body.replace(b"<head>", b"<head>" + language_script(lang), 1)
                headers["content-length"] = str(len(body))
            if choice:
                secure = "; Secure" if self.secure else ""
                headers.append(
                    "set-cookie",
                    f"{COOKIE}={choice}; Path=/; Max-Age=31536000; SameSite=Strict{secure}",
                )
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, inject)


