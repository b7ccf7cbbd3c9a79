"""The import direction of the product card: webui -> core, webui -> privacy; never core <-> privacy."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "core": {"privacy", "webui", "gradio", "fastapi", "starlette", "cryptography", "argon2"},
    "privacy": {
        "core",
        "webui",
        "diffusers",
        "transformers",
        "torch",
        "gradio",
        "fastapi",
        "starlette",
    },
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_and_privacy_import_nothing_they_must_not():
    offenders = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            bad = _imports(path) & forbidden
            if bad:
                offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert offenders == []


def test_the_check_would_catch_a_violation(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("from privacy.spool import Spool\nimport torch\n")
    assert _imports(sample) == {"privacy", "torch"}
