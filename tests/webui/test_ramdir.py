"""The private RAM directory: where it is, who owns it, that it is wiped."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from webui.ramdir import RamDirError, acquire_ram_dir, filesystem_type, is_ram_backed


def shm_base(tmp_name: str) -> Path:
    return Path("/dev/shm") / f"obscura-test-{os.getpid()}-{tmp_name}"


@pytest.fixture
def restore_env():
    saved = {k: os.environ.get(k) for k in ("GRADIO_TEMP_DIR", "TMPDIR")}
    saved_tempdir = tempfile.tempdir
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    tempfile.tempdir = saved_tempdir


needs_shm = pytest.mark.skipif(not is_ram_backed(Path("/dev/shm")), reason="/dev/shm is not tmpfs")


def test_mounts_table_decides_the_filesystem(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda / ext4 rw 0 0\ntmpfs /run/user/5 tmpfs rw 0 0\n")
    assert filesystem_type(Path("/run/user/5/obscura"), mounts) == "tmpfs"
    assert filesystem_type(Path("/home/x"), mounts) == "ext4"
    assert not is_ram_backed(Path("/run/user/50"), mounts)


@needs_shm
def test_ram_dir_is_private_on_tmpfs_and_gone_after_release(restore_env):
    base = shm_base("a")
    ram = acquire_ram_dir(env={"OBSCURA_RAM_DIR": str(base)})
    try:
        ram.activate()
        assert ram.on_ram
        for folder in (base, ram.root, ram.uploads, ram.tmp):
            info = folder.stat()
            assert info.st_mode & 0o777 == 0o700
            assert info.st_uid == os.getuid()
        assert os.environ["GRADIO_TEMP_DIR"] == str(ram.uploads)
        assert os.environ["TMPDIR"] == str(ram.tmp)
        assert tempfile.gettempdir() == str(ram.tmp)
        with tempfile.NamedTemporaryFile() as handle:
            assert handle.name.startswith(str(ram.tmp))
        (ram.uploads / "abc").mkdir()
        (ram.uploads / "abc" / "photo.jpg").write_bytes(b"x")
    finally:
        ram.release()
    assert not ram.root.exists()
    os.rmdir(base)


@needs_shm
def test_leftovers_of_a_crashed_server_are_wiped_at_start(restore_env):
    base = shm_base("b")
    base.mkdir(mode=0o700)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (base / dead).mkdir()
    (base / dead / "upload.png").write_bytes(b"plaintext")
    ram = acquire_ram_dir(env={"OBSCURA_RAM_DIR": str(base)})
    try:
        assert not (base / dead).exists()
        assert ram.root.exists()
    finally:
        ram.release()
        os.rmdir(base)


@needs_shm
def test_a_symlinked_ram_dir_is_refused(tmp_path):
    base = shm_base("c")
    base.symlink_to(tmp_path)
    try:
        with pytest.raises(RamDirError) as err:
            acquire_ram_dir(env={"OBSCURA_RAM_DIR": str(base)})
        assert err.value.code in {"ram_dir_not_dir", "no_ram_dir"}
    finally:
        base.unlink()


def test_disk_folder_is_refused_unless_disk_temp_is_allowed(tmp_path, capsys, restore_env):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda / ext4 rw 0 0\n")
    env = {"OBSCURA_RAM_DIR": str(tmp_path / "ram")}
    with pytest.raises(RamDirError) as err:
        acquire_ram_dir(env=env, mounts_file=mounts)
    assert err.value.code == "no_ram_dir"
    assert "--allow-disk-temp" in str(err.value)
    ram = acquire_ram_dir(allow_disk_temp=True, env=env, mounts_file=mounts)
    try:
        assert not ram.on_ram
        assert ram.root.stat().st_mode & 0o777 == 0o700
        assert "WARNING" in capsys.readouterr().err
    finally:
        ram.release()
    assert not ram.root.exists()


@needs_shm
def test_sigterm_wipes_the_ram_dir(tmp_path):
    base = shm_base("d")
    script = (
        "import os, signal, sys, time\n"
        "from webui.ramdir import acquire_ram_dir\n"
        "ram = acquire_ram_dir()\n"
        "ram.activate()\n"
        "(ram.uploads / 'x.png').write_bytes(b'secret')\n"
        "print(ram.root, flush=True)\n"
        "time.sleep(30)\n"
    )
    env = dict(os.environ, OBSCURA_RAM_DIR=str(base))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        root = Path(proc.stdout.readline().strip())
        assert (root / "gradio" / "x.png").exists()
        proc.terminate()
        proc.wait(timeout=20)
        assert not root.exists()
    finally:
        proc.kill()
        proc.wait()
        if base.exists():
            os.rmdir(base)
