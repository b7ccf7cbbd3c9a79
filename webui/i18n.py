"""English and Simplified Chinese for every label and message.

The catalogues are plain TOML files next to this module (``messages_en.toml``,
``messages_zh.toml``) with three tables: ``labels`` (what the UI shows), ``messages`` (sentences
the server sends) and ``errors`` (translations of ``InputError.code`` / ``PrivacyError.code``).

The language is, in order: a ``?lang=`` choice (remembered in the ``obscura_lang`` cookie), the
cookie, the browser's ``Accept-Language``, English. Labels are translated in the browser by
Gradio's own i18n (:func:`gradio_translations`); the server translates sentences and errors with
:func:`text` and :func:`error_text`.
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

LANGUAGES: dict[str, str] = {"en": "English", "zh": "中文"}
DEFAULT_LANGUAGE = "en"
COOKIE = "obscura_lang"
# What the browser's navigator.language is set to, and what Gradio's front end looks up.
BROWSER_LOCALES: dict[str, str] = {"en": "en", "zh": "zh-CN"}
_HERE = Path(__file__).parent


@cache
def catalogue(lang: str) -> dict[str, dict[str, str]]:
    """The ``labels``, ``messages`` and ``errors`` tables of one language."""
    if lang not in LANGUAGES:
        lang = DEFAULT_LANGUAGE
    with open(_HERE / f"messages_{lang}.toml", "rb") as handle:
        return tomllib.load(handle)


def normalise(code: str | None) -> str | None:
    """``zh-CN``, ``zh_Hans``, ``ZH`` → ``zh``; unknown languages → ``None``."""
    if not code:
        return None
    primary = code.strip().replace("_", "-").split("-")[0].lower()
    return primary if primary in LANGUAGES else None


def from_accept_language(header: str | None) -> str | None:
    """The best supported language of an ``Accept-Language`` header, by q-value."""
    if not header:
        return None
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")):
        pieces = part.strip().split(";")
        quality = 1.0
        for param in pieces[1:]:
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        lang = normalise(pieces[0])
        if lang and quality > 0:
            ranked.append((-quality, index, lang))
    return min(ranked)[2] if ranked else None


def pick_language(
    accept_language: str | None = None, cookie: str | None = None, query: str | None = None
) -> str:
    return (
        normalise(query) or normalise(cookie) or from_accept_language(accept_language)
        or DEFAULT_LANGUAGE
    )


def language_of(request: Any) -> str:
    """The language of a Starlette/FastAPI request or a ``gr.Request`` (``None`` → English)."""
    if request is None:
        return DEFAULT_LANGUAGE
    headers = getattr(request, "headers", None) or {}
    cookies = getattr(request, "cookies", None) or {}
    query = getattr(request, "query_params", None) or {}
    return pick_language(headers.get("accept-language"), cookies.get(COOKIE), query.get("lang"))


def _format(template: str, params: dict[str, Any]) -> str | None:
    try:
        return template.format(**params)
    except (KeyError, IndexError, ValueError):
        return None


def text(key: str, lang: str = DEFAULT_LANGUAGE, **params: Any) -> str:
    """A label or message; ``KeyError`` for a key that neither catalogue has."""
    for table in ("messages", "labels"):
        template = catalogue(lang)[table].get(key)
        if template is not None:
            return _format(template, params) or template
    raise KeyError(key)


def error_text(err: BaseException, lang: str = DEFAULT_LANGUAGE) -> str:
    """The one-sentence message of a core/privacy error in ``lang``.

    Falls back to the error's own English sentence when the code has no translation or the
    translation needs a number the error did not carry.
    """
    code = getattr(err, "code", None)
    params = dict(getattr(err, "params", None) or {})
    if getattr(err, "retry_after", None) is not None:
        params["seconds"] = err.retry_after  # type: ignore[attr-defined]
    if code:
        template = catalogue(lang)["errors"].get(code)
        if template is not None:
            formatted = _format(template, params)
            if formatted is not None:
                return formatted
    message = getattr(err, "message", None)
    return str(message if message else err) or text("unexpected", lang)


def gradio_translations() -> dict[str, dict[str, str]]:
    """Label catalogues keyed by the locale names Gradio's front end uses."""
    out: dict[str, dict[str, str]] = {}
    for lang, locale in BROWSER_LOCALES.items():
        labels = dict(catalogue(lang)["labels"])
        out[locale] = labels
        out[lang] = labels
    return out
