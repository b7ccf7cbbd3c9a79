"""Accounts: no personal identifiers, secrets stored only hashed or wrapped, sessions that end."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import stat
import time
from pathlib import Path

import argon2
import pytest

from privacy import keywrap, sealing
from privacy.accounts import (
    AccountError,
    Accounts,
    InviteError,
    LoginFailedError,
    TokenError,
    UsernameError,
    check_username,
)
from privacy.auditlog import AuditLog
from privacy.errors import PrivacyError
from privacy.passwords import make_hasher
from privacy.throttle import LoginThrottledError

FAST = make_hasher(time_cost=1, memory_cost=8, parallelism=1)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingHasher(argon2.PasswordHasher):
    """A cheap hasher that counts verifications, to prove throttled attempts skip Argon2."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verifications = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002
        self.verifications += 1
        return super().verify(hash, password)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def accounts(tmp_path: Path, clock: Clock) -> Accounts:
    store = Accounts(
        tmp_path / "obscura.db", hasher=FAST, clock=clock, audit=AuditLog(tmp_path / "audit")
    )
    yield store
    store.close()


def every_file_bytes(folder: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def encodings(secret: str) -> list[bytes]:
    raw = secret.encode()
    forms = [raw, raw.hex().encode(), base64.b64encode(raw), base64.urlsafe_b64encode(raw)]
    try:  # tokens and codes are base64url of random bytes: look for those bytes too
        decoded = base64.urlsafe_b64decode(secret.split("_")[-1] + "=" * (-len(secret) % 4))
        if len(decoded) >= 12:
            forms += [decoded, decoded.hex().encode()]
    except ValueError:
        pass
    return forms


# -- what the schema can hold -------------------------------------------------------------------


def test_schema_is_exactly_the_declared_columns_with_no_place_for_contact_details(
    accounts: Accounts, tmp_path: Path
) -> None:
    db = sqlite3.connect(tmp_path / "obscura.db")
    tables = {
        name: [row[1] for row in db.execute(f"PRAGMA table_info({name})")]
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    assert tables == {
        "users": [
            "id",
            "username",
            "role",
            "password_hash",
            "public_key",
            "wrapped_private_key",
            "retention_days",
            "embed_parameters",
            "created_day",
        ],
        "invites": ["code_hash", "role", "expires_at", "created_by"],
        "tokens": ["id", "user_id", "name", "token_hash", "created_day", "last_used_day"],
        "sessions": ["id_hash", "user_id", "created_at", "last_seen_at"],
    }
    columns = [c for cols in tables.values() for c in cols]
    for forbidden in ("mail", "phone", "agent", "addr", "real", "first", "last_name", "device"):
        assert not any(forbidden in c for c in columns), forbidden
    assert "ip" not in columns and not any(
        c.startswith("ip_") or c.endswith("_ip") for c in columns
    )


def test_database_is_private_and_keeps_no_write_ahead_log(
    accounts: Accounts, tmp_path: Path
) -> None:
    accounts.create_user("alice", "correct horse")
    assert stat.S_IMODE((tmp_path / "obscura.db").stat().st_mode) == 0o600
    db = sqlite3.connect(tmp_path / "obscura.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("obscura.db")) == [
        "obscura.db"
    ]


# -- usernames ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice", "bob_2", "studio-7", "abc", "a" * 32, "x123456"])
def test_plain_nicknames_are_accepted(name: str) -> None:
    check_username(name)


@pytest.mark.parametrize("name", ["alice@example.com", "alice@home", "@alice"])
def test_email_address_as_username_is_refused_with_the_reason(name: str) -> None:
    with pytest.raises(UsernameError) as caught:
        check_username(name)
    assert caught.value.code == "username_email"
    assert "never stores contact details" in str(caught.value)
    assert name not in str(caught.value)


@pytest.mark.parametrize("name", ["0612345678", "+4915112345678", "555-123-4567", "bob5551234"])
def test_phone_number_as_username_is_refused_with_the_reason(name: str) -> None:
    with pytest.raises(UsernameError) as caught:
        check_username(name)
    assert caught.value.code == "username_phone"
    assert "never stores contact details" in str(caught.value)


@pytest.mark.parametrize("name", ["al", "a" * 33, "Alice", "al ice", "ali.ce", "élodie", ""])
def test_username_outside_the_rules_is_refused(name: str) -> None:
    with pytest.raises(UsernameError, match="3 to 32 characters"):
        check_username(name)


def test_taken_username_is_refused(accounts: Accounts) -> None:
    accounts.create_user("alice", "correct horse")
    with pytest.raises(UsernameError, match="already taken"):
        accounts.create_user("alice", "other password")


# -- users and keys ----------------------------------------------------------------------------


def test_new_user_gets_a_pseudonymous_id_and_a_wrapped_key_pair(
    accounts: Accounts, tmp_path: Path
) -> None:
    user_id = accounts.create_user("alice", "correct horse", role="admin")
    assert user_id.startswith("u_") and len(user_id) == 34 and "alice" not in user_id
    assert [(u.id, u.username, u.role) for u in accounts.list_users()] == [
        (user_id, "alice", "admin")
    ]
    session = accounts.login("alice", "correct horse")
    public_key = accounts.public_key(user_id)
    assert sealing.public_key_of(session.private_key) == public_key
    sealed = sealing.seal(public_key, b"picture key", context=b"ctx")
    assert sealing.unseal(session.private_key, sealed, context=b"ctx") == b"picture key"
    row = (
        sqlite3.connect(tmp_path / "obscura.db")
        .execute("SELECT password_hash, wrapped_private_key, created_day FROM users")
        .fetchone()
    )
    assert row[0].startswith("$argon2id$")
    assert session.private_key not in row[1]
    assert len(row[2]) == 10  # a day, not a moment


def test_deleted_users_wrapped_key_is_gone_from_every_database_file(
    accounts: Accounts, tmp_path: Path
) -> None:
    accounts.create_user("alice", "correct horse")
    bob = accounts.create_user("bob-canary", "bobs password")
    token = accounts.create_token(bob, "laptop")
    session = accounts.login("bob-canary", "bobs password")
    wrapped, password_hash = (
        sqlite3.connect(tmp_path / "obscura.db")
        .execute("SELECT wrapped_private_key, password_hash FROM users WHERE id = ?", (bob,))
        .fetchone()
    )
    assert wrapped in every_file_bytes(tmp_path)

    accounts.delete_user(bob)

    stored = every_file_bytes(tmp_path)
    assert wrapped not in stored
    assert wrapped[keywrap.HEADER_LENGTH :] not in stored
    assert password_hash.encode() not in stored
    assert b"bob-canary" not in stored
    with pytest.raises(AccountError):
        session.private_key  # noqa: B018  (the key in memory is forgotten too)
    with pytest.raises(TokenError):
        accounts.verify_token(token)
    assert accounts.get_session(session.token or "") is None
    assert [u.username for u in accounts.list_users()] == ["alice"]


def test_deleting_an_unknown_user_is_refused(accounts: Accounts) -> None:
    with pytest.raises(AccountError, match="No account"):
        accounts.delete_user("u_" + "0" * 32)


def test_no_password_token_or_code_is_written_anywhere(tmp_path: Path, clock: Clock) -> None:
    data = tmp_path / "data"
    store = Accounts.in_data_dir(data, hasher=FAST, clock=clock)
    secrets_given: list[str] = []
    names = ["alice-canary", "bob-canary"]
    passwords = ["Tr0ub4dor&3-alice", "hunter2-bob-canary-pw"]
    alice = store.create_user(names[0], passwords[0], role="admin")
    code = store.create_invite("member", alice)
    bob = store.register_with_invite(code, names[1], passwords[1])
    secrets_given.append(code)
    for name, password in zip(names, passwords, strict=True):
        session = store.login(name, password, client="203.0.113.9")
        assert session.token is not None
        secrets_given += [session.token, password]
        assert store.get_session(session.token) is not None
    for user_id in (alice, bob):
        api_token = store.create_token(user_id, "script")
        assert store.verify_token(api_token, client="203.0.113.9") == user_id
        secrets_given.append(api_token)
    with pytest.raises(LoginFailedError):
        store.login(names[0], "a wrong guess!", client="203.0.113.9")
    store.set_password(bob, "a brand new password", old=passwords[1])
    secrets_given.append("a brand new password")
    store.close()

    stored = every_file_bytes(data)
    assert (data / "obscura.db").is_file() and list((data / "audit").glob("*.jsonl"))
    for secret in secrets_given + ["a wrong guess!"]:
        for form in encodings(secret):
            assert form not in stored, "a secret was written to the data directory"
    audit = every_file_bytes(data / "audit")
    for personal in names + ["203.0.113.9", "script"]:
        assert personal.encode() not in audit


# -- login -------------------------------------------------------------------------------------


def test_wrong_password_and_unknown_user_get_the_same_sentence(accounts: Accounts) -> None:
    accounts.create_user("alice", "correct horse")
    with pytest.raises(LoginFailedError) as wrong:
        accounts.login("alice", "wrong horse")
    with pytest.raises(LoginFailedError) as unknown:
        accounts.login("nobody", "wrong horse")
    assert str(wrong.value) == str(unknown.value) == "The username or password is wrong."
    assert isinstance(wrong.value, PrivacyError)


def test_login_ignores_case_of_the_username(accounts: Accounts) -> None:
    accounts.create_user("alice", "correct horse")
    assert accounts.login("Alice", "correct horse").role == "member"


def test_twenty_wrong_passwords_are_throttled_without_hashing(tmp_path: Path, clock: Clock) -> None:
    hasher = CountingHasher()
    store = Accounts(tmp_path / "obscura.db", hasher=hasher, clock=clock)
    store.create_user("alice", "correct horse")
    outcomes = []
    for n in range(20):
        try:
            store.login("alice", f"guess number {n}", client="198.51.100.4")
        except LoginThrottledError as err:
            outcomes.append(err.code)
        except LoginFailedError:
            outcomes.append("failed")
    assert outcomes == ["failed"] * 5 + ["login_throttled"] * 15
    assert hasher.verifications == 5
    # Even the right password waits out the back-off...
    with pytest.raises(LoginThrottledError):
        store.login("alice", "correct horse", client="198.51.100.4")
    clock.advance(2)
    # ...and then works, which ends the run of failures.
    store.login("alice", "correct horse", client="198.51.100.4")
    assert store.throttle.failures("alice") == 0


def test_wrong_passwords_from_one_address_never_lock_the_owner_out(
    tmp_path: Path, clock: Clock
) -> None:
    # Issue 9.6: six wrong passwords from one address used to refuse alice everywhere, and
    # 100 locked her account for a day. The guesser's own pair still waits.
    waits: list[float] = []
    store = Accounts(tmp_path / "obscura.db", hasher=FAST, clock=clock, sleep=waits.append)
    store.create_user("alice", "correct horse")
    failures = 0
    while failures < 120:  # a patient attacker who waits out every back-off
        try:
            store.login("alice", f"guess {failures}", client="203.0.113.9")
        except LoginThrottledError as err:
            assert err.retry_after is not None and err.retry_after <= 900
            clock.advance(err.retry_after)
        except LoginFailedError:
            failures += 1
    with pytest.raises(LoginThrottledError):
        store.login("alice", "correct horse", client="203.0.113.9")
    session = store.login("alice", "correct horse", client="198.51.100.1")
    assert session.user_id
    assert waits and max(waits) <= 8  # slowed down while under attack, never refused
    assert store.throttle.failures("alice") == 0


def test_admin_password_reset_lifts_the_back_off(tmp_path: Path, clock: Clock) -> None:
    store = Accounts(tmp_path / "obscura.db", hasher=FAST, clock=clock, sleep=lambda _: None)
    alice = store.create_user("alice", "correct horse")
    for n in range(8):
        try:
            store.login("alice", f"guess {n}")
        except (LoginFailedError, LoginThrottledError):
            pass
    with pytest.raises(LoginThrottledError):
        store.login("alice", "correct horse")
    # The reset may come from another process (the CLI): a fresh store has its own throttle.
    other = Accounts(tmp_path / "obscura.db", hasher=FAST, clock=clock)
    other.set_password(alice, "a new password")
    store.login("alice", "a new password")


def test_login_rehashes_and_rewraps_when_the_cost_changes(tmp_path: Path, clock: Clock) -> None:
    old = Accounts(tmp_path / "obscura.db", hasher=FAST, clock=clock)
    alice = old.create_user("alice", "correct horse")
    key_before = old.login("alice", "correct horse").private_key
    old.close()
    stronger = make_hasher(time_cost=2, memory_cost=16, parallelism=1)
    new = Accounts(tmp_path / "obscura.db", hasher=stronger, clock=clock)
    assert new.login("alice", "correct horse").private_key == key_before
    stored_hash, wrapped = (
        sqlite3.connect(tmp_path / "obscura.db")
        .execute("SELECT password_hash, wrapped_private_key FROM users WHERE id = ?", (alice,))
        .fetchone()
    )
    assert "m=16,t=2,p=1" in stored_hash
    assert not keywrap.needs_rewrap(
        wrapped,
        argon2.Parameters(
            type=argon2.Type.ID,
            version=19,
            salt_len=16,
            hash_len=32,
            time_cost=2,
            memory_cost=16,
            parallelism=1,
        ),
    )
    assert new.login("alice", "correct horse").private_key == key_before


def test_password_reset_during_a_login_voids_that_login(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Accounts(tmp_path / "obscura.db", hasher=FAST, clock=clock)
    alice = store.create_user("alice", "correct horse")
    real_unwrap = keywrap.unwrap

    def reset_meanwhile(blob: bytes, password: str) -> bytes:
        key = real_unwrap(blob, password)
        Accounts(tmp_path / "obscura.db", hasher=FAST).set_password(alice, "reset by admin")
        return key

    monkeypatch.setattr(keywrap, "unwrap", reset_meanwhile)
    with pytest.raises(LoginFailedError):
        store.login("alice", "correct horse")
    monkeypatch.undo()
    assert len(store.keys) == 0
    store.login("alice", "reset by admin")


def test_login_async_keeps_the_event_loop_free(tmp_path: Path) -> None:
    # A cost high enough that blocking would show (tens of milliseconds per Argon2 run).
    hasher = make_hasher(time_cost=3, memory_cost=64 * 1024, parallelism=1)
    store = Accounts(tmp_path / "obscura.db", hasher=hasher)
    store.create_user("alice", "correct horse")

    async def longest_gap(work: object) -> tuple[float, float]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.02)
        started = time.perf_counter()
        await work()  # type: ignore[operator]
        elapsed = time.perf_counter() - started
        done.set()
        await tick
        return max(gaps), elapsed

    async def four_async_logins() -> None:
        sessions = await asyncio.gather(
            *(store.login_async("alice", "correct horse") for _ in range(4))
        )
        assert len({s.token for s in sessions}) == 4

    async def four_blocking_logins() -> None:
        for _ in range(4):
            store.login("alice", "correct horse")

    async_gap, async_time = asyncio.run(longest_gap(four_async_logins))
    blocking_gap, _ = asyncio.run(longest_gap(four_blocking_logins))
    # Relative, not absolute: on a loaded 2-core machine any tick can be late, but only a
    # blocked loop waits as long as a whole login.
    assert blocking_gap > 0.1  # the control: a blocking login does stall the loop
    assert async_time > 0.1
    assert async_gap < blocking_gap / 3


# -- sessions ----------------------------------------------------------------------------------


def test_session_token_is_shown_once_and_not_printed_in_repr(accounts: Accounts) -> None:
    accounts.create_user("alice", "correct horse")
    session = accounts.login("alice", "correct horse")
    assert session.token and len(session.token) >= 43
    assert session.token not in repr(session)
    again = accounts.get_session(session.token)
    assert again is not None and again.token is None and again.user_id == session.user_id


def test_idle_session_expires_after_thirty_minutes(accounts: Accounts, clock: Clock) -> None:
    accounts.create_user("alice", "correct horse")
    session = accounts.login("alice", "correct horse")
    assert session.token is not None
    clock.advance(29 * 60)
    assert accounts.get_session(session.token) is not None  # activity restarts the idle clock
    clock.advance(29 * 60)
    assert accounts.get_session(session.token) is not None
    clock.advance(30 * 60)
    assert accounts.get_session(session.token) is None
    with pytest.raises(AccountError, match="log in again"):
        session.private_key  # noqa: B018
    assert len(accounts.keys) == 0


def test_busy_session_still_ends_after_twelve_hours(accounts: Accounts, clock: Clock) -> None:
    accounts.create_user("alice", "correct horse")
    session = accounts.login("alice", "correct horse")
    assert session.token is not None
    for _ in range(12 * 4 - 1):
        clock.advance(15 * 60)
        assert accounts.get_session(session.token) is not None
    clock.advance(15 * 60)
    assert accounts.get_session(session.token) is None
    assert len(accounts.keys) == 0


def test_sweep_ends_expired_sessions_and_calls_back(tmp_path: Path, clock: Clock) -> None:
    ended: list[str] = []
    store = Accounts(tmp_path / "obscura.db", hasher=FAST, clock=clock, on_session_end=ended.append)
    alice = store.create_user("alice", "correct horse")
    store.login("alice", "correct horse")
    clock.advance(31 * 60)
    assert store.sweep_sessions() == 1
    assert ended == [alice] and len(store.keys) == 0


def test_session_end_callback_waits_for_the_last_session(tmp_path: Path, clock: Clock) -> None:
    ended: list[str] = []
    store = Accounts(tmp_path / "obscura.db", hasher=FAST, clock=clock, on_session_end=ended.append)
    alice = store.create_user("alice", "correct horse")
    phone = store.login("alice", "correct horse").token or ""
    laptop = store.login("alice", "correct horse").token or ""
    assert store.logged_in_users() == {alice}
    store.logout(phone)
    assert ended == []
    store.logout(laptop)
    assert ended == [alice] and store.logged_in_users() == set()


def test_logout_forgets_the_unwrapped_key(accounts: Accounts) -> None:
    accounts.create_user("alice", "correct horse")
    session = accounts.login("alice", "correct horse")
    other = accounts.login("alice", "correct horse")
    assert session.token and other.token
    accounts.logout(session.token)
    assert accounts.get_session(session.token) is None
    with pytest.raises(AccountError):
        session.private_key  # noqa: B018
    assert other.private_key  # another session of the same person goes on
    accounts.logout("no such token")


def test_sessions_from_an_earlier_process_need_a_new_login(tmp_path: Path, clock: Clock) -> None:
    first = Accounts(tmp_path / "obscura.db", hasher=FAST, clock=clock)
    first.create_user("alice", "correct horse")
    token = first.login("alice", "correct horse").token
    first.close()
    restarted = Accounts(tmp_path / "obscura.db", hasher=FAST, clock=clock)
    assert restarted.get_session(token or "") is None


# -- passwords ---------------------------------------------------------------------------------


def test_owner_password_change_keeps_the_gallery_key(accounts: Accounts) -> None:
    alice = accounts.create_user("alice", "correct horse")
    key = accounts.login("alice", "correct horse").private_key
    with pytest.raises(LoginFailedError):
        accounts.set_password(alice, "new password", old="not my password")
    change = accounts.set_password(alice, "new password", old="correct horse")
    assert change.kept_gallery
    assert accounts.login("alice", "new password").private_key == key
    with pytest.raises(LoginFailedError):
        accounts.login("alice", "correct horse")


def test_admin_reset_makes_a_new_key_pair_and_ends_sessions(accounts: Accounts) -> None:
    alice = accounts.create_user("alice", "correct horse")
    session = accounts.login("alice", "correct horse")
    old_public = accounts.public_key(alice)
    sealed = sealing.seal(old_public, b"old picture key", context=b"ctx")
    change = accounts.set_password(alice, "reset by admin")
    assert not change.kept_gallery
    assert accounts.public_key(alice) != old_public
    assert accounts.get_session(session.token or "") is None
    new_key = accounts.login("alice", "reset by admin").private_key
    with pytest.raises(PrivacyError):  # the old pictures are out of reach for good
        sealing.unseal(new_key, sealed, context=b"ctx")


def test_new_password_must_meet_the_policy(accounts: Accounts) -> None:
    alice = accounts.create_user("alice", "correct horse")
    with pytest.raises(PrivacyError, match="at least 8"):
        accounts.set_password(alice, "short")


# -- invites -----------------------------------------------------------------------------------


def test_invite_code_works_once(accounts: Accounts) -> None:
    admin = accounts.create_user("alice", "correct horse", role="admin")
    code = accounts.create_invite("member", admin)
    bob = accounts.register_with_invite(code, "bob", "bobs password")
    assert accounts.user(bob).role == "member"
    with pytest.raises(InviteError, match="already used, has expired or was mistyped"):
        accounts.register_with_invite(code, "carol", "carols password")


def test_invite_code_expires(accounts: Accounts, clock: Clock) -> None:
    code = accounts.create_invite("admin", None, ttl=3600)
    clock.advance(3601)
    with pytest.raises(InviteError):
        accounts.register_with_invite(code, "bob", "bobs password")


def test_invite_stays_usable_when_the_username_is_taken(accounts: Accounts) -> None:
    accounts.create_user("alice", "correct horse")
    code = accounts.create_invite("admin")
    with pytest.raises(UsernameError):
        accounts.register_with_invite(code, "alice", "other password")
    with pytest.raises(UsernameError):
        accounts.register_with_invite(code, "bob@example.com", "other password")
    assert (
        accounts.user(accounts.register_with_invite(code, "bob", "bobs password")).role == "admin"
    )


def test_only_an_admin_can_invite(accounts: Accounts) -> None:
    member = accounts.create_user("bob", "bobs password")
    with pytest.raises(AccountError, match="Only an administrator"):
        accounts.create_invite("member", member)


# -- API tokens --------------------------------------------------------------------------------


def test_api_token_identifies_its_user_until_revoked(accounts: Accounts, clock: Clock) -> None:
    alice = accounts.create_user("alice", "correct horse")
    token = accounts.create_token(alice, "krita")
    assert token.startswith("obscura_") and len(token) >= 8 + 43
    assert accounts.list_tokens(alice)[0].last_used_day is None
    assert accounts.verify_token(token) == alice
    assert accounts.list_tokens(alice)[0].last_used_day == "2027-01-15"
    accounts.revoke_token(alice, "krita")
    with pytest.raises(TokenError, match="not valid"):
        accounts.verify_token(token)
    assert accounts.list_tokens(alice) == []
    with pytest.raises(TokenError):
        accounts.revoke_token(alice, "krita")


def test_token_names_are_unique_per_user(accounts: Accounts) -> None:
    alice = accounts.create_user("alice", "correct horse")
    accounts.create_token(alice, "krita")
    with pytest.raises(TokenError, match="already has a token"):
        accounts.create_token(alice, "krita")
    with pytest.raises(TokenError, match="1 to 40"):
        accounts.create_token(alice, "has spaces in it")


def test_bad_tokens_from_one_address_do_not_lock_out_good_tokens(
    accounts: Accounts, tmp_path: Path
) -> None:
    # Issue 9.6: six random Bearer tokens used to make every valid token from there 401.
    alice = accounts.create_user("alice", "correct horse")
    good = accounts.create_token(alice, "krita")
    for n in range(200):
        with pytest.raises(TokenError):
            accounts.verify_token(f"obscura_guess{n}", client="198.51.100.4")
    assert accounts.verify_token(good, client="198.51.100.4") == alice
    logged = [e for e in AuditLog(tmp_path / "audit").events() if e["event"] == "token_failed"]
    assert len(logged) == 1 and logged[0]["count"] == 1  # a bounded log, not 200 lines


# -- settings ----------------------------------------------------------------------------------


def test_settings_default_to_thirty_days_and_no_embedded_parameters(accounts: Accounts) -> None:
    alice = accounts.create_user("alice", "correct horse")
    settings = accounts.settings(alice)
    assert (settings.retention_days, settings.embed_parameters) == (30, False)
    accounts.update_settings(alice, retention_days=0, embed_parameters=True)
    assert accounts.settings(alice).retention_days == 0
    assert accounts.settings(alice).embed_parameters is True
    with pytest.raises(AccountError, match="0 to 3650"):
        accounts.update_settings(alice, retention_days=-1)


def test_audit_log_gets_pseudonymous_account_events(accounts: Accounts, tmp_path: Path) -> None:
    alice = accounts.create_user("alice", "correct horse")
    accounts.login("alice", "correct horse")
    with pytest.raises(LoginFailedError):
        accounts.login("alice", "wrong horse")
    accounts.delete_user(alice)
    events = [(e["event"], e.get("user")) for e in AuditLog(tmp_path / "audit").events()]
    assert events == [
        ("user_created", alice),
        ("login_ok", alice),
        ("login_failed", alice),
        ("user_deleted", alice),
    ]


def test_new_accounts_get_the_configured_default_retention(tmp_path: Path) -> None:
    store = Accounts(
        tmp_path / "obscura.db",
        hasher=make_hasher(time_cost=1, memory_cost=8, parallelism=1),
        default_retention_days=7,
    )
    user = store.create_user("carol", "correct horse")
    assert store.settings(user).retention_days == 7
    with pytest.raises(ValueError):
        Accounts(tmp_path / "other.db", default_retention_days=-1)


def test_login_refuses_a_public_key_that_does_not_match_the_wrapped_private_key(
    tmp_path: Path,
) -> None:
    import sqlite3

    from privacy.accounts import AccountError
    from privacy.sealing import generate_owner_keypair

    store = Accounts(tmp_path / "obscura.db", hasher=FAST)
    user = store.create_user("dora", "correct horse")
    _, intruder_public = generate_owner_keypair()
    with sqlite3.connect(tmp_path / "obscura.db") as db:  # someone with write access to the file
        db.execute("UPDATE users SET public_key = ? WHERE id = ?", (intruder_public, user))
    with pytest.raises(AccountError) as err:
        store.login("dora", "correct horse")
    assert err.value.code == "key_mismatch"
