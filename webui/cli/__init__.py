"""The ``obscura`` command line. Every subcommand's ``--help`` is its reference."""

from __future__ import annotations

import click

import webui  # noqa: F401  (privacy environment before any heavy import)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="obscura")
def main() -> None:
    """Obscura: a private AI painting studio that runs on your own machine.

    Nothing leaves the machine: models load from local folders only, uploads are encrypted
    while they wait and destroyed when their job ends, and no account holds an e-mail address,
    phone number or real name.

    Settings come from built-in defaults, then <data-dir>/obscura.toml, then OBSCURA_*
    environment variables, then flags (see docs/configuration.md).
    """


# Subcommands are registered below, one line per module.
# -- engine (core) --
from webui.cli.engine import demo_model, generate, models  # noqa: E402

main.add_command(generate)
main.add_command(demo_model)
main.add_command(models)
# -- accounts (privacy) --
from webui.cli.accounts import invite, token, user  # noqa: E402

main.add_command(user)
main.add_command(invite)
main.add_command(token)
# -- audit (privacy) --
from webui.cli.audit import audit  # noqa: E402

main.add_command(audit)
# -- server (webui) --
from webui.cli.serve import serve  # noqa: E402

main.add_command(serve)
