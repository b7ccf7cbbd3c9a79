"""A real Obscura server per test module (a subprocess on a free loopback port)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).parent
# The suite runs with --import-mode=importlib: make this folder's modules importable.
sys.path.insert(0, str(HERE))

from samples import PASSWORD  # noqa: E402


@dataclass
class RunningServer:
    url: str
    state_dir: Path
    data_dir: Path
    ram_dir: Path
    invite: str | None
    process: subprocess.Popen

    def stop(self) -> None:
        """Ctrl-C, as a person would (idempotent)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def system_tmp(self) -> Path:
        return self.state_dir / "system-tmp"

    def net_attempts(self) -> list[str]:
        return json.loads((self.state_dir / "net.json").read_text())

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def login(self, username: str, password: str = PASSWORD) -> httpx.Client:
        client = self.client()
        response = client.post("/login", data={"username": username, "password": password})
        assert response.status_code == 200, response.text
        return client


def start_server(state_dir: Path, mode: str) -> Iterator[RunningServer]:
    # The server's "system temp dir" is a folder of its own, so that a test can tell what the
    # server left there from what other programs on this machine write to /tmp.
    system_tmp = state_dir / "system-tmp"
    system_tmp.mkdir()
    ram_base = Path(f"/dev/shm/obscura-test-{os.getpid()}-{mode}")
    env = dict(os.environ, OBSCURA_RAM_DIR=str(ram_base),
               PYTHONDONTWRITEBYTECODE="1", TMPDIR=str(system_tmp))
    log = open(state_dir / "server.log", "w")  # noqa: SIM115
    process = subprocess.Popen([sys.executable, str(HERE / "server_process.py"), str(state_dir),
                                mode], stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    state = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((state_dir / "server.log").read_text()[-3000:])
        if (state_dir / "state.json").exists():
            state = json.loads((state_dir / "state.json").read_text())
            try:
                if httpx.get(f"http://127.0.0.1:{state['port']}/healthz", timeout=2).is_success:
                    break
            except httpx.HTTPError:
                pass
        time.sleep(0.3)
    else:
        process.kill()
        raise RuntimeError("server did not start: " + (state_dir / "server.log").read_text())
    server = RunningServer(
        url=f"http://127.0.0.1:{state['port']}", state_dir=state_dir,
        data_dir=Path(state["data"]), ram_dir=Path(state["ram"]), invite=state["invite"],
        process=process,
    )
    try:
        yield server
    finally:
        server.stop()
        log.close()
        if ram_base.is_dir() and not any(ram_base.iterdir()):
            ram_base.rmdir()  # the server removed its own folder; the base is the test's


@pytest.fixture(scope="module")
def personal_server(tmp_path_factory) -> Iterator[RunningServer]:
    yield from start_server(tmp_path_factory.mktemp("personal"), "personal")


@pytest.fixture(scope="module")
def accounts_server(tmp_path_factory) -> Iterator[RunningServer]:
    yield from start_server(tmp_path_factory.mktemp("accounts"), "accounts")


@pytest.fixture(scope="module")
def family_server(tmp_path_factory) -> Iterator[RunningServer]:
    """A personal-mode server whose models folder holds a tiny FLUX.2 [klein] (the default:
    first by name) and a tiny SD 3.5 Medium, both diffusers folders (tests/family_files.py)."""
    from family_files import save_family

    state_dir = tmp_path_factory.mktemp("families")
    models = state_dir / "data" / "models"
    save_family(models / "a-klein-tiny", "flux2", "klein", "diffusers")
    save_family(models / "b-sd35-tiny", "sd3", "medium", "diffusers")
    yield from start_server(state_dir, "personal")
