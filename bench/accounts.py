"""Accounts benchmark: Argon2 cost at the real (RFC 9106) parameters, and proof that logins
do not stall the web server's event loop.

    .venv/bin/python bench/accounts.py [--rounds 10]

Prints markdown tables. The event-loop part runs a tiny TCP "request/response" server on the
loop and a client in another thread that times round trips: idle, while 8 ``login_async`` calls
verify concurrently, and (for contrast) while 8 plain ``login`` calls run on the loop itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from privacy import keywrap, passwords  # noqa: E402
from privacy.accounts import Accounts  # noqa: E402
from privacy.sealing import generate_owner_keypair  # noqa: E402

PASSWORD = "correct horse battery staple"


def argon2_costs(rounds: int) -> list[tuple[str, float]]:
    stored = passwords.hash_password(PASSWORD)
    private_key, _ = generate_owner_keypair()
    blob = keywrap.wrap(private_key, PASSWORD)

    def median_ms(work: Callable[[], object]) -> float:
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            work()
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)

    return [
        ("Argon2id hash (password)", median_ms(lambda: passwords.hash_password(PASSWORD))),
        (
            "Argon2id verify (password)",
            median_ms(lambda: passwords.verify_password(stored, PASSWORD)),
        ),
        (
            "unwrap private key (Argon2id raw + AES-GCM)",
            median_ms(lambda: keywrap.unwrap(blob, PASSWORD)),
        ),
    ]


def login_cost(accounts: Accounts, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        session = accounts.login("alice", PASSWORD)
        times.append((time.perf_counter() - started) * 1000)
        accounts.logout(session.token or "")
    return statistics.median(times)


class Prober:
    """A client thread that times request/response round trips to the loop's server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.samples: list[float] = []
        self.running = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port)) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = conn.makefile("rb")
            while not self.stop.is_set():
                if not self.running.is_set():
                    time.sleep(0.001)
                    continue
                started = time.perf_counter()
                conn.sendall(b"ping\n")
                reader.readline()
                self.samples.append((time.perf_counter() - started) * 1000)
                time.sleep(0.002)


async def latency_during(
    prober: Prober, work: Callable[[], Awaitable[object]] | None, idle_seconds: float
) -> tuple[list[float], float]:
    prober.samples = []
    prober.running.set()
    started = time.perf_counter()
    if work is None:
        await asyncio.sleep(idle_seconds)
    else:
        await work()
    elapsed = time.perf_counter() - started
    prober.running.clear()
    await asyncio.sleep(0.05)
    return list(prober.samples), elapsed


async def event_loop_table(accounts: Accounts) -> list[tuple[str, list[float], float]]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readline():
            writer.write(b"ok\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    prober = Prober(port)
    thread = threading.Thread(target=prober.run, daemon=True)
    thread.start()
    await asyncio.sleep(0.1)

    async def eight_async_logins() -> None:
        await asyncio.gather(*(accounts.login_async("alice", PASSWORD) for _ in range(8)))

    async def eight_blocking_logins() -> None:
        for _ in range(8):
            accounts.login("alice", PASSWORD)  # what an un-threaded login would do
            await asyncio.sleep(0)

    rows = []
    samples, elapsed = await latency_during(prober, None, 2.0)
    rows.append(("idle", samples, elapsed))
    samples, elapsed = await latency_during(prober, eight_async_logins, 0)
    rows.append(("8 concurrent login_async", samples, elapsed))
    samples, elapsed = await latency_during(prober, eight_blocking_logins, 0)
    rows.append(("8 blocking login on the loop (contrast)", samples, elapsed))
    prober.stop.set()
    await asyncio.to_thread(thread.join)
    server.close()
    await server.wait_closed()
    return rows


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="repetitions per timing")
    args = parser.parse_args()

    print(f"CPU cores: {os.cpu_count()}; Argon2id parameters: t=3, m=64 MiB, p=4 (RFC 9106)\n")
    print("| operation | median ms |")
    print("|---|---:|")
    for name, ms in argon2_costs(args.rounds):
        print(f"| {name} | {ms:.1f} |")

    with tempfile.TemporaryDirectory() as folder:
        accounts = Accounts(Path(folder) / "obscura.db")
        accounts.create_user("alice", PASSWORD)
        print(
            f"| full login (verify + unwrap + session) | {login_cost(accounts, args.rounds):.1f} |"
        )

        rows = asyncio.run(event_loop_table(accounts))
        accounts.close()

    print("\nRound trip of a trivial request to a server on the same event loop:\n")
    print("| while | requests | p50 ms | p99 ms | max ms | phase length s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, samples, elapsed in rows:
        if not samples:
            print(f"| {name} | 0 | - | - | - | {elapsed:.2f} |")
            continue
        print(
            f"| {name} | {len(samples)} | {statistics.median(samples):.2f} | "
            f"{percentile(samples, 0.99):.2f} | {max(samples):.2f} | {elapsed:.2f} |"
        )


if __name__ == "__main__":
    main()
