"""The spool: uploads waiting for their job, encrypted under keys that live only in memory.

Each upload gets a fresh random 256-bit key and a random id; the body is encrypted with
Cobblestone-256 (C2SP chunked encryption: AES-256-GCM in chunks, key-committing, safe against
truncation and reordering). The key is held in this process's memory and nowhere else, so:

* ``shred(id)`` forgets the key and unlinks the file: what is left on disk (if the filesystem
  keeps old blocks) is ciphertext under a key that no longer exists.
* a crash or restart loses every key, so leftovers are unreadable; a new :class:`Spool` on the
  same folder removes them at once.

The owner (a pseudonymous id or session id) and the spool id are bound into the encryption
context, so a file cannot be read as someone else's or swapped for another id. File names are the
random id, never the user's file name.

No fsync, on purpose: the key of a spool file lives only in this process's memory, so after a
crash or power cut the file can never be read again, whatever state it is in; making it durable
buys nothing. The file only has to be encrypted before it is written and removed when its job
ends (and leftovers are removed at start). Writing is a plain exclusive create (mode 0600) and
shredding a plain unlink.

Pictures (:meth:`Spool.put_image`, :meth:`Spool.get_image`) are stored as raw pixels behind a
small header (:func:`encode_pixels`: mode, width, height) instead of a PNG: no compression on the
way in, no decompression on the way out. The header is checked against the data's length and a
pixel limit before any picture is allocated.

File layout (version 1): ``b"OBSCSPL" || 0x01 || Cobblestone-256 ciphertext``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import struct
import threading
from pathlib import Path

from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor
from cryptography.exceptions import InvalidTag
from PIL import Image

from privacy.atomic import make_private_folder
from privacy.errors import SpoolError

MAGIC = b"OBSCSPL"
VERSION = 1
HEADER = MAGIC + bytes([VERSION])
MARKER = ".obscura-spool"
ID_BYTES = 16

# Raw pixels: b"OBSCPIX" || mode (1 byte) || width, height (uint32, big-endian) || pixel bytes.
PIXELS_MAGIC = b"OBSCPIX"
_PIXELS_HEADER = struct.Struct(">7sBII")
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
_MODE_CODES = {mode: code for code, mode in _MODES.items()}
MAX_PIXELS = 100_000_000  # above any upload limit; the caller passes its own, smaller one

_NOT_FOUND = "That upload is not waiting in the spool (it finished, was cancelled or is not yours)."


def _context(spool_id: str, owner: str) -> bytes:
    # Length-prefixed fields: no two (id, owner) pairs give the same context.
    parts = [HEADER, spool_id.encode(), owner.encode()]
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


class Spool:
    """Encrypted holding area for uploads; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._keys: dict[str, tuple[bytearray, str]] = {}
        self._lock = threading.Lock()
        self._sweep_leftovers()

    def _sweep_leftovers(self) -> None:
        """Remove everything a previous process left: its keys died with it."""
        make_private_folder(self.root)
        marker = self.root / MARKER
        entries = [entry for entry in self.root.iterdir() if entry.name != MARKER]
        if entries and not marker.exists():
            # A misconfigured path (a home folder, the data dir) must never be emptied.
            raise SpoolError(
                "spool_foreign_folder",
                "The spool folder holds files Obscura did not create; choose an empty folder.",
            )
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)
        marker.touch(mode=0o600, exist_ok=True)

    def put(self, data: bytes, *, owner: str) -> str:
        """Encrypt ``data`` into the spool for ``owner``; returns the new random spool id."""
        spool_id = secrets.token_hex(ID_BYTES)
        key = bytearray(Cobblestone256Encryptor.generate_key())
        encryptor = Cobblestone256Encryptor(key, _context(spool_id, owner))
        body = HEADER + encryptor.update(data) + encryptor.finalize()
        with self._lock:
            self._keys[spool_id] = (key, owner)
        try:
            _write_private(self._path(spool_id), body)
        except BaseException:
            self.shred(spool_id)
            raise
        return spool_id

    def put_image(self, image: Image.Image, *, owner: str) -> str:
        """Encrypt ``image`` as raw pixels (:func:`encode_pixels`); returns the spool id."""
        return self.put(encode_pixels(image), owner=owner)

    def get_image(self, spool_id: str, *, owner: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
        """The picture :meth:`put_image` stored; refused like :meth:`get`, or as damaged."""
        return decode_pixels(self.get(spool_id, owner=owner), max_pixels=max_pixels)

    def get(self, spool_id: str, *, owner: str) -> bytes:
        """Decrypt and return the upload; refused when it is gone or belongs to someone else."""
        with self._lock:
            entry = self._keys.get(spool_id)
        # Same sentence for "gone" and "not yours": nobody learns that another's upload exists.
        if entry is None or not secrets.compare_digest(entry[1].encode(), owner.encode()):
            raise SpoolError("spool_not_found", _NOT_FOUND)
        key = entry[0]
        try:
            body = self._path(spool_id).read_bytes()
        except FileNotFoundError:
            raise SpoolError("spool_not_found", _NOT_FOUND) from None
        if not body.startswith(HEADER):
            raise SpoolError("spool_damaged", "The spooled upload is damaged and cannot be read.")
        decryptor = Cobblestone256Decryptor(key, _context(spool_id, owner))
        try:
            return decryptor.update(body[len(HEADER) :]) + decryptor.finalize()
        except InvalidTag:
            raise SpoolError(
                "spool_damaged", "The spooled upload is damaged and cannot be read."
            ) from None

    def shred(self, spool_id: str) -> None:
        """Forget the key, then unlink the file. Safe to call twice or for an unknown id."""
        with self._lock:
            entry = self._keys.pop(spool_id, None)
        if entry is not None:
            key = entry[0]
            key[:] = bytes(len(key))  # best effort: Python may hold other copies briefly
        if _is_spool_id(spool_id):
            self._path(spool_id).unlink(missing_ok=True)

    def shred_all(self) -> None:
        """Shred every upload (server shutdown)."""
        for spool_id in self.ids():
            self.shred(spool_id)

    def ids(self) -> list[str]:
        """Ids whose key is still held (for tests and the audit; reveals no owner)."""
        with self._lock:
            return sorted(self._keys)

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)

    def __contains__(self, spool_id: object) -> bool:
        with self._lock:
            return spool_id in self._keys

    def _path(self, spool_id: str) -> Path:
        if not _is_spool_id(spool_id):
            raise SpoolError("spool_not_found", _NOT_FOUND)
        return self.root / spool_id


