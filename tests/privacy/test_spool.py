"""The spool: encrypted uploads whose keys live only in memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from privacy.errors import SpoolError
from privacy.spool import HEADER, MARKER, PIXELS_MAGIC, Spool, decode_pixels, encode_pixels

PHOTO = b"\x89PNG\r\n\x1a\n" + b"a private photo of my kitchen " * 200


def spool_files(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.name != MARKER]


def test_round_trip_returns_the_same_bytes(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool_id = spool.put(PHOTO, owner="u1")
    assert spool.get(spool_id, owner="u1") == PHOTO
    assert len(spool) == 1 and spool.ids() == [spool_id]


def test_file_on_disk_holds_no_plaintext_and_a_random_name(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool_id = spool.put(PHOTO, owner="u1")
    (path,) = spool_files(tmp_path / "spool")
    body = path.read_bytes()
    assert path.name == spool_id and len(spool_id) == 32
    assert body.startswith(HEADER)
    assert b"private photo" not in body and b"\x89PNG" not in body
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_two_puts_of_the_same_data_differ(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    a, b = spool.put(PHOTO, owner="u1"), spool.put(PHOTO, owner="u1")
    assert a != b
    assert (tmp_path / "spool" / a).read_bytes() != (tmp_path / "spool" / b).read_bytes()


def test_wrong_owner_gets_the_same_answer_as_a_missing_upload(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool_id = spool.put(PHOTO, owner="alice")
    with pytest.raises(SpoolError) as wrong:
        spool.get(spool_id, owner="bob")
    with pytest.raises(SpoolError) as missing:
        spool.get("0" * 32, owner="bob")
    assert wrong.value.code == missing.value.code == "spool_not_found"
    assert str(wrong.value) == str(missing.value)


def test_owner_is_bound_in_the_ciphertext_not_only_in_memory(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool_id = spool.put(PHOTO, owner="alice")
    key, _ = spool._keys[spool_id]
    spool._keys[spool_id] = (key, "bob")  # simulate a bug in the in-memory owner check
    with pytest.raises(SpoolError, match="damaged"):
        spool.get(spool_id, owner="bob")


def test_swapping_two_files_is_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    a, b = spool.put(PHOTO, owner="u1"), spool.put(b"other", owner="u1")
    pa, pb = tmp_path / "spool" / a, tmp_path / "spool" / b
    da, db = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(db)
    pb.write_bytes(da)
    for spool_id in (a, b):
        with pytest.raises(SpoolError, match="damaged"):
            spool.get(spool_id, owner="u1")


@pytest.mark.parametrize("bit", [0, 8 * len(HEADER) + 3, 8 * 40, 8 * 500 + 7, -1])
def test_one_flipped_bit_anywhere_is_refused(tmp_path: Path, bit: int) -> None:
    spool = Spool(tmp_path / "spool")
    spool_id = spool.put(PHOTO, owner="u1")
    path = tmp_path / "spool" / spool_id
    body = bytearray(path.read_bytes())
    position = bit if bit >= 0 else 8 * len(body) - 1
    body[position // 8] ^= 1 << (position % 8)
    path.write_bytes(bytes(body))
    with pytest.raises(SpoolError):
        spool.get(spool_id, owner="u1")


def test_every_single_bit_flip_in_a_small_file_is_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool_id = spool.put(b"tiny secret", owner="u1")
    path = tmp_path / "spool" / spool_id
    original = path.read_bytes()
    for position in range(8 * len(original)):
        body = bytearray(original)
        body[position // 8] ^= 1 << (position % 8)
        path.write_bytes(bytes(body))
        with pytest.raises(SpoolError):
            spool.get(spool_id, owner="u1")


@pytest.mark.parametrize("keep", [0, 5, len(HEADER), len(HEADER) + 20, -1, -17])
def test_truncated_file_is_refused(tmp_path: Path, keep: int) -> None:
    spool = Spool(tmp_path / "spool")
    spool_id = spool.put(PHOTO * 30, owner="u1")  # several chunks
    path = tmp_path / "spool" / spool_id
    body = path.read_bytes()
    path.write_bytes(body[:keep])
    with pytest.raises(SpoolError):
        spool.get(spool_id, owner="u1")


def test_truncation_at_a_chunk_boundary_is_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool_id = spool.put(os.urandom(200_000), owner="u1")
    path = tmp_path / "spool" / spool_id
    body = path.read_bytes()
    for cut in range(len(HEADER) + 16, len(body), 4093):
        path.write_bytes(body[:cut])
        with pytest.raises(SpoolError):
            spool.get(spool_id, owner="u1")


def test_after_shred_nothing_can_be_read_and_no_key_remains(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool_id = spool.put(PHOTO, owner="u1")
    ciphertext = (tmp_path / "spool" / spool_id).read_bytes()
    key, _ = spool._keys[spool_id]
    spool.shred(spool_id)
    assert spool_files(tmp_path / "spool") == []
    assert spool_id not in spool and len(spool) == 0 and spool._keys == {}
    assert bytes(key) == bytes(len(key))  # the key buffer was zeroed
    (tmp_path / "spool" / spool_id).write_bytes(ciphertext)  # even a recovered copy...
    with pytest.raises(SpoolError, match="not waiting"):
        spool.get(spool_id, owner="u1")  # ...cannot be opened: the key is gone
    spool.shred(spool_id)  # idempotent
    spool.shred("not-an-id")


def test_new_spool_removes_leftovers_of_an_earlier_process(tmp_path: Path) -> None:
    first = Spool(tmp_path / "spool")
    first.put(PHOTO, owner="u1")
    (tmp_path / "spool" / ".tmp-half-written").write_bytes(b"partial")
    second = Spool(tmp_path / "spool")
    assert spool_files(tmp_path / "spool") == [] and len(second) == 0


def test_a_folder_obscura_did_not_create_is_never_emptied(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(SpoolError):
        Spool(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_spool_folder_is_private(tmp_path: Path) -> None:
    Spool(tmp_path / "spool")
    assert oct((tmp_path / "spool").stat().st_mode & 0o777) == "0o700"


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from privacy.spool import Spool
    spool = Spool(Path(sys.argv[1]))
    spool_id = spool.put(sys.argv[2].encode() * 1000, owner="u1")
    print(spool_id, flush=True)
    time.sleep(600)
    """
)


