"""Options that several ``obscura`` commands share, declared once (as Datasette's ``cli.py``
does), and the one way a command turns them into :class:`webui.config.Settings`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from core.errors import InputError

Command = TypeVar("Command", bound=Callable[..., Any])

DATA_DIR_HELP = "Obscura's data folder (default: $OBSCURA_DATA_DIR, else ~/.local/share/obscura)."
MODELS_DIR_HELP = (
    "Folder of local models (default: <data-dir>/models); may be an AUTOMATIC1111/Forge or "
    "ComfyUI models/ folder, which is only read."
)
EMBEDDINGS_DIR_HELP = (
    "Folder of textual-inversion embeddings (default: <models-dir>/embeddings, and A1111's "
    "embeddings/ beside its models/)."
)


def data_dir_option(command: Command) -> Command:
    """``--data-dir``: where accounts, galleries, the spool and the settings file live."""
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=DATA_DIR_HELP,
    )(command)


def models_dir_option(command: Command) -> Command:
    """``--models-dir``: the folder of local models."""
    return click.option(
        "--models-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=MODELS_DIR_HELP,
    )(command)


def embeddings_dir_option(command: Command) -> Command:
    """``--embeddings-dir``: textual-inversion embeddings kept outside the models folder."""
    return click.option(
        "--embeddings-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=EMBEDDINGS_DIR_HELP,
    )(command)


def password_stdin_option(command: Command) -> Command:
    return click.option(
        "--password-stdin",
        is_flag=True,
        help="Read the password from the first line of standard input instead of a prompt.",
    )(command)


def load(overrides: dict[str, Any], config: Path | None = None) -> Any:  # -> Settings
    """The settings for these flags; a bad setting is one sentence and exit status 1."""
    from webui.config import load_settings

    try:
        return load_settings(overrides, config=config)
    except InputError as err:
        raise click.ClickException(str(err)) from None
