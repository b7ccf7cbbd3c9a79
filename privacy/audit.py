"""``obscura audit``: check a real installation against the promises and the inventory.

What it looks for, and why each is a finding:

* **Pictures in the clear.** Any file in the data dir, the spool or the temp/RAM folders that
  starts with, or contains, the signature of a picture (PNG, JPEG, WebP, GIF, TIFF, BMP,
  HEIC/AVIF, or a base64 ``data:`` picture) outside a declared encrypted container. Declared
  containers must start with their magic header and are searched for the long signatures too,
  so a plaintext picture dressed up with a fake header is still found.
* **Photo metadata.** EXIF blocks (where GPS positions and camera serial numbers live), XMP
  packets, and PNG text chunks (``tEXt``/``iTXt``/``zTXt``, where prompts and settings are
  written) anywhere outside an encrypted container.
* **Anything past its retention.** Gallery pictures past their owner's retention (or kept for
  an account that no longer exists, or for a "this session only" account with no session),
  spool files older than a day, audit-log days past 90 days, expired sessions and invites still
  stored.
* **Anything undeclared.** Files in the data dir, and tables or columns in the accounts
  database, that :mod:`privacy.inventory` does not declare.
* **Damage and permissions.** A data folder that has held accounts (the ``accounts-mode``
  marker) whose ``obscura.db`` is missing, empty or damaged (``PRAGMA quick_check``), and a
  data folder, folder in it, or database that other users of the machine can read (e.g. 0755).
* **Settings.** Personal mode (no accounts) must listen on loopback only; accounts mode on a LAN
  address needs TLS; temp files on disk and missing privacy switches in the environment are
  reported.

This module only reads: it opens the database read-only and never changes a file. It knows
nothing of click or Gradio; ``webui/cli/audit.py`` is the command-line wrapper.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import re
import sqlite3
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from privacy import accounts as accounts_store
from privacy import gallery, inventory, spool
from privacy.auditlog import DEFAULT_RETENTION_DAYS

# -- signatures ------------------------------------------------------------------------------

# Long enough that random ciphertext practically never contains them (>= 5 bytes): searched
# everywhere, encrypted containers included.
STRONG_SIGNATURES: dict[bytes, str] = {
    b"\x89PNG\r\n\x1a\n": "PNG picture",
    b"GIF87a": "GIF picture",
    b"GIF89a": "GIF picture",
    b"WEBPVP8": "WebP picture",
    b"JFIF\x00": "JPEG picture",
    b"ftypheic": "HEIC picture",
    b"ftypheix": "HEIC picture",
    b"ftypmif1": "HEIF picture",
    b"ftypavif": "AVIF picture",
    b"data:image/": "base64 picture (data: URL)",
    b"iVBORw0KGgo": "base64 PNG picture",
    b"/9j/4": "base64 JPEG picture",
}
METADATA_SIGNATURES: dict[bytes, str] = {
    b"Exif\x00\x00": "EXIF block (can hold GPS position and camera serial number)",
    b"<x:xmpmeta": "XMP metadata packet",
}
# Short signatures: at the start of any file, and inside files that are not ciphertext.
JPEG_INSIDE = re.compile(rb"\xff\xd8\xff[\xc0-\xc4\xdb\xdd\xe0-\xef\xfe]")
_START_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG picture"),
    (b"II*\x00", "TIFF picture (or raw EXIF)"),
    (b"MM\x00*", "TIFF picture (or raw EXIF)"),
)
# PNG text chunks (tEXt, iTXt, zTXt): 4 bytes, so only looked for in PNG files in the clear.
PNG_TEXT_CHUNK = re.compile(rb"tEXt|iTXt|zTXt")
PNG_TEXT = "PNG text chunk (can hold the prompt and settings)"
_CHUNK = 1 << 20
_OVERLAP = 32

GRADIO_DEFAULT_TEMP = Path("/tmp/gradio")  # noqa: S108  (Gradio's default cache folder)
DAY = timedelta(days=1)
SPOOL_MAX_AGE = DAY
AUDIT_LOG_RETENTION_DAYS = DEFAULT_RETENTION_DAYS  # one definition: privacy.auditlog
SESSION_ABSOLUTE = timedelta(seconds=accounts_store.SESSION_ABSOLUTE_SECONDS)
_AUDIT_DAY_FILE = re.compile(r"(\d{4}-\d{2}-\d{2})\.jsonl")
_CONTAINER_MAGIC = {
    "spool": spool.HEADER,
    ".key": gallery.KEY_MAGIC + bytes([gallery.VERSION]),
    ".pic": gallery.BODY_MAGIC + bytes([gallery.VERSION]),
}


@dataclass(frozen=True)
class Finding:
    """One thing that breaks a promise or the inventory."""

    check: str  # plaintext_image | metadata | retention | undeclared | database | permissions | setting
    where: str
    detail: str


@dataclass(frozen=True)
class AuditSettings:
    """The settings the audit judges (built by the caller from webui.config.Settings)."""

    host: str = "127.0.0.1"
    tls: bool = False
    insecure_http: bool = False
    allow_disk_temp: bool = False
    retention_days: int = 30


@dataclass
class AuditReport:
    data_dir: str
    mode: str  # "personal" or "accounts"
    findings: list[Finding] = field(default_factory=list)
    scanned_files: int = 0
    unreadable_files: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> str:
        payload: dict[str, Any] = {
            "ok": self.ok,
            "data_dir": self.data_dir,
            "mode": self.mode,
            "scanned_files": self.scanned_files,
            "unreadable_files": self.unreadable_files,
            "findings": [asdict(finding) for finding in self.findings],
        }
        return json.dumps(payload, indent=2)

    def to_text(self) -> str:
        lines = [
            f"Obscura privacy audit of {self.data_dir}",
            f"Mode: {self.mode}. Files scanned: {self.scanned_files}"
            + (f" ({self.unreadable_files} could not be read)" if self.unreadable_files else "")
            + ".",
        ]
        if self.ok:
            lines.append("No findings: nothing in the clear, nothing undeclared, nothing overdue.")
        else:
            lines.append(f"{len(self.findings)} finding(s):")
            for finding in self.findings:
                lines.append(f"  [{finding.check}] {finding.where}: {finding.detail}")
        return "\n".join(lines)


# -- entry point -----------------------------------------------------------------------------


def run_audit(
    data_dir: Path,
    settings: AuditSettings,
    *,
    temp_dirs: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    expected_env: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> AuditReport:
    """Audit ``data_dir`` and ``temp_dirs``; read-only."""
    moment = now or datetime.now(UTC)
    data_dir = Path(data_dir)
    db_path = data_dir / "obscura.db"
    accounts = _read_accounts(db_path, moment)
    marked = (data_dir / accounts_store.MARKER_NAME).exists()
    report = AuditReport(
        data_dir=str(data_dir), mode="accounts" if accounts.users or marked else "personal"
    )
    findings = report.findings
    if data_dir.is_dir():
        _scan_data_dir(data_dir, report)
        findings += _check_permissions(data_dir)
        findings += _check_damage(data_dir, marked)
        findings += _check_database(db_path, accounts, moment)
        findings += _check_gallery(data_dir / "gallery", accounts, settings, moment)
        findings += _check_spool_age(data_dir / "spool", moment)
        findings += _check_audit_log_age(data_dir / "audit", moment)
    for folder in temp_dirs:
        _scan_temp_dir(Path(folder), report)
    findings += _check_settings(settings, report.mode)
    if expected_env is not None:
        findings += _check_environment(env if env is not None else os.environ, expected_env)
    return report


# -- content scanning ------------------------------------------------------------------------


def signatures_in(path: Path, *, container: bool) -> list[str]:
    """What picture or metadata signatures ``path`` holds (streamed; any size)."""
    found: list[str] = []
    with path.open("rb") as handle:
        head = handle.read(64)
        if not container:
            found += [name for magic, name in _START_SIGNATURES if head.startswith(magic)]
            if head.startswith(b"BM") and len(head) >= 26 and head[6:10] == b"\x00" * 4:
                found.append("BMP picture")
        handle.seek(0)
        tail = b""
        text_chunk = False
        while True:
            block = handle.read(_CHUNK)
            if not block:
                break
            window = tail + block
            for table in (STRONG_SIGNATURES, METADATA_SIGNATURES):
                found += [name for magic, name in table.items() if magic in window]
            if not container and JPEG_INSIDE.search(window):
                found.append("JPEG picture")
            if not container and PNG_TEXT_CHUNK.search(window):
                text_chunk = True
            tail = window[-_OVERLAP:]
    if text_chunk and "PNG picture" in found:
        found.append(PNG_TEXT)
    return sorted(set(found))


def _gps_note(path: Path) -> str:
    """' with a GPS position' when a readable picture file carries GPS EXIF."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(path.read_bytes()[: 8 << 20])) as image:
            return " with a GPS position" if image.getexif().get_ifd(0x8825) else ""
    except Exception:  # noqa: BLE001 - best effort; the finding stands without the note
        return ""


