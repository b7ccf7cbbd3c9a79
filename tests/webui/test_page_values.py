"""Page values become a request, or one sentence: never a traceback (non-finite numbers too)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from core.errors import InputError
from webui.ui.common import build_request

VALUES = dict(prompt="x", negative_prompt="", style=None, model=None, sampler=None,
              num_inference_steps=20, guidance_scale=7, width=64, height=64, seed=-1)


@pytest.mark.parametrize("name", ["seed", "guidance_scale", "num_inference_steps", "width", "strength"])
@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan"), "twelve"])
def test_non_finite_or_non_numbers_are_one_sentence(name, bad):
    with pytest.raises(InputError) as err:
        build_request(SimpleNamespace(styles={}), **{**VALUES, name: bad})
    assert err.value.code == "not_a_number" and str(err.value).endswith("must be a number.")


def test_empty_and_negative_values_mean_the_model_default():
    request = build_request(SimpleNamespace(styles={}), **{**VALUES, "num_inference_steps": 0,
                                                           "guidance_scale": -1, "seed": -1})
    assert request.num_inference_steps is None and request.guidance_scale is None
    assert request.seed is None
