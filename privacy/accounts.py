"""Accounts: a username, a role and secrets. Never an e-mail address, phone number, name or IP.

Everything lives in one SQLite file, ``<data-dir>/obscura.db`` (mode 0600), with four tables:

* ``users``: a random pseudonymous id (``u_`` + 32 hex digits, what logs and files use), the
  username, the role, the Argon2id password hash, the owner's public key, the owner's private key
  *wrapped* under the password (:mod:`privacy.keywrap`), two settings and the day it was made;
* ``invites``: SHA-256 of one-time invite codes, their role and expiry;
* ``tokens``: SHA-256 of named API tokens, with the day each was made and last used;
* ``sessions``: SHA-256 of session tokens, with the times needed for the idle (30 min) and
  absolute (12 h) limits.

Secrets given to a person (session token, API token, invite code) are shown once and stored only
as a hash. ``PRAGMA secure_delete`` makes SQLite overwrite deleted content with zeros, and the
rollback journal (``journal_mode=DELETE``) is removed after every transaction, so a deleted key
does not linger in a write-ahead log.

Unwrapped private keys exist only in memory, in one :class:`KeyRing` per :class:`Accounts`, from
login until logout or expiry. A restart forgets them all: everyone logs in again.

**Which key new pictures are sealed to** (:meth:`Accounts.sealing_key`). Whoever can write
``obscura.db`` could swap a user's ``public_key`` so that her next pictures are sealed to theirs.
So pictures are sealed to the key *proven at login*: login checks that the stored public key is
the one of the private key the password unwraps, and the session keeps that proven key. An API
token caller has no session: the key proven by that user's live session, else by their last
login in this process (if the password hash has not changed since), is used. Only a token caller
who has not logged in since the server started is sealed to the database's key. That is the
residual risk, chosen so scripts keep working: a database writer can then redirect that
caller's *API-saved* pictures, but not hide it, because the gallery lists every picture it
cannot open as "can't be opened: sealed to another key" (``privacy.gallery``).

**A data folder that has held accounts never falls back to personal mode.** Creating the first
account writes the empty marker file ``<data-dir>/accounts-mode``; :func:`ensure_intact` refuses
a folder with the marker whose database is missing, empty, damaged or without accounts, with
one sentence on restoring ``obscura.db`` from a backup.

**Faults.** Disk and SQLite errors (full disk, read-only folder, damaged database, I/O errors)
become a :class:`privacy.errors.StorageError` with one sentence and what to do; a transaction
that SQLite already rolled back is not rolled back a second time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import argon2

from privacy import keywrap, passwords
from privacy.auditlog import AuditLog
from privacy.errors import DATABASE_DAMAGED, PrivacyError, StorageError, storage_error
from privacy.sealing import generate_owner_keypair, public_key_of
from privacy.throttle import LoginThrottle, LoginThrottledError

ROLES = ("admin", "member")
DEFAULT_RETENTION_DAYS = 30
MAX_RETENTION_DAYS = 3650
SESSION_IDLE_SECONDS = 30 * 60
SESSION_ABSOLUTE_SECONDS = 12 * 60 * 60
INVITE_TTL_SECONDS = 72 * 60 * 60
# last_seen_at is written at most once a minute, so a busy page does not write on every request.
_TOUCH_EVERY_SECONDS = 60

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    username TEXT UNIQUE NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    password_hash TEXT NOT NULL,
    public_key BLOB,
    wrapped_private_key BLOB,
    retention_days INTEGER NOT NULL DEFAULT 30,
    embed_parameters INTEGER NOT NULL DEFAULT 0 CHECK (embed_parameters IN (0, 1)),
    created_day TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS invites (
    code_hash TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    expires_at INTEGER NOT NULL,
    created_by TEXT
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    token_hash TEXT UNIQUE NOT NULL,
    created_day TEXT NOT NULL,
    last_used_day TEXT
);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);
"""
SCHEMA_VERSION = 1
# Written (empty) next to obscura.db when the first account is made: "this folder has accounts".
MARKER_NAME = "accounts-mode"
DB_NAME = "obscura.db"

_USERNAME = re.compile(r"[a-z0-9_-]{3,32}")
_TOKEN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,40}")
_TOKEN_PREFIX = "obscura_"  # noqa: S105  (a visible prefix, so secret scanners spot leaked tokens)


# -- errors ------------------------------------------------------------------------------------


class AccountError(PrivacyError):
    """An account request that cannot be done as asked."""


class UsernameError(AccountError):
    """A username the rules refuse (format, or it looks like contact details)."""


class LoginFailedError(AccountError):
    """Wrong username or password; deliberately does not say which."""


class InviteError(AccountError):
    """An invite code that is unknown, used or expired."""


class TokenError(AccountError):
    """An API token that is unknown or revoked, or a token name that cannot be used."""


