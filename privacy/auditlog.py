"""The audit log: what happened, when (to the minute), to which pseudonymous id. Nothing personal.

One JSON object per line, one file per UTC day: ``<data-dir>/audit/YYYY-MM-DD.jsonl``. Files
are only ever appended to, and removed whole once older than the retention (90 days by default,
:meth:`AuditLog.sweep`).

What can be written is an allow-list, not a deny-list: the event name must be one of
:data:`EVENTS`, and every field must be one of :data:`FIELDS` with a value matching its pattern
(random ids, small numbers, fixed words). A prompt, a username, an IP address, a file name or
picture data does not fit any pattern, so it is refused before anything is written.

An audit trail that cannot be written is reported, never skipped: :meth:`AuditLog.record`
raises :class:`~privacy.errors.StorageError` (``audit_unwritable``), logs one line (at most
once a minute, with the count lost so far and why: disk full, read-only, I/O error) and keeps
the count in :attr:`AuditLog.lost`; :meth:`AuditLog.problem` tells the server at start.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from privacy.errors import DISK_ERROR, PrivacyError, StorageError, storage_error

log = logging.getLogger("obscura.audit")

DEFAULT_RETENTION_DAYS = 90

EVENTS = frozenset(
    {
        "login_ok",
        "login_failed",
        "login_throttled",
        "logout",
        "session_expired",
        "user_created",
        "user_deleted",
        "password_changed",
        "password_reset",
        "invite_created",
        "invite_used",
        "token_created",
        "token_revoked",
        "token_failed",
        "settings_changed",
        "job_started",
        "job_ended",
        "file_shredded",
        "spool_swept",
        "retention_sweep",
        "audit_sweep",
        "server_started",
        "server_stopped",
    }
)

# A random id: long enough that it cannot be a word someone typed, no spaces or punctuation.
_RANDOM_ID = r"[A-Za-z0-9_-]{16,64}"
_USER_ID = r"u_[0-9a-f]{32}"  # privacy.accounts user ids; longer than any username can be


def _one_of(*words: str) -> str:
    return "|".join(words)


FIELDS: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern)
    for name, pattern in {
        "user": _USER_ID,  # whom it concerns
        "actor": rf"{_USER_ID}|cli",  # who did it (an admin's id, or the command line)
        "job": _RANDOM_ID,
        "file": _RANDOM_ID,  # a stored file's random id, never its name
        "token": r"t_[0-9a-f]{32}",  # an API token's record id, never the token
        "role": r"admin|member",
        "via": r"password|token|invite|cli|admin",
        "store": r"spool|gallery|uploads|sessions|audit|tokens|invites",
        # Fixed words only: a free "word" pattern would also fit most usernames.
        "outcome": _one_of("ok", "done", "failed", "cancelled", "expired", "refused", "error"),
        "reason": _one_of(
            "wrong_password",
            "unknown_user",
            "throttled",
            "locked",
            "bad_token",
            "idle",
            "absolute",
            "logout",
            "restart",
            "retention",
            "session_end",
            "deleted",
            "job_done",
            "crash",
            "admin_reset",
            "new_keypair",
        ),
        "kind": _one_of("txt2img", "img2img", "inpaint", "upscale", "extras"),
        "count": r"[0-9]{1,9}",
        "days": r"[0-9]{1,5}",
        "seconds": r"[0-9]{1,9}",
    }.items()
}


class AuditFieldError(PrivacyError):
    """An audit event with an unknown name or a field that is not on the allow-list."""


class AuditLog:
    """Append-only, day-per-file audit events under ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.retention_days = retention_days
        self._clock = clock
        self._lock = threading.Lock()
        self.lost = 0  # events that could not be written since the start
        self._reported_at = -1e18

    def record(self, event: str, **fields: str | int) -> None:
        """Append one event; refuses (and writes nothing) if a name or value is not allowed."""
        line = self._format(event, fields)
        when = self._now()
        path = self.directory / f"{when:%Y-%m-%d}.jsonl"
        data = json.dumps({"ts": f"{when:%Y-%m-%dT%H:%MZ}", "event": event, **line}) + "\n"
        with self._lock:
            try:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    encoded = data.encode("utf-8")
                    if os.write(fd, encoded) != len(encoded):
                        raise OSError(28, "short write")  # ENOSPC
                finally:
                    os.close(fd)
            except OSError as exc:
                raise self._unwritable(exc) from None

    def problem(self) -> str | None:
        """Why the log cannot be written now (``disk_full``, ``disk_read_only``, ...), or None.

        Opens today's file for appending without writing anything."""
        path = self.directory / f"{self._now():%Y-%m-%d}.jsonl"
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        except OSError as exc:
            return (storage_error(exc) or DISK_ERROR).code
        return None

    def _unwritable(self, exc: OSError) -> StorageError:
        cause = (storage_error(exc) or DISK_ERROR).code
        self.lost += 1
        now = time.monotonic()
        if now - self._reported_at >= 60:
            self._reported_at = now
            log.error("the audit log cannot be written (%s): %d event(s) lost", cause, self.lost)
        return StorageError(
            "audit_unwritable",
            "The audit log cannot be written ({cause}), so this event was not recorded; free "
            "space or make the data folder writable.",
            cause=cause,
        )

    def events(self) -> Iterator[dict[str, str | int]]:
        """Every event still kept, oldest first (for the audit command and tests)."""
        for path in self._day_files():
            with path.open(encoding="utf-8") as lines:
                for line in lines:
                    if line.strip():
                        yield json.loads(line)

    def sweep(self) -> int:
        """Remove day files older than the retention; returns how many were removed."""
        oldest_kept = self._now().date() - dt.timedelta(days=self.retention_days)
        removed = 0
        for path in self._day_files():
            if dt.date.fromisoformat(path.stem) < oldest_kept:
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            self.record("audit_sweep", count=removed, days=self.retention_days)
        return removed

    def _day_files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(
            p for p in self.directory.glob("*.jsonl") if re.fullmatch(r"\d{4}-\d{2}-\d{2}", p.stem)
        )

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), tz=dt.UTC)

    @staticmethod
    def _format(event: str, fields: dict[str, str | int]) -> dict[str, str | int]:
        if event not in EVENTS:
            raise AuditFieldError(
                "audit_unknown_event", "That audit event is not on the allow-list of events."
            )
        clean: dict[str, str | int] = {}
        for name, value in fields.items():
            pattern = FIELDS.get(name)
            if pattern is None:
                raise AuditFieldError(
                    "audit_unknown_field", "An audit field is not on the allow-list of fields."
                )
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise AuditFieldError(
                    "audit_bad_value", "An audit value must be a short id, word or number."
                )
            if not pattern.fullmatch(str(value)):
                raise AuditFieldError(
                    "audit_bad_value",
                    "An audit value does not match its pattern; only ids, words and numbers fit.",
                )
            clean[name] = value
        return clean
