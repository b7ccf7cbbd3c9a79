"""Container health check: ``GET /healthz`` on the container's own address; exit 0 when it says ok.

Installed in the image as ``/usr/local/lib/obscura/healthcheck.py`` and run by the Dockerfile's
``HEALTHCHECK`` and compose.yaml's ``healthcheck``. Standard library only (no curl in the image).

Where it connects: ``127.0.0.1`` (the container's own loopback; the server listens on 0.0.0.0 inside
the container), or ``OBSCURA_HOST`` when that names one specific address, on ``OBSCURA_PORT``
(default 7860).

Which scheme: the server speaks HTTPS when it was given ``--tls auto`` or a certificate. When
``OBSCURA_TLS`` or ``OBSCURA_TLS_CERT`` is set, https is tried first, otherwise http; if the first
scheme fails to connect, the other is tried, so a server started with ``--tls`` flags instead of
environment variables is still found. ``OBSCURA_HEALTHCHECK_URL`` replaces all of this with one URL.

Why the certificate is not verified: the check never leaves the container's own network
namespace, and a self-signed (``--tls auto``) or internal-CA certificate does not name 127.0.0.1.
Nothing secret is sent (no cookie, no token, no body) and ``/healthz`` answers nothing personal,
so there is nothing for an impostor on the container's own loopback to steal.

Exit status: 0 healthy; 1 not healthy (one line on stderr says why, without any response body).
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 5.0
WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}  # noqa: S104 (names, not a bind)


def candidate_urls(env: dict[str, str]) -> list[str]:
    """The URLs to try, in order."""
    explicit = env.get("OBSCURA_HEALTHCHECK_URL", "").strip()
    if explicit:
        return [explicit]
    host = env.get("OBSCURA_HOST", "").strip()
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    port = env.get("OBSCURA_PORT", "").strip() or "7860"
    tls_hinted = bool(env.get("OBSCURA_TLS", "").strip() or env.get("OBSCURA_TLS_CERT", "").strip())
    schemes = ["https", "http"] if tls_hinted else ["http", "https"]
    return [f"{scheme}://{host}:{port}/healthz" for scheme in schemes]


def probe(url: str) -> str | None:
    """None when ``url`` answers 200 with ``{"status": "ok"}``; otherwise a short reason."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # see the module docstring: loopback, nothing secret sent
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS, context=context) as answer:  # noqa: S310
            if answer.status != 200:
                return f"HTTP {answer.status}"
            body = json.loads(answer.read(4096))
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:  # URLError, SSL errors, timeouts and bad JSON alike
        return type(exc).__name__
    if not isinstance(body, dict) or body.get("status") != "ok":
        return "status is not ok"
    return None


def main() -> int:
    reasons = []
    for url in candidate_urls(dict(os.environ)):
        reason = probe(url)
        if reason is None:
            return 0
        reasons.append(f"{url.split('://', 1)[0]}: {reason}")
    print("obscura unhealthy (" + "; ".join(reasons) + ")", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