# -- values handed out -------------------------------------------------------------------------


@dataclass(frozen=True)
class UserSummary:
    id: str
    username: str
    role: str
    created_day: str


@dataclass(frozen=True)
class UserSettings:
    retention_days: int  # 0 = keep pictures only until the session ends
    embed_parameters: bool  # write prompt and settings into saved pictures (opt-in)


@dataclass(frozen=True)
class TokenSummary:
    name: str
    created_day: str
    last_used_day: str | None


@dataclass(frozen=True)
class PasswordChange:
    """What a password change did to the owner's gallery."""

    kept_gallery: bool  # False after an admin reset: a new key pair, the old pictures are lost


class KeyRing:
    """The only place unwrapped private keys live: session id hash -> (user id, key, public key).

    The public key is the one proven at login (it matches the unwrapped private key)."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[str, bytearray, bytes]] = {}
        self._lock = threading.Lock()

    def put(
        self, session_id: str, user_id: str, private_key: bytes, public_key: bytes = b""
    ) -> None:
        with self._lock:
            self._keys[session_id] = (user_id, bytearray(private_key), bytes(public_key))

    def get(self, session_id: str) -> bytes | None:
        with self._lock:
            entry = self._keys.get(session_id)
            return None if entry is None else bytes(entry[1])

    def public_key(self, session_id: str) -> bytes | None:
        """The public key proven when this session logged in."""
        with self._lock:
            entry = self._keys.get(session_id)
            return None if entry is None or not entry[2] else entry[2]

    def public_key_of_user(self, user_id: str) -> bytes | None:
        """The proven public key of one of ``user_id``'s live sessions (the newest)."""
        with self._lock:
            found = [pub for uid, _, pub in self._keys.values() if uid == user_id and pub]
        return found[-1] if found else None

    def __contains__(self, session_id: object) -> bool:
        with self._lock:
            return session_id in self._keys

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)

    def users(self) -> set[str]:
        """Ids of the users who have at least one live session (their key is in memory)."""
        with self._lock:
            return {user_id for user_id, _, _ in self._keys.values()}

    def forget(self, session_id: str) -> None:
        with self._lock:
            entry = self._keys.pop(session_id, None)
        if entry is not None:
            _zero(entry[1])

    def forget_user(self, user_id: str) -> None:
        with self._lock:
            gone = [sid for sid, (uid, _, _) in self._keys.items() if uid == user_id]
            entries = [self._keys.pop(sid) for sid in gone]
        for _, key, _ in entries:
            _zero(key)

    def forget_all(self) -> None:
        with self._lock:
            entries, self._keys = list(self._keys.values()), {}
        for _, key, _ in entries:
            _zero(key)


def _zero(key: bytearray) -> None:
    # Best effort: Python may still hold short-lived copies until they are garbage collected.
    key[:] = bytes(len(key))


@dataclass(frozen=True)
class Session:
    """A logged-in person. ``token`` is set only in :meth:`Accounts.login`'s result (show once)."""

    user_id: str
    role: str
    token: str | None = field(default=None, repr=False)
    _session_id: str = field(default="", repr=False)
    _keys: KeyRing = field(default_factory=KeyRing, repr=False, compare=False)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def private_key(self) -> bytes:
        """The owner's unwrapped private key; gone once the session ends."""
        key = self._keys.get(self._session_id)
        if key is None:
            raise AccountError("session_ended", "The session has ended; log in again.")
        return key

    @property
    def public_key(self) -> bytes:
        """The public key proven at login: new pictures of this session are sealed to it."""
        key = self._keys.public_key(self._session_id)
        if key is None:
            raise AccountError("session_ended", "The session has ended; log in again.")
        return key


# -- rules -------------------------------------------------------------------------------------


def check_username(username: str) -> None:
    """Refuse a username that is not 3–32 of ``[a-z0-9_-]`` or looks like contact details."""
    if "@" in username:
        raise UsernameError(
            "username_email",
            "A username cannot be an e-mail address: Obscura never stores contact details, "
            "so choose a nickname instead.",
        )
    if sum(c.isdigit() for c in username) >= 7:
        raise UsernameError(
            "username_phone",
            "A username cannot contain 7 or more digits, which could be a phone number: "
            "Obscura never stores contact details, so choose a nickname instead.",
        )
    if not _USERNAME.fullmatch(username):
        raise UsernameError(
            "username_invalid",
            "A username must be 3 to 32 characters of lowercase letters, digits, '_' or '-'.",
        )


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


# -- the store ---------------------------------------------------------------------------------


