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


def test_account_is_hard_locked_at_one_hundred_failures_until_unlocked() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    fail_until_throttled(throttle, clock, 99, username="alice")
    clock.advance(3600)
    throttle.check("alice", None)  # 99 failures: still only a back-off
    throttle.failed("alice", None)
    assert throttle.failures("alice") == 100
    clock.advance(30 * 86400)  # time alone does not lift the lock
    with pytest.raises(LoginThrottledError) as caught:
        throttle.check("alice", None)
    assert caught.value.code == "account_locked"
    assert caught.value.retry_after is None
    assert "administrator" in str(caught.value)
    throttle.unlock("alice")
    throttle.check("alice", None)


def test_password_reset_elsewhere_lifts_the_lock_through_the_stamp() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock, lock_after=10)
    for _ in range(10):
        throttle.failed("alice", None, stamp="hash-1")
    with pytest.raises(LoginThrottledError):
        throttle.check("alice", None, stamp="hash-1")
    throttle.check("alice", None, stamp="hash-2")  # the CLI reset the password
    assert throttle.failures("alice") == 0


def test_one_client_guessing_many_usernames_is_throttled() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for n in range(5):
        throttle.check(f"user{n}", "192.0.2.7")
        throttle.failed(f"user{n}", "192.0.2.7")
    with pytest.raises(LoginThrottledError):
        throttle.check("someone-new", "192.0.2.7")
    throttle.check("someone-new", "192.0.2.8")  # another client is not affected


def test_client_lock_ends_after_a_quiet_day() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    fail_until_throttled(throttle, clock, 100, client="192.0.2.7")
    with pytest.raises(LoginThrottledError) as caught:
        throttle.check(None, "192.0.2.7")
    assert caught.value.code == "client_locked"
    clock.advance(86400)
    throttle.check(None, "192.0.2.7")


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
    assert not throttle._locked
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


def test_a_flood_of_made_up_names_cannot_push_out_a_locked_account() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock, max_entries=50)
    for _ in range(100):
        throttle.failed("victim", None)
    for n in range(500):
        throttle.failed(f"noise{n}", None)
    assert len(throttle._counters) <= 50
    with pytest.raises(LoginThrottledError):
        throttle.check("victim", None)
