"""A network guard for tests: records every non-loopback connection attempt in this process."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import sys
import threading
from collections.abc import Iterator

# -- network guard ------------------------------------------------------------------------
# An audit hook sees every socket.connect / getaddrinfo in this process. It cannot be removed
# once added, so it is installed once and records only while a guard is active.
_ATTEMPTS: list[str] | None = None
_LOCK = threading.Lock()


def _is_loopback(host: object) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return str(host).endswith(".localhost")


def _audit(event: str, args: tuple) -> None:
    if _ATTEMPTS is None:
        return
    if event == "socket.connect":
        sock, address = args
        if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
            host = address[0] if isinstance(address, tuple) else address
            if not _is_loopback(host):
                _ATTEMPTS.append(f"connect {host}")
    elif event == "socket.getaddrinfo":
        host = args[0]
        if isinstance(host, bytes):
            host = host.decode(errors="replace")
        if not _is_loopback(host):
            _ATTEMPTS.append(f"getaddrinfo {host}")


sys.addaudithook(_audit)


@contextlib.contextmanager
def network_guard() -> Iterator[list[str]]:
    """Record every non-loopback connection attempt made inside the block."""
    global _ATTEMPTS
    with _LOCK:
        _ATTEMPTS = []
        try:
            yield _ATTEMPTS
        finally:
            _ATTEMPTS = None
