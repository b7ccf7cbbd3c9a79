"""AUTOMATIC1111's ``scheduler`` with any sampler (issue 11): a schedule is a diffusers option
of the sampler's class, named as AUTOMATIC1111 names the pair ("Euler a Karras"); an unknown
name, or one a sampler cannot follow, leaves the sampler on its own schedule (automatic)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.engine import GenerationRequest
from core.errors import InputError
from core.samplers import find_sampler, find_schedule, make_scheduler, with_schedule


@pytest.mark.parametrize(
    ("sampler", "scheduler", "name", "followed"),
    [
        ("Euler a", "Karras", "Euler a Karras", "karras"),  # Open WebUI's suggestion
        ("Euler a", "exponential", "Euler a Exponential", "exponential"),
        ("Euler", "karras", "Euler Karras", "karras"),
        ("DPM++ 2M", "karras", "DPM++ 2M Karras", "karras"),  # a sampler of its own
        ("DPM++ 2M Karras", "exponential", "DPM++ 2M Karras", "karras"),  # the name wins
        ("UniPC", "SGMUniform", "UniPC SGM Uniform", "sgm_uniform"),  # an A1111 alias
        ("Heun", "Exponential", "Heun Exponential", "exponential"),
        ("DDIM", "karras", "DDIM", "automatic"),  # DDIM has no sigmas to change
        ("Euler", "polyexponential", "Euler", "automatic"),  # A1111's, no diffusers option
        ("Euler", "no such schedule", "Euler", "automatic"),
        ("Euler", None, "Euler", "automatic"),
        ("Euler", "", "Euler", "automatic"),
    ],
)
def test_any_sampler_goes_with_any_schedule(sampler, scheduler, name, followed):
    assert with_schedule(sampler, scheduler) == (name, find_schedule(followed))
    assert find_sampler(name).name == name


def test_an_unknown_sampler_is_still_one_sentence():
    with pytest.raises(InputError) as raised:
        with_schedule("Euler b", "karras")
    assert raised.value.code == "unknown_sampler"
    with pytest.raises(InputError):
        find_sampler("Euler Polyexponential")  # not a schedule diffusers can follow


def test_euler_a_karras_uses_the_karras_sigmas_of_euler():
    config = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
              "timestep_spacing": "leading", "steps_offset": 1, "num_train_timesteps": 1000}
    ancestral = make_scheduler(find_sampler("Euler a Karras"), config)
    euler = make_scheduler(find_sampler("Euler Karras"), config)
    plain = make_scheduler(find_sampler("Euler a"), config)
    for scheduler in (ancestral, euler, plain):
        scheduler.set_timesteps(6)
    assert np.allclose(ancestral.sigmas.numpy(), euler.sigmas.numpy(), atol=1e-5)
    assert np.allclose(ancestral.timesteps.numpy(), euler.timesteps.numpy(), atol=1e-3)
    assert not np.allclose(ancestral.sigmas.numpy(), plain.sigmas.numpy(), atol=1e-3)


def test_the_engine_paints_with_a_schedule_and_it_changes_pixels(engine):
    def paint(sampler: str, image: Image.Image | None = None) -> tuple[str, np.ndarray]:
        result = engine.generate(GenerationRequest(
            "x", width=64, height=64, num_inference_steps=4, sampler=sampler, seed=3,
            image=image, strength=0.6,
        ))
        return result.sampler, np.asarray(result.images[0], dtype=np.int16)

    name, karras = paint("Euler a Karras")
    assert name == "Euler a Karras"
    assert np.abs(karras - paint("Euler a")[1]).max() > 0
    assert np.array_equal(karras, paint("Euler a Karras")[1])  # same seed, same pixels
    photo = Image.new("RGB", (64, 64), (200, 40, 40))
    for sampler in ("Euler a Karras", "Heun Exponential", "UniPC SGM Uniform"):
        assert paint(sampler, photo)[0] == sampler  # img2img starts part-way on the schedule
