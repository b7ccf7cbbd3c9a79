"""Who calls the API: HTTP Basic (user name + API token), ``Bearer`` token, or a UI session.

AUTOMATIC1111 clients send ``--api-auth`` credentials as HTTP Basic (``webuiapi.set_auth``,
``requests``' ``auth=``); Obscura takes the account's user name and one of its API tokens
(``obscura token create USER --name N``) as the password. Passwords are not accepted here: a
token can be revoked alone and never unlocks the gallery. In personal mode nobody logs in (the
server listens on loopback only).

The caller is identified once per request, in one place (:meth:`webui.auth.Gate.identify`, run
in a worker thread by :mod:`webui.middleware.identity`); this module only turns what was found
into the API's answers: 401, or 429 with ``retry-after`` while the caller must wait.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from webui.api.problems import ApiError
from webui.auth import Gate, Viewer, basic_credentials, basic_token_user
from webui.middleware.guard import BASIC_REALM
from webui.middleware.identity import identify

__all__ = ["REALM", "basic_credentials", "basic_token_user", "require_viewer"]

REALM = BASIC_REALM  # the guard's 401 and the API's ask for the same credentials


async def require_viewer(gate: Gate, connection: HTTPConnection) -> Viewer:
    """The caller (as the identity middleware found it), or a JSON 401 / 429."""
    viewer, throttled = await identify(gate, connection.scope)
    if throttled is not None:
        headers = {"retry-after": str(throttled.retry_after)} if throttled.retry_after else {}
        raise ApiError(429, "throttled", str(throttled), headers=headers)
    if viewer is None:
        raise ApiError(
            401,
            "unauthorized",
            "Send your user name and an API token (HTTP Basic), or 'Authorization: Bearer "
            "<token>'; create a token with `obscura token create USER --name NAME`.",
            headers={"www-authenticate": REALM},
        )
    return viewer
