"""/controlnet/model_list?update=true rescans the models under the same one-scan-at-a-time lock
as /sdapi/v1/refresh-checkpoints (webui/api/routes.py's ``rescan``): two clients asking at once
never run two scans side by side (each one walks the whole models folder)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from webui.config import Settings
from webui.ramdir import RamDir

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def studio_url(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    from webui.server import build_app, prepare, shutdown

    tmp = tmp_path_factory.mktemp("rescan")
    (tmp / "data").mkdir()
    ram = RamDir(root=tmp / "ram", on_ram=False)
    ram.wipe()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    studio, _tls, _warnings = prepare(Settings(data_dir=tmp / "data", models_dir=models_dir, port=port), ram)
    server = uvicorn.Server(uvicorn.Config(build_app(studio), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield studio, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        shutdown(studio)


def test_model_list_update_and_refresh_checkpoints_never_scan_at_once(studio_url):
    studio, url = studio_url
    registry = studio.registry
    real_scan = registry.scan
    running, most, scans = [0], [0], [0]
    guard = threading.Lock()

    def timed_scan() -> Any:  # the real scan, made slow enough for two to meet
        with guard:
            running[0] += 1
            scans[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.3)
            return real_scan()
        finally:
            with guard:
                running[0] -= 1

    registry.scan = timed_scan
    answers: list[int] = []

    def ask(method: str, path: str) -> None:
        answers.append(httpx.request(method, url + path, timeout=60).status_code)

    try:
        threads = [threading.Thread(target=ask, args=call) for call in
                   [("POST", "/sdapi/v1/refresh-checkpoints"),
                    ("GET", "/controlnet/model_list?update=true")] * 3]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        del registry.scan
    assert answers == [200] * 6
    assert scans[0] == 6 and most[0] == 1
