"""The gallery: pictures kept for an account, readable only with the owner's private key.

Each picture is two files in ``<root>/<owner-id>/``:

* ``<picture-id>.key`` — header (magic, version, created minute, kind) followed by the picture's
  own random 256-bit key, sealed with HPKE to the owner's public key (:mod:`privacy.sealing`).
* ``<picture-id>.pic`` — header (magic, version) followed by the picture encrypted with
  Cobblestone-256 under that key.

Sealing needs only the public key, so a job that finishes while its owner is logged out can still
store the result; opening needs the private key, which exists unwrapped only while the owner is
logged in. The owner id, picture id, creation minute and kind are bound into both the seal and
the body encryption, so files cannot be moved between owners or pictures, and their dates cannot
be changed to dodge retention, without the open failing.

Deleting removes the key file first: from that moment the body is noise, even if the filesystem
keeps its blocks. Every write is atomic (temp file, fsync, rename, folder fsync). Owner ids are
opaque pseudonymous strings (``[A-Za-z0-9_-]{1,64}``); no user name ever appears in a path.
"""

from __future__ import annotations

import builtins
import re
import secrets
import shutil
import threading
from collections.abc import Callable, Container
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor
from cryptography.exceptions import InvalidTag

from privacy import sealing
from privacy.atomic import (
    TEMP_PREFIX,
    fsync_folder,
    make_private_folder,
    remove_durably,
    write_atomically,
)
from privacy.errors import GalleryError, PrivacyError, SealError

KEY_MAGIC = b"OBSCKEY"
BODY_MAGIC = b"OBSCPIC"
VERSION = 1
KEY_SUFFIX = ".key"
BODY_SUFFIX = ".pic"
KINDS = ("png", "webp", "jpeg")
OWNER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
PICTURE_ID = re.compile(r"[0-9a-f]{32}")
LEFTOVER_GRACE = timedelta(hours=1)

_NOT_FOUND = "That picture is not in your gallery."


@dataclass(frozen=True)
class PictureInfo:
    """What the gallery tells without opening anything: no content, no prompt."""

    id: str
    created: datetime
    kind: str


@dataclass(frozen=True)
class _KeyFile:
    created_minute: int
    kind: str
    sealed: bytes


def _check_owner(owner_id: str) -> str:
    if not isinstance(owner_id, str) or not OWNER_ID.fullmatch(owner_id):
        raise GalleryError("bad_owner_id", "The owner id must be 1-64 letters, digits, _ or -.")
    return owner_id


def _context(owner_id: str, picture_id: str, created_minute: int, kind: str) -> bytes:
    parts = [
        b"obscura/gallery/v1",
        owner_id.encode(),
        picture_id.encode(),
        str(created_minute).encode(),
        kind.encode(),
    ]
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def _encode_key_file(entry: _KeyFile) -> bytes:
    kind = entry.kind.encode()
    return (
        KEY_MAGIC
        + bytes([VERSION])
        + entry.created_minute.to_bytes(8, "big")
        + bytes([len(kind)])
        + kind
        + entry.sealed
    )


def _decode_key_file(data: bytes) -> _KeyFile:
    header = len(KEY_MAGIC) + 1 + 8 + 1
    if len(data) < header or not data.startswith(KEY_MAGIC) or data[len(KEY_MAGIC)] != VERSION:
        raise GalleryError("picture_damaged", "The picture's key file is damaged.")
    created = int.from_bytes(data[len(KEY_MAGIC) + 1 : len(KEY_MAGIC) + 9], "big")
    kind_length = data[header - 1]
    kind = data[header : header + kind_length].decode("ascii", errors="replace")
    if kind not in KINDS:
        raise GalleryError("picture_damaged", "The picture's key file is damaged.")
    return _KeyFile(created, kind, data[header + kind_length :])


def list_pictures(folder: Path) -> list[PictureInfo]:
    """Pictures in one owner folder, newest first, read from key-file headers only.

    Needs no key, so retention sweeps and the audit can use it while the owner is away.
    """
    if not folder.is_dir():
        return []
    pictures = []
    for path in folder.glob("*" + KEY_SUFFIX):
        picture_id = path.name[: -len(KEY_SUFFIX)]
        if not PICTURE_ID.fullmatch(picture_id):
            continue
        try:
            entry = _decode_key_file(path.read_bytes())
        except (GalleryError, FileNotFoundError):
            continue
        created = datetime.fromtimestamp(entry.created_minute * 60, UTC)
        pictures.append(PictureInfo(picture_id, created, entry.kind))
    return sorted(pictures, key=lambda info: (info.created, info.id), reverse=True)


