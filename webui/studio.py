"""Everything one running server holds, wired together: the engine and its queue (core), the
spool, gallery and accounts (privacy), the RAM directory, styles and upload owners (webui)."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from core.engine import Engine
from core.jobs import Job, JobQueue
from core.registry import ModelRegistry
from privacy.accounts import Accounts
from privacy.auditlog import AuditLog
from privacy.gallery import Gallery
from privacy.spool import Spool
from webui.auth import Gate
from webui.config import Settings
from webui.ramdir import RamDir
from webui.run import Runs
from webui.styles import Style, load_styles
from webui.uploads import UploadOwners


@dataclass
class Studio:
    settings: Settings
    ram: RamDir
    registry: ModelRegistry
    engine: Engine
    queue: JobQueue
    spool: Spool
    gate: Gate
    uploads: UploadOwners
    styles: dict[str, Style]
    accounts: Accounts | None = None
    gallery: Gallery | None = None
    audit: AuditLog | None = None
    # Runs in progress (UI and API), for progress, interrupt, skip and the Cancel button.
    runs: Runs = field(default_factory=Runs)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def mode(self) -> str:
        return "personal" if self.accounts is None else "accounts"

    @property
    def max_upload_bytes(self) -> int:
        return self.settings.max_upload_mb * 1_000_000

    @property
    def max_upload_pixels(self) -> int:
        return self.settings.max_upload_megapixels * 1_000_000

    def model_name(self) -> str:
        try:
            return self.engine.current_model or self.engine.model_for(None).name
        except Exception:  # noqa: BLE001  (no model: healthz still answers)
            return "none"


def job_auditor(audit: AuditLog):  # -> core.jobs.OnEvent
    """Record each job's start and end: its random id, the owner's pseudonymous id, the mode and
    the outcome; never a prompt, picture or file name."""
    user_id = re.compile(r"u_[0-9a-f]{32}")

    def record(event: str, job: Job) -> None:
        fields: dict[str, str | int] = {"job": job.id, "kind": job.kind}
        if user_id.fullmatch(job.owner):
            fields["user"] = job.owner
        if event == "started":
            audit.record("job_started", **fields)
        else:
            outcome = {"done": "done", "failed": "failed", "cancelled": "cancelled"}[job.state.value]
            # Every job's spooled inputs are shredded by its on_end hook before this runs.
            audit.record("job_ended", outcome=outcome, **fields)

    return record


def open_studio(
    settings: Settings,
    ram: RamDir,
    *,
    accounts: Accounts | None = None,
    styles_file: Path | None = None,
    secure_cookie: bool = False,
) -> Studio:
    """Build the engine and the stores for ``settings``; accounts mode when ``accounts`` has
    at least one user."""
    registry = ModelRegistry(settings.models_path, settings.embeddings_dir)
    engine = Engine(
        registry,
        device=settings.device,
        dtype=settings.dtype,
        memory_mode=settings.memory_mode,
        default_model=settings.default_model,
    )
    if accounts is not None and accounts.count_users() == 0:
        accounts = None
    audit = (accounts.audit_log if accounts is not None else None) or AuditLog(
        settings.data_dir / "audit"
    )
    queue = JobQueue([engine], on_event=job_auditor(audit))
    queue.start()
    spool = Spool(settings.data_dir / "spool")
    gallery = Gallery(settings.data_dir / "gallery") if accounts is not None else None
    styles = load_styles(styles_file) if styles_file else load_styles()
    return Studio(
        settings=settings,
        ram=ram,
        registry=registry,
        engine=engine,
        queue=queue,
        spool=spool,
        gate=Gate(accounts, secure_cookie=secure_cookie),
        uploads=UploadOwners(ram.uploads),
        styles=styles,
        accounts=accounts,
        gallery=gallery,
        audit=audit,
    )
