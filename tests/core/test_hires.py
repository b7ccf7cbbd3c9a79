"""The hires fix on the tiny demo models: A1111's sizes, both kinds of upscaling, bounds, cancel."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from core.demo import DEMO_NAME
from core.engine import GenerationRequest, HiresFix
from core.errors import InputError, JobCancelled
from core.hires import hires_target, second_pass_schedule

SD = DEMO_NAME["sd"]
SDXL = DEMO_NAME["sdxl"]


def request(model: str = SD, **hires: object) -> GenerationRequest:
    return GenerationRequest(
        prompt="a lighthouse at dusk", model=model, num_inference_steps=3, width=64, height=64,
        seed=7, sampler="Euler", hires=HiresFix(**hires),  # type: ignore[arg-type]
    )


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


# -- A1111's arithmetic -----------------------------------------------------------------------
def test_target_size_follows_a1111() -> None:
    # hr_scale (truncated, then a multiple of 8 as the latents make it)
    assert (hires_target(512, 512, HiresFix(scale=1.5)).width, 768) == (768, 768)
    odd = hires_target(512, 512, HiresFix(scale=1.3))
    assert (odd.upscale_width, odd.width) == (665, 664)
    # one side given: the other keeps the proportions
    one = hires_target(512, 768, HiresFix(resize_x=1024))
    assert (one.width, one.height) == (1024, 1536)
    # both given with other proportions: cover the box, crop the overflow (truncate_y)
    box = hires_target(512, 768, HiresFix(resize_x=1024, resize_y=1024))
    assert (box.upscale_width, box.upscale_height) == (1024, 1536)
    assert (box.truncate_x, box.truncate_y) == (0, 64)
    assert (box.width, box.height) == (1024, 1024)
    assert box.crop_box() == (0, 256, 1024, 1280)


def test_second_pass_runs_exactly_the_steps_asked_for() -> None:
    for steps in (1, 3, 20, 28, 150):
        for denoising in (0.05, 0.3, 0.5, 0.7, 0.99, 1.0):
            schedule, strength = second_pass_schedule(steps, denoising)
            assert int(schedule * strength) == steps  # what diffusers' img2img runs
            assert schedule == max(steps, int(steps / min(denoising, 0.999)))


# -- the engine -------------------------------------------------------------------------------
@pytest.mark.parametrize("model", [SD, SDXL])
@pytest.mark.parametrize("upscaler", ["Latent", "Latent (nearest-exact)", "Lanczos", "None"])
def test_hires_returns_the_scaled_size(engine, model: str, upscaler: str) -> None:
    result = engine.generate(request(model, scale=2.0, upscaler=upscaler,
                                     denoising_strength=0.5))
    assert (result.width, result.height) == (128, 128)
    assert [image.size for image in result.images] == [(128, 128)]
    assert result.extras["hires"]["Hires upscale"] == 2.0
    assert result.extras["hires"]["Hires upscaler"] == upscaler


def test_hires_resize_box_crops_like_a1111(engine) -> None:
    base = dataclasses.replace(request(resize_x=128, resize_y=96), width=64, height=64)
    result = engine.generate(base)
    assert result.images[0].size == (128, 96)


def test_progress_counts_both_passes(engine) -> None:
    seen: list[tuple[int, int]] = []
    previews: list[tuple[int, int] | None] = []

    def on_step(step: int, total: int, preview: Image.Image | None) -> None:
        seen.append((step, total))
        previews.append(None if preview is None else preview.size)

    engine.generate(request(second_pass_steps=5, denoising_strength=0.6), on_step=on_step)
    assert seen == [(step, 8) for step in range(1, 9)]  # 3 first-pass steps + 5
    # Live previews in both passes, of the first pass's size, then of the upscaled one.
    assert None not in previews
    assert previews[2][0] < previews[3][0]
    seen.clear()
    engine.generate(request(second_pass_steps=0, denoising_strength=0.6),  # 0 = the same steps
                    on_step=lambda step, total, preview: seen.append((step, total)))
    assert seen == [(step, 6) for step in range(1, 7)]


def test_latent_and_pixel_modes_paint_differently(engine) -> None:
    latent = engine.generate(request(upscaler="Latent", denoising_strength=0.5)).images[0]
    nearest = engine.generate(request(upscaler="Latent (nearest)",
                                      denoising_strength=0.5)).images[0]
    lanczos = engine.generate(request(upscaler="Lanczos", denoising_strength=0.5)).images[0]
    again = engine.generate(request(upscaler="Lanczos", denoising_strength=0.5)).images[0]
    assert np.abs(pixels(latent) - pixels(lanczos)).max() > 0
    assert np.abs(pixels(latent) - pixels(nearest)).max() > 0
    assert np.array_equal(pixels(lanczos), pixels(again))  # same seed, same picture


def test_denoising_zero_is_the_upscaled_first_pass(engine) -> None:
    plain = engine.generate(dataclasses.replace(request(), hires=None)).images[0]
    upscaled = engine.generate(request(upscaler="Lanczos", denoising_strength=0.0)).images[0]
    expected = plain.resize((128, 128), Image.Resampling.LANCZOS)
    assert np.array_equal(pixels(upscaled), pixels(expected))
    repainted = engine.generate(request(upscaler="Lanczos", denoising_strength=0.6)).images[0]
    assert np.abs(pixels(repainted) - pixels(expected)).max() > 0


def test_hires_prompt_and_sampler_change_the_second_pass(engine) -> None:
    same = engine.generate(request(denoising_strength=0.6)).images[0]
    other_prompt = engine.generate(request(denoising_strength=0.6,
                                           prompt="a red bicycle in snow")).images[0]
    other_sampler = engine.generate(request(denoising_strength=0.6, sampler="DDIM"))
    assert np.abs(pixels(same) - pixels(other_prompt)).max() > 0
    assert np.abs(pixels(same) - pixels(other_sampler.images[0])).max() > 0
    assert other_sampler.extras["hires"]["Hires sampler"] == "DDIM"


def test_cancel_in_the_second_pass_stops_within_one_step(engine) -> None:
    seen: list[int] = []

    def should_stop() -> bool:
        return bool(seen) and seen[-1] >= 4  # the first pass has 3 steps

    with pytest.raises(JobCancelled):
        engine.generate(request(second_pass_steps=6, denoising_strength=0.6),
                        on_step=lambda step, total, preview: seen.append(step),
                        should_stop=should_stop)
    assert seen[-1] == 4


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"scale": 4.5}, "hires_scale_out_of_range"),
        ({"scale": 0.5}, "hires_scale_out_of_range"),
        ({"scale": float("nan")}, "hires_scale_out_of_range"),
        ({"scale": True}, "hires_scale_out_of_range"),
        ({"resize_x": 10**9}, "hires_size_out_of_range"),
        ({"resize_x": -8}, "hires_size_out_of_range"),
        ({"second_pass_steps": 151}, "hires_steps_out_of_range"),
        ({"second_pass_steps": -1}, "hires_steps_out_of_range"),
        ({"denoising_strength": 1.5}, "hires_denoising_out_of_range"),
        ({"denoising_strength": -0.1}, "hires_denoising_out_of_range"),
        ({"upscaler": "R-ESRGAN 4x+"}, "unknown_upscaler"),
        ({"sampler": "no such sampler"}, "unknown_sampler"),
        ({"prompt": "x" * 5000}, "prompt_too_long"),
    ],
)
def test_hires_bounds_are_one_sentence(engine, fields: dict[str, object], code: str) -> None:
    with pytest.raises(InputError) as caught:
        engine.validate(request(**fields))
    assert caught.value.code == code
    assert "R-ESRGAN" not in str(caught.value)


def test_hires_target_beyond_the_model_is_refused_before_painting(engine) -> None:
    # The demo model paints at most 512 a side: 256 x 4 is refused up front.
    too_big = dataclasses.replace(request(scale=4.0), width=256, height=256)
    with pytest.raises(InputError) as caught:
        engine.validate(too_big)
    assert caught.value.code == "hires_target_too_large"


def test_hires_is_for_text_to_picture_only(engine) -> None:
    photo = Image.new("RGB", (64, 64), (120, 40, 200))
    with pytest.raises(InputError) as caught:
        engine.validate(dataclasses.replace(request(), image=photo))
    assert caught.value.code == "hires_not_txt2img"


def test_a_target_of_the_same_size_turns_the_hires_fix_off(engine) -> None:
    plain = engine.generate(dataclasses.replace(request(), hires=None))
    same = engine.generate(request(scale=1.0, denoising_strength=0.6))
    assert "hires" not in same.extras
    assert np.array_equal(pixels(plain.images[0]), pixels(same.images[0]))
