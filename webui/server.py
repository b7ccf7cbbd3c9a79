"""The server: a FastAPI app with Obscura's routes and middleware in front of Gradio.

Start-up order matters and is fixed in :mod:`webui.cli.serve`: the privacy environment
(``core.offline``) and the RAM directory are set before this module imports Gradio.

Request path, outermost first: security headers → allowed Host (DNS rebinding) → same-origin
check (cross-site requests and forged state changes) → identity (who is asking, once, off the
event loop) → access guard (login, per-user files, sessions and jobs, no server-side fetches) →
language → FastAPI (``/healthz``, login pages) → Gradio.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp

from core.errors import InputError
from core.registry import ensure_demo_model
from privacy.accounts import AccountError, Accounts, ensure_intact
from privacy.errors import PrivacyError
from webui import downloads
from webui.api import build_api_router
from webui.config import Settings, is_loopback
from webui.middleware.guard import AccessGuard
from webui.middleware.headers import SecurityHeadersMiddleware
from webui.middleware.host import AllowedHostMiddleware, allowed_hosts
from webui.middleware.identity import IdentityMiddleware
from webui.middleware.language import LanguageMiddleware
from webui.middleware.origin import SameOriginMiddleware
from webui.ramdir import RamDir
from webui.studio import Studio, open_studio
from webui.tls import TlsFiles, auto_tls, given_tls
from webui.ui.app import CSS, build_blocks
from webui.ui.common import TRANSLATIONS

log = logging.getLogger("obscura.webui")
SWEEP_SECONDS = 15.0


def open_accounts(data_dir: Path, **options: object) -> Accounts | None:
    """The accounts store when it exists and holds at least one account (accounts mode).

    A data folder that has ever held accounts (the ``accounts-mode`` marker) never starts in
    personal mode: a missing, empty, truncated or damaged ``obscura.db`` is refused with one
    sentence (:func:`privacy.accounts.ensure_intact`), and so is any disk fault on opening it
    (a :class:`privacy.errors.StorageError`), instead of a traceback or a silent personal mode.
    """
    ensure_intact(data_dir)
    if not (data_dir / "obscura.db").is_file():
        return None
    accounts = Accounts.in_data_dir(data_dir, **options)
    try:
        if accounts.count_users() == 0:
            accounts.close()
            return None
    except BaseException:
        accounts.close()
        raise
    return accounts


def check_exposure(settings: Settings, personal: bool, tls: bool) -> list[str]:
    """Refuse unsafe listening addresses; return warnings to print."""
    if is_loopback(settings.host):
        return []
    if personal:
        raise InputError(
            "personal_mode_loopback",
            "Personal mode (no accounts) listens on 127.0.0.1 only; to open Obscura to other "
            "devices, first create an administrator with `obscura user add NAME --admin`, then "
            "start with --host {host} --tls auto.",
            host=settings.host,
        )
    if not tls:
        if not settings.insecure_http:
            raise InputError(
                "lan_needs_tls",
                "Listening on {host} needs HTTPS so passwords and pictures are not sent in the "
                "clear: add --tls auto (or --tls-cert/--tls-key), or --insecure-http to accept "
                "the risk.",
                host=settings.host,
            )
        return [
            "WARNING: --insecure-http: passwords, photos and pictures cross the network "
            "unencrypted; anyone on the LAN can read them."
        ]
    return []


def resolve_tls(settings: Settings) -> TlsFiles | None:
    if settings.tls_cert or settings.tls_key:
        if not (settings.tls_cert and settings.tls_key):
            raise InputError("tls_pair", "Give both --tls-cert and --tls-key.")
        return given_tls(settings.tls_cert, settings.tls_key)
    if settings.tls == "auto":
        return auto_tls(settings.data_dir, None if settings.host == "0.0.0.0" else settings.host)  # noqa: S104
    if settings.tls not in (None, "", "off"):
        raise InputError("tls_mode", "--tls takes 'auto' (or use --tls-cert and --tls-key).")
    return None


def build_app(studio: Studio, *, tls: bool = False) -> ASGIApp:
    """The complete ASGI application for ``studio``."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        # Anyone may ask, without a login: it says the server is up and its mode, nothing of
        # what anyone paints (the model of the last job would tell who paints with what).
        return JSONResponse(
            {"status": "ok", "mode": studio.mode},
            headers={"cache-control": "no-store"},
        )

    app.include_router(studio.gate.routes())
    app.include_router(downloads.routes(studio))
    app.include_router(build_api_router(studio))  # AUTOMATIC1111-compatible /sdapi/v1
    demo = build_blocks(studio)
    demo.queue(api_open=False, default_concurrency_limit=4, max_size=256)
    app = gr.mount_gradio_app(
        app,
        demo,
        path="/",
        footer_links=[],
        run_history=False,
        auth_dependency=None if studio.gate.personal else studio.gate.auth_dependency,
        max_file_size=studio.max_upload_bytes,
        show_error=False,
        ssr_mode=False,
        enable_monitoring=False,
        pwa=False,
        i18n=TRANSLATIONS,
        mcp_server=False,
        css=CSS,
    )

    gate = studio.gate
    wrapped: ASGIApp = LanguageMiddleware(app, secure=tls)
    functions = demo.fns  # Gradio's event ids: an unknown fn_index is refused by the guard
    wrapped = AccessGuard(
        wrapped, gate=gate, uploads=studio.uploads, functions=lambda: functions.keys(),
        api_names=lambda: {fn.api_name for fn in functions.values() if fn.api_name},
    )
    # Session cookie, Bearer API token, or HTTP Basic with a user name and an API token:
    # found once per request, in a worker thread, for the guard, the API and Gradio.
    wrapped = IdentityMiddleware(wrapped, gate=gate)
    wrapped = SameOriginMiddleware(wrapped)
    wrapped = AllowedHostMiddleware(wrapped, allowed=allowed_hosts(studio.settings, personal=gate.personal))
    wrapped = SecurityHeadersMiddleware(wrapped, hsts=tls)
    return wrapped


