"""Style presets: named prompt templates read from ``webui/styles.toml`` (or another file).

A style wraps the user's prompt (``{prompt}`` in its template) and adds words to the negative
prompt. The file is checked when it is loaded: a broken preset stops the server with a sentence
naming the preset and the problem, rather than surprising a user later.

Portrait settings (optional; the Portrait page's recipe, core/portrait.py, uses them):
``portrait_strength`` (0.3..1) is the img2img strength at the middle of the "likeness <-> style"
slider (higher: the style leaves the photo further behind), ``portrait_likeness`` (0..1) the
slider's starting point when the style is picked. Absent: the recipe's own defaults.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from core.errors import InputError

DEFAULT_STYLES_FILE = Path(__file__).with_name("styles.toml")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_FIELDS = ("id", "name_en", "name_zh", "prompt", "negative")
# Optional numbers: name -> (lowest, highest) allowed.
_PORTRAIT_FIELDS = {"portrait_strength": (0.3, 1.0), "portrait_likeness": (0.0, 1.0)}
DEFAULT_PORTRAIT_LIKENESS = 0.6


@dataclass(frozen=True)
class Style:
    id: str
    name_en: str
    name_zh: str
    prompt: str
    negative: str
    portrait_strength: float | None = None
    portrait_likeness: float | None = None

    def name(self, lang: str) -> str:
        return self.name_zh if lang == "zh" else self.name_en

    def apply(self, prompt: str, negative_prompt: str) -> tuple[str, str]:
        """The styled prompt and negative prompt."""
        styled = self.prompt.replace("{prompt}", prompt.strip())
        negative = ", ".join(part for part in (negative_prompt.strip(), self.negative) if part)
        return styled, negative


def _invalid(detail: str) -> InputError:
    return InputError("styles_invalid", "The styles file is invalid: {detail}.", detail=detail)


def load_styles(path: Path = DEFAULT_STYLES_FILE) -> dict[str, Style]:
    """Read and check a styles file; styles by id, in file order."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _invalid(f"{path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise _invalid(f"not valid TOML ({exc})") from None
    entries = data.get("style")
    if not isinstance(entries, list) or not entries:
        raise _invalid("it has no [[style]] entries")
    styles: dict[str, Style] = {}
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise _invalid(f"style #{number} is not a table")
        missing = [name for name in _FIELDS if not isinstance(entry.get(name), str)]
        if missing:
            raise _invalid(f"style #{number} lacks {', '.join(missing)}")
        extra = sorted(set(entry) - set(_FIELDS) - set(_PORTRAIT_FIELDS))
        if extra:
            raise _invalid(f"style #{number} has unknown key(s) {', '.join(extra)}")
        texts = {name: entry[name].strip() for name in _FIELDS}
        numbers = {name: _portrait_number(entry, name, number) if name in entry else None
                   for name in _PORTRAIT_FIELDS}
        style = Style(texts["id"], texts["name_en"], texts["name_zh"], texts["prompt"],
                      texts["negative"], numbers["portrait_strength"], numbers["portrait_likeness"])
        if not _ID.match(style.id):
            raise _invalid(f"style #{number} has an id that is not lower-case letters, digits, '-'")
        if style.id in styles:
            raise _invalid(f"style id {style.id} appears twice")
        if style.prompt.count("{prompt}") != 1:
            raise _invalid(f"style {style.id}'s prompt must contain {{prompt}} exactly once")
        if not style.name_en or not style.name_zh:
            raise _invalid(f"style {style.id} needs a name in both languages")
        styles[style.id] = style
    return styles


def _portrait_number(entry: dict[str, object], name: str, number: int) -> float:
    value = entry[name]
    low, high = _PORTRAIT_FIELDS[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _invalid(f"style #{number}'s {name} must be a number from {low:g} to {high:g}")
    return float(value)


def find_style(styles: dict[str, Style], key: str | None) -> Style | None:
    """A style by id or by its English or Chinese name; ``None``/empty/"none" = no style."""
    if key is None or not key.strip() or key.strip().lower() == "none":
        return None
    key = key.strip()
    for style in styles.values():
        if key in (style.id, style.name_en, style.name_zh) or key.lower() == style.name_en.lower():
            return style
    # Never echo the value: a free-text style field may hold anything a person typed.
    raise InputError("bad_style", "There is no style with that name; pick one from the list.")