def _findings_for_content(path: Path, where: str, *, container: bool) -> list[Finding]:
    names = signatures_in(path, container=container)
    pictures = [n for n in names if n not in METADATA_SIGNATURES.values() and n != PNG_TEXT]
    metadata = [n for n in names if n in METADATA_SIGNATURES.values() or n == PNG_TEXT]
    inside = (
        "inside a file declared as encrypted" if container else "not inside an encrypted container"
    )
    out = []
    if pictures:
        out.append(
            Finding("plaintext_image", where, f"{', '.join(pictures)} {inside}{_gps_note(path)}.")
        )
    if metadata:
        out.append(Finding("metadata", where, f"{', '.join(metadata)} {inside}."))
    return out


def _walk(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every entry under ``root`` without following symlinks, folders before their content."""
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except (PermissionError, FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        yield path, info
        if stat.S_ISDIR(info.st_mode):
            yield from _walk(path)


def _scan_data_dir(data_dir: Path, report: AuditReport) -> None:
    undeclared_folders: list[str] = []
    for path, info in _walk(data_dir):
        relative = path.relative_to(data_dir).as_posix()
        if relative == "models" or relative.startswith("models/"):
            continue  # model files are not user data (and can be tens of GB)
        inside_undeclared = any(relative.startswith(f + "/") for f in undeclared_folders)
        store = inventory.store_for(relative, is_dir=stat.S_ISDIR(info.st_mode))
        if store is None and not inside_undeclared:
            kind = "folder" if stat.S_ISDIR(info.st_mode) else "file"
            report.findings.append(
                Finding(
                    "undeclared", relative, f"A {kind} the data-flow inventory does not declare."
                )
            )
            if stat.S_ISDIR(info.st_mode):
                undeclared_folders.append(relative)
        if not stat.S_ISREG(info.st_mode):
            continue
        container = inventory.is_encrypted_container(relative)
        if container and not _has_container_magic(path, relative):
            report.findings.append(
                Finding(
                    "plaintext_image" if signatures_in(path, container=False) else "undeclared",
                    relative,
                    "Declared as encrypted but does not start with Obscura's container header.",
                )
            )
            container = False
        try:
            report.findings.extend(_findings_for_content(path, relative, container=container))
            report.scanned_files += 1
        except OSError:
            report.unreadable_files += 1


def _has_container_magic(path: Path, relative: str) -> bool:
    if relative.startswith("spool/"):
        expected = [_CONTAINER_MAGIC["spool"]]
    else:  # gallery: .key, .pic, or a temp file that will become one of them
        expected = [_CONTAINER_MAGIC[".key"], _CONTAINER_MAGIC[".pic"]]
        if relative.endswith((".key", ".pic")):
            expected = [_CONTAINER_MAGIC[relative[-4:]]]
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError:
        return False
    return any(head.startswith(magic) for magic in expected)


def _scan_temp_dir(folder: Path, report: AuditReport) -> None:
    # Gradio names cached uploads after the user's file, in folders named after a hash of the
    # content: report the scanned folder only, never a name or a sub-folder under it.
    for path, info in _walk(folder):
        if not stat.S_ISREG(info.st_mode):
            continue
        try:
            found = _findings_for_content(path, f"a file under {folder}", container=False)
            report.scanned_files += 1
        except OSError:
            report.unreadable_files += 1
            continue
        report.findings.extend(found)


# -- database, retention ---------------------------------------------------------------------


@dataclass
class _Accounts:
    exists: bool = False
    tables: dict[str, list[str]] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)  # id -> retention_days
    users_with_session: set[str] = field(default_factory=set)
    expired_sessions: int = 0
    expired_invites: int = 0
    error: str | None = None


def _read_accounts(db_path: Path, now: datetime | None = None) -> _Accounts:
    accounts = _Accounts()
    if not db_path.is_file():
        return accounts
    accounts.exists = True
    moment = (now or datetime.now(UTC)).timestamp()
    try:
        db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        accounts.error = "The accounts database could not be opened read-only."
        return accounts
    try:
        names = [
            row[0]
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        for name in names:
            quoted = name.replace('"', '""')
            accounts.tables[name] = [row[1] for row in db.execute(f'PRAGMA table_info("{quoted}")')]
        if {"id", "retention_days"} <= set(accounts.tables.get("users", [])):
            accounts.users = {
                str(user_id): int(days)
                for user_id, days in db.execute("SELECT id, retention_days FROM users")
            }
        if {"user_id", "created_at", "last_seen_at"} <= set(accounts.tables.get("sessions", [])):
            cutoff = moment - SESSION_ABSOLUTE.total_seconds() - DAY.total_seconds()
            for user_id, created_at in db.execute("SELECT user_id, created_at FROM sessions"):
                if created_at is not None and float(created_at) < cutoff:
                    accounts.expired_sessions += 1
                else:
                    accounts.users_with_session.add(str(user_id))
        if "expires_at" in accounts.tables.get("invites", []):
            (accounts.expired_invites,) = db.execute(
                "SELECT COUNT(*) FROM invites WHERE expires_at < ?",
                (moment - DAY.total_seconds(),),
            ).fetchone()
    except sqlite3.Error:
        accounts.error = "The accounts database could not be read (damaged or locked)."
    finally:
        db.close()
    return accounts


def _check_damage(data_dir: Path, marked: bool) -> list[Finding]:
    """A damaged database, or a lost one in a folder that has held accounts."""
    problem = accounts_store.database_problem(data_dir)
    if problem is None or (problem == "missing" and not marked):
        return []
    if problem in ("without any account", "without its tables", "empty") and not marked:
        return []  # a fresh personal-mode folder
    return [
        Finding(
            "database",
            "obscura.db",
            f"The accounts database is {problem}"
            + (" although this folder has held accounts" if marked else "")
            + "; stop the server and restore obscura.db from a backup.",
        )
    ]


def _check_permissions(data_dir: Path) -> list[Finding]:
    """The data dir, its folders (models aside) and the database must be private (0700/0600)."""
    out = []
    candidates = [(data_dir, ".")]
    for path, info in _walk(data_dir):
        relative = path.relative_to(data_dir).as_posix()
        if relative == "models" or relative.startswith("models/"):
            continue
        if stat.S_ISDIR(info.st_mode) or relative in ("obscura.db", accounts_store.MARKER_NAME):
            candidates.append((path, relative))
    for path, relative in candidates:
        try:
            mode = stat.S_IMODE(path.stat(follow_symlinks=False).st_mode)
        except OSError:
            continue
        if mode & 0o077:
            out.append(
                Finding(
                    "permissions",
                    relative,
                    f"Other users of this machine can reach this (mode {mode:04o}); "
                    f"run chmod {'700' if path.is_dir() else '600'} on it.",
                )
            )
    return out


def _check_database(db_path: Path, accounts: _Accounts, now: datetime) -> list[Finding]:
    where = "obscura.db"
    if not accounts.exists:
        return []
    if accounts.error:
        return [Finding("database", where, accounts.error)]
    out = []
    declared = inventory.DATABASE_TABLES
    for table, columns in sorted(accounts.tables.items()):
        if table not in declared:
            out.append(
                Finding("database", where, f"Table {table!r} is not declared in the inventory.")
            )
            continue
        for column in columns:
            if column not in declared[table]:
                out.append(
                    Finding(
                        "database",
                        where,
                        f"Column {table}.{column} is not declared in the inventory.",
                    )
                )
    if accounts.expired_sessions:
        out.append(
            Finding(
                "retention",
                where,
                f"{accounts.expired_sessions} session(s) past the 12-hour limit are still stored.",
            )
        )
    if accounts.expired_invites:
        out.append(
            Finding(
                "retention", where, f"{accounts.expired_invites} expired invite(s) still stored."
            )
        )
    return out


def _check_gallery(
    root: Path, accounts: _Accounts, settings: AuditSettings, now: datetime
) -> list[Finding]:
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        owner = folder.name
        where = f"gallery/{owner}"
        pictures = gallery.list_pictures(folder)
        if not pictures:
            continue
        if not accounts.users:
            out.append(
                Finding(
                    "retention",
                    where,
                    f"{len(pictures)} picture(s) kept although no accounts exist "
                    "(personal mode keeps nothing).",
                )
            )
            continue
        if owner not in accounts.users:
            out.append(
                Finding(
                    "retention", where, f"{len(pictures)} picture(s) of an account that is gone."
                )
            )
            continue
        days = accounts.users[owner]
        if days <= 0:
            if owner not in accounts.users_with_session:
                out.append(
                    Finding(
                        "retention",
                        where,
                        f"{len(pictures)} picture(s) kept for a 'this session only' account "
                        "that has no session.",
                    )
                )
            continue
        cutoff = now - timedelta(days=days) - DAY
        overdue = sum(1 for info in pictures if info.created < cutoff)
        if overdue:
            out.append(
                Finding(
                    "retention",
                    where,
                    f"{overdue} picture(s) older than the account's {days}-day retention.",
                )
            )
    return out


def _check_spool_age(root: Path, now: datetime) -> list[Finding]:
    if not root.is_dir():
        return []
    cutoff = (now - SPOOL_MAX_AGE).timestamp()
    old = [
        p
        for p in root.iterdir()
        if p.is_file() and p.name != spool.MARKER and p.stat().st_mtime < cutoff
    ]
    if not old:
        return []
    return [
        Finding(
            "retention",
            "spool",
            f"{len(old)} upload(s) older than a day: their job should have ended (if no server "
            "runs, they are unreadable leftovers that the next start removes).",
        )
    ]


def _check_audit_log_age(root: Path, now: datetime) -> list[Finding]:
    if not root.is_dir():
        return []
    cutoff = (now - timedelta(days=AUDIT_LOG_RETENTION_DAYS) - DAY).date()
    out = []
    for path in sorted(root.iterdir()):
        match = _AUDIT_DAY_FILE.fullmatch(path.name)
        if not match:
            continue
        try:
            day = datetime.strptime(match.group(1), "%Y-%m-%d").date()
        except ValueError:
            continue
        if day < cutoff:
            out.append(
                Finding(
                    "retention",
                    f"audit/{path.name}",
                    f"An audit-log day older than {AUDIT_LOG_RETENTION_DAYS} days.",
                )
            )
    return out


# -- settings --------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a listen address or a Host name) is this machine's loopback.

    The one definition (``webui.config`` imports it). Host names are case-insensitive, so
    ``LOCALHOST`` is loopback too."""
    if host.lower() in {"localhost", "localhost."}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_settings(settings: AuditSettings, mode: str) -> list[Finding]:
    out = []
    loopback = is_loopback(settings.host)
    if mode == "personal" and not loopback:
        out.append(
            Finding(
                "setting",
                "host",
                f"Personal mode (no accounts) must listen on loopback only, not {settings.host}.",
            )
        )
    if mode == "accounts" and not loopback:
        if settings.insecure_http:
            out.append(
                Finding(
                    "setting",
                    "insecure_http",
                    "Accounts mode on a LAN address with TLS switched off: passwords and "
                    "pictures cross the network in the clear.",
                )
            )
        elif not settings.tls:
            out.append(
                Finding(
                    "setting",
                    "tls",
                    'Accounts mode on a LAN address without TLS; set tls = "auto" or a '
                    "certificate.",
                )
            )
    if settings.allow_disk_temp:
        out.append(
            Finding(
                "setting",
                "allow_disk_temp",
                "Temporary files may land on a persistent disk (allow_disk_temp is on).",
            )
        )
    if settings.retention_days < 0:
        out.append(Finding("setting", "retention_days", "The default retention is negative."))
    return out


def _check_environment(env: Mapping[str, str], expected: Mapping[str, str]) -> list[Finding]:
    out = []
    for name, value in sorted(expected.items()):
        if env.get(name, "").strip().lower() != value.lower():
            out.append(
                Finding(
                    "setting",
                    name,
                    f"Privacy switch {name} is not set to {value!r} in this environment.",
                )
            )
    return out


def default_temp_dirs(env: Mapping[str, str], extra: Iterable[Path] = ()) -> list[Path]:
    """The temp/RAM folders worth scanning: GRADIO_TEMP_DIR, TMPDIR, /tmp/gradio, ``extra``."""
    candidates = [env.get("GRADIO_TEMP_DIR"), env.get("TMPDIR")]
    found: list[Path] = []
    for candidate in [*(Path(c) for c in candidates if c), GRADIO_DEFAULT_TEMP, *extra]:
        if candidate.is_dir() and candidate.resolve() not in {p.resolve() for p in found}:
            found.append(candidate)
    return found