class Accounts:
    """Users, invites, API tokens and sessions in ``db_path``; see the module docstring."""

    def __init__(
        self,
        db_path: Path,
        *,
        hasher: argon2.PasswordHasher | None = None,
        session_idle: float = SESSION_IDLE_SECONDS,
        session_absolute: float = SESSION_ABSOLUTE_SECONDS,
        audit: AuditLog | None = None,
        throttle: LoginThrottle | None = None,
        clock: Callable[[], float] = time.time,
        on_session_end: Callable[[str], None] | None = None,  # user id, after the last session
        hash_slots: int = 4,
        default_retention_days: int = DEFAULT_RETENTION_DAYS,  # for accounts made from now on
        sleep: Callable[[float], None] = time.sleep,  # the throttle's slow-down (sync login)
    ) -> None:
        if (
            isinstance(default_retention_days, bool)
            or not isinstance(default_retention_days, int)
            or not 0 <= default_retention_days <= MAX_RETENTION_DAYS
        ):
            raise ValueError("default_retention_days must be a whole number of days in range")
        self.default_retention_days = default_retention_days
        self.db_path = Path(db_path)
        self._hasher = hasher or passwords.DEFAULT_HASHER
        self._wrap_parameters = passwords.parameters_of(self._hasher)
        self._session_idle = session_idle
        self._session_absolute = session_absolute
        self._audit = audit
        self.throttle = throttle or LoginThrottle(clock=clock)
        self._clock = clock
        self._on_session_end = on_session_end
        # Each Argon2 run takes 64 MiB by default; a flood of logins must not take all memory.
        self._hash_slots = threading.BoundedSemaphore(hash_slots)
        self.keys = KeyRing()
        self._dummy_hash = passwords.dummy_hash(self._hasher)
        self._lock = threading.RLock()
        self._sleep = sleep
        # user id -> (password hash, public key) proven by the user's last login in this process.
        self._proven: dict[str, tuple[str, bytes]] = {}
        self._db = self._open()

    @property
    def audit_log(self) -> AuditLog | None:
        """The audit log this store records to (shared with the server's own events)."""
        return self._audit

    @classmethod
    def in_data_dir(cls, data_dir: Path, **options: object) -> Accounts:
        """The store at ``<data_dir>/obscura.db`` with its audit log at ``<data_dir>/audit``."""
        options.setdefault("audit", AuditLog(Path(data_dir) / "audit"))
        return cls(Path(data_dir) / "obscura.db", **options)  # type: ignore[arg-type]

    def close(self) -> None:
        """Forget every unwrapped key and close the database."""
        self.keys.forget_all()
        self._proven.clear()
        with self._lock:
            self._db.close()

    @property
    def marker_path(self) -> Path:
        """``<data-dir>/accounts-mode``: written when the first account is made."""
        return self.db_path.parent / MARKER_NAME

    def _write_marker(self) -> None:
        if self.marker_path.exists():
            return
        try:
            os.close(os.open(self.marker_path, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError as exc:
            raise (storage_error(exc) or exc) from None

    # -- users ---------------------------------------------------------------------------------

    def create_user(self, username: str, password: str, role: str = "member") -> str:
        """Make an account with a fresh key pair; returns its pseudonymous id."""
        user_id, row = self._prepare_user(username, password, role)
        self._write_marker()  # before the row: a crash in between leaves a marker, never less
        with self._transaction() as db:
            self._insert_user(db, row)
        self._record("user_created", user=user_id, role=role)
        return user_id

    def list_users(self) -> list[UserSummary]:
        """Every account (id, username, role, day made), for administrators."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, username, role, created_day FROM users ORDER BY username"
            ).fetchall()
        return [UserSummary(*row) for row in rows]

    def count_users(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM users").fetchone()[0])

    def user(self, user_id: str) -> UserSummary:
        with self._lock:
            row = self._db.execute(
                "SELECT id, username, role, created_day FROM users WHERE id = ?", (user_id,)
            ).fetchone()
        if row is None:
            raise _no_such_user()
        return UserSummary(*row)

    def user_id_for(self, username: str) -> str:
        """The id of the account called ``username``; refuses an unknown name."""
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM users WHERE username = ?", (username,)
            ).fetchone()
        if row is None:
            raise _no_such_user()
        return str(row[0])

    def public_key(self, user_id: str) -> bytes:
        """The owner's public key: enough to seal pictures for them while they are logged out."""
        with self._lock:
            row = self._db.execute(
                "SELECT public_key FROM users WHERE id = ?", (user_id,)
            ).fetchone()
        if row is None or row[0] is None:
            raise _no_such_user()
        return bytes(row[0])

    def sealing_key(self, who: Session | str) -> bytes:
        """The public key to seal this viewer's new pictures to.

        A :class:`Session` gives the key proven at its login. A user id (an API token caller)
        gives the key proven by one of the user's live sessions, else by their last login in
        this process while the password hash is unchanged, else the database's key (the
        residual risk in the module docstring). Raises ``session_ended`` / ``user_unknown``.
        """
        if isinstance(who, Session):
            return who.public_key
        user_id = who
        with self._lock:
            row = self._db.execute(
                "SELECT password_hash, public_key FROM users WHERE id = ?", (user_id,)
            ).fetchone()
        if row is None or row[1] is None:
            raise _no_such_user()
        live = self.keys.public_key_of_user(user_id)
        if live is not None:
            return live
        proven = self._proven.get(user_id)
        if proven is not None and proven[0] == row[0]:
            return proven[1]
        return bytes(row[1])

    def delete_user(self, user_id: str) -> None:
        """Destroy the wrapped private key first, then the account, its tokens and sessions.

        Once this returns, every gallery picture of the user is unreadable; the caller then
        removes the files (``privacy.gallery``).
        """
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE users SET wrapped_private_key = NULL WHERE id = ?", (user_id,)
            )
            if cursor.rowcount == 0:
                raise _no_such_user()
        self.keys.forget_user(user_id)
        self._proven.pop(user_id, None)
        with self._transaction() as db:
            db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
            db.execute("DELETE FROM tokens WHERE user_id = ?", (user_id,))
            db.execute("DELETE FROM users WHERE id = ?", (user_id,))
        self._record("user_deleted", user=user_id)

    def set_password(self, user_id: str, new: str, old: str | None = None) -> PasswordChange:
        """Change a password.

        With ``old`` (the owner changing it) the private key is re-wrapped and the gallery kept.
        Without it (an administrator's reset) nobody can unwrap the old key, so a new key pair
        is made: the old pictures can never be opened again, and the user's sessions end.
        Either way the account's API tokens end with the old password (a leaked password's
        holder may have made one), and the account's login back-off is lifted.
        """
        passwords.check_policy(new)
        row = self._user_secrets(user_id)
        if row is None:
            raise _no_such_user()
        username, _, stored_hash, wrapped = row
        if old is not None:
            with self._hash_slots:
                if wrapped is None or not passwords.verify_password(stored_hash, old, self._hasher):
                    raise LoginFailedError("wrong_password", "The current password is wrong.")
                new_wrapped = keywrap.rewrap(wrapped, old, new, parameters=self._wrap_parameters)
                new_hash = self._hasher.hash(new)
            with self._transaction() as db:
                db.execute(
                    "UPDATE users SET password_hash = ?, wrapped_private_key = ? WHERE id = ?",
                    (new_hash, new_wrapped, user_id),
                )
                db.execute("DELETE FROM tokens WHERE user_id = ?", (user_id,))
            proven = self._proven.get(user_id)
            if proven is not None and proven[0] == stored_hash:
                self._proven[user_id] = (new_hash, proven[1])  # same key pair, new password
            self.throttle.unlock(username)
            self._record("password_changed", user=user_id, via="password")
            return PasswordChange(kept_gallery=True)

        private_key, public_key = generate_owner_keypair()
        with self._hash_slots:
            new_wrapped = keywrap.wrap(private_key, new, parameters=self._wrap_parameters)
            new_hash = self._hasher.hash(new)
        with self._transaction() as db:
            db.execute(
                "UPDATE users SET password_hash = ?, public_key = ?, wrapped_private_key = ? "
                "WHERE id = ?",
                (new_hash, public_key, new_wrapped, user_id),
            )
            db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
            db.execute("DELETE FROM tokens WHERE user_id = ?", (user_id,))
        self.keys.forget_user(user_id)
        self._proven[user_id] = (new_hash, public_key)  # made here, in this process
        self.throttle.unlock(username)
        self._record("password_reset", user=user_id, via="admin", reason="new_keypair")
        return PasswordChange(kept_gallery=False)

    def settings(self, user_id: str) -> UserSettings:
        with self._lock:
            row = self._db.execute(
                "SELECT retention_days, embed_parameters FROM users WHERE id = ?", (user_id,)
            ).fetchone()
        if row is None:
            raise _no_such_user()
        return UserSettings(retention_days=int(row[0]), embed_parameters=bool(row[1]))

    def update_settings(
        self,
        user_id: str,
        *,
        retention_days: int | None = None,
        embed_parameters: bool | None = None,
    ) -> UserSettings:
        """Change a user's own settings; values left out stay as they are."""
        current = self.settings(user_id)
        days = current.retention_days if retention_days is None else retention_days
        embed = current.embed_parameters if embed_parameters is None else embed_parameters
        if (
            isinstance(days, bool)
            or not isinstance(days, int)
            or not 0 <= days <= MAX_RETENTION_DAYS
        ):
            raise AccountError(
                "bad_retention",
                f"Retention must be a whole number of days from 0 to {MAX_RETENTION_DAYS} "
                "(0 keeps pictures only until you log out).",
            )
        with self._transaction() as db:
            db.execute(
                "UPDATE users SET retention_days = ?, embed_parameters = ? WHERE id = ?",
                (days, int(bool(embed)), user_id),
            )
        self._record("settings_changed", user=user_id)
        return UserSettings(retention_days=days, embed_parameters=bool(embed))

    # -- invites -------------------------------------------------------------------------------

    def create_invite(
        self, role: str = "member", created_by: str | None = None, ttl: float = INVITE_TTL_SECONDS
    ) -> str:
        """A one-time invite code (show it once; only its hash is kept) valid for ``ttl`` s.

        ``created_by`` is the inviting administrator's id, or ``None`` for the command line.
        """
        _check_role(role)
        if ttl <= 0:
            raise InviteError("bad_ttl", "An invite must be valid for a positive time.")
        if created_by is not None and self.user(created_by).role != "admin":
            raise AccountError("not_admin", "Only an administrator can make invite codes.")
        code = secrets.token_urlsafe(16)
        now = self._clock()
        with self._transaction() as db:
            db.execute("DELETE FROM invites WHERE expires_at <= ?", (int(now),))
            db.execute(
                "INSERT INTO invites (code_hash, role, expires_at, created_by) VALUES (?, ?, ?, ?)",
                (_sha256(code), role, int(now + ttl), created_by),
            )
        self._record("invite_created", actor=created_by or "cli", role=role)
        return code

    def register_with_invite(self, code: str, username: str, password: str) -> str:
        """Use an invite code (once) to make an account; returns the new id.

        A taken name or a dead code counts as a failure for that code in the login throttle,
        so an invite holder cannot test which usernames exist faster than passwords can be
        guessed (5 free tries, then the same back-off).
        """
        check_username(username)
        passwords.check_policy(password)
        code_hash = _sha256(code[:200])
        slot = "invite:" + code_hash  # ':' never appears in a username: no clash with accounts
        try:
            self.throttle.check(slot, None)
        except LoginThrottledError as err:
            raise LoginThrottledError(
                "register_throttled",
                "Too many refused sign-ups with this invite code; wait {seconds} seconds before "
                "trying again.",
                err.retry_after,
            ) from None
        invalid = InviteError(
            "invite_invalid",
            "This invite code does not work: it was already used, has expired or was mistyped.",
        )
        with self._lock:
            invite = self._db.execute(
                "SELECT role FROM invites WHERE code_hash = ? AND expires_at > ?",
                (code_hash, int(self._clock())),
            ).fetchone()
        if invite is None:
            self.throttle.failed(slot, None)
            raise invalid
        role = str(invite[0])
        try:
            user_id, row = self._prepare_user(username, password, role)
        except UsernameError:
            self.throttle.failed(slot, None)
            raise
        self._write_marker()
        with self._transaction() as db:
            used = db.execute(
                "DELETE FROM invites WHERE code_hash = ? AND expires_at > ?",
                (code_hash, int(self._clock())),
            )
            if used.rowcount != 1:
                raise invalid
            try:
                self._insert_user(db, row)  # a taken name rolls back; the invite stays usable
            except UsernameError:
                self.throttle.failed(slot, None)
                raise
        self.throttle.succeeded(slot, None)
        self._record("user_created", user=user_id, role=role, via="invite")
        return user_id

    # -- sessions ------------------------------------------------------------------------------

    def login(self, username: str, password: str, *, client: str | None = None) -> Session:
        """Check the password, unwrap the private key into memory, start a session.

        ``client`` (e.g. the IP address) is only used, HMACed, for throttling. Refused attempts
        raise :class:`LoginThrottledError` without any password hashing; a wrong username or
        password raises :class:`LoginFailedError` with the same sentence either way. While the
        account (or the address) is under attack the verdict comes after a short slow-down
        (``privacy.throttle``), right password or not: delayed, never refused.
        """
        name, row, stamp, delay = self._precheck(username, client)
        if delay > 0:
            self._sleep(delay)
        return self._login_checked(name, row, stamp, password, client)

    async def login_async(
        self, username: str, password: str, *, client: str | None = None
    ) -> Session:
        """:meth:`login` in a worker thread, so an event loop keeps serving while Argon2 runs;
        the slow-down is waited for on the event loop, so it ties up no thread."""
        name, row, stamp, delay = await asyncio.to_thread(self._precheck, username, client)
        if delay > 0:
            await asyncio.sleep(delay)
        return await asyncio.to_thread(self._login_checked, name, row, stamp, password, client)

    def _precheck(
        self, username: str, client: str | None
    ) -> tuple[str, tuple[str, str, str, str, bytes | None, bytes | None] | None, str | None,
               float]:
        name = username.lower()
        row = self._user_secrets_by_name(name) if len(name) <= 64 else None
        stamp = _sha256(row[3]) if row is not None else None
        try:
            delay = self.throttle.check(name, client, stamp=stamp)
        except LoginThrottledError:
            self._record("login_throttled", **({"user": row[0]} if row else {}))
            raise
        return name, row, stamp, delay

    def _login_checked(
        self,
        name: str,
        row: tuple[str, str, str, str, bytes | None, bytes | None] | None,
        stamp: str | None,
        password: str,
        client: str | None,
    ) -> Session:
        with self._hash_slots:
            ok = passwords.verify_password(
                row[3] if row else self._dummy_hash, password, self._hasher
            )
            if row is None or not ok or row[4] is None:
                self.throttle.failed(name, client, stamp=stamp)
                if row is None:
                    self._record("login_failed", reason="unknown_user")
                else:
                    self._record("login_failed", user=row[0], reason="wrong_password")
                raise LoginFailedError("login_failed", "The username or password is wrong.")
            user_id, role, stored_hash, wrapped = row[0], row[2], row[3], row[4]
            private_key = keywrap.unwrap(wrapped, password)
            # Read in the same query as the wrapped key, so a concurrent reset cannot mix them.
            if not secrets.compare_digest(public_key_of(private_key), bytes(row[5] or b"")):
                # Someone changed the stored public key: pictures sealed to it would not be ours.
                raise AccountError(
                    "key_mismatch",
                    "This account's keys do not match; an administrator must check the database.",
                )
            self.throttle.succeeded(name, client)
            new_hash = (
                self._hasher.hash(password)
                if passwords.needs_rehash(stored_hash, self._hasher)
                else None
            )
            new_wrapped = (
                keywrap.wrap(private_key, password, parameters=self._wrap_parameters)
                if keywrap.needs_rewrap(wrapped, self._wrap_parameters)
                else None
            )
        token = secrets.token_urlsafe(32)
        session_id = _sha256(token)
        now = int(self._clock())
        with self._transaction() as db:
            # A reset or deletion that landed while Argon2 ran wins: this login is void.
            current = db.execute(
                "SELECT password_hash FROM users WHERE id = ?", (user_id,)
            ).fetchone()
            if current is None or current[0] != stored_hash:
                raise LoginFailedError("login_failed", "The username or password is wrong.")
            if new_hash is not None or new_wrapped is not None:
                db.execute(
                    "UPDATE users SET password_hash = ?, wrapped_private_key = ? WHERE id = ?",
                    (new_hash or stored_hash, new_wrapped or wrapped, user_id),
                )
            db.execute(
                "INSERT INTO sessions (id_hash, user_id, created_at, last_seen_at) "
                "VALUES (?, ?, ?, ?)",
                (session_id, user_id, now, now),
            )
        proven_key = public_key_of(private_key)
        self.keys.put(session_id, user_id, private_key, proven_key)
        self._proven[user_id] = (new_hash or stored_hash, proven_key)
        self._record("login_ok", user=user_id, via="password")
        return Session(
            user_id=user_id, role=role, token=token, _session_id=session_id, _keys=self.keys
        )

    def get_session(self, token: str) -> Session | None:
        """The live session for ``token``, or ``None`` (unknown, idle too long, too old)."""
        session_id = _sha256(token)
        now = self._clock()
        with self._lock:
            row = self._db.execute(
                "SELECT s.user_id, u.role, s.created_at, s.last_seen_at FROM sessions s "
                "JOIN users u ON u.id = s.user_id WHERE s.id_hash = ?",
                (session_id,),
            ).fetchone()
        if row is None:
            self.keys.forget(session_id)
            return None
        user_id, role, created_at, last_seen_at = row
        reason = None
        if now - last_seen_at >= self._session_idle:
            reason = "idle"
        elif now - created_at >= self._session_absolute:
            reason = "absolute"
        elif session_id not in self.keys:
            reason = "restart"  # the key died with an earlier process: log in again
        if reason is not None:
            self._end_session(session_id, user_id, "session_expired", reason)
            return None
        if now - last_seen_at >= _TOUCH_EVERY_SECONDS:
            with self._transaction() as db:
                db.execute(
                    "UPDATE sessions SET last_seen_at = ? WHERE id_hash = ?", (int(now), session_id)
                )
        return Session(user_id=user_id, role=role, _session_id=session_id, _keys=self.keys)

    def logout(self, token: str) -> None:
        """End the session and forget its unwrapped key; unknown tokens are ignored."""
        session_id = _sha256(token)
        with self._lock:
            row = self._db.execute(
                "SELECT user_id FROM sessions WHERE id_hash = ?", (session_id,)
            ).fetchone()
        if row is None:
            self.keys.forget(session_id)
            return
        self._end_session(session_id, row[0], "logout", "logout")

    def sweep_sessions(self) -> int:
        """End every session past its idle or absolute limit; returns how many ended."""
        now = self._clock()
        with self._lock:
            rows = self._db.execute(
                "SELECT id_hash, user_id, created_at, last_seen_at FROM sessions"
            ).fetchall()
        ended = 0
        for session_id, user_id, created_at, last_seen_at in rows:
            if now - last_seen_at >= self._session_idle:
                self._end_session(session_id, user_id, "session_expired", "idle")
                ended += 1
            elif now - created_at >= self._session_absolute:
                self._end_session(session_id, user_id, "session_expired", "absolute")
                ended += 1
        return ended

    def logged_in_users(self) -> set[str]:
        """Users with a live session in this process (for the gallery's retention sweep)."""
        return self.keys.users()

    def end_all_sessions(self) -> None:
        """Drop every session (at server start: the keys of an earlier process are gone)."""
        with self._transaction() as db:
            db.execute("DELETE FROM sessions")
        self.keys.forget_all()

    # -- API tokens ----------------------------------------------------------------------------

    def create_token(self, user_id: str, name: str) -> str:
        """A new 256-bit API token called ``name``; show it once, only its SHA-256 is kept."""
        if not _TOKEN_NAME.fullmatch(name):
            raise TokenError(
                "token_name_invalid",
                "A token name must be 1 to 40 characters of letters, digits, '_', '.' or '-'.",
            )
        self.user(user_id)
        token = _TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = "t_" + secrets.token_hex(16)
        with self._transaction() as db:
            taken = db.execute(
                "SELECT 1 FROM tokens WHERE user_id = ? AND name = ?", (user_id, name)
            ).fetchone()
            if taken:
                raise TokenError(
                    "token_name_taken", "This account already has a token with that name."
                )
            db.execute(
                "INSERT INTO tokens (id, user_id, name, token_hash, created_day, last_used_day) "
                "VALUES (?, ?, ?, ?, ?, NULL)",
                (token_id, user_id, name, _sha256(token), self._today()),
            )
        self._record("token_created", user=user_id, token=token_id)
        return token

    def list_tokens(self, user_id: str) -> list[TokenSummary]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, created_day, last_used_day FROM tokens WHERE user_id = ? "
                "ORDER BY name",
                (user_id,),
            ).fetchall()
        return [TokenSummary(*row) for row in rows]

    def revoke_token(self, user_id: str, name: str) -> None:
        """Delete the token called ``name``; it stops working at once."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT id FROM tokens WHERE user_id = ? AND name = ?", (user_id, name)
            ).fetchone()
            if row is None:
                raise TokenError("token_unknown", "This account has no token with that name.")
            db.execute("DELETE FROM tokens WHERE id = ?", (row[0],))
        self._record("token_revoked", user=user_id, token=row[0])

    def verify_token(self, token: str, *, client: str | None = None) -> str:
        """The user id an API token belongs to; refuses unknown or revoked tokens.

        Tokens are 256-bit random, so a wrong one is not throttled (that would only lock out
        the real clients behind the same address); ``client`` is accepted and not used. Wrong
        tokens are logged at most once a minute, with their count (``privacy.throttle``).
        """
        del client
        with self._lock:
            row = self._db.execute(
                "SELECT id, user_id, last_used_day FROM tokens WHERE token_hash = ?",
                (_sha256(token[:512]),),
            ).fetchone()
        if row is None:
            count = self.throttle.note_bad_token()
            if count is not None:
                self._record("token_failed", reason="bad_token", count=count)
            raise TokenError(
                "token_invalid", "The API token is not valid; it may have been revoked."
            )
        token_id, user_id, last_used_day = row
        today = self._today()
        if last_used_day != today:
            with self._transaction() as db:
                db.execute("UPDATE tokens SET last_used_day = ? WHERE id = ?", (today, token_id))
        return str(user_id)

    # -- internals -----------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        """Open (or create) the database; a disk fault or damage is one sentence, not a trace."""
        try:
            self.db_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Create the file ourselves so it is never readable by others, not even for a moment.
            os.close(os.open(self.db_path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise (storage_error(exc) or exc) from None
        db = sqlite3.connect(
            self.db_path, check_same_thread=False, isolation_level=None, timeout=10,
            factory=_GuardedConnection,
        )
        try:
            db.execute("PRAGMA secure_delete = ON")
            db.execute("PRAGMA journal_mode = DELETE")
            db.execute("PRAGMA synchronous = FULL")
            try:
                db.executescript(SCHEMA)
            except sqlite3.Error as exc:
                raise (storage_error(exc) or exc) from None
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            db.close()
            raise
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite rolls back by itself after some errors (a full disk, an I/O error):
                # a second ROLLBACK would raise "cannot rollback" over the real error.
                if self._db.in_transaction:
                    try:
                        self._db.execute("ROLLBACK")
                    except (sqlite3.Error, StorageError):
                        pass
                raise

    def _prepare_user(
        self, username: str, password: str, role: str
    ) -> tuple[str, tuple[object, ...]]:
        check_username(username)
        _check_role(role)
        passwords.check_policy(password)
        with self._lock:
            if self._db.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
                raise _name_taken()
        private_key, public_key = generate_owner_keypair()
        with self._hash_slots:
            password_hash = self._hasher.hash(password)
            wrapped = keywrap.wrap(private_key, password, parameters=self._wrap_parameters)
        user_id = "u_" + secrets.token_hex(16)
        row = (
            user_id,
            username,
            role,
            password_hash,
            public_key,
            wrapped,
            self.default_retention_days,
            0,
            self._today(),
        )
        return user_id, row

    @staticmethod
    def _insert_user(db: sqlite3.Connection, row: tuple[object, ...]) -> None:
        try:
            db.execute(
                "INSERT INTO users (id, username, role, password_hash, public_key, "
                "wrapped_private_key, retention_days, embed_parameters, created_day) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        except sqlite3.IntegrityError:
            raise _name_taken() from None

    def _user_secrets(self, user_id: str) -> tuple[str, str, str, bytes | None] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT username, role, password_hash, wrapped_private_key FROM users WHERE id = ?",
                (user_id,),
            ).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3])

    def _user_secrets_by_name(
        self, username: str
    ) -> tuple[str, str, str, str, bytes | None, bytes | None] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, username, role, password_hash, wrapped_private_key, public_key "
                "FROM users WHERE username = ?",
                (username,),
            ).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3], row[4], row[5])

    def _end_session(self, session_id: str, user_id: str, event: str, reason: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM sessions WHERE id_hash = ?", (session_id,))
        self.keys.forget(session_id)
        self._record(event, user=user_id, reason=reason)
        # "Keep only until the session ends" means the last session: tell the caller only then.
        if self._on_session_end is not None and user_id not in self.keys.users():
            self._on_session_end(user_id)

    def _today(self) -> str:
        return dt.datetime.fromtimestamp(self._clock(), tz=dt.UTC).date().isoformat()

    def _record(self, event: str, **fields: str | int) -> None:
        if self._audit is not None:
            try:
                self._audit.record(event, **fields)
            except StorageError:
                # Reported by the audit log itself (a log line, its ``lost`` count, and at
                # start); the account change is already committed and stays consistent.
                pass


class _GuardedConnection(sqlite3.Connection):
    """A connection whose disk and damage errors are :class:`StorageError` sentences."""

    def execute(self, sql: str, parameters: object = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, parameters)  # type: ignore[arg-type]
        except sqlite3.Error as exc:
            mapped = storage_error(exc)
            if mapped is None:
                raise
            raise mapped from None


def ensure_intact(data_dir: Path) -> None:
    """Refuse a data folder that has held accounts but whose database is gone or damaged.

    Raises ``StorageError("accounts_database_lost")`` with one sentence when the marker
    ``accounts-mode`` exists and ``obscura.db`` is missing, empty, not a database, damaged
    (``PRAGMA quick_check``) or holds no account: starting in personal mode then would open
    the studio without login and orphan every gallery. Opens the database read-only.
    """
    data_dir = Path(data_dir)
    problem = database_problem(data_dir)
    if problem is not None and (data_dir / MARKER_NAME).exists():
        raise StorageError(
            "accounts_database_lost",
            "This data folder has held accounts but its accounts database is {problem}, so "
            "Obscura will not start without login: restore obscura.db from a backup (or delete "
            "the file accounts-mode to start over in personal mode) and run `obscura audit` to "
            "see the damage.",
            problem=problem,
        )


def database_problem(data_dir: Path) -> str | None:
    """What is wrong with ``<data_dir>/obscura.db`` (missing, empty, damaged, no accounts)."""
    path = Path(data_dir) / DB_NAME
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"
    if size == 0:
        return "empty"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return "unreadable"
    try:
        check = db.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            return "damaged"
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if "users" not in tables:
            return "without its tables"
        if db.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 0:
            return "without any account"
    except sqlite3.DatabaseError as exc:
        mapped = storage_error(exc)
        return "damaged" if mapped is None or mapped.code == DATABASE_DAMAGED.code else "unreadable"
    finally:
        db.close()
    return None


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise AccountError("bad_role", "A role must be 'admin' or 'member'.")


def _no_such_user() -> AccountError:
    return AccountError("user_unknown", "No account has that name or id.")


def _name_taken() -> UsernameError:
    return UsernameError("username_taken", "That username is already taken; choose another.")
