"""Who is asking: sessions (cookie), API tokens (``Authorization: Bearer``), personal mode.

Login goes through :meth:`privacy.accounts.Accounts.login_async` (Argon2 in a worker thread,
throttled per account and per client). The session token lives in an ``HttpOnly``,
``SameSite=Strict`` cookie (``Secure`` under TLS); the server keeps only its hash. The same
``POST /login`` answers ``gradio_client``'s ``auth=(username, password)``.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from privacy.accounts import Accounts, Session
from privacy.errors import PrivacyError
from privacy.throttle import LoginThrottledError
from webui import pages
from webui.i18n import COOKIE as LANG_COOKIE
from webui.i18n import error_text, language_of, text

SESSION_COOKIE = "obscura_session"
PERSONAL = "personal"
IDENTIFIED = "obscura_viewer"  # scope["state"] key: the request's Viewer (or None)


@dataclass(frozen=True)
class Viewer:
    """The person behind a request. ``user_id`` is the pseudonymous id (``personal`` in
    personal mode); ``session`` is set for password logins (it holds the gallery key)."""

    user_id: str
    role: str
    session: Session | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Gate:
    """Turns request headers into a :class:`Viewer` (or ``None``) for one server."""

    def __init__(self, accounts: Accounts | None, *, secure_cookie: bool = False) -> None:
        self.accounts = accounts
        self.secure_cookie = secure_cookie

    @property
    def personal(self) -> bool:
        return self.accounts is None

    def identify(self, headers: Any, cookies: Any, client: str | None = None) -> Viewer | None:
        """The one place a caller is identified (run off the event loop by
        :class:`webui.middleware.identity.IdentityMiddleware`): the session cookie, else an
        API token as ``Authorization: Bearer`` or as the password of HTTP Basic with the
        account's user name (AUTOMATIC1111 clients); everyone in personal mode. A refused
        credential is ``None``; raises :class:`LoginThrottledError` while the caller must wait."""
        accounts = self.accounts
        if accounts is None:
            return Viewer(PERSONAL, "admin")
        token = cookies.get(SESSION_COOKIE)
        if token:
            try:
                session = accounts.get_session(token)
            except PrivacyError:  # a damaged database: not logged in; the login page says why
                session = None
            if session is not None:
                return Viewer(session.user_id, session.role, session)
        authorization = headers.get("authorization") or ""
        scheme, _, credential = authorization.partition(" ")
        basic = basic_credentials(authorization)
        try:
            if scheme.lower() == "bearer" and credential.strip():
                user_id = accounts.verify_token(credential.strip(), client=client)
            elif basic is not None:
                user_id = basic_token_user(accounts, *basic, client)
            else:
                return None
            return Viewer(user_id, accounts.user(user_id).role)
        except LoginThrottledError:
            raise
        except PrivacyError:
            return None

    def viewer(self, headers: Any, cookies: Any, client: str | None = None) -> Viewer | None:
        """:meth:`identify`, with a throttled caller as ``None``."""
        try:
            return self.identify(headers, cookies, client)
        except LoginThrottledError:
            return None

    def viewer_of(self, request: Any) -> Viewer | None:
        """For a FastAPI ``Request`` or a ``gr.Request``: what the identity middleware put in
        the request's scope (identified once per request); identified here only for a request
        that did not pass the middleware."""
        if request is None:
            return Viewer(PERSONAL, "admin") if self.accounts is None else None
        starlette = getattr(request, "__dict__", {}).get("request", request)  # gr.Request wraps it
        scope = getattr(starlette, "scope", None)
        if isinstance(scope, dict) and IDENTIFIED in scope.get("state", {}):
            found: Viewer | None = scope["state"][IDENTIFIED]
            return found
        client = getattr(getattr(request, "client", None), "host", None)
        return self.viewer(request.headers, request.cookies, client)

    def auth_dependency(self, request: Request) -> str | None:
        """Gradio's ``auth_dependency``: the user id, or ``None`` (not logged in)."""
        viewer = self.viewer_of(request)
        return viewer.user_id if viewer else None

    # -- routes --------------------------------------------------------------------------

    def routes(self) -> APIRouter:
        router = APIRouter()

        def html(body: str, status: int = 200, lang_choice: str | None = None) -> HTMLResponse:
            response = HTMLResponse(body, status_code=status)
            if lang_choice:
                response.set_cookie(LANG_COOKIE, lang_choice, samesite="strict",
                                    secure=self.secure_cookie, max_age=365 * 86400)
            return response

        @router.get("/login", include_in_schema=False)
        async def login_form(request: Request) -> Response:
            if self.accounts is None:
                return RedirectResponse("/", status_code=303)
            lang = language_of(request)
            notice = text("registered", lang) if "registered" in request.query_params else None
            return html(pages.login_page(lang, notice=notice), lang_choice=_choice(request))

        @router.post("/login", include_in_schema=False)
        async def login(request: Request) -> Response:
            lang = language_of(request)
            form = await request.form()
            username = str(form.get("username") or "").strip()
            password = str(form.get("password") or "")
            from_page = form.get("next") is not None
            if self.accounts is None:
                return JSONResponse({"success": True})
            client = request.client.host if request.client else None
            try:
                session = await self.accounts.login_async(username, password, client=client)
            except LoginThrottledError as err:
                message = error_text(err, lang)
                headers = {"retry-after": str(err.retry_after)} if err.retry_after else {}
                if from_page:
                    return HTMLResponse(pages.login_page(lang, error=message), 429, headers)
                return JSONResponse({"error": message}, 429, headers)
            except PrivacyError as err:
                message = error_text(err, lang)
                # A disk or database fault (full, read-only, damaged) is the server's: 503.
                status = 503 if err.code in _STORAGE_CODES else 401
                if from_page:
                    return html(pages.login_page(lang, error=message), status)
                return JSONResponse({"error": message}, status)
            response: Response
            if from_page:
                response = RedirectResponse("/", status_code=303)
            else:
                response = JSONResponse({"success": True})
            response.set_cookie(
                SESSION_COOKIE, session.token or "", httponly=True, samesite="strict",
                secure=self.secure_cookie, path="/",
            )
            return response

        @router.get("/logout", include_in_schema=False)
        async def logout_form(request: Request) -> Response:
            # A GET changes nothing: it shows the button that POSTs (see SameOriginMiddleware).
            if self.accounts is None:
                return RedirectResponse("/", status_code=303)
            return html(pages.logout_page(language_of(request)))

        @router.post("/logout", include_in_schema=False)
        async def logout(request: Request) -> Response:
            token = request.cookies.get(SESSION_COOKIE)
            if token and self.accounts is not None:
                await _in_thread(self.accounts.logout, token)
            response = RedirectResponse("/login" if self.accounts else "/", status_code=303)
            response.delete_cookie(SESSION_COOKIE, path="/")
            return response

        @router.get("/register", include_in_schema=False)
        async def register_form(request: Request) -> Response:
            if self.accounts is None:
                return RedirectResponse("/", status_code=303)
            return html(pages.register_page(language_of(request)), lang_choice=_choice(request))

        @router.post("/register", include_in_schema=False)
        async def register(request: Request) -> Response:
            lang = language_of(request)
            if self.accounts is None:
                return RedirectResponse("/", status_code=303)
            form = await request.form()
            password = str(form.get("password") or "")
            if password != str(form.get("password2") or ""):
                return html(pages.register_page(lang, error=text("passwords_differ", lang)), 400)
            try:
                accounts = self.accounts
                await _in_thread(
                    accounts.register_with_invite,
                    str(form.get("invite") or "").strip(),
                    str(form.get("username") or "").strip(),
                    password,
                )
            except PrivacyError as err:
                status = 429 if isinstance(err, LoginThrottledError) else (
                    503 if err.code in _STORAGE_CODES else 400)
                return html(pages.register_page(lang, error=error_text(err, lang)), status)
            return RedirectResponse("/login?registered=1", status_code=303)

        return router


def basic_credentials(authorization: str) -> tuple[str, str] | None:
    """``(user name, password)`` from an ``Authorization: Basic …`` value, else ``None``."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    if not colon:
        return None
    return username, password


def basic_token_user(accounts: Accounts, username: str, token: str, client: str | None) -> str:
    """The user id when ``token`` is one of ``username``'s API tokens; raises PrivacyError."""
    user_id = accounts.verify_token(token, client=client)
    try:
        owner = accounts.user(user_id).username
    except PrivacyError:
        owner = ""
    if not secrets.compare_digest(owner.encode(), username.strip().encode()):
        # Somebody else's token, or a name that does not go with it. Tokens are 256-bit random:
        # guessing needs no throttle (privacy/throttle.py), so nothing is counted.
        raise PrivacyError("token_invalid", "The API token is not valid; it may have been revoked.")
    return user_id


# privacy.errors.StorageError codes: the server's fault, not the person's (login, register).
_STORAGE_CODES = frozenset({"disk_full", "disk_read_only", "disk_error", "database_damaged"})


def _choice(request: Request) -> str | None:
    from webui.i18n import normalise

    return normalise(request.query_params.get("lang"))


async def _in_thread(function: Any, *args: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(function, *args)
