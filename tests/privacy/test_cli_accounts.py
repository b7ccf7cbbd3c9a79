"""``obscura user|invite|token``: friendly one-sentence errors, secrets printed once."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from privacy import passwords
from privacy.accounts import Accounts, LoginFailedError, TokenError
from privacy.gallery import Gallery
from privacy.passwords import make_hasher
from webui.cli import main

FAST = make_hasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "DEFAULT_HASHER", FAST)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


def run(data: Path, *args: str, input: str | None = None) -> Result:  # noqa: A002
    return CliRunner().invoke(main, [*args, "--data-dir", str(data)], input=input)


def store(data: Path) -> Accounts:
    return Accounts(data / "obscura.db", hasher=FAST)


def assert_friendly_error(result: Result, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    assert fragment in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_user_add_from_stdin_then_list(data: Path) -> None:
    result = run(
        data, "user", "add", "alice", "--admin", "--password-stdin", input="correct horse\n"
    )
    assert result.exit_code == 0, result.output
    assert "admin" in result.output and "correct horse" not in result.output
    listed = run(data, "user", "list")
    assert listed.exit_code == 0
    assert "alice" in listed.output and "admin" in listed.output and "u_" in listed.output
    assert store(data).login("alice", "correct horse").role == "admin"


def test_user_add_prompts_twice_for_a_hidden_password(data: Path) -> None:
    result = run(data, "user", "add", "bob", input="bobs password\nbobs password\n")
    assert result.exit_code == 0, result.output
    assert "bobs password" not in result.output  # hidden input is not echoed
    assert store(data).login("bob", "bobs password").role == "member"


def test_user_list_in_an_empty_data_dir_explains_personal_mode(data: Path) -> None:
    result = run(data, "user", "list")
    assert result.exit_code == 0 and "personal mode" in result.output


def test_email_username_is_refused_before_any_password_is_asked(data: Path) -> None:
    result = run(data, "user", "add", "alice@example.com", input="correct horse\ncorrect horse\n")
    assert_friendly_error(result, "never stores contact details")
    assert "Password" not in result.output
    assert "alice@example.com" not in result.output


def test_phone_number_username_is_refused(data: Path) -> None:
    result = run(data, "user", "add", "0612345678", "--password-stdin", input="correct horse\n")
    assert_friendly_error(result, "phone number")


def test_short_password_is_refused_with_a_sentence(data: Path) -> None:
    result = run(data, "user", "add", "alice", "--password-stdin", input="short\n")
    assert_friendly_error(result, "at least 8 characters")
    assert "short\n" not in result.output.replace("Error:", "")


def test_duplicate_username_is_refused(data: Path) -> None:
    run(data, "user", "add", "alice", "--password-stdin", input="correct horse\n")
    result = run(data, "user", "add", "alice", "--password-stdin", input="other password\n")
    assert_friendly_error(result, "already taken")


def test_user_delete_destroys_the_key_then_the_gallery(data: Path) -> None:
    accounts = store(data)
    alice = accounts.create_user("alice", "correct horse")
    gallery = Gallery(data / "gallery")
    gallery.store(alice, accounts.public_key(alice), b"\x89PNG fake picture bytes")
    assert (data / "gallery" / alice).is_dir()
    result = run(data, "user", "delete", "alice", "--yes")
    assert result.exit_code == 0, result.output
    assert "1 picture" in result.output
    assert not (data / "gallery" / alice).exists()
    assert store(data).list_users() == []


def test_user_delete_asks_for_confirmation(data: Path) -> None:
    store(data).create_user("alice", "correct horse")
    result = run(data, "user", "delete", "alice", input="n\n")
    assert result.exit_code == 1
    assert [u.username for u in store(data).list_users()] == ["alice"]


def test_deleting_an_unknown_user_is_a_friendly_error(data: Path) -> None:
    result = run(data, "user", "delete", "nobody", "--yes")
    assert_friendly_error(result, "No account has that name")


def test_admin_reset_sets_the_password_and_says_the_gallery_is_gone(data: Path) -> None:
    accounts = store(data)
    alice = accounts.create_user("alice", "correct horse")
    Gallery(data / "gallery").store(alice, accounts.public_key(alice), b"picture")
    result = run(data, "user", "passwd", "alice", "--password-stdin", input="a new password\n")
    assert result.exit_code == 0, result.output
    assert "new gallery key" in result.output and "removed" in result.output
    assert not (data / "gallery" / alice).exists()
    fresh = store(data)
    fresh.login("alice", "a new password")
    with pytest.raises(LoginFailedError):
        fresh.login("alice", "correct horse")


def test_passwd_keep_gallery_rewraps_the_same_key(data: Path) -> None:
    accounts = store(data)
    accounts.create_user("alice", "correct horse")
    key = accounts.login("alice", "correct horse").private_key
    result = run(
        data,
        "user",
        "passwd",
        "alice",
        "--keep-gallery",
        "--password-stdin",
        input="correct horse\na new password\n",
    )
    assert result.exit_code == 0, result.output
    assert "gallery is kept" in result.output
    assert store(data).login("alice", "a new password").private_key == key


def test_passwd_keep_gallery_with_a_wrong_current_password_fails(data: Path) -> None:
    store(data).create_user("alice", "correct horse")
    result = run(
        data,
        "user",
        "passwd",
        "alice",
        "--keep-gallery",
        "--password-stdin",
        input="wrong horse\na new password\n",
    )
    assert_friendly_error(result, "current password is wrong")


def test_invite_code_is_printed_once_and_registers_a_member(data: Path) -> None:
    result = CliRunner().invoke(main, ["invite", "create", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    code = result.stdout.strip()
    assert len(code) >= 20 and "\n" not in code
    assert "works once" in result.stderr
    accounts = store(data)
    assert (
        accounts.user(accounts.register_with_invite(code, "bob", "bobs password")).role == "member"
    )


def test_admin_invite_with_custom_ttl(data: Path) -> None:
    result = CliRunner().invoke(
        main, ["invite", "create", "--admin", "--ttl-hours", "1", "--data-dir", str(data)]
    )
    assert result.exit_code == 0, result.output
    accounts = store(data)
    new_id = accounts.register_with_invite(result.stdout.strip(), "carol", "carols password")
    assert accounts.user(new_id).role == "admin"


def test_token_create_list_revoke(data: Path) -> None:
    alice = store(data).create_user("alice", "correct horse")
    created = CliRunner().invoke(
        main, ["token", "create", "alice", "--name", "krita", "--data-dir", str(data)]
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert store(data).verify_token(token) == alice
    listed = run(data, "token", "list", "alice")
    assert "krita" in listed.output and token not in listed.output
    revoked = run(data, "token", "revoke", "alice", "--name", "krita")
    assert revoked.exit_code == 0, revoked.output
    with pytest.raises(TokenError):
        store(data).verify_token(token)
    again = run(data, "token", "revoke", "alice", "--name", "krita")
    assert_friendly_error(again, "no token with that name")


def test_token_for_an_unknown_user_is_a_friendly_error(data: Path) -> None:
    result = run(data, "token", "create", "nobody", "--name", "krita")
    assert_friendly_error(result, "No account")