class Gallery:
    """Encrypted per-owner picture store; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        make_private_folder(self.root)
        self._lock = threading.Lock()

    # -- writing -------------------------------------------------------------------------------

    def store(
        self,
        owner_id: str,
        public_key: bytes,
        picture: bytes,
        *,
        kind: str = "png",
        created: datetime | None = None,
    ) -> str:
        """Encrypt ``picture`` for ``owner_id`` (public key only); returns the new picture id."""
        _check_owner(owner_id)
        if kind not in KINDS:
            raise GalleryError("bad_kind", "A gallery picture must be png, webp or jpeg.")
        when = created or datetime.now(UTC)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        created_minute = int(when.timestamp()) // 60
        picture_id = secrets.token_hex(16)
        context = _context(owner_id, picture_id, created_minute, kind)
        key = bytearray(Cobblestone256Encryptor.generate_key())
        try:
            encryptor = Cobblestone256Encryptor(key, context)
            body = BODY_MAGIC + bytes([VERSION]) + encryptor.update(picture) + encryptor.finalize()
            try:
                sealed = sealing.seal(public_key, bytes(key), context=context)
            except SealError as exc:
                raise GalleryError("bad_public_key", exc.message) from None
        finally:
            key[:] = bytes(len(key))
        folder = self.root / owner_id
        make_private_folder(folder)
        # Body first, key second: a crash in between leaves a body nobody can open, which
        # sweep() removes; it never leaves a key without its picture.
        write_atomically(folder / (picture_id + BODY_SUFFIX), body)
        key_file = _encode_key_file(_KeyFile(created_minute, kind, sealed))
        write_atomically(folder / (picture_id + KEY_SUFFIX), key_file)
        return picture_id

    # -- reading -------------------------------------------------------------------------------

    def list(self, owner_id: str) -> list[PictureInfo]:
        """The owner's pictures, newest first (ids and dates only)."""
        return list_pictures(self.root / _check_owner(owner_id))

    def open(self, owner_id: str, picture_id: str, private_key: bytes) -> bytes:
        """Decrypt one picture; refused if not the owner's, the key is wrong, or it changed."""
        folder = self.root / _check_owner(owner_id)
        if not isinstance(picture_id, str) or not PICTURE_ID.fullmatch(picture_id):
            raise GalleryError("picture_not_found", _NOT_FOUND)
        try:
            entry = _decode_key_file((folder / (picture_id + KEY_SUFFIX)).read_bytes())
            body = (folder / (picture_id + BODY_SUFFIX)).read_bytes()
        except FileNotFoundError:
            raise GalleryError("picture_not_found", _NOT_FOUND) from None
        context = _context(owner_id, picture_id, entry.created_minute, entry.kind)
        try:
            key = sealing.unseal(private_key, entry.sealed, context=context)
        except SealError:
            raise GalleryError(
                "picture_refused", "The picture does not open with this key; it is not yours."
            ) from None
        header = BODY_MAGIC + bytes([VERSION])
        if not body.startswith(header):
            raise GalleryError("picture_damaged", "The picture file is damaged.")
        decryptor = Cobblestone256Decryptor(key, context)
        try:
            return decryptor.update(body[len(header) :]) + decryptor.finalize()
        except InvalidTag:
            raise GalleryError("picture_damaged", "The picture file is damaged.") from None

    def owners(self) -> builtins.list[str]:
        """Owner ids that have a gallery folder (for retention sweeps and the audit)."""
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if entry.is_dir() and OWNER_ID.fullmatch(entry.name)
        )

    # -- deleting ------------------------------------------------------------------------------

    def delete(self, owner_id: str, picture_id: str) -> bool:
        """Destroy the sealed key, then the body. True if there was something to delete."""
        folder = self.root / _check_owner(owner_id)
        if not isinstance(picture_id, str) or not PICTURE_ID.fullmatch(picture_id):
            return False
        with self._lock:
            had_key = remove_durably(folder / (picture_id + KEY_SUFFIX))
            had_body = remove_durably(folder / (picture_id + BODY_SUFFIX))
        return had_key or had_body

    def delete_owner(self, owner_id: str) -> int:
        """Delete every picture of ``owner_id`` (keys first) and the folder; returns the count."""
        folder = self.root / _check_owner(owner_id)
        if not folder.is_dir():
            return 0
        count = 0
        with self._lock:
            for path in sorted(folder.glob("*" + KEY_SUFFIX)):
                if remove_durably(path):
                    count += 1
            shutil.rmtree(folder, ignore_errors=True)
            fsync_folder(self.root)
        return count

    def purge_owner(self, owner_id: str) -> int:
        """Logout of an owner whose retention is 0 ("only this session"): delete everything."""
        return self.delete_owner(owner_id)

    def sweep(
        self,
        retention_days_for: Callable[[str], int | None],
        now: datetime | None = None,
        *,
        logged_in: Container[str] = frozenset(),
    ) -> int:
        """Delete pictures past each owner's retention; returns how many pictures went.

        ``retention_days_for(owner_id)`` gives the owner's retention in days, ``0`` for "only
        this session" (kept while the owner is in ``logged_in``, deleted otherwise, e.g. after a
        crash skipped the logout purge), or ``None`` when the account no longer exists (all of
        its pictures go). Only ``None`` deletes an owner: when the callback raises a
        :class:`PrivacyError` (a disk fault, a damaged database) that owner's pictures are kept
        and the sweep goes on with the others. Leftover temp files and bodies whose key is gone
        are removed too.
        """
        moment = now or datetime.now(UTC)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        removed = 0
        for owner_id in self.owners():
            try:
                days = retention_days_for(owner_id)
            except PrivacyError:
                continue  # not known to be gone: keep everything
            if days is None or (days <= 0 and owner_id not in logged_in):
                removed += self.delete_owner(owner_id)
                continue
            if days > 0:
                cutoff = moment - timedelta(days=days)
                for info in self.list(owner_id):
                    if info.created < cutoff and self.delete(owner_id, info.id):
                        removed += 1
            self._remove_leftovers(self.root / owner_id, moment)
        return removed

    def _remove_leftovers(self, folder: Path, moment: datetime) -> None:
        # Only old leftovers: a store() running right now has a temp file or a body whose key
        # is about to be written.
        cutoff = (moment - LEFTOVER_GRACE).timestamp()
        with self._lock:
            for path in folder.iterdir():
                try:
                    if path.stat().st_mtime > cutoff:
                        continue
                except FileNotFoundError:
                    continue
                if path.name.startswith(TEMP_PREFIX):
                    remove_durably(path)
                elif path.name.endswith(BODY_SUFFIX):
                    picture_id = path.name[: -len(BODY_SUFFIX)]
                    if not (folder / (picture_id + KEY_SUFFIX)).exists():
                        remove_durably(path)
