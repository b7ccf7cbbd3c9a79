"""ControlNet preprocessors by A1111 module name: real edges, A1111's sizes, bounded numbers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.errors import InputError
from core.preprocess import MAX_MAP_SIDE, MODULES, preprocess


def _square(size: int = 256, lo: int = 64, hi: int = 192) -> Image.Image:
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    pixels[lo:hi, lo:hi] = 255
    return Image.fromarray(pixels)


def _on(image: Image.Image) -> np.ndarray:
    return np.asarray(image)[..., 0] > 0


def test_canny_finds_the_squares_border_and_nothing_else():
    edges = _on(preprocess("canny", _square(), processor_res=256))
    ys, xs = np.nonzero(edges)
    assert len(ys) > 4 * 100  # the four sides
    on_border = (np.abs(ys - 63.5) <= 1.5) | (np.abs(ys - 191.5) <= 1.5) | (
        np.abs(xs - 63.5) <= 1.5
    ) | (np.abs(xs - 191.5) <= 1.5)
    assert on_border.all()
    assert not edges[100:160, 100:160].any() and not edges[:40].any()


def test_the_map_is_rgb_white_on_black():
    out = preprocess("canny", _square(), processor_res=256)
    assert out.mode == "RGB"
    values = set(np.unique(np.asarray(out)))
    assert values == {0, 255}


def test_thresholds_change_the_result():
    gradient = np.tile(np.linspace(0, 255, 256, dtype=np.float32), (256, 1))
    noise = np.random.default_rng(1).normal(0, 25, (256, 256))
    picture = Image.fromarray(np.clip(gradient + noise, 0, 255).astype(np.uint8)).convert("RGB")
    low = _on(preprocess("canny", picture, 256, threshold_a=10, threshold_b=40)).sum()
    high = _on(preprocess("canny", picture, 256, threshold_a=150, threshold_b=250)).sum()
    assert low > 2 * high > 0


def test_pyracanny_differs_from_canny_and_still_follows_the_square():
    canny = np.asarray(preprocess("canny", _square(), 256))[..., 0]
    pyra = np.asarray(preprocess("pyracanny", _square(), 256))[..., 0]
    assert not np.array_equal(canny, pyra)
    assert len(np.unique(pyra)) > 2  # blended scales: shades, not only on/off
    assert pyra[62:66, 100].max() > 200  # strong on the border
    assert pyra[128, 128] == 0 and pyra[5, 5] == 0  # dark inside and out


def test_the_short_side_becomes_processor_res_as_a1111_does():
    wide = Image.new("RGB", (300, 200))
    assert preprocess("canny", wide, processor_res=512).size == (768, 512)
    assert preprocess("pyracanny", wide, processor_res=100).size == (150, 100)
    assert preprocess("canny", Image.new("RGB", (10, 2000)), processor_res=2048).size[1] <= MAX_MAP_SIDE


def test_none_keeps_the_picture_and_invert_turns_black_lines_white():
    drawing = Image.new("RGB", (64, 48), "white")
    drawing.paste((0, 0, 0), (10, 10, 50, 12))
    assert np.array_equal(np.asarray(preprocess("none", drawing)), np.asarray(drawing))
    inverted = np.asarray(preprocess("invert", drawing))
    assert inverted.shape == (48, 64, 3)
    assert inverted[11, 20].tolist() == [255, 255, 255] and inverted[30, 30].tolist() == [0, 0, 0]


def test_module_list_is_the_a1111_names():
    assert MODULES == ("none", "canny", "pyracanny", "invert")


@pytest.mark.parametrize(
    "kwargs, code",
    [
        ({"module": "openpose"}, "unknown_control_module"),
        ({"module": "canny", "processor_res": 63}, "control_res_out_of_range"),
        ({"module": "canny", "processor_res": 4096}, "control_res_out_of_range"),
        ({"module": "canny", "threshold_a": 0}, "control_threshold_out_of_range"),
        ({"module": "pyracanny", "threshold_b": 256}, "control_threshold_out_of_range"),
        ({"module": "canny", "threshold_a": float("nan")}, "control_threshold_out_of_range"),
    ],
)
def test_bad_modules_and_numbers_get_one_sentence(kwargs, code):
    with pytest.raises(InputError) as err:
        preprocess(image=_square(), **kwargs)
    assert err.value.code == code
    assert err.value.message.count(".") >= 1 and "\n" not in err.value.message
    if code == "unknown_control_module":
        assert "/controlnet/module_list" in err.value.message