def _is_spool_id(value: str) -> bool:
    return (
        isinstance(value, str)
        and len(value) == 2 * ID_BYTES
        and all(c in "0123456789abcdef" for c in value)
    )


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` (never an existing file or a link), readable by this user only; no fsync
    (see the module docstring)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def encode_pixels(image: Image.Image) -> bytes:
    """``image`` (L, RGB or RGBA; other modes become RGB) as a header and its raw pixels."""
    if image.mode not in _MODE_CODES:
        image = image.convert("RGB")
    header = _PIXELS_HEADER.pack(PIXELS_MAGIC, _MODE_CODES[image.mode], image.width, image.height)
    return header + image.tobytes()


def decode_pixels(data: bytes, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The picture :func:`encode_pixels` made. The header is checked (mode, sizes, pixel count,
    the data's exact length) before any picture is allocated."""
    damaged = SpoolError("spool_damaged", "The spooled upload is damaged and cannot be read.")
    if len(data) < _PIXELS_HEADER.size:
        raise damaged
    magic, code, width, height = _PIXELS_HEADER.unpack_from(data)
    mode = _MODES.get(code)
    if magic != PIXELS_MAGIC or mode is None or width <= 0 or height <= 0:
        raise damaged
    if width * height > max_pixels or len(data) != _PIXELS_HEADER.size + width * height * code:
        raise damaged
    return Image.frombytes(mode, (width, height), memoryview(data)[_PIXELS_HEADER.size :])
