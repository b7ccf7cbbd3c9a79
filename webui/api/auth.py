"""Who calls the API: HTTP Basic (user name + API token), ``Bearer`` token, or a UI session.

AUTOMATIC1111 clients send ``--api-auth`` credentials as HTTP Basic (``webuiapi.set_auth``,
``requests``' ``auth=``); Obscura takes the account's user name and one of its API tokens
(``obscura token create USER --name N``) as the password. Passwords are not accepted here: a
token can be revoked alone and never unlocks the gallery. Every failure counts against the
caller's address in the login throttle (:meth:`privacy.accounts.Accounts.verify_token`), so
guessing tokens is as slow as guessing passwords. In personal mode nobody logs in (the server
listens on loopback only).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Any

from starlette.requests import HTTPConnection

from privacy.accounts import Accounts
from privacy.errors import PrivacyError
from privacy.throttle import LoginThrottledError
from webui.api.problems import ApiError
from webui.auth import Gate, Viewer

REALM = 'Basic realm="Obscura API", charset="UTF-8"'


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
        # Somebody else's token, or a name that does not go with it: a failed attempt.
        accounts.throttle.failed(None, client)
        raise PrivacyError("token_invalid", "The API token is not valid; it may have been revoked.")
    return user_id


def api_viewer(gate: Gate, connection: Any) -> Viewer | None:
    """The caller of an API request: what the UI accepts (session cookie, ``Bearer`` token),
    else HTTP Basic with an API token; everyone in personal mode. Raises
    :class:`LoginThrottledError` while the caller's address is throttled."""
    accounts = gate.accounts
    if accounts is None:
        return gate.viewer_of(connection)
    client = connection.client.host if connection.client else None
    accounts.throttle.check(None, client)
    viewer = gate.viewer_of(connection)
    credentials = basic_credentials(connection.headers.get("authorization") or "")
    if viewer is not None or credentials is None:
        return viewer
    try:
        user_id = basic_token_user(accounts, *credentials, client)
    except LoginThrottledError:
        raise
    except PrivacyError:
        return None
    return Viewer(user_id, accounts.user(user_id).role)


def require_viewer(gate: Gate, connection: HTTPConnection) -> Viewer:
    """:func:`api_viewer`, or a JSON 401 / 429."""
    try:
        viewer = api_viewer(gate, connection)
    except LoginThrottledError as err:
        headers = {"retry-after": str(err.retry_after)} if err.retry_after else {}
        raise ApiError(429, "throttled", str(err), headers=headers) from None
    if viewer is None:
        raise ApiError(
            401,
            "unauthorized",
            "Send your user name and an API token (HTTP Basic), or 'Authorization: Bearer "
            "<token>'; create a token with `obscura token create USER --name NAME`.",
            headers={"www-authenticate": REALM},
        )
    return viewer


def identify_caller(gate: Gate, connection: Any) -> Viewer | None:
    """For the server's access guard (in front of every route): the UI's callers (cookie,
    ``Bearer``), else HTTP Basic with an API token, so that AUTOMATIC1111 clients get through to the API. Never
    raises: a refused or throttled caller is ``None`` (the guard answers 401)."""
    accounts = gate.accounts
    viewer = gate.viewer_of(connection)
    credentials = basic_credentials(connection.headers.get("authorization") or "")
    if accounts is None or viewer is not None or credentials is None:
        return viewer
    client = connection.client.host if connection.client else None
    try:
        user_id = basic_token_user(accounts, *credentials, client)
        return Viewer(user_id, accounts.user(user_id).role)
    except PrivacyError:
        return None
