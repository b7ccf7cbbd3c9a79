"""Login throttling: back-off after 5 failures, lock at 100, no raw username or client kept."""

from __future__ import annotations

import pytest

from privacy.errors import PrivacyError
from privacy.throttle import LoginThrottle, LoginThrottledError


class Clock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fail_until_throttled(throttle: LoginThrottle, clock: Clock, count: int, **who: str) -> None:
    """Record ``count`` failures, waiting out each back-off like a patient attacker would."""
    for _ in range(count):
        while True:
            try:
                throttle.check(who.get("username"), who.get("client"))
                break
            except LoginThrottledError as err:
                assert err.retry_after is not None
                clock.advance(err.retry_after)
        throttle.failed(who.get("username"), who.get("client"))


def test_five_failures_are_free_then_the_sixth_attempt_waits_a_second() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(5):
        throttle.check("alice", None)
        throttle.failed("alice", None)
    with pytest.raises(LoginThrottledError) as caught:
        throttle.check("alice", None)
    assert isinstance(caught.value, PrivacyError)
    assert caught.value.code == "login_throttled"
    assert caught.value.retry_after == 1
    assert "wait 1 second " in str(caught.value)
    assert "alice" not in str(caught.value)
    clock.advance(1)
    throttle.check("alice", None)


def test_back_off_doubles_with_each_further_failure() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    fail_until_throttled(throttle, clock, 8, username="alice")
    with pytest.raises(LoginThrottledError) as caught:
        throttle.check("alice", None)
    assert caught.value.retry_after == 8  # 2 ** (8 - 5)
    assert "wait 8 seconds" in str(caught.value)


def test_back_off_is_capped_at_fifteen_minutes() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    fail_until_throttled(throttle, clock, 40, username="alice")
    with pytest.raises(LoginThrottledError) as caught:
        throttle.check("alice", None)
    assert caught.value.retry_after == 900


def test_no_number_of_wrong_passwords_locks_the_account() -> None:
    # Issue 9.6: 100 failures used to lock the account for everyone; now the pair waits at
    # most 15 minutes and every other address is only slowed down, never refused.
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    fail_until_throttled(throttle, clock, 150, username="alice", client="203.0.113.9")
    clock.advance(900)
    throttle.check("alice", "203.0.113.9")  # the guesser's pair: one more try after 15 min
    delay = throttle.check("alice", "198.51.100.1")  # the owner elsewhere: not refused
    assert 0 < delay <= 8


def test_six_wrong_passwords_from_one_address_do_not_refuse_the_owner_elsewhere() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(6):
        throttle.failed("alice", "203.0.113.9")
    with pytest.raises(LoginThrottledError):
        throttle.check("alice", "203.0.113.9")
    assert throttle.check("alice", "198.51.100.1") == 0.0


def test_account_wide_slow_down_delays_but_never_refuses() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for n in range(60):  # a guesser spread over 60 addresses, one guess each
        throttle.failed("alice", f"203.0.113.{n}")
    assert throttle.failures("alice") == 60
    delay = throttle.check("alice", "198.51.100.1")
    assert delay == 8.0  # 0.5 s doubling every 10 failures past 10, capped at 8 s
    throttle.succeeded("alice", "198.51.100.1")
    assert throttle.check("alice", "198.51.100.1") == 0.0


def test_password_reset_elsewhere_lifts_the_back_off_through_the_stamp() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(10):
        throttle.failed("alice", None, stamp="hash-1")
    with pytest.raises(LoginThrottledError):
        throttle.check("alice", None, stamp="hash-1")
    throttle.check("alice", None, stamp="hash-2")  # the CLI reset the password
    assert throttle.failures("alice") == 0


def test_one_address_spraying_many_usernames_is_slowed_not_refused() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for n in range(25):
        throttle.check(f"user{n}", "192.0.2.7")
        throttle.failed(f"user{n}", "192.0.2.7")
    assert throttle.check("someone-new", "192.0.2.7") == 0.5  # delayed: a NAT neighbour
    assert throttle.check("someone-new", "192.0.2.8") == 0.0  # another address: untouched


def test_api_tokens_are_never_refused_and_their_log_is_bounded() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(50):
        throttle.failed(None, "192.0.2.7")
    assert throttle.check(None, "192.0.2.7") == 0.0
    assert len(throttle) == 0  # nothing kept for token failures
    logged = [throttle.note_bad_token() for _ in range(1000)]
    assert logged[0] == 1 and logged[1:] == [None] * 999
    clock.advance(60)
    assert throttle.note_bad_token() == 1000


def test_success_ends_the_run_of_failures() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(4):
        throttle.failed("alice", "192.0.2.7")
    throttle.succeeded("alice", "192.0.2.7")
    assert throttle.failures("alice") == 0
    assert throttle.failures(client="192.0.2.7") == 0
    for _ in range(4):
        throttle.failed("alice", None)
    throttle.check("alice", None)


def test_no_raw_username_or_client_is_kept_in_memory() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    throttle.failed("alice-canary", "198.51.100.23")
    state = repr(vars(throttle)).encode() + b"".join(
        name for table in (throttle._counters, throttle._previous) for name in table
    )
    assert b"alice-canary" not in state
    assert b"198.51.100.23" not in state
    assert all(len(name) == 32 for name in throttle._counters)  # HMAC-SHA256 digests


def test_hmac_key_rotates_daily_and_counts_carry_over_midnight() -> None:
    clock = Clock(start=86400 * 20000 + 86000)  # 400 s before a UTC midnight
    throttle = LoginThrottle(clock=clock)
    for _ in range(7):
        throttle.failed("alice", None)
    key_before = throttle._key
    clock.advance(600)  # the next UTC day
    assert throttle.failures("alice") == 7
    assert throttle._key != key_before
    clock.advance(2 * 86400)  # two more days: the old key and its counts are gone
    assert throttle.failures("alice") == 0


def test_a_flood_of_made_up_names_cannot_reset_a_back_off() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock, max_entries=50)
    fail_until_throttled(throttle, clock, 12, username="victim", client="192.0.2.7")
    for n in range(500):
        throttle.failed(f"noise{n}", "192.0.2.7")
    assert len(throttle) <= 50
    with pytest.raises(LoginThrottledError):
        throttle.check("victim", "192.0.2.7")
    assert throttle.failures("victim", "192.0.2.7", pair=True) == 12
