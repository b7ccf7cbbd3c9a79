"""The opt-in "parameters" text names each picture's own seed and the settings used."""

from __future__ import annotations

from core.engine import GenerationResult
from webui.infotext import infotext


def _result(**changes) -> GenerationResult:
    values = dict(images=[], seeds=[7, 8], seed=7, model="m", is_demo=False, sampler="Euler a",
                  num_inference_steps=20, guidance_scale=7.0, width=512, height=768, mode="txt2img")
    values.update(changes)
    return GenerationResult(**values)


def test_parameters_text_in_automatic1111_layout():
    text = infotext("a fox", "blurry", _result(), 8)
    assert text == (
        "a fox\nNegative prompt: blurry\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 8, Size: 512x768, Model: m"
    )


def test_photo_based_pictures_name_the_denoising_strength():
    assert infotext("x", "", _result(mode="img2img", strength=0.6), 7).endswith(
        "Denoising strength: 0.6"
    )
