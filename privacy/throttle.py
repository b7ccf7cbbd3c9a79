"""Slowing down password guessing, per account and per client, without remembering either.

Rules (NIST SP 800-63B, section 5.2.2, "rate limiting"):

* after 5 consecutive failures, each further attempt must wait ``2 ** (failures - 5)`` seconds
  (1 s, 2 s, 4 s, ... up to 15 minutes);
* at 100 consecutive failures the account is locked until an administrator resets its password
  (``obscura user passwd``); a client is locked until a day passes without a failure from it;
* a refused attempt does no password hashing at all, so it costs the server nothing.

Counters are kept per username and per client (an IP address, or whatever the web layer passes).
Neither is stored: each is replaced by an HMAC-SHA256 under a random key that lives only in
memory and is replaced every UTC day. Yesterday's key is kept for a day so that counts survive
midnight; an older key is kept only while an account counted under it is still locked. Nothing is
written to disk; a restart forgets everything (the back-off then starts again from zero).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from privacy.errors import PrivacyError

BACKOFF_AFTER = 5
LOCK_AFTER = 100
MAX_DELAY_SECONDS = 15 * 60
MAX_ENTRIES = 100_000
# A client (address) is not an account: nobody can reset it, so its count ends after a quiet day.
CLIENT_LOCK_SECONDS = 86400


class LoginThrottledError(PrivacyError):
    """An attempt refused before any password check; ``retry_after`` is in whole seconds."""

    def __init__(self, code: str, message: str, retry_after: int | None) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


@dataclass
class _Counter:
    failures: int = 0
    last_failure: float = 0.0
    # For accounts: a fingerprint of the password hash when the failures were counted, so a
    # password reset made by another process (the CLI) also lifts the lock.
    stamp: str | None = None


class LoginThrottle:
    """Counts consecutive failures by HMAC of username and of client; in memory only."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        backoff_after: int = BACKOFF_AFTER,
        lock_after: int = LOCK_AFTER,
        max_delay: float = MAX_DELAY_SECONDS,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self._clock = clock
        self._backoff_after = backoff_after
        self._lock_after = lock_after
        self._max_delay = max_delay
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._day = -1
        self._key = b""
        self._previous_key = b""
        self._counters: dict[bytes, _Counter] = {}
        self._previous: dict[bytes, _Counter] = {}
        # Older keys kept only for the locked accounts counted under them.
        self._locked: dict[bytes, dict[bytes, _Counter]] = {}

    # -- the three calls a login makes ------------------------------------------------------

    def check(self, username: str | None, client: str | None, *, stamp: str | None = None) -> None:
        """Raise :class:`LoginThrottledError` when this attempt must not be tried now.

        ``stamp`` identifies the account's current password (any string that changes when the
        password is reset); a reset lifts the account's back-off and lock.
        """
        now = self._clock()
        with self._lock:
            if username is not None:
                counter = self._counter(b"user", username, now)
                if counter is not None and stamp is not None and counter.stamp not in (None, stamp):
                    counter.failures = 0
                self._refuse_if_needed(counter, now, is_account=True)
            if client is not None:
                counter = self._counter(b"client", client, now)
                if counter is not None and now - counter.last_failure >= CLIENT_LOCK_SECONDS:
                    counter.failures = 0
                self._refuse_if_needed(counter, now, is_account=False)

    def failed(self, username: str | None, client: str | None, *, stamp: str | None = None) -> None:
        """Count one failed attempt (wrong password, unknown user, bad API token)."""
        now = self._clock()
        with self._lock:
            for kind, value in ((b"user", username), (b"client", client)):
                if value is None:
                    continue
                counter = self._counter(kind, value, now, create=True)
                assert counter is not None
                counter.failures += 1
                counter.last_failure = now
                if kind == b"user":
                    counter.stamp = stamp

    def succeeded(self, username: str | None, client: str | None) -> None:
        """A correct password: the account's and the client's consecutive failures end."""
        now = self._clock()
        with self._lock:
            for kind, value in ((b"user", username), (b"client", client)):
                if value is not None:
                    self._forget(kind, value, now)

    def unlock(self, username: str) -> None:
        """Lift an account's back-off and lock (called by an administrator's password reset)."""
        with self._lock:
            self._forget(b"user", username, self._clock())

    def failures(self, username: str | None = None, client: str | None = None) -> int:
        """Consecutive failures counted for ``username`` (or ``client``); for tests and status."""
        kind, value = (b"user", username) if username is not None else (b"client", client)
        if value is None:
            return 0
        with self._lock:
            counter = self._counter(kind, value, self._clock())
            return 0 if counter is None else counter.failures

    # -- internals ----------------------------------------------------------------------------

    def _refuse_if_needed(self, counter: _Counter | None, now: float, *, is_account: bool) -> None:
        if counter is None or counter.failures < self._backoff_after:
            return
        if counter.failures >= self._lock_after:
            if is_account:
                raise LoginThrottledError(
                    "account_locked",
                    "This account is locked after too many wrong passwords; "
                    "an administrator can unlock it by resetting the password.",
                    None,
                )
            raise LoginThrottledError(
                "client_locked",
                "Too many failed sign-ins came from this device; wait a day before trying again.",
                None,
            )
        delay = min(2.0 ** (counter.failures - self._backoff_after), self._max_delay)
        wait = counter.last_failure + delay - now
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            unit = "second" if seconds == 1 else "seconds"
            raise LoginThrottledError(
                "login_throttled",
                f"Too many wrong passwords in a row; wait {seconds} {unit} before trying again.",
                seconds,
            )

    def _counter(
        self, kind: bytes, value: str, now: float, *, create: bool = False
    ) -> _Counter | None:
        self._rotate_if_new_day(now)
        name = self._name(self._key, kind, value)
        counter = self._counters.get(name)
        if counter is None and self._previous:
            # Carry yesterday's count over to today's key the first time it is seen again.
            counter = self._previous.pop(self._name(self._previous_key, kind, value), None)
            if counter is not None:
                self._counters[name] = counter
        if counter is None and self._locked:
            counter = self._pop_locked(kind, value)
            if counter is not None:
                self._counters[name] = counter
        if counter is None and create:
            if len(self._counters) >= self._max_entries:
                self._evict()
            counter = self._counters[name] = _Counter()
        return counter

    def _forget(self, kind: bytes, value: str, now: float) -> None:
        self._rotate_if_new_day(now)
        self._counters.pop(self._name(self._key, kind, value), None)
        if self._previous:
            self._previous.pop(self._name(self._previous_key, kind, value), None)
        if self._locked:
            self._pop_locked(kind, value)

    def _pop_locked(self, kind: bytes, value: str) -> _Counter | None:
        for key, table in list(self._locked.items()):
            counter = table.pop(self._name(key, kind, value), None)
            if not table:
                del self._locked[key]
            if counter is not None:
                return counter
        return None

    def _rotate_if_new_day(self, now: float) -> None:
        day = int(now // 86400)
        if day == self._day:
            return
        # Keep one previous key so counts survive midnight; anything older is dropped, except
        # locked accounts: they stay locked until an administrator resets the password.
        dropped = [(self._previous_key, self._previous)]
        if day == self._day + 1:
            self._previous_key, self._previous = self._key, self._counters
        else:
            dropped.append((self._key, self._counters))
            self._previous_key, self._previous = b"", {}
        for key, table in dropped:
            locked = {name: c for name, c in table.items() if c.failures >= self._lock_after}
            if locked:
                self._locked[key] = locked
        self._key = os.urandom(32)
        self._counters = {}
        self._day = day

    def _evict(self) -> None:
        # Under a flood of made-up names, drop the oldest quarter rather than grow without end.
        # Fewest failures go first, so a flood cannot push a locked account out.
        ordered = sorted(
            self._counters.items(), key=lambda item: (item[1].failures, item[1].last_failure)
        )
        for name, _ in ordered[: max(1, len(ordered) // 4)]:
            del self._counters[name]

    @staticmethod
    def _name(key: bytes, kind: bytes, value: str) -> bytes:
        return hmac.new(key, kind + b"\x00" + value.encode("utf-8"), hashlib.sha256).digest()
