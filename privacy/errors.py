"""Errors raised by the privacy layer: a stable ``code``, its figures and one English sentence.

The shape is that of :class:`core.errors.InputError`: ``PrivacyError(code, message, **params)``,
where ``message`` may name the params as ``{name}`` and ``err.params`` keeps them, so a
translation can say the same figures (``webui.i18n.error_text`` formats both kinds the same way).

Messages never contain a prompt, a user name, an uploaded file's name or picture data, so they
are safe to show to the person and to write to a log.
"""

from __future__ import annotations

import errno
import sqlite3
from typing import Any


class PrivacyError(ValueError):
    """Base of every privacy-layer refusal; ``str(err)`` is the sentence, ``err.code`` is stable."""

    def __init__(self, code: str, message: str, **params: Any) -> None:
        self.code = code
        self.params: dict[str, Any] = params
        self.message = message.format(**params) if params else message
        super().__init__(self.message)


class ScrubError(PrivacyError):
    """An uploaded image that cannot be accepted (too big, wrong format, damaged)."""


class SealError(PrivacyError):
    """Sealed data that cannot be opened: wrong key, wrong context, damaged or truncated."""


class SpoolError(PrivacyError):
    """A spooled upload that is gone, belongs to someone else, or cannot be read."""


class GalleryError(PrivacyError):
    """A gallery picture that is gone, belongs to someone else, or cannot be opened."""


class StorageError(PrivacyError):
    """The data folder cannot be written or read: disk full, read-only, damaged database."""


DISK_FULL = StorageError(
    "disk_full",
    "The disk is full, so nothing could be saved; free some space on the server and try again "
    "(nothing already saved was lost).",
)
READ_ONLY = StorageError(
    "disk_read_only",
    "The data folder is read-only, so nothing could be saved; make it writable for the server "
    "and try again (nothing already saved was lost).",
)
DISK_ERROR = StorageError(
    "disk_error",
    "The server could not read or write its data folder; check the disk and try again "
    "(nothing already saved was lost).",
)
DATABASE_DAMAGED = StorageError(
    "database_damaged",
    "The accounts database (obscura.db) is damaged; stop the server, restore obscura.db from "
    "a backup, and run `obscura audit` to see the damage.",
)


def storage_error(exc: BaseException) -> StorageError | None:
    """The one-sentence :class:`StorageError` for a disk or SQLite fault, else ``None``.

    Full disk (``ENOSPC``/``SQLITE_FULL``), read-only (``EROFS``/``EACCES``/``SQLITE_READONLY``),
    a damaged database (``SQLITE_CORRUPT``/``SQLITE_NOTADB``) and other I/O errors each get
    their own sentence with what to do. A fresh copy is returned, so tracebacks stay apart.
    """
    found: StorageError | None = None
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            found = DISK_FULL
        elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            found = READ_ONLY
        elif exc.errno == errno.EIO:
            found = DISK_ERROR
    elif isinstance(exc, sqlite3.Error):
        name = str(getattr(exc, "sqlite_errorname", "") or "")
        text = str(exc).lower()
        if name.startswith("SQLITE_FULL") or "database or disk is full" in text:
            found = DISK_FULL
        elif name.startswith("SQLITE_READONLY") or "readonly" in text or "read-only" in text:
            found = READ_ONLY
        elif (name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
              or "malformed" in text or "not a database" in text):
            found = DATABASE_DAMAGED
        elif name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")) or "disk i/o" in text:
            found = DISK_ERROR
        elif "unable to open" in text:
            found = DISK_ERROR
    if found is None:
        return None
    return StorageError(found.code, found.message)
