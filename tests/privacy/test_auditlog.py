"""The audit log: allow-listed events, pseudonymous ids, minute timestamps, its own retention."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest

from privacy.auditlog import AuditFieldError, AuditLog
from privacy.errors import PrivacyError

USER = "u_" + "ab" * 16
NOON = dt.datetime(2026, 3, 14, 12, 34, 56, tzinfo=dt.UTC).timestamp()


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_event_is_one_json_line_with_a_minute_timestamp(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit", clock=Clock())
    log.record("login_ok", user=USER, via="password")
    path = tmp_path / "audit" / "2026-03-14.jsonl"
    lines = path.read_text().splitlines()
    assert lines and json.loads(lines[0]) == {
        "ts": "2026-03-14T12:34Z",
        "event": "login_ok",
        "user": USER,
        "via": "password",
    }
    assert ":56" not in lines[0]  # no seconds


def test_events_are_appended_in_order(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit", clock=Clock())
    log.record("job_started", user=USER, job="j" * 20, kind="img2img")
    log.record("file_shredded", file="0123456789abcdef0123456789abcdef", store="spool")
    log.record("job_ended", user=USER, job="j" * 20, outcome="cancelled")
    assert [e["event"] for e in log.events()] == ["job_started", "file_shredded", "job_ended"]


@pytest.mark.parametrize(
    "fields",
    [
        {"prompt": "a portrait of my neighbour"},  # not an allowed field
        {"user": "alice"},  # a username where a pseudonymous id belongs
        {"job": "a cat in a hat, oil on canvas"},  # a prompt in an id field
        {"file": "IMG_2041.jpg"},  # a file name
        {"reason": "alice"},  # free words are not allowed
        {"actor": "192.168.1.20"},  # an IP address
        {"count": "12 secret"},
        {"user": True},
    ],
)
def test_anything_off_the_allow_list_is_refused_and_nothing_written(
    tmp_path: Path, fields: dict[str, object]
) -> None:
    log = AuditLog(tmp_path / "audit", clock=Clock())
    with pytest.raises(AuditFieldError) as caught:
        log.record("login_failed", **fields)  # type: ignore[arg-type]
    assert isinstance(caught.value, PrivacyError)
    for value in fields.values():
        assert str(value) not in str(caught.value)
    assert not (tmp_path / "audit").exists() or all_bytes(tmp_path / "audit") == b""


def test_unknown_event_name_is_refused(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit", clock=Clock())
    with pytest.raises(AuditFieldError):
        log.record("alice logged in from 10.0.0.3")


def test_one_file_per_day_and_sweep_removes_days_past_retention(tmp_path: Path) -> None:
    clock = Clock()
    log = AuditLog(tmp_path / "audit", clock=clock)
    for days_ago in (120, 91, 90, 3, 0):
        clock.now = NOON - days_ago * 86400
        log.record("retention_sweep", count=days_ago)
    clock.now = NOON
    assert len(list((tmp_path / "audit").glob("*.jsonl"))) == 5
    assert log.sweep() == 2
    kept = sorted(p.stem for p in (tmp_path / "audit").glob("*.jsonl"))
    assert kept == ["2025-12-14", "2026-03-11", "2026-03-14"]
    last = list(log.events())[-1]
    assert last["event"] == "audit_sweep" and last["count"] == 2


def test_retention_is_configurable(tmp_path: Path) -> None:
    clock = Clock(NOON - 10 * 86400)
    log = AuditLog(tmp_path / "audit", clock=clock, retention_days=7)
    log.record("server_started")
    clock.now = NOON
    assert log.sweep() == 1


def test_log_files_are_private(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit", clock=Clock())
    log.record("server_started")
    assert stat.S_IMODE((tmp_path / "audit").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "audit" / "2026-03-14.jsonl").stat().st_mode) == 0o600
