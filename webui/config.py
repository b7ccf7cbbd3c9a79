"""Settings: built-in defaults < ``obscura.toml`` < ``OBSCURA_*`` environment < command-line flags.

The config file is ``--config PATH``, else ``$OBSCURA_CONFIG``, else ``<data-dir>/obscura.toml``
when it exists. Every key is documented in ``docs/configuration.md``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from core.errors import InputError
from privacy.audit import is_loopback  # the one definition

__all__ = ["is_loopback"]


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "obscura"


@dataclass
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    models_dir: Path | None = None  # None = <data_dir>/models
    # Textual-inversion embeddings outside the models folder (A1111 keeps them beside models/);
    # None = the models folder's embeddings/ (and A1111's ../embeddings); see docs/models.md.
    embeddings_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 7860
    tls: str | None = None  # "auto" or None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure_http: bool = False
    allow_disk_temp: bool = False
    device: str = "auto"  # auto | cuda | cuda:N | mps | cpu
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    # auto (core/planner.py chooses per model) | full | model-offload | group-offload |
    # sequential-offload | fp8-layerwise | bnb-8bit | bnb-4bit ("none" = full, the old name)
    memory_mode: str = "auto"
    default_model: str | None = None
    retention_days: int = 30
    max_upload_mb: int = 20
    max_upload_megapixels: int = 40
    # Extra names the server answers to (a reverse proxy's); see webui/middleware/host.py.
    allowed_hosts: list[str] = field(default_factory=list)

    @property
    def models_path(self) -> Path:
        return self.models_dir if self.models_dir is not None else self.data_dir / "models"


_PATH_KEYS = {"data_dir", "models_dir", "embeddings_dir", "tls_cert", "tls_key"}
_LIST_KEYS = {"allowed_hosts"}


def _coerce(name: str, value: Any, kind: Any) -> Any:
    if value is None:
        return None
    if name in _PATH_KEYS:
        return Path(str(value)).expanduser()
    if name in _LIST_KEYS:  # a TOML list, or a comma-separated string (environment)
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise InputError("bad_setting", "Setting {name} must be a list of names.", name=name)
        return [item.strip() for item in items if item.strip()]
    if kind in (bool, "bool"):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off", ""}:
            return False
        raise InputError("bad_setting", "Setting {name} must be true or false.", name=name)
    if kind in (int, "int"):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise InputError(
                "bad_setting", "Setting {name} must be a whole number.", name=name
            ) from None
    return str(value)


def load_settings(overrides: dict[str, Any] | None = None, config: Path | None = None) -> Settings:
    """Build the settings; ``overrides`` are command-line values (``None`` = not given)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    known = {f.name: f.type for f in fields(Settings)}
    merged: dict[str, Any] = {}

    env = {
        name: os.environ[f"OBSCURA_{name.upper()}"]
        for name in known
        if f"OBSCURA_{name.upper()}" in os.environ
    }
    data_dir = overrides.get("data_dir") or env.get("data_dir")
    config_path = config or (Path(os.environ["OBSCURA_CONFIG"]) if "OBSCURA_CONFIG" in os.environ else None)
    if config_path is None:
        candidate = Path(str(data_dir)).expanduser() if data_dir else default_data_dir()
        if (candidate / "obscura.toml").is_file():
            config_path = candidate / "obscura.toml"
    if config_path is not None:
        try:
            file_values = tomllib.loads(Path(config_path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError("config_missing", "The config file does not exist; check --config.") from None
        except tomllib.TOMLDecodeError as exc:
            raise InputError(
                "config_invalid", "The config file is not valid TOML ({detail}).", detail=str(exc)
            ) from None
        unknown = sorted(set(file_values) - set(known))
        if unknown:
            raise InputError(
                "config_unknown_key",
                "Unknown setting(s) in the config file: {keys}; see docs/configuration.md.",
                keys=", ".join(unknown),
            )
        merged.update(file_values)
    merged.update(env)
    merged.update(overrides)
    values = {name: _coerce(name, value, known[name]) for name, value in merged.items()}
    settings = Settings(**values)
    if not 0 <= settings.retention_days <= 3650:
        raise InputError(
            "bad_setting", "Setting retention_days must be between 0 and 3650 days.", name="retention_days"
        )
    return settings
