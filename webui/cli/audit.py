"""``obscura audit``: the command-line face of :mod:`privacy.audit` (which does the work)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from core.offline import PRIVACY_ENV
from privacy.audit import AuditSettings, default_temp_dirs, run_audit
from webui.cli.options import data_dir_option, load
from webui.ramdir import candidate_dirs


@click.command("audit")
@data_dir_option
@click.option(
    "--temp-dir",
    "temp_dirs",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    multiple=True,
    help="Another temp folder to scan (repeatable). GRADIO_TEMP_DIR, TMPDIR, /tmp/gradio and "
    "Obscura's RAM directory are scanned when they exist.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON report.")
def audit(data_dir: Path | None, temp_dirs: tuple[Path, ...], as_json: bool) -> None:
    """Check this installation against Obscura's privacy promises.

    Looks for pictures or picture signatures that are not encrypted (data dir, spool, temp and
    RAM folders), EXIF/GPS and XMP metadata, anything kept past its retention, files, tables and
    columns the data-flow inventory (docs/data-flows.md) does not declare, and risky settings
    (personal mode off loopback, LAN without TLS, temp files on disk, telemetry switches).

    Only reads; changes nothing. Exit status 0 when there are no findings, 1 otherwise.
    Findings in temp folders name the folder, never the file (Gradio names cached uploads
    after the user's file).
    """
    settings = load({"data_dir": data_dir})
    audit_settings = AuditSettings(
        host=settings.host,
        tls=settings.tls is not None
        or (settings.tls_cert is not None and settings.tls_key is not None),
        insecure_http=settings.insecure_http,
        allow_disk_temp=settings.allow_disk_temp,
        retention_days=settings.retention_days,
    )
    ram_dirs = [path for path in candidate_dirs(os.environ) if path.is_dir()]
    report = run_audit(
        settings.data_dir,
        audit_settings,
        temp_dirs=default_temp_dirs(os.environ, [*temp_dirs, *ram_dirs]),
        env=os.environ,
        expected_env=PRIVACY_ENV,
    )
    click.echo(report.to_json() if as_json else report.to_text())
    sys.exit(0 if report.ok else 1)
