"""Data loss and damaged databases (issue 9, items 8 and 9): nothing is deleted because of a
fault, background threads stop before what they use is closed, and a data folder that has held
accounts never starts without login."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from privacy.accounts import Accounts
from privacy.errors import PrivacyError, StorageError
from privacy.passwords import make_hasher
from webui.config import Settings
from webui.ramdir import RamDir

FAST = make_hasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse battery"


def make_accounts(data: Path) -> str:
    store = Accounts.in_data_dir(data, hasher=FAST)
    user_id = store.create_user("alice", PASSWORD, role="admin")
    store.close()
    return user_id


@pytest.fixture
def studio(tmp_path: Path, models_dir: Path) -> Iterator[object]:
    from webui.server import prepare, shutdown

    data = tmp_path / "data"
    make_accounts(data)
    ram = RamDir(root=tmp_path / "ram", on_ram=False)
    ram.wipe()
    built, _tls, _warnings = prepare(
        Settings(data_dir=data, models_dir=models_dir), ram, hasher=FAST
    )
    yield built
    shutdown(built)


def store_picture(studio) -> str:  # type: ignore[no-untyped-def]
    accounts, gallery = studio.accounts, studio.gallery
    owner = accounts.user_id_for("alice")
    gallery.store(owner, accounts.sealing_key(owner), b"a picture")
    return owner


# -- item 8: only a missing row means "gone" -------------------------------------------------


def test_a_database_fault_during_the_sweep_deletes_no_picture(studio, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from webui.server import Sweeper

    owner = store_picture(studio)

    def disk_fault(_user_id: str) -> object:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(studio.accounts, "settings", disk_fault)
    with pytest.raises(sqlite3.OperationalError):
        Sweeper(studio).sweep_once()
    assert len(studio.gallery.list(owner)) == 1

    def storage_fault(_user_id: str) -> object:
        raise StorageError("disk_error", "The disk failed.")

    monkeypatch.setattr(studio.accounts, "settings", storage_fault)
    Sweeper(studio).sweep_once()
    assert len(studio.gallery.list(owner)) == 1


def test_a_deleted_account_still_loses_its_pictures(studio) -> None:  # type: ignore[no-untyped-def]
    from webui.server import Sweeper

    owner = store_picture(studio)
    studio.accounts.delete_user(owner)
    Sweeper(studio).sweep_once()
    assert studio.gallery.list(owner) == []


def test_shutdown_stops_and_joins_the_sweeper_before_closing_the_accounts(
    studio, caplog  # type: ignore[no-untyped-def]
) -> None:
    from webui.server import Sweeper, shutdown

    sweeps = threading.Event()
    sweeper = Sweeper(studio, interval=0.001)
    original = sweeper.sweep_once

    def counted() -> None:
        original()
        sweeps.set()

    sweeper.sweep_once = counted  # type: ignore[method-assign]
    sweeper.start()
    assert sweeps.wait(10)
    with caplog.at_level(logging.ERROR, logger="obscura.webui"):
        shutdown(studio, sweeper)
    assert not sweeper._thread.is_alive()
    assert "sweep failed" not in caplog.text


# -- item 9: a damaged database never turns accounts mode into personal mode ------------------


def damage(db: Path, how: str) -> None:
    if how == "empty":
        db.write_bytes(b"")
    elif how == "truncated":
        db.write_bytes(db.read_bytes()[:1500])
    elif how == "overwritten":
        db.write_bytes(os.urandom(16384))
    elif how == "deleted":
        db.unlink()
    elif how == "damaged page":
        data = bytearray(db.read_bytes())
        page = 4096
        data[page + 8 : 2 * page] = os.urandom(page - 8)  # the users table's page
        db.write_bytes(bytes(data))
    elif how == "no accounts":
        connection = sqlite3.connect(db)
        connection.execute("DELETE FROM users")
        connection.commit()
        connection.close()


HOW = ["empty", "truncated", "overwritten", "deleted", "damaged page", "no accounts"]


@pytest.mark.parametrize("how", HOW)
def test_a_lost_database_refuses_to_start_with_one_sentence(
    tmp_path: Path, models_dir: Path, how: str
) -> None:
    from webui.server import prepare

    data = tmp_path / "data"
    make_accounts(data)
    damage(data / "obscura.db", how)
    ram = RamDir(root=tmp_path / "ram", on_ram=False)
    with pytest.raises(PrivacyError) as caught:
        prepare(Settings(data_dir=data, models_dir=models_dir), ram, hasher=FAST)
    message = str(caught.value)
    assert "restore obscura.db from a backup" in message
    assert "obscura audit" in message
    assert message.count(". ") == 0  # one sentence


@pytest.mark.parametrize("how", HOW)
def test_user_list_on_a_lost_database_is_one_sentence_not_a_traceback(
    tmp_path: Path, how: str
) -> None:
    from webui.cli import main

    data = tmp_path / "data"
    make_accounts(data)
    damage(data / "obscura.db", how)
    result = CliRunner().invoke(main, ["user", "list", "--data-dir", str(data)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "restore obscura.db from a backup" in result.output
    assert not isinstance(result.exception, sqlite3.Error)


def test_a_fresh_folder_with_an_empty_database_is_still_personal_mode(
    tmp_path: Path, models_dir: Path
) -> None:
    from webui.server import prepare, shutdown

    data = tmp_path / "data"
    data.mkdir()
    (data / "obscura.db").write_bytes(b"")  # never held an account: no marker
    ram = RamDir(root=tmp_path / "ram", on_ram=False)
    ram.wipe()
    built, _tls, _warnings = prepare(Settings(data_dir=data, models_dir=models_dir), ram)
    try:
        assert built.mode == "personal"
    finally:
        shutdown(built)


def test_a_database_damaged_while_serving_is_a_sentence_not_a_traceback(tmp_path: Path) -> None:
    # Issue 9.9: "a damaged page gives 500s with tracebacks on every call".
    from webui.auth import Gate

    data = tmp_path / "data"
    make_accounts(data)
    store = Accounts.in_data_dir(data, hasher=FAST)
    session = store.login("alice", PASSWORD)
    db = data / "obscura.db"
    pages = bytearray(db.read_bytes())
    for page in range(1, len(pages) // 4096):
        pages[page * 4096 : (page + 1) * 4096] = os.urandom(4096)
    counter = int.from_bytes(pages[24:28], "big") + 1  # tell SQLite the file changed
    pages[24:28] = counter.to_bytes(4, "big")
    db.write_bytes(bytes(pages))
    gate = Gate(store)
    assert gate.identify({}, {"obscura_session": session.token}) is None
    with pytest.raises(StorageError) as caught:
        store.login("alice", PASSWORD)
    assert caught.value.code == "database_damaged"
    store.close()
