"""A private, RAM-backed scratch directory for everything Gradio and Python write as temp files.

Gradio writes every upload (and every output it is handed as a file) into ``GRADIO_TEMP_DIR``;
Starlette spools large multipart bodies into ``TMPDIR``. Both must be in memory, never on a
persistent disk, so that a crash or a power cut leaves nothing behind.

The directory is ``$OBSCURA_RAM_DIR`` when set, else ``$XDG_RUNTIME_DIR/obscura``, else
``/dev/shm/obscura-<uid>``. It must sit on ``tmpfs`` or ``ramfs`` (read from ``/proc/mounts``),
be a real directory owned by this user and mode 0700. Each server process works in its own
``<base>/<pid>/`` folder; folders of processes that are gone (a crash) are wiped at start, and
the process's own folder is wiped at exit (normal exit, SIGTERM, SIGHUP).

:func:`acquire_ram_dir` must run before ``import gradio``: some Gradio modules read
``GRADIO_TEMP_DIR`` once, at import time.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from core.errors import InputError

RAM_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})


class RamDirError(InputError):
    """No private RAM-backed directory could be had (and disk temp was not allowed)."""


def _unescape_mount_path(text: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as octal (\040 ...).
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text


def filesystem_type(path: Path, mounts_file: Path = Path("/proc/mounts")) -> str | None:
    """The filesystem type of the mount holding ``path`` (``None`` when it cannot be known)."""
    try:
        lines = mounts_file.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount_point = _unescape_mount_path(parts[1])
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        # Later lines win at equal length: they are mounted on top of earlier ones.
        if inside and (best is None or len(mount_point) >= best[0]):
            best = (len(mount_point), parts[2])
    return best[1] if best else None


def is_ram_backed(path: Path, mounts_file: Path = Path("/proc/mounts")) -> bool:
    return filesystem_type(path, mounts_file) in RAM_FILESYSTEMS


def candidate_dirs(env: Mapping[str, str] | None = None) -> list[Path]:
    """Where to look, in order. An explicit ``OBSCURA_RAM_DIR`` is the only candidate."""
    env = os.environ if env is None else env
    if env.get("OBSCURA_RAM_DIR"):
        return [Path(env["OBSCURA_RAM_DIR"]).expanduser()]
    found = []
    if env.get("XDG_RUNTIME_DIR"):
        found.append(Path(env["XDG_RUNTIME_DIR"]) / "obscura")
    # Ownership and mode are checked by make_private_dir: a folder pre-made by another user is
    # refused, never reused.
    found.append(Path("/dev/shm") / f"obscura-{os.getuid()}")  # noqa: S108
    return found


def make_private_dir(path: Path) -> None:
    """Create ``path`` mode 0700, or check that an existing one is ours and not a link."""
    try:
        path.mkdir(mode=0o700, parents=False)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise RamDirError("ram_dir_not_dir", "The RAM directory {path} is not a plain directory.",
                          path=str(path))
    if info.st_uid != os.getuid():
        raise RamDirError(
            "ram_dir_foreign",
            "The RAM directory {path} belongs to another user; remove it or set OBSCURA_RAM_DIR.",
            path=str(path),
        )
    os.chmod(path, 0o700)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def wipe_leftovers(base: Path) -> list[Path]:
    """Remove what crashed servers left in ``base`` (folders of pids that are gone, stray files)."""
    removed = []
    for entry in base.iterdir():
        live_server = entry.name.isdigit() and _pid_alive(int(entry.name))
        if live_server and int(entry.name) != os.getpid():
            continue  # another running server's folder
        _remove(entry)
        removed.append(entry)
    return removed


@dataclass
class RamDir:
    """This process's private scratch folder and the two subfolders handed to libraries."""

    root: Path
    on_ram: bool
    _previous_tempdir: str | None = field(default=None, repr=False)
    _released: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def uploads(self) -> Path:
        """Gradio's cache (``GRADIO_TEMP_DIR``)."""
        return self.root / "gradio"

    @property
    def tmp(self) -> Path:
        """``TMPDIR`` / ``tempfile.tempdir`` (Starlette's spooled multipart bodies and the rest)."""
        return self.root / "tmp"

    def wipe(self) -> None:
        """Empty both subfolders (they stay, mode 0700)."""
        for folder in (self.uploads, self.tmp):
            _remove(folder)
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def activate(self) -> None:
        """Point Gradio, ``TMPDIR`` and ``tempfile`` here; wipe at exit and on SIGTERM/SIGHUP."""
        self.wipe()
        os.environ["GRADIO_TEMP_DIR"] = str(self.uploads)
        os.environ["TMPDIR"] = str(self.tmp)
        self._previous_tempdir = tempfile.tempdir
        tempfile.tempdir = str(self.tmp)
        atexit.register(self.release)
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.release()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def release(self) -> None:
        """Delete the folder and everything in it (idempotent)."""
        with self._lock:
            if self._released:
                return
            self._released = True
        shutil.rmtree(self.root, ignore_errors=True)
        if tempfile.tempdir == str(self.tmp):
            tempfile.tempdir = self._previous_tempdir


def acquire_ram_dir(
    allow_disk_temp: bool = False,
    env: Mapping[str, str] | None = None,
    mounts_file: Path = Path("/proc/mounts"),
) -> RamDir:
    """Find, check and claim this process's RAM directory; raise :class:`RamDirError` if none.

    With ``allow_disk_temp`` a private folder in the system temp dir is used instead and a
    warning is printed: uploads may then reach a persistent disk while they are processed.
    """
    reasons = []
    for base in candidate_dirs(env):
        probe = base if base.is_dir() else base.parent
        if not probe.is_dir():
            reasons.append(f"{probe} does not exist")
            continue
        if not is_ram_backed(probe, mounts_file):
            reasons.append(f"{probe} is not on tmpfs/ramfs")
            continue
        make_private_dir(base)
        wipe_leftovers(base)
        root = base / str(os.getpid())
        make_private_dir(root)
        return RamDir(root=root, on_ram=True)
    if not allow_disk_temp:
        raise RamDirError(
            "no_ram_dir",
            "No private RAM-backed directory is available ({reasons}); set OBSCURA_RAM_DIR to a "
            "folder on tmpfs, or start with --allow-disk-temp to accept temp files on disk.",
            reasons="; ".join(reasons),
        )
    root = Path(tempfile.mkdtemp(prefix="obscura-"))
    os.chmod(root, 0o700)
    print(
        "WARNING: no RAM-backed directory; uploads are cached on disk in a private temp folder "
        "while they are processed (--allow-disk-temp).",
        file=sys.stderr,
    )
    return RamDir(root=root, on_ram=False)
