"""``obscura serve`` refuses unsafe starts with one sentence and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def serve(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "import sys; from webui.cli import main; main(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, "serve", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)


def test_personal_mode_on_a_lan_address_is_refused_and_the_ram_dir_is_wiped(tmp_path):
    ram = Path(f"/dev/shm/obscura-test-cli-{os.getpid()}")
    env = dict(os.environ, OBSCURA_RAM_DIR=str(ram))
    result = serve("--host", "0.0.0.0", "--data-dir", str(tmp_path), env=env)
    assert result.returncode == 2
    assert "obscura user add" in result.stderr
    assert "Traceback" not in result.stderr
    assert not ram.exists() or list(ram.iterdir()) == []
    if ram.exists():
        ram.rmdir()


def test_without_a_ram_dir_serve_refuses_unless_disk_temp_is_allowed(tmp_path):
    env = dict(os.environ, OBSCURA_RAM_DIR=str(tmp_path / "on-disk"))
    result = serve("--data-dir", str(tmp_path), env=env)
    assert result.returncode == 2
    assert "--allow-disk-temp" in result.stderr

