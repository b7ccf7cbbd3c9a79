"""Upload ownership: read once, deleted at once with its folder, never another user's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from webui.uploads import UploadGone, UploadOwners


def cached(cache: Path, name: str = "IMG_0001.jpg", data: bytes = b"\xff\xd8\xffphoto") -> Path:
    folder = cache / "3f2a9c"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def test_take_reads_once_and_deletes_the_file_and_its_folder(tmp_path):
    owners = UploadOwners(tmp_path)
    path = cached(tmp_path)
    owners.record(str(path), "alice")
    assert owners.take(str(path), "alice") == b"\xff\xd8\xffphoto"
    assert not path.exists() and not path.parent.exists()
    with pytest.raises(UploadGone):
        owners.take(str(path), "alice")


def test_another_user_can_neither_take_nor_delete_the_upload(tmp_path):
    owners = UploadOwners(tmp_path)
    path = cached(tmp_path)
    owners.record(str(path), "alice")
    with pytest.raises(UploadGone) as err:
        owners.take(str(path), "bob")
    assert "not yours" in str(err.value)
    assert path.exists()
    assert not owners.owns(str(path), "bob") and owners.owns(str(path), "alice")


def test_paths_outside_the_cache_are_never_served_or_read(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    owners = UploadOwners(cache)
    outside = tmp_path / "secret.txt"
    outside.write_text("x")
    owners.record(str(outside), "alice")
    assert not owners.owns(str(outside), "alice")
    sneaky = str(cache / ".." / "secret.txt")
    with pytest.raises(UploadGone):
        owners.take(sneaky, "alice")
    assert outside.exists()


def test_uploads_never_submitted_are_swept(tmp_path):
    now = [1000.0]
    owners = UploadOwners(tmp_path, clock=lambda: now[0])
    path = cached(tmp_path)
    owners.record(str(path), "alice")
    assert owners.sweep(max_age=600) == 0 and path.exists()
    now[0] += 601
    assert owners.sweep(max_age=600) == 1
    assert not path.exists() and not path.parent.exists()


def test_superseded_painter_uploads_of_the_owner_are_discarded(tmp_path):
    import re

    owners = UploadOwners(tmp_path)
    stale = cached(tmp_path / "a", "layer_0.png")
    photo = cached(tmp_path / "b", "holiday.jpg")
    others = cached(tmp_path / "c", "background.png")
    owners.record(str(stale), "alice")
    owners.record(str(photo), "alice")
    owners.record(str(others), "bob")
    assert owners.discard_pending("alice", re.compile(r"(background|layer_\d+)\.png")) == 1
    assert not stale.exists() and photo.exists() and others.exists()


def test_the_painters_re_uploads_are_swept_sooner_than_photos(tmp_path):
    now = [0.0]
    owners = UploadOwners(tmp_path, clock=lambda: now[0], short_seconds=120)
    layer = cached(tmp_path / "a", "layer_0.png")
    photo = cached(tmp_path / "b", "holiday.jpg")
    owners.record(str(layer), "alice")
    owners.record(str(photo), "alice")
    now[0] = 121
    assert owners.sweep(max_age=600) == 1
    assert not layer.exists() and photo.exists()


def test_reading_is_capped(tmp_path):
    owners = UploadOwners(tmp_path)
    path = cached(tmp_path, data=b"x" * 100)
    owners.record(str(path), "alice")
    assert len(owners.take(str(path), "alice", max_bytes=10)) == 11  # one over: "too large"
    assert not path.exists()


def test_serve_command_imports_no_gradio_before_the_ram_dir_is_set():
    code = (
        "import sys\n"
        "import webui.cli, webui.cli.serve, webui.ramdir\n"
        "assert 'gradio' not in sys.modules, 'gradio imported too early'\n"
        "assert 'diffusers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


# -- held in memory: nothing of an upload stays in the RAM directory ----------------------------


def test_a_held_upload_leaves_the_cache_at_once_and_is_taken_once_from_memory(tmp_path):
    owners = UploadOwners(tmp_path)
    path = cached(tmp_path)
    assert owners.hold(str(path), "alice")
    assert not path.exists() and not path.parent.exists()  # a kill -9 now leaves nothing
    assert owners.owns(str(path), "alice") and not owners.owns(str(path), "bob")
    assert owners.held(str(path), "alice") == b"\xff\xd8\xffphoto"
    assert owners.held(str(path), "bob") is None
    with pytest.raises(UploadGone):
        owners.take(str(path), "bob")
    assert owners.take(str(path), "alice", max_bytes=3) == b"\xff\xd8\xffp"  # one over: too large
    with pytest.raises(UploadGone):
        owners.take(str(path), "alice")
    assert owners.held(str(path), "alice") is None


def test_held_uploads_are_swept_and_bounded(tmp_path):
    import re

    now = [0.0]
    owners = UploadOwners(tmp_path, clock=lambda: now[0], max_held=10)
    first = cached(tmp_path / "a", "holiday.jpg", b"12345678")
    assert owners.hold(str(first), "alice")
    second = cached(tmp_path / "b", "other.jpg", b"12345678")
    assert not owners.hold(str(second), "alice")  # over the memory bound: refused ...
    assert not second.exists()  # ... and not left on disk either
    now[0] = 601
    assert owners.sweep(max_age=600) == 1
    assert owners.held(str(first), "alice") is None
    layer = cached(tmp_path / "c", "layer_0.png", b"1")
    assert owners.hold(str(layer), "alice")
    assert owners.discard_pending("alice", re.compile(r"layer_\d+\.png")) == 1
    assert owners.held(str(layer), "alice") is None
    outside = tmp_path.parent / f"{tmp_path.name}-outside.jpg"
    outside.write_bytes(b"x")
    assert not owners.hold(str(outside), "alice") and outside.exists()


def test_one_user_cannot_use_up_the_memory_for_everyone(tmp_path):
    owners = UploadOwners(tmp_path, max_held=100, max_held_per_owner=10)
    assert owners.hold(str(cached(tmp_path / "a", "1.jpg", b"x" * 8)), "mallory")
    assert not owners.hold(str(cached(tmp_path / "b", "2.jpg", b"x" * 8)), "mallory")
    assert owners.hold(str(cached(tmp_path / "c", "3.jpg", b"x" * 8)), "alice")
