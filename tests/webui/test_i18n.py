"""Catalogues are complete in both languages, and the language is picked as documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.errors import InputError
from privacy.errors import PrivacyError
from webui.i18n import catalogue, error_text, from_accept_language, pick_language, text

ROOT = Path(__file__).resolve().parents[2]


def test_both_languages_have_exactly_the_same_keys_and_placeholders():
    en, zh = catalogue("en"), catalogue("zh")
    assert en.keys() == zh.keys() == {"labels", "messages", "errors"}
    for table in en:
        assert en[table].keys() == zh[table].keys(), table
        for key, sentence in en[table].items():
            placeholders = set(re.findall(r"{(\w+)}", sentence))
            assert placeholders == set(re.findall(r"{(\w+)}", zh[table][key])), key


def test_chinese_catalogue_is_actually_chinese():
    for table, entries in catalogue("zh").items():
        for key, sentence in entries.items():
            if key in {"app_title"}:
                continue
            assert re.search(r"[\u4e00-\u9fff]", sentence), (table, key)


def error_codes_in_source() -> set[str]:
    codes = set()
    pattern = re.compile(r"(?:Error)\(\s*\"([a-z]+(?:_[a-z]+)+)\"", re.S)
    for package in ("core", "privacy"):
        for path in (ROOT / package).rglob("*.py"):
            codes |= set(pattern.findall(path.read_text(encoding="utf-8")))
    return codes


# Codes an operator meets on the command line, never a web user.
OPERATOR_CODES = {
    "bad_dtype", "bad_memory_mode", "bad_setting", "config_missing", "config_invalid",
    "config_unknown_key", "audit_bad_value", "audit_unknown_event", "audit_unknown_field",
    "bad_kind", "bad_owner_id", "bad_private_key", "bad_public_key", "seal_damaged",
    "seal_refused", "key_blob_damaged", "hidden_size",
}


def test_every_user_facing_error_code_of_core_and_privacy_has_a_translation():
    missing = sorted(error_codes_in_source() - OPERATOR_CODES - set(catalogue("zh")["errors"]))
    assert not missing, f"add these codes to webui/messages_*.toml: {missing}"


def test_errors_are_translated_with_their_numbers():
    err = InputError("steps_out_of_range", "Steps must be from 1 to {max}.", max=150)
    assert error_text(err, "zh") == "步数必须在 1 到 150 之间。"
    assert error_text(err, "en") == "Steps must be between 1 and 150."
    privacy_err = PrivacyError("upload_format", "Not a picture.")
    assert error_text(privacy_err, "zh").startswith("Obscura 不接受")


def test_unknown_codes_and_missing_numbers_fall_back_to_the_english_sentence():
    assert error_text(InputError("brand_new", "A new problem."), "zh") == "A new problem."
    no_numbers = InputError("steps_out_of_range", "Steps are wrong.")
    assert error_text(no_numbers, "zh") == "Steps are wrong."


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        ("en-GB,en;q=0.9", "en"),
        ("fr-FR,zh;q=0.5,en;q=0.7", "en"),
        ("de", None),
        (None, None),
        ("zh_Hans", "zh"),
    ],
)
def test_accept_language(header, expected):
    assert from_accept_language(header) == expected


def test_an_explicit_choice_beats_the_browser():
    assert pick_language("zh-CN", cookie="en") == "en"
    assert pick_language("en", cookie="en", query="zh") == "zh"
    assert pick_language("de") == "en"
    assert text("tab_txt2img", "zh") == "文字生图"
    assert text("queued", "en", position=2) == "Waiting: 2 job(s) ahead of yours."
