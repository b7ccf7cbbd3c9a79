"""Disk and database faults are one sentence each, lose nothing, and are never silent
(issue 9, "Disk errors" and "Faults")."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from pathlib import Path

import pytest

from privacy.accounts import Accounts, InviteError, UsernameError
from privacy.auditlog import AuditLog
from privacy.errors import PrivacyError, StorageError, storage_error
from privacy.passwords import make_hasher
from privacy.throttle import LoginThrottledError

FAST = make_hasher(time_cost=1, memory_cost=8, parallelism=1)


def fill_the_disk(store: Accounts) -> None:
    """The database may not grow by a single page: SQLite answers SQLITE_FULL, as on a full disk."""
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_disk_is_one_sentence_and_the_store_keeps_working(tmp_path: Path) -> None:
    store = Accounts(tmp_path / "obscura.db", hasher=FAST)
    store.create_user("alice", "correct horse")
    fill_the_disk(store)
    with pytest.raises(StorageError) as caught:
        for n in range(20):
            store.create_user(f"member{n:02d}", "correct horse")
    assert caught.value.code == "disk_full"
    assert str(caught.value).startswith("The disk is full")
    assert "rollback" not in str(caught.value).lower()
    assert not store._db.in_transaction  # rolled back once, no "cannot rollback" on top
    assert store.login("alice", "correct horse").user_id  # reading and small writes go on


def test_a_transaction_sqlite_already_rolled_back_is_not_rolled_back_again(
    tmp_path: Path,
) -> None:
    store = Accounts(tmp_path / "obscura.db", hasher=FAST)
    with pytest.raises(ZeroDivisionError), store._transaction() as db:
        db.execute("INSERT INTO invites VALUES ('x', 'member', 1, NULL)")
        db.execute("ROLLBACK")  # what SQLite does by itself after some disk errors
        raise ZeroDivisionError  # the real error must come out, not "cannot rollback"
    assert store._db.execute("SELECT COUNT(*) FROM invites").fetchone()[0] == 0


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "disk_full"),
        (OSError(errno.EROFS, "Read-only file system"), "disk_read_only"),
        (OSError(errno.EIO, "Input/output error"), "disk_error"),
        (sqlite3.OperationalError("database or disk is full"), "disk_full"),
        (sqlite3.OperationalError("attempt to write a readonly database"), "disk_read_only"),
        (sqlite3.DatabaseError("database disk image is malformed"), "database_damaged"),
        (sqlite3.DatabaseError("file is not a database"), "database_damaged"),
    ],
)
def test_each_fault_has_its_own_sentence(error: BaseException, code: str) -> None:
    mapped = storage_error(error)
    assert mapped is not None and mapped.code == code
    assert isinstance(mapped, PrivacyError)
    assert "try again" in str(mapped) or "backup" in str(mapped)


def test_an_unwritable_audit_log_is_reported_not_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    log = AuditLog(tmp_path / "audit")
    log.directory.mkdir()
    day = log._now().strftime("%Y-%m-%d")
    os.symlink("/dev/full", log.directory / f"{day}.jsonl")  # every write: ENOSPC
    with caplog.at_level(logging.ERROR, logger="obscura.audit"):
        with pytest.raises(StorageError) as caught:
            log.record("server_started")
        with pytest.raises(StorageError):
            log.record("server_stopped")
    assert caught.value.code == "audit_unwritable"
    assert caught.value.params == {"cause": "disk_full"}
    assert log.lost == 2
    assert caplog.text.count("audit log cannot be written (disk_full)") == 1  # bounded


def test_accounts_keep_working_when_their_audit_log_cannot_be_written(tmp_path: Path) -> None:
    audit_dir = tmp_path / "audit"
    audit_dir.write_text("a file where the folder should be")
    log = AuditLog(audit_dir)
    store = Accounts(tmp_path / "obscura.db", hasher=FAST, audit=log)
    store.create_user("alice", "correct horse")
    store.login("alice", "correct horse")
    assert log.lost == 2 and log.problem() == "disk_error"


def test_register_cannot_test_usernames_without_limit(tmp_path: Path) -> None:
    store = Accounts(tmp_path / "obscura.db", hasher=FAST)
    store.create_user("alice", "correct horse")
    code = store.create_invite("member")
    outcomes = []
    for name in ["alice"] * 5 + ["bob"]:
        try:
            store.register_with_invite(code, name, "correct horse")
            outcomes.append("made")
        except UsernameError as err:
            outcomes.append(err.code)
        except LoginThrottledError as err:
            outcomes.append(err.code)
    assert outcomes == ["username_taken"] * 5 + ["register_throttled"]
    with pytest.raises(InviteError):  # another (unknown) code is refused, not throttled away
        store.register_with_invite("not-a-code", "carol", "correct horse")


def test_a_gallery_that_cannot_be_written_is_one_sentence_and_keeps_the_old_pictures(
    tmp_path: Path,
) -> None:
    from privacy.gallery import Gallery
    from privacy.sealing import generate_owner_keypair

    private, public = generate_owner_keypair()
    gallery = Gallery(tmp_path / "gallery")
    kept = gallery.store("u_alice", public, b"kept")
    (tmp_path / "gallery" / "u_bob").write_text("not a folder")  # the disk answers ENOTDIR/EEXIST
    with pytest.raises(StorageError) as caught:
        gallery.store("u_bob", public, b"new")
    assert caught.value.code == "disk_error"
    assert gallery.open("u_alice", kept, private) == b"kept"
