"""Refuse requests sent to a host name that is not this server's (DNS rebinding).

A page on ``attacker.example`` can make its own name resolve to ``127.0.0.1`` (or to the
studio's LAN address) a moment after it loaded. The browser then talks to Obscura while
believing it talks to ``attacker.example``: its ``Origin`` matches its ``Host``, so the origin
check passes, and the page can read live previews, start jobs, read ``/config``. What gives it
away is the ``Host`` header, which still says ``attacker.example``. This middleware answers
421 to every HTTP request, and refuses every WebSocket handshake, whose ``Host`` is not one of
the names the server is known by:

* always: the loopback names ``127.0.0.1``, ``localhost`` and ``[::1]``, the configured listening
  address (unless it is the wildcard ``0.0.0.0`` / ``::``), and the ``allowed_hosts`` setting
  (e.g. the public name of a reverse proxy);
* accounts mode listening on the wildcard, in addition: this machine's host name and its own
  addresses (found as :mod:`webui.tls` finds them, from the kernel's table, no network call);
* accounts mode with TLS, in addition: the DNS names and addresses in the certificate (wildcard
  names such as ``*.studio.lan`` are not expanded: list the exact name in ``allowed_hosts``).

Personal mode is loopback only. The port is not compared: a name that is ours is ours on any port.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from webui.config import Settings
from webui.tls import CERT_NAME, local_names

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 (names, not a bind)
REFUSAL = "This server is not known by that name; open it at its own address."


def host_name(host: str) -> str | None:
    """The lower-case name or canonical IP address in a ``Host`` header (port dropped), or
    ``None`` when the header is malformed."""
    if not host or any(c in host for c in "@/?#\\ \t"):
        return None
    try:
        parts = urlsplit(f"//{host}")
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        return None
    return canonical(parts.hostname or "")


def canonical(name: str) -> str | None:
    """``name`` lower-cased, without brackets or a final dot; IP addresses in their short form."""
    name = name.strip().strip("[]").rstrip(".").lower()
    if not name:
        return None
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def certificate_names(cert: Path) -> set[str]:
    """The DNS names and IP addresses a PEM certificate is issued for (none if unreadable)."""
    try:
        loaded = x509.load_pem_x509_certificate(cert.read_bytes())
        alt = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return set()
    names = {n for n in alt.get_values_for_type(x509.DNSName) if "*" not in n}
    return names | {str(a) for a in alt.get_values_for_type(x509.IPAddress)}


def certificate_path(settings: Settings) -> Path | None:
    if settings.tls_cert is not None:
        return settings.tls_cert
    if settings.tls == "auto":
        return settings.data_dir / "tls" / CERT_NAME
    return None


def allowed_hosts(settings: Settings, *, personal: bool) -> frozenset[str]:
    """Every host name a request to this server may carry (see the module docstring)."""
    names: set[str] = set(LOOPBACK_NAMES) | set(settings.allowed_hosts)
    if settings.host not in WILDCARD_ADDRESSES:
        names.add(settings.host)
    elif not personal:
        dns, addresses = local_names()
        names |= set(dns) | {str(a) for a in addresses}
    cert = certificate_path(settings)
    if not personal and cert is not None:
        names |= certificate_names(cert)
    return frozenset(filter(None, (canonical(n) for n in names)))


class AllowedHostMiddleware:
    """421 (HTTP) or a refused handshake (WebSocket) when ``Host`` is not in ``allowed``."""

    def __init__(self, app: ASGIApp, *, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(filter(None, (canonical(n) for n in allowed)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        name = host_name(Headers(scope=scope).get("host", ""))
        if name is not None and name in self.allowed:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        await PlainTextResponse(REFUSAL, status_code=421)(scope, receive, send)
