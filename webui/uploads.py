"""Who uploaded which file into Gradio's cache, and taking an upload out of it.

Gradio writes each upload to ``<cache>/<hash>/<original name>`` and ties it to nobody. The
access guard sees the paths that ``/gradio_api/upload`` returns and, before the browser even
gets the answer, :meth:`UploadOwners.hold` s each file for the logged-in user: its bytes are
read into this process's memory and the file and its folder are deleted. The plaintext of an
upload thus lies in Gradio's cache (the RAM directory) only for the moment between Gradio
writing it and the guard deleting it, milliseconds; a ``kill -9`` after that leaves nothing in
the RAM directory. Gradio needs no file on disk later: a path inside its cache is passed to
the handler as it is. The guard serves the uploader's own ``/gradio_api/file=`` preview from
memory (:meth:`UploadOwners.held`).

A handler then :meth:`UploadOwners.take` s the upload: ownership is checked, the bytes are
handed over once and forgotten. Uploads never submitted are dropped by
:meth:`UploadOwners.sweep` after a few minutes. At most ``max_held`` bytes are held at once,
``max_held_per_owner`` for one user (further uploads are refused until some are used or swept),
so one person cannot stop everyone else's uploads.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path

from core.errors import InputError

UNCLAIMED_SECONDS = 10 * 60
MAX_HELD_BYTES = 1024 * 1024 * 1024
MAX_HELD_PER_OWNER = 256 * 1024 * 1024
# What Gradio's mask painter uploads while the person works. It uploads the photo, the painted
# layer and the composite before a submit and, once the job is done, uploads the same files
# again; nothing refers to those copies, so they are swept after a short while.
EDITOR_FILES = re.compile(r"(background|composite|layer(_\d+)?)\.(png|webp|jpe?g)")
EDITOR_SECONDS = 120


class UploadGone(InputError):
    """The upload is not in the cache any more, or it is not this user's."""


def _gone() -> UploadGone:
    return UploadGone("spool_not_found", "That upload is gone or is not yours; upload it again.")


class UploadOwners:
    def __init__(
        self,
        cache_dir: Path,
        clock=time.monotonic,
        *,
        short_lived: re.Pattern[str] = EDITOR_FILES,
        short_seconds: float = EDITOR_SECONDS,
        max_held: int = MAX_HELD_BYTES,
        max_held_per_owner: int = MAX_HELD_PER_OWNER,
    ) -> None:
        self.cache_dir = Path(os.path.realpath(cache_dir))
        self.short_lived = short_lived
        self.short_seconds = short_seconds
        self.max_held = max_held
        self.max_held_per_owner = max_held_per_owner
        self._owners: dict[str, tuple[set[str], float]] = {}
        self._held: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def _normal(self, path: str | os.PathLike[str]) -> Path | None:
        try:
            real = Path(os.path.realpath(path))
        except (ValueError, OSError):  # a NUL byte, a name too long
            return None
        if self.cache_dir not in real.parents:
            return None
        return real

    def record(self, path: str, owner: str) -> None:
        real = self._normal(path)
        if real is None:
            return
        with self._lock:
            owners, _ = self._owners.get(str(real), (set(), 0.0))
            owners.add(owner)
            self._owners[str(real)] = (owners, self._clock())

    def hold(self, path: str, owner: str) -> bool:
        """Record ``path`` as ``owner``'s upload and move its bytes into memory: the file and
        its folder are deleted at once. ``False`` (and the file deleted all the same) when it
        cannot be read or the memory for held uploads is used up."""
        real = self._normal(path)
        if real is None:
            return False
        try:
            with open(real, "rb") as handle:
                data = handle.read(self.max_held + 1)
        except OSError:
            return False
        finally:
            self.discard(real)
        key = str(real)
        with self._lock:
            others = [(k, v) for k, v in self._held.items() if k != key]
            mine = sum(len(v) for k, v in others if owner in self._owners.get(k, ((), 0))[0])
            if (sum(len(v) for _, v in others) + len(data) > self.max_held
                    or mine + len(data) > self.max_held_per_owner):
                return False
            owners, _ = self._owners.get(key, (set(), 0.0))
            owners.add(owner)
            self._owners[key] = (owners, self._clock())
            self._held[key] = data
        return True

    def held(self, path: str, owner: str) -> bytes | None:
        """The bytes of ``owner``'s held upload ``path`` (for the guard's preview), else ``None``."""
        real = self._normal(path)
        if real is None or not self.owns(str(real), owner):
            return None
        with self._lock:
            return self._held.get(str(real))

    def owns(self, path: str, owner: str) -> bool:
        real = self._normal(path)
        if real is None:
            return False
        with self._lock:
            entry = self._owners.get(str(real))
        return entry is not None and owner in entry[0]

    def take(self, path: str, owner: str, max_bytes: int | None = None) -> bytes:
        """Read the upload once and delete it and its folder; refuse another user's file."""
        real = self._normal(path)
        if real is None or not self.owns(str(real), owner):
            raise _gone()
        with self._lock:
            self._owners.pop(str(real), None)
            data = self._held.pop(str(real), None)
        if data is not None:
            self.discard(real)
            return data[: max_bytes + 1] if max_bytes is not None else data
        try:
            with open(real, "rb") as handle:
                data = handle.read(max_bytes + 1 if max_bytes is not None else -1)
        except FileNotFoundError:
            raise _gone() from None
        finally:
            self.discard(real)
        return data

    def discard_pending(self, owner: str, name: re.Pattern[str]) -> int:
        """Delete ``owner``'s not-yet-submitted uploads whose file name matches ``name``.

        The mask painter uploads the photo and each painted layer as the person works; only
        the last versions are submitted. The earlier ones go when the painting is submitted.
        """
        with self._lock:
            mine = [
                path for path, (owners, _) in self._owners.items()
                if owners == {owner} and name.fullmatch(Path(path).name)
            ]
            for path in mine:
                self._owners.pop(path, None)
                self._held.pop(path, None)
        for path in mine:
            self.discard(Path(path))
        return len(mine)

    def discard(self, real: Path) -> None:
        """Delete the file and, when it is one of Gradio's per-upload folders, the folder."""
        folder = real.parent
        try:
            real.unlink()
        except FileNotFoundError:
            pass
        if folder != self.cache_dir and self.cache_dir in folder.parents:
            shutil.rmtree(folder, ignore_errors=True)

    def sweep(self, max_age: float = UNCLAIMED_SECONDS) -> int:
        """Delete uploads nobody submitted within ``max_age`` seconds, and untracked strays."""
        now = self._clock()
        removed = 0
        def limit(path: str) -> float:
            short = self.short_lived.fullmatch(Path(path).name) is not None
            return min(max_age, self.short_seconds) if short else max_age

        with self._lock:
            stale = [p for p, (_, at) in self._owners.items() if now - at > limit(p)]
            for path in stale:
                self._owners.pop(path, None)
                self._held.pop(path, None)
            tracked = set(self._owners)
        for path in stale:
            self.discard(Path(path))
            removed += 1
        # Files Gradio wrote that no upload response announced (none are expected).
        cutoff = time.time() - max_age
        for folder in self.cache_dir.iterdir() if self.cache_dir.is_dir() else []:
            for entry in folder.rglob("*") if folder.is_dir() else [folder]:
                if entry.is_file() and str(entry) not in tracked:
                    try:
                        if entry.stat().st_mtime < cutoff:
                            self.discard(entry)
                            removed += 1
                    except FileNotFoundError:
                        pass
        return removed
