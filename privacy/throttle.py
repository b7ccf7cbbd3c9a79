"""Slowing down password guessing without letting a stranger lock the owner out.

What is counted, and why (NIST SP 800-63B 5.2.2 asks for rate limiting; OWASP warns that hard
lock-outs are a denial of service):

* **Per account + address** (the pair): after 5 consecutive failures from one address for one
  account, each further attempt from that pair must wait ``2 ** (failures - 5)`` seconds (1 s,
  2 s, 4 s, ... up to 15 minutes). A refused attempt does no password hashing at all. This is
  what keeps one guesser slow: about 96 guesses a day per address once the cap is reached. The
  owner signing in from *another* address is not affected at all.
* **Per account, from everywhere**: after 10 consecutive failures (any address), every attempt
  on that account is *delayed* (``0.5 s`` doubling every 10 further failures, at most 8 s)
  before its verdict, right or wrong. A delay is never a refusal: the owner with the right
  password always gets in, a few seconds late. It slows a guesser who spreads over many
  addresses, and because the verdict comes only after the delay it also ties up their
  connections. There is no per-account lock any more: a lock that anyone can trigger by typing
  wrong passwords is a lock-out of the owner.
* **Per address, over all accounts**: after 20 consecutive failures from one address, its
  further password attempts are delayed the same way (password spraying: one guess on many
  accounts). Again a delay, never a refusal, so a household behind one NAT, or everyone behind
  the documented reverse proxy (all one address), still gets in with the right password.

Residual risk, written down: behind a reverse proxy every client is the same address, so the
*pair* back-off is per account: a stranger typing wrong passwords for ``alice`` makes ``alice``'s
own attempts wait too (at most 15 minutes per attempt, never a lock). A guesser with many
addresses is limited by the global delay, the server's few Argon2 slots and the password
policy, not by a lock. ``obscura user passwd`` lifts every back-off of the account.

API tokens are 256-bit random values: guessing one is hopeless, so a wrong token costs nothing
but a log line, and there is no per-address token lock (it would only lock out the real clients
behind the same address). :meth:`LoginThrottle.note_bad_token` bounds that log: at most one
audit line a minute, with the count since the last one.

Memory: nothing is stored as given. Every counter is keyed by an HMAC-SHA256 of the kind and the
value(s) under a random key that lives only in memory and is replaced every UTC day. Yesterday's
key is kept for a day so that counts survive midnight; older counts are dropped (two quiet days
forget everything, and a restart forgets everything too). The table holds at most
``max_entries`` counters. When it is full, the quarter with the *fewest* failures (then the
oldest) goes first. Trade: a flood of made-up names costs its sender one request per entry and
only ever evicts low counts; to evict a back-off of ``f`` failures an attacker must first build
three quarters of the table (75,000 entries by default) each with more than ``f`` failures, each
of those themselves waiting out a back-off. That is far dearer than waiting. A counter of a
long-quiet pair may be evicted before a busy one; that only forgets a back-off nobody is using.
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
MAX_DELAY_SECONDS = 15 * 60
ACCOUNT_SLOW_AFTER = 10
CLIENT_SLOW_AFTER = 20
SLOW_BASE_SECONDS = 0.5
SLOW_MAX_SECONDS = 8.0
MAX_ENTRIES = 100_000
BAD_TOKEN_LOG_SECONDS = 60.0

_PAIR, _USER, _CLIENT = b"pair", b"user", b"client"


class LoginThrottledError(PrivacyError):
    """An attempt refused before any password check; ``retry_after`` is in whole seconds."""

    def __init__(self, code: str, message: str, retry_after: int | None, **params: object) -> None:
        if retry_after is not None:
            params.setdefault("seconds", retry_after)
        super().__init__(code, message, **params)
        self.retry_after = retry_after


@dataclass
class _Counter:
    failures: int = 0
    last_failure: float = 0.0
    # For accounts and pairs: a fingerprint of the password hash when the failures were
    # counted, so a password reset made by another process (the CLI) also lifts the back-off.
    stamp: str | None = None


class LoginThrottle:
    """Counts consecutive failures by HMAC of (account, address), account and address."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        backoff_after: int = BACKOFF_AFTER,
        max_delay: float = MAX_DELAY_SECONDS,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self._clock = clock
        self._backoff_after = backoff_after
        self._max_delay = max_delay
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._day = -1
        self._key = b""
        self._previous_key = b""
        self._counters: dict[bytes, _Counter] = {}
        self._previous: dict[bytes, _Counter] = {}
        self._bad_tokens = 0
        self._bad_tokens_logged_at = -math.inf

    # -- the calls a login makes ------------------------------------------------------------

    def check(self, username: str | None, client: str | None, *, stamp: str | None = None) -> float:
        """Raise :class:`LoginThrottledError` when this pair must wait; else the delay to apply.

        The returned number of seconds is the account-wide and address-wide slow-down: the caller
        waits that long before giving its verdict, whatever the verdict. ``stamp`` identifies
        the account's current password (any string that changes when the password is reset); a
        reset lifts the back-off. Without a username (API tokens) nothing is ever refused.
        """
        now = self._clock()
        with self._lock:
            if username is None:
                return 0.0
            pair = self._counter(_PAIR, _pair(username, client), now)
            account = self._counter(_USER, username, now)
            for counter in (pair, account):
                if counter is not None and stamp is not None and counter.stamp not in (None, stamp):
                    counter.failures = 0
            self._refuse_if_needed(pair, now)
            delay = self._slow_down(account, ACCOUNT_SLOW_AFTER)
            if client is not None:
                delay = max(delay, self._slow_down(self._counter(_CLIENT, client, now),
                                                   CLIENT_SLOW_AFTER))
            return delay

    def failed(self, username: str | None, client: str | None, *, stamp: str | None = None) -> None:
        """Count one wrong password (or unknown user). Without a username nothing is counted."""
        if username is None:
            return
        now = self._clock()
        with self._lock:
            keys: list[tuple[bytes, str]] = [(_PAIR, _pair(username, client)), (_USER, username)]
            if client is not None:
                keys.append((_CLIENT, client))
            for kind, value in keys:
                counter = self._counter(kind, value, now, create=True)
                assert counter is not None
                counter.failures += 1
                counter.last_failure = now
                if kind != _CLIENT:
                    counter.stamp = stamp

    def succeeded(self, username: str | None, client: str | None) -> None:
        """A correct password: the pair's, the account's and the address's failures end."""
        if username is None:
            return
        now = self._clock()
        with self._lock:
            self._forget(_PAIR, _pair(username, client), now)
            self._forget(_USER, username, now)
            if client is not None:
                self._forget(_CLIENT, client, now)

    def unlock(self, username: str) -> None:
        """Lift the account's slow-down (an administrator's reset). Pair back-offs are lifted
        through ``stamp`` on their next check, since their keys cannot be listed."""
        with self._lock:
            self._forget(_USER, username, self._clock())

    def note_bad_token(self) -> int | None:
        """Count a wrong API token; returns the count to log when a log line is due, else None."""
        now = self._clock()
        with self._lock:
            self._bad_tokens += 1
            if now - self._bad_tokens_logged_at < BAD_TOKEN_LOG_SECONDS:
                return None
            count, self._bad_tokens = self._bad_tokens, 0
            self._bad_tokens_logged_at = now
            return count

    def failures(
        self, username: str | None = None, client: str | None = None, *, pair: bool = False
    ) -> int:
        """Consecutive failures of the account (or address, or with ``pair`` the pair)."""
        if pair and username is not None:
            kind, value = _PAIR, _pair(username, client)
        elif username is not None:
            kind, value = _USER, username
        elif client is not None:
            kind, value = _CLIENT, client
        else:
            return 0
        with self._lock:
            counter = self._counter(kind, value, self._clock())
            return 0 if counter is None else counter.failures

    def __len__(self) -> int:
        with self._lock:
            return len(self._counters) + len(self._previous)

    # -- internals ----------------------------------------------------------------------------

    def _refuse_if_needed(self, counter: _Counter | None, now: float) -> None:
        if counter is None or counter.failures < self._backoff_after:
            return
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

    @staticmethod
    def _slow_down(counter: _Counter | None, after: int) -> float:
        if counter is None or counter.failures < after:
            return 0.0
        steps = (counter.failures - after) // 10
        return float(min(SLOW_BASE_SECONDS * 2.0 ** min(steps, 16), SLOW_MAX_SECONDS))

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
        if counter is None and create:
            if len(self._counters) + len(self._previous) >= self._max_entries:
                self._evict()
            counter = self._counters[name] = _Counter()
        return counter

    def _forget(self, kind: bytes, value: str, now: float) -> None:
        self._rotate_if_new_day(now)
        self._counters.pop(self._name(self._key, kind, value), None)
        if self._previous:
            self._previous.pop(self._name(self._previous_key, kind, value), None)

    def _rotate_if_new_day(self, now: float) -> None:
        day = int(now // 86400)
        if day == self._day:
            return
        # Keep one previous key so counts survive midnight; anything older is dropped.
        if day == self._day + 1:
            self._previous_key, self._previous = self._key, self._counters
        else:
            self._previous_key, self._previous = b"", {}
        self._key = os.urandom(32)
        self._counters = {}
        self._day = day

    def _evict(self) -> None:
        # Under a flood of made-up names, drop the quarter with the fewest failures (then the
        # oldest) rather than grow without end: a flood cannot push out a real back-off.
        tables = [table for table in (self._previous, self._counters) if table]
        ordered = sorted(
            ((counter.failures, counter.last_failure, index, name)
             for index, table in enumerate(tables) for name, counter in table.items()),
        )
        for _, _, index, name in ordered[: max(1, len(ordered) // 4)]:
            del tables[index][name]

    @staticmethod
    def _name(key: bytes, kind: bytes, value: str) -> bytes:
        return hmac.new(key, kind + b"\x00" + value.encode("utf-8"), hashlib.sha256).digest()


def _pair(username: str, client: str | None) -> str:
    # The NUL cannot appear in a username or an address, so no two pairs share a string.
    return username + "\x00" + (client or "")
