"""``obscura audit``: finds pictures in the clear, metadata, overdue and undeclared data."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from privacy import audit as audit_module
from privacy.audit import AuditSettings, run_audit, signatures_in
from privacy.gallery import Gallery
from privacy.inventory import DATABASE_TABLES
from privacy.spool import Spool

OWNER = "u_" + "a" * 32
Keys = tuple[bytes, bytes]
EXPECTED_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}


def picture_bytes(fmt: str, *, gps: bool = False) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", (8, 8), (200, 10, 10))
    options: dict[str, object] = {}
    if gps:
        exif = Image.Exif()
        exif.get_ifd(0x8825)[1] = "N"
        exif.get_ifd(0x8825)[2] = (52.0, 22.0, 1.0)
        options["exif"] = exif
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def make_database(path: Path, users: dict[str, int], *, extra_sql: str = "") -> None:
    db = sqlite3.connect(path)
    for table, columns in DATABASE_TABLES.items():
        db.execute(f"CREATE TABLE {table} ({', '.join(columns)})")
    for user_id, days in users.items():
        db.execute(
            "INSERT INTO users (id, username, role, password_hash, retention_days, created_day) "
            "VALUES (?, ?, 'member', '$argon2id$...', ?, '2026-01-01')",
            (user_id, f"name{len(user_id)}", days),
        )
    if extra_sql:
        db.executescript(extra_sql)
    db.commit()
    db.close()


@pytest.fixture
def data_dir(tmp_path: Path, alice_keys: Keys) -> Path:
    """A realistic, clean accounts-mode data dir with one of everything."""
    root = tmp_path / "data"
    root.mkdir()
    make_database(root / "obscura.db", {OWNER: 30})
    gallery = Gallery(root / "gallery")
    gallery.store(OWNER, alice_keys[1], picture_bytes("PNG"))
    gallery.store(OWNER, alice_keys[1], picture_bytes("JPEG", gps=True), kind="jpeg")
    spool = Spool(root / "spool")
    spool.put(picture_bytes("JPEG", gps=True), owner="s1")
    spool.put(os.urandom(3_000_000), owner="s1")  # big ciphertext: no false alarms
    (root / "audit").mkdir()
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    (root / "audit" / f"{today}.jsonl").write_text('{"event": "login_ok", "user": "u_1"}\n')
    (root / "tls").mkdir()
    (root / "tls" / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n")
    (root / "tls" / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\nMIIE\n")
    (root / "obscura.toml").write_text('host = "127.0.0.1"\n')
    (root / "models" / "tiny").mkdir(parents=True)
    (root / "models" / "tiny" / "sample.png").write_bytes(picture_bytes("PNG"))  # not user data
    for private in (root, root / "audit", root / "tls"):  # as the server makes them
        private.chmod(0o700)
    (root / "obscura.db").chmod(0o600)
    return root


def audit(data_dir: Path, temp_dirs: list[Path] | None = None, **settings: object):  # type: ignore[no-untyped-def]
    return run_audit(
        data_dir,
        AuditSettings(**settings),  # type: ignore[arg-type]
        temp_dirs=temp_dirs or [],
        env=EXPECTED_ENV,
        expected_env=EXPECTED_ENV,
    )


def checks(report) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(finding.check, finding.where) for finding in report.findings]


def test_clean_data_dir_passes(data_dir: Path) -> None:
    report = audit(data_dir)
    assert report.findings == [], report.to_text()
    assert report.mode == "accounts" and report.scanned_files >= 8


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP"])
def test_a_planted_plaintext_picture_is_found(data_dir: Path, fmt: str) -> None:
    (data_dir / "gallery" / OWNER / "leak.bin").write_bytes(picture_bytes(fmt))
    report = audit(data_dir)
    assert ("plaintext_image", f"gallery/{OWNER}/leak.bin") in checks(report)
    assert ("undeclared", f"gallery/{OWNER}/leak.bin") in checks(report)


def test_a_picture_inside_another_file_is_found(data_dir: Path) -> None:
    blob = b"log line\n" * 100 + picture_bytes("JPEG") + b"more\n"
    (data_dir / "audit" / "2099-01-01.jsonl").write_bytes(blob)
    assert ("plaintext_image", "audit/2099-01-01.jsonl") in checks(audit(data_dir))


def test_a_base64_picture_in_a_log_is_found(data_dir: Path) -> None:
    import base64

    line = "data:image/png;base64," + base64.b64encode(picture_bytes("PNG")).decode()
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    with (data_dir / "audit" / f"{today}.jsonl").open("a") as handle:
        handle.write(json.dumps({"event": "oops", "image": line}) + "\n")
    assert ("plaintext_image", f"audit/{today}.jsonl") in checks(audit(data_dir))


def test_a_plaintext_picture_with_a_spool_name_is_found(data_dir: Path) -> None:
    (data_dir / "spool" / ("b" * 32)).write_bytes(picture_bytes("WEBP"))
    report = audit(data_dir)
    assert ("plaintext_image", "spool/" + "b" * 32) in checks(report)


def test_a_plaintext_picture_behind_a_fake_container_header_is_found(data_dir: Path) -> None:
    fake = b"OBSCPIC\x01" + picture_bytes("PNG")
    (data_dir / "gallery" / OWNER / ("c" * 32 + ".pic")).write_bytes(fake)
    report = audit(data_dir)
    assert ("plaintext_image", f"gallery/{OWNER}/{'c' * 32}.pic") in checks(report)


def test_a_planted_exif_file_is_found_and_gps_is_named(data_dir: Path) -> None:
    exif = Image.Exif()
    exif[0x010F] = "CanaryCam"
    (data_dir / "tls" / "exif.bin").write_bytes(exif.tobytes())
    (data_dir / "photo.jpg").write_bytes(picture_bytes("JPEG", gps=True))
    report = audit(data_dir)
    assert ("metadata", "tls/exif.bin") in checks(report)
    (photo,) = [
        f for f in report.findings if f.where == "photo.jpg" and f.check == "plaintext_image"
    ]
    assert "GPS" in photo.detail


def test_temp_dir_findings_name_the_folder_never_the_file(data_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "gradio" / hashlib.sha256(b"x").hexdigest()
    cache.mkdir(parents=True)
    (cache / "holiday at grandmas house.jpg").write_bytes(picture_bytes("JPEG", gps=True))
    report = audit(data_dir, temp_dirs=[tmp_path / "gradio"])
    assert ("plaintext_image", f"a file under {tmp_path / 'gradio'}") in checks(report)
    assert "grandma" not in report.to_text() and "grandma" not in report.to_json()
    assert cache.name not in report.to_text()  # the folder is a hash of the content


def test_undeclared_files_tables_and_columns_are_found(data_dir: Path) -> None:
    (data_dir / "notes.txt").write_text("hello")
    (data_dir / "cache").mkdir()
    (data_dir / "cache" / "a").write_text("x")
    db = sqlite3.connect(data_dir / "obscura.db")
    db.execute("ALTER TABLE users ADD COLUMN email TEXT")
    db.execute("CREATE TABLE ip_addresses (ip TEXT)")
    db.commit()
    db.close()
    report = audit(data_dir)
    found = checks(report)
    assert ("undeclared", "notes.txt") in found and ("undeclared", "cache") in found
    assert ("undeclared", "cache/a") not in found  # the folder is reported once
    details = " ".join(f.detail for f in report.findings if f.check == "database")
    assert "users.email" in details and "ip_addresses" in details


def test_a_write_ahead_log_is_undeclared(data_dir: Path) -> None:
    (data_dir / "obscura.db-wal").write_bytes(b"\x00" * 32)
    assert ("undeclared", "obscura.db-wal") in checks(audit(data_dir))


def test_pictures_past_retention_are_found(
    data_dir: Path, alice_keys: Keys, bob_keys: Keys
) -> None:
    gallery = Gallery(data_dir / "gallery")
    old = datetime.now(UTC) - timedelta(days=40)
    gallery.store(OWNER, alice_keys[1], b"old", created=old)
    gallery.store("u_gone", bob_keys[1], b"orphan")
    report = audit(data_dir)
    retention = {f.where: f.detail for f in report.findings if f.check == "retention"}
    assert "1 picture(s) older than" in retention[f"gallery/{OWNER}"]
    assert "gone" in retention["gallery/u_gone"]


def test_session_only_pictures_without_a_session_are_found(data_dir: Path, bob_keys: Keys) -> None:
    make_database_path = data_dir / "obscura.db"
    db = sqlite3.connect(make_database_path)
    db.execute(
        "INSERT INTO users (id, username, role, password_hash, retention_days, created_day) "
        "VALUES ('u_bob', 'bob', 'member', 'h', 0, '2026-01-01')"
    )
    db.commit()
    db.close()
    Gallery(data_dir / "gallery").store("u_bob", bob_keys[1], b"x")
    assert ("retention", "gallery/u_bob") in checks(audit(data_dir))
    db = sqlite3.connect(make_database_path)
    db.execute(
        "INSERT INTO sessions VALUES ('h', 'u_bob', ?, ?)", (int(time.time()), int(time.time()))
    )
    db.commit()
    db.close()
    assert ("retention", "gallery/u_bob") not in checks(audit(data_dir))


def test_old_spool_files_old_audit_days_expired_sessions_and_invites_are_found(
    data_dir: Path,
) -> None:
    (old_spool,) = [p for p in (data_dir / "spool").iterdir() if len(p.name) == 32][:1]
    two_days_ago = time.time() - 2 * 86400
    os.utime(old_spool, (two_days_ago, two_days_ago))
    (data_dir / "audit" / "2020-01-01.jsonl").write_text("{}\n")
    db = sqlite3.connect(data_dir / "obscura.db")
    db.execute("INSERT INTO sessions VALUES ('h', ?, 1000, 1000)", (OWNER,))
    db.execute("INSERT INTO invites VALUES ('c', 'member', 1000, NULL)")
    db.commit()
    db.close()
    report = audit(data_dir)
    found = checks(report)
    assert ("retention", "spool") in found
    assert ("retention", "audit/2020-01-01.jsonl") in found
    details = " ".join(f.detail for f in report.findings if f.where == "obscura.db")
    assert "session" in details and "invite" in details


def test_personal_mode_must_listen_on_loopback(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    assert audit(empty).findings == []
    assert audit(empty, host="::1").findings == []
    report = audit(empty, host="0.0.0.0")
    assert report.mode == "personal" and ("setting", "host") in checks(report)


def test_accounts_mode_on_a_lan_address_needs_tls(data_dir: Path) -> None:
    assert ("setting", "tls") in checks(audit(data_dir, host="192.168.1.20"))
    assert audit(data_dir, host="192.168.1.20", tls=True).findings == []
    insecure = audit(data_dir, host="192.168.1.20", insecure_http=True)
    assert ("setting", "insecure_http") in checks(insecure)


def test_disk_temp_and_missing_privacy_switches_are_flagged(tmp_path: Path) -> None:
    report = audit(tmp_path, allow_disk_temp=True)
    assert ("setting", "allow_disk_temp") in checks(report)
    missing = run_audit(
        tmp_path,
        AuditSettings(),
        env={"HF_HUB_OFFLINE": "1"},
        expected_env=EXPECTED_ENV,
    )
    assert checks(missing) == [("setting", "GRADIO_ANALYTICS_ENABLED")]


def test_random_ciphertext_is_not_mistaken_for_a_picture(tmp_path: Path) -> None:
    path = tmp_path / "noise"
    path.write_bytes(os.urandom(4_000_000))
    assert signatures_in(path, container=True) == []


def test_signature_split_across_read_blocks_is_found(tmp_path: Path) -> None:
    path = tmp_path / "big"
    block = audit_module._CHUNK
    path.write_bytes(b"\x00" * (block - 4) + b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    assert signatures_in(path, container=True) == ["PNG picture"]


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).digest())
        for p in root.rglob("*")
        if p.is_file()
    }


def test_audit_changes_nothing(data_dir: Path) -> None:
    (data_dir / "photo.png").write_bytes(picture_bytes("PNG"))
    before = snapshot(data_dir)
    audit(data_dir)
    assert snapshot(data_dir) == before


# -- the command line ------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every temp folder the command scans at empty private folders."""
    temp = tmp_path / "tempdirs"
    for name in ("gradio", "tmp", "ram"):
        (temp / name).mkdir(parents=True)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(temp / "gradio"))
    monkeypatch.setenv("TMPDIR", str(temp / "tmp"))
    monkeypatch.setenv("OBSCURA_RAM_DIR", str(temp / "ram"))
    monkeypatch.setattr(audit_module, "GRADIO_DEFAULT_TEMP", temp / "none")
    for name in ("OBSCURA_HOST", "OBSCURA_TLS", "OBSCURA_ALLOW_DISK_TEMP", "OBSCURA_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return temp


def test_cli_passes_on_a_clean_data_dir(data_dir: Path, cli_env: Path) -> None:
    from webui.cli.audit import audit as audit_command

    result = CliRunner().invoke(audit_command, ["--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert "No findings" in result.output


def test_cli_finds_planted_pictures_and_exits_non_zero(data_dir: Path, cli_env: Path) -> None:
    from webui.cli.audit import audit as audit_command

    (data_dir / "planted.jpg").write_bytes(picture_bytes("JPEG"))
    (data_dir / "gallery" / OWNER / "planted.png").write_bytes(picture_bytes("PNG"))
    (data_dir / "spool" / ("d" * 32)).write_bytes(picture_bytes("WEBP"))
    (cli_env / "ram" / "upload.jpg").write_bytes(picture_bytes("JPEG", gps=True))
    result = CliRunner().invoke(audit_command, ["--data-dir", str(data_dir), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False
    pictures = {f["where"] for f in report["findings"] if f["check"] == "plaintext_image"}
    assert pictures == {
        "planted.jpg",
        f"gallery/{OWNER}/planted.png",
        "spool/" + "d" * 32,
        f"a file under {cli_env / 'ram'}",
    }
    human = CliRunner().invoke(audit_command, ["--data-dir", str(data_dir)])
    assert human.exit_code == 1 and "[plaintext_image] planted.jpg" in human.output


def test_audit_is_registered_on_the_obscura_command(data_dir: Path, cli_env: Path) -> None:
    from webui.cli import main

    result = CliRunner().invoke(main, ["audit", "--help"])
    assert result.exit_code == 0 and "--json" in result.output


def test_privacy_modules_know_nothing_of_click_gradio_torch_core_or_webui() -> None:
    import ast

    root = Path(__file__).resolve().parents[2] / "privacy"
    forbidden = {"click", "gradio", "torch", "diffusers", "transformers", "core", "webui"}
    for name in ("audit", "inventory", "scrub", "output", "spool", "gallery", "sealing", "atomic"):
        tree = ast.parse((root / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] not in forbidden, f"privacy/{name}.py imports {module}"


# -- issue 9 "obscura audit misses ..." and damaged databases ----------------------------------


def test_a_data_dir_others_can_read_is_a_finding(data_dir: Path) -> None:
    data_dir.chmod(0o755)
    (data_dir / "obscura.db").chmod(0o644)
    found = [(f.check, f.where) for f in audit(data_dir).findings]
    assert ("permissions", ".") in found
    assert ("permissions", "obscura.db") in found


def test_png_text_chunks_are_metadata_findings(tmp_path: Path) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a secret prompt")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG", pnginfo=info)
    (temp / "picture.png").write_bytes(buffer.getvalue())
    report = run_audit(tmp_path / "none", AuditSettings(), temp_dirs=[temp])
    metadata = [f for f in report.findings if f.check == "metadata"]
    assert metadata and "PNG text chunk" in metadata[0].detail
    plain = io.BytesIO()
    Image.new("RGB", (8, 8)).save(plain, "PNG")
    assert audit_module.PNG_TEXT not in signatures_in_bytes(tmp_path, plain.getvalue())


def signatures_in_bytes(tmp_path: Path, data: bytes) -> list[str]:
    path = tmp_path / "probe.bin"
    path.write_bytes(data)
    return signatures_in(path, container=False)


def test_temp_findings_name_the_scanned_folder_never_the_hash_folder(tmp_path: Path) -> None:
    ram = tmp_path / "ram"
    hashed = ram / ("0f" * 20)
    hashed.mkdir(parents=True)
    (hashed / "holiday-at-home.png").write_bytes(picture_bytes("PNG"))
    report = run_audit(tmp_path / "none", AuditSettings(), temp_dirs=[ram])
    text = report.to_text() + report.to_json()
    assert report.findings
    assert "0f0f0f" not in text and "holiday" not in text
    assert str(ram) in text


@pytest.mark.parametrize("damage", ["empty", "truncated", "overwritten", "deleted"])
def test_a_lost_accounts_database_is_reported(tmp_path: Path, damage: str) -> None:
    from privacy.accounts import Accounts
    from privacy.passwords import make_hasher

    root = tmp_path / "data"
    store = Accounts(root / "obscura.db", hasher=make_hasher(time_cost=1, memory_cost=8,
                                                              parallelism=1))
    store.create_user("alice", "correct horse")
    store.close()
    db = root / "obscura.db"
    if damage == "empty":
        db.write_bytes(b"")
    elif damage == "truncated":
        db.write_bytes(db.read_bytes()[:1500])
    elif damage == "overwritten":
        db.write_bytes(os.urandom(8192))
    else:
        db.unlink()
    report = run_audit(root, AuditSettings())
    assert report.mode == "accounts"
    damaged = [f for f in report.findings if f.check == "database"]
    assert damaged and "restore obscura.db from a backup" in damaged[0].detail, report.to_text()