def test_after_a_real_kill_9_the_orphan_is_swept_and_never_held_plaintext(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    canary = "CANARY-7f3a-plaintext-of-a-photo"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), canary],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert child.stdout is not None
        spool_id = child.stdout.readline().strip()
        assert len(spool_id) == 32
        orphan = root / spool_id
        body = orphan.read_bytes()
        assert len(body) > len(canary) * 1000
        assert canary.encode() not in body
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert orphan.exists()  # the crash left it behind...
    started = time.monotonic()
    restarted = Spool(root)
    assert not orphan.exists()  # ...and the next start removes it
    assert spool_files(root) == [] and len(restarted) == 0
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_a_picture_round_trips_as_raw_pixels_with_no_plaintext_on_disk(
    tmp_path: Path, mode: str
) -> None:
    spool = Spool(tmp_path / "spool")
    picture = Image.effect_noise((37, 21), 80).convert(mode)
    spool_id = spool.put_image(picture, owner="u1")
    back = spool.get_image(spool_id, owner="u1")
    assert back.mode == mode and back.size == (37, 21)
    assert back.tobytes() == picture.tobytes()
    (path,) = spool_files(tmp_path / "spool")
    body = path.read_bytes()
    assert PIXELS_MAGIC not in body and picture.tobytes()[:64] not in body
    with pytest.raises(SpoolError, match="not waiting"):
        spool.get_image(spool_id, owner="someone else")


def test_pixels_header_is_mode_width_height_then_the_pixels() -> None:
    picture = Image.new("RGB", (3, 2), (1, 2, 3))
    data = encode_pixels(picture)
    assert data.startswith(PIXELS_MAGIC)
    assert len(data) == len(PIXELS_MAGIC) + 1 + 8 + 3 * 2 * 3
    assert decode_pixels(data).getpixel((2, 1)) == (1, 2, 3)
    assert encode_pixels(Image.new("P", (2, 2))).startswith(PIXELS_MAGIC + bytes([3]))


def _header(code: int, width: int, height: int) -> bytes:
    return PIXELS_MAGIC + bytes([code]) + width.to_bytes(4, "big") + height.to_bytes(4, "big")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"OBSCPIX",
        _header(3, 0xFFFFFFFF, 0xFFFFFFFF),  # 18 quintillion pixels, declared in 16 bytes
        _header(3, 100_000, 100_000) + b"\0" * 64,
        _header(3, 4, 4) + b"\0" * 47,  # one byte short
        _header(3, 4, 4) + b"\0" * 49,  # one byte too many
        _header(2, 4, 4) + b"\0" * 32,  # no such mode
        _header(1, 0, 5),
        b"NOTPIXS" + _header(1, 1, 1)[7:] + b"\0",
    ],
)
def test_a_hostile_pixels_header_is_refused_before_any_allocation(data: bytes) -> None:
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(SpoolError, match="damaged"):
            decode_pixels(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100_000


def test_the_caller_s_pixel_limit_is_checked_from_the_header() -> None:
    data = encode_pixels(Image.new("L", (100, 100)))
    with pytest.raises(SpoolError, match="damaged"):
        decode_pixels(data, max_pixels=9_999)
    assert decode_pixels(data, max_pixels=10_000).size == (100, 100)


def test_writing_to_the_spool_does_not_fsync(tmp_path: Path, monkeypatch) -> None:
    """The key lives only in memory: durability buys nothing (module docstring)."""
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
    spool = Spool(tmp_path / "spool")
    spool_id = spool.put_image(Image.new("RGB", (8, 8)), owner="u1")
    spool.shred(spool_id)
    assert calls == [] and spool_files(tmp_path / "spool") == []
