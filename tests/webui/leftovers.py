"""Looking for plaintext pictures and metadata left in folders."""

from __future__ import annotations

import time
from pathlib import Path

MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"RIFF", b"GIF8")
# Long enough not to turn up by chance in random bytes or base64 (a bare b"GPS" did, inside an
# Argon2 hash); an EXIF block, GPS included, always starts with b"Exif\0\0".
CANARIES = (b"Exif\x00\x00", b"CanaryCam", b"CANARY-COMMENT")


def plaintext_images(folder: Path, newer_than: float = 0.0, skip: tuple[Path, ...] = ()) -> list[str]:
    """Files under ``folder`` that start like an image or hold EXIF/canary bytes."""
    found = []
    if not folder.exists():
        return found
    for path in folder.rglob("*"):
        if any(part in path.parents or part == path for part in skip):
            continue
        try:
            if not path.is_file() or path.is_symlink() or path.stat().st_mtime < newer_than:
                continue
            head = path.read_bytes()[: 1 << 20]
        except (PermissionError, FileNotFoundError, OSError):
            continue
        if head.startswith(MAGIC) or any(canary in head for canary in CANARIES):
            found.append(str(path))
    return found


def files_in(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()
