"""``obscura serve``: start the web UI.

Gradio is imported only after the RAM directory is in place (it reads ``GRADIO_TEMP_DIR``
at import time): this module imports no Gradio at all; :mod:`webui.server` does, inside
:func:`serve`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from core.errors import InputError
from privacy.errors import PrivacyError
from webui.cli.options import data_dir_option, embeddings_dir_option, models_dir_option


@click.command()
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path),
              help="Settings file (default: $OBSCURA_CONFIG, else <data-dir>/obscura.toml).")
@click.option("--host", help="Address to listen on (default 127.0.0.1). Other addresses need "
              "accounts and TLS.")
@click.option("--port", type=int, help="Port (default 7860).")
@data_dir_option
@models_dir_option
@embeddings_dir_option
@click.option("--tls", type=click.Choice(["auto"]),
              help="'auto': HTTPS with a self-signed certificate made in <data-dir>/tls.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path),
              help="HTTPS with your own certificate (PEM); needs --tls-key.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path),
              help="The private key (PEM) of --tls-cert.")
@click.option("--insecure-http", is_flag=True, default=None,
              help="Allow plain HTTP on a LAN address (passwords and pictures in the clear).")
@click.option("--allow-disk-temp", is_flag=True, default=None,
              help="Start even without a RAM-backed temp folder (uploads may touch the disk).")
def serve(config: Path | None, **flags: object) -> None:
    """Start the web UI (default http://127.0.0.1:7860).

    With no accounts, Obscura runs in personal mode: no login, loopback only, nothing kept.
    Once an account exists (`obscura user add NAME --admin`), every page needs a login,
    galleries are kept encrypted, and other devices can connect over HTTPS (--host 0.0.0.0
    --tls auto). The demo model is created when no model is installed.
    """
    from webui.config import load_settings
    from webui.ramdir import acquire_ram_dir

    ram = None
    try:
        settings = load_settings(flags, config=config)
        ram = acquire_ram_dir(settings.allow_disk_temp)
        ram.activate()  # GRADIO_TEMP_DIR, TMPDIR: before gradio is imported
        from webui.server import serve as run_server

        run_server(settings, ram)
    except (InputError, PrivacyError) as err:
        click.echo(f"Error: {err}", err=True)
        sys.exit(2)
    finally:
        if ram is not None:
            ram.release()
