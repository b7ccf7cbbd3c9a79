"""The gallery: sealed to the owner's public key, opened only with the owner's private key."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from privacy.errors import GalleryError, SealError
from privacy.gallery import BODY_SUFFIX, KEY_SUFFIX, Gallery
from privacy.sealing import (
    PRIVATE_KEY_LENGTH,
    PUBLIC_KEY_LENGTH,
    generate_owner_keypair,
    seal,
    unseal,
)

PICTURE = b"\x89PNG\r\n\x1a\n" + b"a finished painting of a harbour " * 500
Keys = tuple[bytes, bytes]


def files_of(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# -- sealing ---------------------------------------------------------------------------------


def test_sealing_round_trip_and_key_sizes(alice_keys: Keys) -> None:
    private, public = alice_keys
    assert len(private) == PRIVATE_KEY_LENGTH and len(public) == PUBLIC_KEY_LENGTH
    sealed = seal(public, b"k" * 32, context=b"ctx")
    assert unseal(private, sealed, context=b"ctx") == b"k" * 32
    assert seal(public, b"k" * 32, context=b"ctx") != sealed  # fresh encapsulation each time


def test_sealed_value_refuses_wrong_key_wrong_context_and_any_flipped_bit(
    alice_keys: Keys, bob_keys: Keys
) -> None:
    private, public = alice_keys
    sealed = seal(public, b"secret", context=b"owner-a/pic-1")
    with pytest.raises(SealError):
        unseal(bob_keys[0], sealed, context=b"owner-a/pic-1")
    with pytest.raises(SealError):
        unseal(private, sealed, context=b"owner-a/pic-2")
    for position in range(0, 8 * len(sealed), 61):
        damaged = bytearray(sealed)
        damaged[position // 8] ^= 1 << (position % 8)
        with pytest.raises(SealError):
            unseal(private, bytes(damaged), context=b"owner-a/pic-1")
    for cut in (0, 1, 100, len(sealed) - 1):
        with pytest.raises(SealError):
            unseal(private, sealed[:cut], context=b"owner-a/pic-1")


def test_malformed_keys_are_refused_with_a_sentence() -> None:
    with pytest.raises(SealError):
        seal(b"\x01" + b"\x00" * 10, b"x", context=b"")
    with pytest.raises(SealError):
        unseal(b"nope", b"\x01" + b"\x00" * 2000, context=b"")


# -- gallery ---------------------------------------------------------------------------------


def test_round_trip_while_owner_is_logged_out(tmp_path: Path, alice_keys: Keys) -> None:
    private, public = alice_keys
    gallery = Gallery(tmp_path / "gallery")
    picture_id = gallery.store("u_alice", public, PICTURE)  # only the public key is needed
    assert gallery.open("u_alice", picture_id, private) == PICTURE
    (info,) = gallery.list("u_alice")
    assert info.id == picture_id and info.kind == "png"
    assert abs((datetime.now(UTC) - info.created).total_seconds()) < 120


def test_files_hold_no_plaintext_and_no_names(tmp_path: Path, alice_keys: Keys) -> None:
    gallery = Gallery(tmp_path / "gallery")
    picture_id = gallery.store("u_alice", alice_keys[1], PICTURE)
    names = {p.relative_to(tmp_path / "gallery").as_posix() for p in files_of(tmp_path / "gallery")}
    assert names == {f"u_alice/{picture_id}{KEY_SUFFIX}", f"u_alice/{picture_id}{BODY_SUFFIX}"}
    for path in files_of(tmp_path / "gallery"):
        body = path.read_bytes()
        assert b"harbour" not in body and b"\x89PNG" not in body
        assert path.stat().st_mode & 0o077 == 0


def test_other_owner_cannot_open_or_see_a_picture(
    tmp_path: Path, alice_keys: Keys, bob_keys: Keys
) -> None:
    gallery = Gallery(tmp_path / "gallery")
    picture_id = gallery.store("u_alice", alice_keys[1], PICTURE)
    assert gallery.list("u_bob") == []
    with pytest.raises(GalleryError) as not_found:
        gallery.open("u_bob", picture_id, bob_keys[0])
    assert not_found.value.code == "picture_not_found"
    with pytest.raises(GalleryError) as wrong_key:
        gallery.open("u_alice", picture_id, bob_keys[0])
    assert wrong_key.value.code == "picture_refused"


def test_files_moved_to_another_owner_folder_do_not_open(tmp_path: Path, alice_keys: Keys) -> None:
    # Even the owner's own key fails when the files are moved: owner id is in the context.
    gallery = Gallery(tmp_path / "gallery")
    picture_id = gallery.store("u_alice", alice_keys[1], PICTURE)
    (tmp_path / "gallery" / "u_mallory").mkdir()
    for suffix in (KEY_SUFFIX, BODY_SUFFIX):
        os.rename(
            tmp_path / "gallery" / "u_alice" / (picture_id + suffix),
            tmp_path / "gallery" / "u_mallory" / (picture_id + suffix),
        )
    with pytest.raises(GalleryError):
        gallery.open("u_mallory", picture_id, alice_keys[0])


def test_key_file_swapped_between_pictures_is_refused(tmp_path: Path, alice_keys: Keys) -> None:
    gallery = Gallery(tmp_path / "gallery")
    a = gallery.store("u_alice", alice_keys[1], PICTURE)
    b = gallery.store("u_alice", alice_keys[1], b"another picture")
    folder = tmp_path / "gallery" / "u_alice"
    key_a, key_b = (
        (folder / (a + KEY_SUFFIX)).read_bytes(),
        (folder / (b + KEY_SUFFIX)).read_bytes(),
    )
    (folder / (a + KEY_SUFFIX)).write_bytes(key_b)
    (folder / (b + KEY_SUFFIX)).write_bytes(key_a)
    for picture_id in (a, b):
        with pytest.raises(GalleryError):
            gallery.open("u_alice", picture_id, alice_keys[0])


@pytest.mark.parametrize("suffix", [KEY_SUFFIX, BODY_SUFFIX])
def test_one_flipped_bit_in_either_file_is_refused(
    tmp_path: Path, alice_keys: Keys, suffix: str
) -> None:
    gallery = Gallery(tmp_path / "gallery")
    picture_id = gallery.store("u_alice", alice_keys[1], b"small picture bytes")
    path = tmp_path / "gallery" / "u_alice" / (picture_id + suffix)
    original = path.read_bytes()
    step = 1 if suffix == BODY_SUFFIX else 37  # every bit of the body; a spread over the key
    for position in range(0, 8 * len(original), step):
        damaged = bytearray(original)
        damaged[position // 8] ^= 1 << (position % 8)
        path.write_bytes(bytes(damaged))
        with pytest.raises(GalleryError):
            gallery.open("u_alice", picture_id, alice_keys[0])
    path.write_bytes(original)
    assert gallery.open("u_alice", picture_id, alice_keys[0]) == b"small picture bytes"


@pytest.mark.parametrize("suffix", [KEY_SUFFIX, BODY_SUFFIX])
def test_truncated_files_are_refused(tmp_path: Path, alice_keys: Keys, suffix: str) -> None:
    gallery = Gallery(tmp_path / "gallery")
    picture_id = gallery.store("u_alice", alice_keys[1], PICTURE * 10)
    path = tmp_path / "gallery" / "u_alice" / (picture_id + suffix)
    original = path.read_bytes()
    for cut in (0, 7, 20, len(original) // 2, len(original) - 1):
        path.write_bytes(original[:cut])
        with pytest.raises(GalleryError):
            gallery.open("u_alice", picture_id, alice_keys[0])


def test_backdating_a_picture_to_dodge_retention_breaks_it(
    tmp_path: Path, alice_keys: Keys
) -> None:
    gallery = Gallery(tmp_path / "gallery")
    picture_id = gallery.store("u_alice", alice_keys[1], PICTURE)
    path = tmp_path / "gallery" / "u_alice" / (picture_id + KEY_SUFFIX)
    data = bytearray(path.read_bytes())
    data[8 + 7] ^= 1  # the created-minute field (after magic + version)
    path.write_bytes(bytes(data))
    with pytest.raises(GalleryError):
        gallery.open("u_alice", picture_id, alice_keys[0])


@pytest.mark.parametrize("owner", ["", "../etc", "a/b", "..", "name with space", "x" * 65, "é"])
def test_path_tricks_in_owner_ids_are_refused(tmp_path: Path, alice_keys: Keys, owner: str) -> None:
    gallery = Gallery(tmp_path / "gallery")
    with pytest.raises(GalleryError) as refused:
        gallery.store(owner, alice_keys[1], PICTURE)
    assert refused.value.code == "bad_owner_id"
    with pytest.raises(GalleryError):
        gallery.list(owner)
    assert not (tmp_path / "etc").exists()


def test_bad_picture_ids_are_not_found(tmp_path: Path, alice_keys: Keys) -> None:
    gallery = Gallery(tmp_path / "gallery")
    for picture_id in ("../u_bob/x", "", "Z" * 32):
        with pytest.raises(GalleryError):
            gallery.open("u_alice", picture_id, alice_keys[0])
        assert gallery.delete("u_alice", picture_id) is False


def test_delete_removes_key_and_body_and_cannot_be_opened(tmp_path: Path, alice_keys: Keys) -> None:
    gallery = Gallery(tmp_path / "gallery")
    keep = gallery.store("u_alice", alice_keys[1], b"keep")
    gone = gallery.store("u_alice", alice_keys[1], PICTURE)
    assert gallery.delete("u_alice", gone) is True
    assert gallery.delete("u_alice", gone) is False
    assert [info.id for info in gallery.list("u_alice")] == [keep]
    with pytest.raises(GalleryError):
        gallery.open("u_alice", gone, alice_keys[0])
    assert len(files_of(tmp_path / "gallery")) == 2


def test_a_body_whose_key_file_is_gone_can_never_be_opened(
    tmp_path: Path, alice_keys: Keys
) -> None:
    # What "delete the key first" buys: a body that survives (crash, filesystem copy) is noise.
    gallery = Gallery(tmp_path / "gallery")
    picture_id = gallery.store("u_alice", alice_keys[1], PICTURE)
    (tmp_path / "gallery" / "u_alice" / (picture_id + KEY_SUFFIX)).unlink()
    with pytest.raises(GalleryError):
        gallery.open("u_alice", picture_id, alice_keys[0])


def test_delete_owner_removes_everything_of_that_owner_only(
    tmp_path: Path, alice_keys: Keys, bob_keys: Keys
) -> None:
    gallery = Gallery(tmp_path / "gallery")
    for _ in range(3):
        gallery.store("u_alice", alice_keys[1], PICTURE)
    bobs = gallery.store("u_bob", bob_keys[1], PICTURE)
    assert gallery.delete_owner("u_alice") == 3
    assert not (tmp_path / "gallery" / "u_alice").exists()
    assert gallery.list("u_alice") == []
    assert gallery.open("u_bob", bobs, bob_keys[0]) == PICTURE
    assert gallery.owners() == ["u_bob"]
    assert gallery.purge_owner("u_bob") == 1 and gallery.owners() == []


def test_sweep_applies_each_owners_retention(
    tmp_path: Path, alice_keys: Keys, bob_keys: Keys
) -> None:
    gallery = Gallery(tmp_path / "gallery")
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    old = gallery.store("u_alice", alice_keys[1], b"old", created=now - timedelta(days=31))
    fresh = gallery.store("u_alice", alice_keys[1], b"fresh", created=now - timedelta(days=29))
    bob_old = gallery.store("u_bob", bob_keys[1], b"bob", created=now - timedelta(days=31))
    retention = {"u_alice": 30, "u_bob": 365}
    assert gallery.sweep(retention.get, now=now) == 1
    assert [info.id for info in gallery.list("u_alice")] == [fresh]
    assert [info.id for info in gallery.list("u_bob")] == [bob_old]
    with pytest.raises(GalleryError):
        gallery.open("u_alice", old, alice_keys[0])


def test_sweep_removes_session_only_owners_not_logged_in_and_deleted_accounts(
    tmp_path: Path, alice_keys: Keys, bob_keys: Keys
) -> None:
    gallery = Gallery(tmp_path / "gallery")
    gallery.store("u_alice", alice_keys[1], b"a")
    gallery.store("u_bob", bob_keys[1], b"b")
    gallery.store("u_carol", bob_keys[1], b"c")
    retention = {"u_alice": 0, "u_bob": 0}  # carol's account no longer exists
    assert gallery.sweep(retention.get, logged_in={"u_bob"}) == 2
    assert gallery.owners() == ["u_bob"]


def test_sweep_removes_old_half_written_leftovers_but_not_fresh_ones(
    tmp_path: Path, alice_keys: Keys
) -> None:
    gallery = Gallery(tmp_path / "gallery")
    kept = gallery.store("u_alice", alice_keys[1], PICTURE)
    folder = tmp_path / "gallery" / "u_alice"
    orphan_body = folder / ("a" * 32 + BODY_SUFFIX)
    orphan_body.write_bytes(b"OBSCPIC\x01...")
    temp = folder / ".tmp-0123456789abcdef"
    temp.write_bytes(b"half")
    fresh_temp = folder / ".tmp-fedcba9876543210"
    fresh_temp.write_bytes(b"being written right now")
    two_hours_ago = time.time() - 7200
    for path in (orphan_body, temp):
        os.utime(path, (two_hours_ago, two_hours_ago))
    gallery.sweep(lambda owner: 30)
    assert not orphan_body.exists() and not temp.exists() and fresh_temp.exists()
    assert gallery.open("u_alice", kept, alice_keys[0]) == PICTURE


def test_store_rejects_a_bad_public_key_and_writes_nothing(tmp_path: Path) -> None:
    gallery = Gallery(tmp_path / "gallery")
    with pytest.raises(GalleryError):
        gallery.store("u_alice", b"\x01" + b"\x00" * 100, PICTURE)
    assert files_of(tmp_path / "gallery") == []


def test_keypairs_are_distinct() -> None:
    assert generate_owner_keypair() != generate_owner_keypair()
