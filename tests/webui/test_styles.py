"""Style presets: the shipped file is valid and complete; broken files are refused clearly."""

from __future__ import annotations

import pytest

from core.errors import InputError
from webui.styles import find_style, load_styles

REQUIRED = {
    "Anime": "二次元", "Watercolour": "水彩", "Oil painting": "油画", "Chinese ink wash": "水墨",
    "Pencil sketch": "素描", "Pixel art": "像素", "Cinematic photo": "电影感", "3D cartoon": "3D卡通",
}
# The Portrait page's presets (issue 12): each sets where the likeness slider starts and how far
# the style leaves the photo.
PORTRAIT = ("anime", "watercolour", "ink-wash", "oil-painting", "3d-cartoon", "pixel-art",
            "pencil-sketch")


def test_shipped_styles_cover_the_promised_presets_in_both_languages():
    styles = load_styles()
    names = {style.name_en: style.name_zh for style in styles.values()}
    assert REQUIRED.items() <= names.items()


def test_the_portrait_presets_have_their_portrait_settings():
    styles = load_styles()
    for key in PORTRAIT:
        style = styles[key]
        assert style.portrait_strength is not None and 0.3 <= style.portrait_strength <= 1.0
        assert style.portrait_likeness is not None and 0.0 <= style.portrait_likeness <= 1.0
    # pixel art must leave the photo further behind than a watercolour
    assert styles["pixel-art"].portrait_strength > styles["watercolour"].portrait_strength


def test_portrait_settings_are_optional(tmp_path):
    path = tmp_path / "styles.toml"
    path.write_text(BASE, encoding="utf-8")
    style = load_styles(path)["a"]
    assert style.portrait_strength is None and style.portrait_likeness is None


BASE = "[[style]]\nid='a'\nname_en='A'\nname_zh='甲'\nprompt='{prompt}'\nnegative=''\n"


@pytest.mark.parametrize(
    "line",
    ["portrait_strength = 1.5", "portrait_strength = 0.1", "portrait_likeness = -0.2",
     "portrait_likeness = nan", "portrait_strength = 'high'", "portrait_likeness = true"],
)
def test_a_portrait_setting_out_of_bounds_stops_the_file_with_the_reason(tmp_path, line):
    path = tmp_path / "styles.toml"
    path.write_text(BASE + line + "\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_styles(path)
    assert err.value.code == "styles_invalid"
    assert line.split(" ")[0] in str(err.value) and "style #1" in str(err.value)


def test_a_style_wraps_the_prompt_and_extends_the_negative_prompt():
    ink = find_style(load_styles(), "水墨")
    prompt, negative = ink.apply("  a heron by a river ", "text")
    assert "a heron by a river" in prompt and prompt.startswith("traditional Chinese ink wash")
    assert negative.startswith("text, ") and "colourful" in negative
    assert find_style(load_styles(), "ink-wash") == ink
    assert find_style(load_styles(), "") is None


def test_unknown_style_is_a_clear_error():
    with pytest.raises(InputError) as err:
        find_style(load_styles(), "baroque")
    assert err.value.code == "bad_style"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("", "no [[style]]"),
        ("[[style]]\nid='a'\nname_en='A'\nname_zh='甲'\nprompt='no placeholder'\nnegative=''\n",
         "{prompt}"),
        ("[[style]]\nid='a'\nname_en='A'\nname_zh='甲'\nprompt='{prompt}'\n", "lacks negative"),
        ("[[style]]\nid='A B'\nname_en='A'\nname_zh='甲'\nprompt='{prompt}'\nnegative=''\n", "id"),
        ("[[style]\n", "TOML"),
    ],
)
def test_broken_styles_files_are_refused_with_the_reason(tmp_path, body, fragment):
    path = tmp_path / "styles.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_styles(path)
    assert err.value.code == "styles_invalid"
    assert fragment in str(err.value)
