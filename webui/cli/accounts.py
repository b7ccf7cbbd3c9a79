"""``obscura user``, ``obscura invite`` and ``obscura token``: accounts from the command line.

Whoever can run these commands can read the data directory, so they need no login: they are
the administrator's tools (docs/accounts.md). Secrets (invite codes, API tokens) are printed once
and never again; passwords are read from a hidden prompt or, for scripts, from standard input.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from core.errors import InputError
from privacy.accounts import Accounts, check_username, ensure_intact
from privacy.errors import PrivacyError
from privacy.gallery import Gallery
from privacy.passwords import check_policy
from webui.cli.options import data_dir_option, load, password_stdin_option


@contextmanager
def _accounts(data_dir: Path | None) -> Iterator[tuple[Accounts, Path]]:
    """Open the accounts store; every refusal becomes a one-sentence error and exit code 1.

    A data folder that has held accounts but whose database is lost or damaged is refused
    (``ensure_intact``), so no command quietly starts a new, empty database over it.
    """
    try:
        settings = load({"data_dir": data_dir})
        root = settings.data_dir
        ensure_intact(root)
        accounts = Accounts.in_data_dir(root, default_retention_days=settings.retention_days)
    except (PrivacyError, InputError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        yield accounts, root
    except (PrivacyError, InputError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        accounts.close()


def _read_password(from_stdin: bool, prompt: str = "Password", *, confirm: bool = True) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise click.ClickException("No password was given on standard input.")
        return line.rstrip("\r\n")
    return str(click.prompt(prompt, hide_input=True, confirmation_prompt=confirm))


def _remove_gallery(root: Path, user_id: str) -> int:
    return Gallery(root / "gallery").delete_owner(user_id)


# -- obscura user ------------------------------------------------------------------------------


@click.group()
def user() -> None:
    """Accounts: add, list, delete, reset passwords.

    An account holds a username and secrets only: never an e-mail address, phone number or
    real name. Usernames are 3 to 32 of a-z, 0-9, '_' and '-'.
    """


@user.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Make an administrator (default: a member).")
@password_stdin_option
@data_dir_option
def user_add(name: str, admin: bool, password_stdin: bool, data_dir: Path | None) -> None:
    """Create the account NAME with a fresh gallery key (asks for the password twice)."""
    with _accounts(data_dir) as (accounts, _):
        check_username(name)  # refuse a bad name before asking for a password
        password = _read_password(password_stdin)
        check_policy(password)
        role = "admin" if admin else "member"
        user_id = accounts.create_user(name, password, role=role)
    click.echo(f"Created the {role} account (id {user_id}).")


@user.command("list")
@data_dir_option
def user_list(data_dir: Path | None) -> None:
    """List every account: username, role, day created and pseudonymous id."""
    with _accounts(data_dir) as (accounts, _):
        users = accounts.list_users()
    if not users:
        click.echo("No accounts yet: Obscura runs in personal mode (loopback only, no login).")
        return
    width = max(len("USERNAME"), *(len(u.username) for u in users))
    click.echo(f"{'USERNAME':<{width}}  {'ROLE':<6}  {'CREATED':<10}  ID")
    for u in users:
        click.echo(f"{u.username:<{width}}  {u.role:<6}  {u.created_day:<10}  {u.id}")


@user.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@data_dir_option
def user_delete(name: str, yes: bool, data_dir: Path | None) -> None:
    """Delete the account NAME and every picture in its gallery. This cannot be undone.

    The account's wrapped private key is destroyed first, so every picture becomes unreadable
    at once; then the gallery files, API tokens and sessions are removed.
    """
    with _accounts(data_dir) as (accounts, root):
        user_id = accounts.user_id_for(name)
        if not yes:
            click.confirm(
                "Delete this account and every picture in it? This cannot be undone",
                abort=True,
            )
        accounts.delete_user(user_id)
        pictures = _remove_gallery(root, user_id)
    click.echo(f"Deleted the account and {pictures} picture(s); its key was destroyed first.")


@user.command("passwd")
@click.argument("name")
@click.option(
    "--keep-gallery",
    is_flag=True,
    help="Also ask for the current password, so the gallery stays readable.",
)
@password_stdin_option
@data_dir_option
def user_passwd(name: str, keep_gallery: bool, password_stdin: bool, data_dir: Path | None) -> None:
    """Set a new password for NAME; ends the account's API tokens and lifts its login back-off.

    Every API token of the account stops working with the old password (whoever knew the old
    password may have made one): make new ones with `obscura token create`.

    Without --keep-gallery this is an administrator's reset: nobody knows the old password, so
    nobody can unlock the old gallery key. A new key pair is made and the account's earlier
    pictures, now unreadable by anyone, are removed. That is the point: an administrator can
    let someone back in but can never open their pictures.

    With --password-stdin and --keep-gallery, the first line is the current password and the
    second the new one.
    """
    with _accounts(data_dir) as (accounts, root):
        user_id = accounts.user_id_for(name)
        old = (
            _read_password(password_stdin, "Current password", confirm=False)
            if keep_gallery
            else None
        )
        new = _read_password(password_stdin, "New password")
        change = accounts.set_password(user_id, new, old=old)
        removed = 0 if change.kept_gallery else _remove_gallery(root, user_id)
    if change.kept_gallery:
        click.echo("Password changed; the gallery is kept; the account's API tokens have ended.")
    else:
        click.echo(
            "Password reset. The account has a new gallery key; its earlier "
            f"{removed} picture(s) could no longer be opened by anyone and were removed; "
            "its API tokens have ended."
        )


# -- obscura invite ----------------------------------------------------------------------------


@click.group()
def invite() -> None:
    """One-time invite codes for new members."""


@invite.command("create")
@click.option("--admin", is_flag=True, help="The new account will be an administrator.")
@click.option(
    "--ttl-hours",
    type=click.IntRange(1, 24 * 30),
    default=72,
    show_default=True,
    help="How long the code works.",
)
@data_dir_option
def invite_create(admin: bool, ttl_hours: int, data_dir: Path | None) -> None:
    """Make a one-time invite code and print it (once: only its hash is kept)."""
    with _accounts(data_dir) as (accounts, _):
        code = accounts.create_invite("admin" if admin else "member", None, ttl_hours * 3600)
    until = dt.datetime.now(dt.UTC) + dt.timedelta(hours=ttl_hours)
    click.echo(code)
    click.echo(
        f"Give this code to the new {'administrator' if admin else 'member'}; it works once, "
        f"until {until:%Y-%m-%d %H:%M} UTC. It is not shown again.",
        err=True,
    )


# -- obscura token -----------------------------------------------------------------------------


@click.group()
def token() -> None:
    """Named API tokens for scripts and tools (the /sdapi/v1 API)."""


@token.command("create")
@click.argument("username")
@click.option("--name", "token_name", required=True, help="A label, e.g. krita or laptop.")
@data_dir_option
def token_create(username: str, token_name: str, data_dir: Path | None) -> None:
    """Make an API token for USERNAME and print it (once: only its SHA-256 is kept)."""
    with _accounts(data_dir) as (accounts, _):
        secret = accounts.create_token(accounts.user_id_for(username), token_name)
    click.echo(secret)
    click.echo(
        "Keep this token safe; it is not shown again. Send it as 'Authorization: Bearer …', "
        "or as the password with your user name (HTTP Basic, e.g. webuiapi's set_auth); "
        "see docs/api.md.",
        err=True,
    )


@token.command("revoke")
@click.argument("username")
@click.option("--name", "token_name", required=True, help="The token's label.")
@data_dir_option
def token_revoke(username: str, token_name: str, data_dir: Path | None) -> None:
    """Revoke USERNAME's token called --name; it stops working at once."""
    with _accounts(data_dir) as (accounts, _):
        accounts.revoke_token(accounts.user_id_for(username), token_name)
    click.echo("Token revoked.")


@token.command("list")
@click.argument("username")
@data_dir_option
def token_list(username: str, data_dir: Path | None) -> None:
    """List USERNAME's tokens: name, day made, day last used (never the token itself)."""
    with _accounts(data_dir) as (accounts, _):
        tokens = accounts.list_tokens(accounts.user_id_for(username))
    if not tokens:
        click.echo("No API tokens.")
        return
    width = max(len("NAME"), *(len(t.name) for t in tokens))
    click.echo(f"{'NAME':<{width}}  {'CREATED':<10}  LAST USED")
    for t in tokens:
        click.echo(f"{t.name:<{width}}  {t.created_day:<10}  {t.last_used_day or 'never'}")

