"""Writing a file so that a crash leaves either the old state or the whole new file, never half.

Temp file in the same folder (mode 0600) -> write -> fsync -> rename over the target -> fsync the
folder, so the rename itself survives a power cut.

A disk fault while writing (full, read-only, I/O error, a folder that is not one) is a
:class:`privacy.errors.StorageError` with one sentence; the old state is kept.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from privacy.errors import DISK_ERROR, StorageError, storage_error

TEMP_PREFIX = ".tmp-"


def _storage_fault(exc: OSError) -> StorageError:
    found = storage_error(exc) or DISK_ERROR
    return StorageError(found.code, found.message)


def write_atomically(path: Path, data: bytes) -> None:
    """Put ``data`` at ``path`` in one step, readable by this user only."""
    try:
        _write_atomically(path, data)
    except OSError as exc:
        raise _storage_fault(exc) from None


def _write_atomically(path: Path, data: bytes) -> None:
    temp = path.with_name(f"{TEMP_PREFIX}{secrets.token_hex(8)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def remove_durably(path: Path) -> bool:
    """Unlink ``path`` (missing is fine) and make the removal durable; True if it was there."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_folder(path.parent)
    return True


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (creations, renames, removals) to disk."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_folder(folder: Path) -> None:
    """Create ``folder`` (and parents) and make it readable by this user only."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)
    except OSError as exc:
        raise _storage_fault(exc) from None