@dataclass
class Sweeper:
    """Every minute: unsubmitted uploads, expired sessions, pictures past retention."""

    studio: Studio
    interval: float = SWEEP_SECONDS

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="obscura-sweeper", daemon=True)
        self._next_audit_sweep = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop and wait for a sweep in progress, so what it uses can be closed after this."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def sweep_once(self) -> None:
        studio = self.studio
        studio.uploads.sweep()
        accounts, gallery = studio.accounts, studio.gallery
        if accounts is not None and gallery is not None:
            accounts.sweep_sessions()

            def retention(owner: str) -> int | None:
                # Only a missing row means "the account is gone, its pictures go". A disk
                # fault, a damaged database or a closed store raises, and the pictures stay.
                try:
                    return accounts.settings(owner).retention_days
                except AccountError as err:
                    if err.code == "user_unknown":
                        return None
                    raise

            removed = gallery.sweep(retention, logged_in=accounts.logged_in_users())
            if removed and studio.audit is not None:
                studio.audit.record("retention_sweep", store="gallery", count=removed)
        if studio.audit is not None and time.monotonic() >= self._next_audit_sweep:
            # The audit log keeps its own retention (90 days): checked once an hour.
            self._next_audit_sweep = time.monotonic() + 3600
            studio.audit.sweep()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep_once()
            except Exception as err:  # noqa: BLE001  (never kill the sweeper)
                log.error("sweep failed: %s", type(err).__name__)


def prepare(
    settings: Settings, ram: RamDir, **account_options: object
) -> tuple[Studio, TlsFiles | None, list[str]]:
    """Everything but listening: mode, exposure checks, TLS, demo model, the studio."""
    built: list[Studio] = []

    def purge_if_session_only(user_id: str) -> None:
        # Retention 0 = "only while I am logged in": the last session ended, the pictures go.
        studio = built[0] if built else None
        if studio is None or studio.gallery is None or studio.accounts is None:
            return
        try:
            session_only = studio.accounts.settings(user_id).retention_days == 0
        except PrivacyError:
            return  # gone or unreadable: the sweep decides, and only a missing row deletes
        if session_only:
            studio.gallery.purge_owner(user_id)

    account_options.setdefault("on_session_end", purge_if_session_only)
    account_options.setdefault("default_retention_days", settings.retention_days)
    accounts = open_accounts(settings.data_dir, **account_options)
    try:
        tls = resolve_tls(settings)
        warnings = check_exposure(settings, accounts is None, tls is not None)
    except Exception:
        if accounts is not None:
            accounts.close()
        raise
    if not ram.on_ram:
        warnings.append("WARNING: uploads are cached on disk while processed (--allow-disk-temp).")
    if accounts is not None:
        accounts.end_all_sessions()  # keys of an earlier process are gone: log in again
    ensure_demo_model(settings.models_path)
    studio = open_studio(settings, ram, accounts=accounts, secure_cookie=tls is not None)
    built.append(studio)
    problem = studio.audit.problem() if studio.audit is not None else None
    if problem is not None:  # reported, never skipped silently (privacy.auditlog)
        warnings.append(
            f"WARNING: the audit log cannot be written ({problem}): its events are lost until "
            "the data folder has space and is writable again."
        )
    return studio, tls, warnings


def serve(settings: Settings, ram: RamDir) -> None:
    """Start, print the address, serve until interrupted, then destroy what is left."""
    import uvicorn

    studio, tls, warnings = prepare(settings, ram)
    for line in warnings:
        print(line, file=sys.stderr)
    app = build_app(studio, tls=tls is not None)
    sweeper = Sweeper(studio)
    sweeper.start()
    scheme = "https" if tls else "http"
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
    print(f"Obscura ({studio.mode} mode, model {studio.model_name()}) on "
          f"{scheme}://{shown}:{settings.port}/")
    if tls is not None:
        print(f"TLS certificate SHA-256 fingerprint: {tls.fingerprint}")
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
        access_log=False,  # access logs would hold addresses and paths
        log_level="warning", timeout_graceful_shutdown=3,
        server_header=False,
        proxy_headers=False,
        lifespan="on",
    )
    try:
        stopping_server(config, studio).run()
    finally:
        shutdown(studio, sweeper)


def stopping_server(config: Any, studio: Studio) -> Any:  # uvicorn.Config -> uvicorn.Server
    """A uvicorn server that ends the studio's jobs as soon as it is told to stop (SIGTERM,
    Ctrl-C), while their callers' connections are still open: each waiting caller is answered
    "the server is stopping" (503 in the API, a sentence in the UI) within one step, instead of
    being cut off when uvicorn's graceful wait runs out."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            threading.Thread(target=studio.queue.stop, name="obscura-stop", daemon=True).start()
            super().handle_exit(sig, frame)

    return Server(config)


def shutdown(studio: Studio, sweeper: Sweeper | None = None) -> None:
    """Stop the background threads first (and wait for them), then close what they use."""
    if sweeper is not None:
        sweeper.stop()
    studio.queue.stop()
    studio.spool.shred_all()
    if studio.accounts is not None:
        studio.accounts.close()
    studio.ram.release()
