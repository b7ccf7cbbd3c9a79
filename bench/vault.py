"""Vault speed: spool encryption against raw AES-GCM on the same machine. Prints a table.

    .venv/bin/python bench/vault.py [--repeat N]

Rows, for 1, 8 and 32 MB of random data (MB/s = megabytes of plaintext encrypted AND decrypted
per second; median of N runs):

* ``AES-256-GCM (one shot)``: ``cryptography``'s AESGCM over the whole buffer: the ceiling.
* ``Cobblestone-256``: the chunked AEAD the spool and gallery use, in memory.
* ``Spool put+get``: the whole spool path: Cobblestone, atomic write with fsync, read back,
  decrypt (on the folder given by ``--spool-dir``, default a temp folder: put it on the disk
  the data dir lives on to measure that disk).

Argon2 verify time and login latency under load live in ``bench/accounts.py`` (accounts).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from privacy.spool import Spool  # noqa: E402

SIZES_MB = (1, 8, 32)


def aes_gcm_round_trip(data: bytes) -> None:
    key, nonce = AESGCM.generate_key(256), os.urandom(12)
    cipher = AESGCM(key)
    assert cipher.decrypt(nonce, cipher.encrypt(nonce, data, b"ctx"), b"ctx") == data


def cobblestone_round_trip(data: bytes) -> None:
    key = Cobblestone256Encryptor.generate_key()
    encryptor = Cobblestone256Encryptor(key, b"ctx")
    ciphertext = encryptor.update(data) + encryptor.finalize()
    decryptor = Cobblestone256Decryptor(key, b"ctx")
    assert decryptor.update(ciphertext) + decryptor.finalize() == data


def spool_round_trip(spool: Spool) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        spool_id = spool.put(data, owner="bench")
        assert spool.get(spool_id, owner="bench") == data
        spool.shred(spool_id)

    return run


def megabytes_per_second(run: Callable[[bytes], None], data: bytes, repeat: int) -> float:
    run(data)  # warm-up
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        run(data)
        timings.append(time.perf_counter() - started)
    return len(data) / 1e6 / statistics.median(timings)


def spool_table(repeat: int, spool_dir: Path) -> list[str]:
    spool = Spool(spool_dir)
    rows = [
        "| Size | AES-256-GCM (one shot) MB/s | Cobblestone-256 MB/s | ratio | "
        "Spool put+get (fsync) MB/s | ratio |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for size in SIZES_MB:
        data = os.urandom(size * 1_000_000)
        raw = megabytes_per_second(aes_gcm_round_trip, data, repeat)
        chunked = megabytes_per_second(cobblestone_round_trip, data, repeat)
        spooled = megabytes_per_second(spool_round_trip(spool), data, repeat)
        rows.append(
            f"| {size} MB | {raw:,.0f} | {chunked:,.0f} | {chunked / raw:.2f} | "
            f"{spooled:,.0f} | {spooled / raw:.2f} |"
        )
    return rows


# -- accounts (Argon2 verify time, login concurrency): see bench/accounts.py -----------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--spool-dir", type=Path, default=None)
    args = parser.parse_args()
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU(s), {platform.processor() or '?'}; "
        f"Python {platform.python_version()}"
    )
    print("Round trip = encrypt + decrypt; MB/s of plaintext; median of "
          f"{args.repeat} runs.\n")
    if args.spool_dir is not None:
        lines = spool_table(args.repeat, args.spool_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="obscura-bench-") as folder:
            lines = spool_table(args.repeat, Path(folder) / "spool")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
