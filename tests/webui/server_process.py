"""Runs one Obscura server for a test module (``python server_process.py STATE_DIR MODE``).

The network guard is installed before anything else is imported, so every non-loopback
``socket.connect``/``getaddrinfo`` made during start-up and the whole session is recorded;
the list is written to ``STATE_DIR/net.json`` twice a second. Accounts use a cheap Argon2 cost
(a test-only hasher); ``alice`` (admin), ``bob`` and ``carol`` exist, plus one invite code.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (netguard)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project

from netguard import network_guard  # noqa: E402

GUARD = network_guard()
ATTEMPTS = GUARD.__enter__()

PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    state_dir, mode = Path(sys.argv[1]), sys.argv[2]
    import core  # noqa: F401
    from webui.config import Settings
    from webui.ramdir import acquire_ram_dir

    data_dir = state_dir / "data"
    settings = Settings(data_dir=data_dir, host="127.0.0.1", port=free_port(), max_upload_mb=5)
    ram = acquire_ram_dir()
    ram.activate()

    from privacy.accounts import Accounts
    from privacy.passwords import make_hasher

    cheap = make_hasher(time_cost=1, memory_cost=1024, parallelism=1)
    invite = None
    if mode == "accounts":
        accounts = Accounts.in_data_dir(data_dir, hasher=cheap)
        admin = accounts.create_user("alice", PASSWORD, role="admin")
        accounts.create_user("bob", PASSWORD)
        accounts.create_user("carol", PASSWORD)
        invite = accounts.create_invite(created_by=admin)
        accounts.close()

    import uvicorn

    from webui.server import Sweeper, build_app, prepare, shutdown, stopping_server

    studio, _, _ = prepare(settings, ram, hasher=cheap)
    app = build_app(studio)
    studio.uploads.short_seconds = 2.0  # the mask painter's re-uploads (2 min in real use)
    Sweeper(studio, interval=0.5).start()
    config = uvicorn.Config(app, host="127.0.0.1", port=settings.port, access_log=False,
                            log_level="warning", timeout_graceful_shutdown=3)
    server = stopping_server(config, studio)  # as `obscura serve` runs it

    def report() -> None:
        while True:
            (state_dir / "net.json").write_text(json.dumps(list(ATTEMPTS)))
            time.sleep(0.5)

    threading.Thread(target=report, daemon=True).start()
    state = {"port": settings.port, "ram": str(ram.root), "invite": invite,
             "spool": str(data_dir / "spool"), "data": str(data_dir)}
    (state_dir / "state.json").write_text(json.dumps(state))
    try:
        server.run()
    finally:
        shutdown(studio)
        (state_dir / "net.json").write_text(json.dumps(list(ATTEMPTS)))


if __name__ == "__main__":
    main()
