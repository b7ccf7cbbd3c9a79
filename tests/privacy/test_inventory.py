"""The data-flow inventory: one declaration, the generated document, and reality agree."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from privacy import inventory
from privacy.inventory import DATABASE_TABLES, STORES, is_encrypted_container, store_for

ROOT = Path(__file__).resolve().parents[2]


def test_generated_document_matches_the_inventory() -> None:
    document = (ROOT / "docs" / "data-flows.md").read_text(encoding="utf-8")
    assert document == inventory.render_markdown(), (
        "docs/data-flows.md is stale: run `python -m privacy.inventory > docs/data-flows.md`"
    )


def test_module_prints_the_document() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "privacy.inventory"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == inventory.render_markdown()


def test_every_store_answers_every_question() -> None:
    names = [store.name for store in STORES]
    assert len(names) == len(set(names))
    for store in STORES:
        for answer in (store.holds, store.where, store.encryption, store.retention, store.readers):
            assert answer.strip(), store.name
        if store.medium != "disk":
            assert store.files == ()  # only disk stores have files under the data dir
        assert set(store.encrypted_containers) <= set(store.files)


def test_the_agreed_data_dir_layout_is_declared() -> None:
    expected = {
        "models/sd15/unet/model.safetensors": "models",
        "obscura.db": "accounts database",
        "obscura.db-journal": "accounts database",
        "gallery/u_abc/0123456789abcdef0123456789abcdef.key": "gallery",
        "gallery/u_abc/0123456789abcdef0123456789abcdef.pic": "gallery",
        "spool/0123456789abcdef0123456789abcdef": "spool",
        "spool/.obscura-spool": "spool",
        "audit/2026-01-31.jsonl": "audit log",
        "tls/cert.pem": "TLS files",
        "tls/key.pem": "TLS files",
        "obscura.toml": "config file",
    }
    folders = {"models", "gallery", "gallery/u_abc", "spool", "audit", "tls"}
    for folder in folders:
        assert store_for(folder, is_dir=True) is not None, folder
    for path, name in expected.items():
        store = store_for(path)
        assert store is not None and store.name == name, path


@pytest.mark.parametrize(
    "path",
    [
        "photo.jpg",
        "obscura.db-wal",
        "gallery/u_abc/photo.png",
        "gallery/x.key",
        "spool/upload.png",
        "audit/notes.txt",
        "tls/extra.pem",
        "gallery/u_abc/sub/a.key",
    ],
)
def test_anything_else_is_undeclared(path: str) -> None:
    assert store_for(path) is None


def test_folder_patterns_do_not_admit_files() -> None:
    assert store_for("gallery/u_abc", is_dir=True) is not None
    assert store_for("gallery/u_abc") is None
    assert store_for("spool/sub", is_dir=True) is None


def test_only_ciphertext_places_are_containers() -> None:
    assert is_encrypted_container("spool/" + "a" * 32)
    assert is_encrypted_container("gallery/u_abc/" + "a" * 32 + ".pic")
    assert not is_encrypted_container("spool/.obscura-spool")
    assert not is_encrypted_container("audit/2026-01-31.jsonl")
    assert not is_encrypted_container("obscura.db")


def test_database_declaration_holds_no_personal_identifier_column() -> None:
    forbidden = ("mail", "phone", "real_name", "full_name", "ip", "address", "agent", "device")
    for table, columns in DATABASE_TABLES.items():
        for column in columns:
            assert not any(word in column.split("_") or word == column for word in forbidden), (
                f"{table}.{column}"
            )


def test_declared_tables_match_the_accounts_schema() -> None:
    accounts = pytest.importorskip("privacy.accounts")
    db = sqlite3.connect(":memory:")
    db.executescript(accounts.SCHEMA)
    actual = {
        name: [row[1] for row in db.execute(f"PRAGMA table_info({name})")]
        for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    assert actual == {table: list(columns) for table, columns in DATABASE_TABLES.items()}
