"""Issue 9.7: whoever can write obscura.db must not be able to redirect new pictures, nor hide
a picture the owner cannot open."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pytest
from starlette.requests import Request

from privacy.accounts import Accounts
from privacy.passwords import make_hasher
from privacy.sealing import generate_owner_keypair
from webui.config import Settings
from webui.ramdir import RamDir

FAST = make_hasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse battery"


def swap_public_key(db_path: Path, user_id: str, public_key: bytes) -> None:
    """What a database writer does: another process, straight into the file."""
    db = sqlite3.connect(db_path)
    db.execute("UPDATE users SET public_key = ? WHERE id = ?", (public_key, user_id))
    db.commit()
    db.close()


def test_pictures_are_sealed_to_the_key_proven_at_login(tmp_path: Path) -> None:
    store = Accounts(tmp_path / "obscura.db", hasher=FAST)
    alice = store.create_user("alice", PASSWORD)
    proven = store.public_key(alice)
    session = store.login("alice", PASSWORD)
    _, attacker_public = generate_owner_keypair()
    swap_public_key(tmp_path / "obscura.db", alice, attacker_public)
    assert store.public_key(alice) == attacker_public  # the database now lies
    assert store.sealing_key(session) == proven
    assert store.sealing_key(alice) == proven  # an API token caller: her live session's key
    store.logout(session.token or "")
    assert store.sealing_key(alice) == proven  # her last login in this process
    # The documented residual risk: a token caller not logged in since the start gets the
    # database's key (and the gallery then shows the picture as "can't be opened").
    restarted = Accounts(tmp_path / "obscura.db", hasher=FAST)
    assert restarted.sealing_key(alice) == attacker_public


def test_an_admin_reset_in_this_process_seals_to_the_new_key(tmp_path: Path) -> None:
    store = Accounts(tmp_path / "obscura.db", hasher=FAST)
    alice = store.create_user("alice", PASSWORD)
    store.login("alice", PASSWORD)
    store.set_password(alice, "a brand new password")
    assert store.sealing_key(alice) == store.public_key(alice)


def test_password_change_ends_api_tokens(tmp_path: Path) -> None:
    from privacy.accounts import TokenError

    store = Accounts(tmp_path / "obscura.db", hasher=FAST)
    alice = store.create_user("alice", PASSWORD)
    kept = store.create_token(alice, "krita")
    store.set_password(alice, "a brand new password", old=PASSWORD)
    with pytest.raises(TokenError):
        store.verify_token(kept)
    reset = store.create_token(alice, "krita")
    store.set_password(alice, "another new password")
    with pytest.raises(TokenError):
        store.verify_token(reset)
    assert store.list_tokens(alice) == []


@pytest.fixture
def studio(tmp_path: Path, models_dir: Path) -> Iterator[object]:
    from webui.server import prepare, shutdown

    data = tmp_path / "data"
    store = Accounts.in_data_dir(data, hasher=FAST)
    store.create_user("alice", PASSWORD, role="admin")
    store.close()
    ram = RamDir(root=tmp_path / "ram", on_ram=False)
    ram.wipe()
    built, _tls, _warnings = prepare(
        Settings(data_dir=data, models_dir=models_dir), ram, hasher=FAST
    )
    yield built
    shutdown(built)


def request_with(token: str) -> gr.Request:
    scope = {
        "type": "http", "method": "GET", "path": "/", "query_string": b"",
        "headers": [(b"cookie", f"obscura_session={token}".encode())],
        "client": ("127.0.0.1", 5000),
    }
    return gr.Request(request=Request(scope))


def test_a_picture_sealed_to_another_key_is_listed_and_can_be_deleted(studio) -> None:  # type: ignore[no-untyped-def]
    from webui.ui.gallery import open_pictures

    accounts, gallery = studio.accounts, studio.gallery
    session = accounts.login("alice", PASSWORD)
    owner = session.user_id
    mine = gallery.store(owner, accounts.sealing_key(session), b"\x89PNG mine")
    _, attacker_public = generate_owner_keypair()
    redirected = gallery.store(owner, attacker_public, b"\x89PNG redirected")
    request = request_with(session.token or "")
    shown, ids = open_pictures(studio, request)
    assert set(ids) == {mine, redirected}  # never hidden
    entry = shown[ids.index(redirected)]
    assert isinstance(entry, tuple) and "sealed to another key" in entry[1]
    assert isinstance(shown[ids.index(mine)], str)
    assert gallery.delete(owner, redirected)
    assert open_pictures(studio, request)[1] == [mine]
