"""The engine paints in all three modes, repeatably, and refuses bad input with one sentence."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.engine import GenerationRequest
from core.errors import InputError
from core.samplers import sampler_names

STEPS = 3


def _photo(width: int = 96, height: int = 64) -> Image.Image:
    gradient = np.linspace(0, 255, width * height * 3, dtype=np.float32).reshape(height, width, 3)
    return Image.fromarray(gradient.astype(np.uint8), "RGB")


def _mask(size: tuple[int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, 0, size[0] // 2, size[1] // 2))
    return mask


@pytest.mark.parametrize("model", ["demo-tiny-sd", "demo-tiny-sdxl"])
def test_txt2img_returns_requested_size_and_count(engine, model):
    result = engine.generate(
        GenerationRequest(
            "a lighthouse",
            width=128,
            height=64,
            batch_size=2,
            num_inference_steps=STEPS,
            model=model,
        )
    )
    assert [im.size for im in result.images] == [(128, 64), (128, 64)]
    assert result.mode == "txt2img" and result.model == model and result.is_demo
    assert result.seeds == [result.seed, result.seed + 1]


@pytest.mark.parametrize("model", ["demo-tiny-sd", "demo-tiny-sdxl"])
def test_img2img_and_inpaint_return_requested_size(engine, model):
    photo = _photo()
    i2i = engine.generate(
        GenerationRequest(
            "ink wash", image=photo, strength=0.6, num_inference_steps=STEPS, model=model, seed=1
        )
    )
    assert i2i.mode == "img2img" and [im.size for im in i2i.images] == [(96, 64)]
    resized = engine.generate(
        GenerationRequest(
            "ink wash",
            image=photo,
            width=64,
            height=64,
            num_inference_steps=STEPS,
            model=model,
            seed=1,
        )
    )
    assert resized.images[0].size == (64, 64)
    inpaint = engine.generate(
        GenerationRequest(
            "a hat",
            image=photo,
            mask=_mask(photo.size),
            num_inference_steps=STEPS,
            model=model,
            seed=1,
        )
    )
    assert inpaint.mode == "inpaint" and inpaint.images[0].size == (96, 64)


def test_inpaint_keeps_pixels_outside_the_mask_closer_than_inside(engine):
    photo = _photo(128, 128)
    mask = _mask(photo.size)
    result = engine.generate(
        GenerationRequest(
            "x", image=photo, mask=mask, strength=1.0, num_inference_steps=STEPS, seed=5
        )
    )
    out = np.asarray(result.images[0], dtype=np.float32)
    src = np.asarray(photo, dtype=np.float32)
    inside = np.asarray(mask) > 127
    change_inside = np.abs(out - src)[inside].mean()
    change_outside = np.abs(out - src)[~inside].mean()
    assert change_outside < change_inside


def test_same_seed_gives_identical_pixels_and_different_seeds_differ(engine):
    def paint(seed: int) -> np.ndarray:
        request = GenerationRequest(
            "a fox", width=64, height=64, num_inference_steps=STEPS, seed=seed
        )
        return np.asarray(engine.generate(request).images[0])

    first, again, other = paint(42), paint(42), paint(43)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_random_seed_is_reported_and_reproduces_the_picture(engine):
    request = GenerationRequest("a fox", width=64, height=64, num_inference_steps=STEPS)
    first = engine.generate(request)
    assert 0 <= first.seed < 2**32
    again = engine.generate(
        GenerationRequest("a fox", width=64, height=64, num_inference_steps=STEPS, seed=first.seed)
    )
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(again.images[0]))


@pytest.mark.parametrize("sampler", sampler_names())
def test_every_sampler_runs(engine, sampler):
    result = engine.generate(
        GenerationRequest("x", width=64, height=64, num_inference_steps=4, sampler=sampler, seed=0)
    )
    assert result.sampler == sampler
    assert result.images[0].size == (64, 64)


def test_sampler_names_cover_what_users_know():
    for name in ["Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM", "UniPC", "LCM"]:
        assert name in sampler_names()


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"width": 100}, "size_out_of_range"),
        ({"height": 4096}, "size_out_of_range"),
        ({"width": 32}, "size_out_of_range"),
        ({"num_inference_steps": 0}, "steps_out_of_range"),
        ({"num_inference_steps": 151}, "steps_out_of_range"),
        ({"num_inference_steps": "many"}, "steps_out_of_range"),
        ({"guidance_scale": -1}, "guidance_out_of_range"),
        ({"guidance_scale": float("nan")}, "guidance_out_of_range"),
        ({"batch_size": 0}, "batch_out_of_range"),
        ({"batch_size": 99}, "batch_out_of_range"),
        ({"seed": 2**40}, "seed_out_of_range"),
        ({"sampler": "Warp drive"}, "unknown_sampler"),
        ({"model": "no-such-model"}, "unknown_model"),
        ({"prompt": "x" * 5000}, "prompt_too_long"),
        ({"prompt": None}, "bad_prompt"),
        ({"image": _photo(), "strength": 0.0}, "strength_out_of_range"),
        ({"image": _photo(), "strength": 1.5}, "strength_out_of_range"),
        ({"image": b"\x89PNG not an image"}, "not_an_image"),
        ({"mask": Image.new("L", (64, 64))}, "mask_without_image"),
        ({"image": _photo(96, 64), "mask": Image.new("L", (64, 64))}, "mask_size_mismatch"),
    ],
)
def test_bad_input_is_refused_with_one_sentence(engine, changes, code):
    request = GenerationRequest("a secret prompt", num_inference_steps=STEPS)
    for name, value in changes.items():
        setattr(request, name, value)
    with pytest.raises(InputError) as info:
        engine.validate(request)
    assert info.value.code == code
    message = str(info.value)
    assert "\n" not in message and message.endswith(".")
    assert "secret prompt" not in message


def test_the_engine_keeps_serving_after_a_refused_request(engine):
    with pytest.raises(InputError):
        engine.generate(GenerationRequest("x", width=100, height=64))
    result = engine.generate(GenerationRequest("x", width=64, height=64, num_inference_steps=STEPS))
    assert result.images[0].size == (64, 64)


def test_switching_models_frees_the_previous_one(engine):
    engine.load("demo-tiny-sd")
    sd_pipe = engine._pipes["txt2img"]
    engine.load("demo-tiny-sdxl")
    assert engine.current_model == "demo-tiny-sdxl"
    assert all(pipe is not sd_pipe for pipe in engine._pipes.values())
    assert engine.load("demo-tiny-sdxl") is engine._model  # loaded once, shared


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
@pytest.mark.parametrize("text", ["\ud800", "a fox \udfff in snow", "\udc80" * 3])
def test_a_lone_surrogate_in_a_prompt_is_one_sentence(engine, field, text):
    request = GenerationRequest("a fox", num_inference_steps=STEPS)
    setattr(request, field, text)
    with pytest.raises(InputError) as info:
        engine.generate(request)
    assert info.value.code == "prompt_not_text"
    assert str(info.value) == "The prompt contains characters that are not valid text."
    # Real non-ASCII text (Chinese, emoji) is text.
    ok = engine.generate(GenerationRequest("一只狐狸 🦊", width=64, height=64,
                                           num_inference_steps=1))
    assert len(ok.images) == 1


@pytest.mark.parametrize("model", ["demo-tiny-sd", "demo-tiny-sdxl"])
@pytest.mark.parametrize(("steps", "strength"), [(1, 0.3), (3, 0.2), (49, 0.01), (2, 0.05)])
@pytest.mark.parametrize("with_mask", [False, True])
def test_steps_times_strength_under_one_still_runs_one_step(engine, model, steps, strength,
                                                           with_mask):
    """diffusers would run int(steps x strength) = 0 steps and fail; AUTOMATIC1111 runs one."""
    photo = _photo(64, 64)
    seen: list[tuple[int, int]] = []
    result = engine.generate(
        GenerationRequest("ink wash", image=photo, mask=_mask(photo.size) if with_mask else None,
                          strength=strength, num_inference_steps=steps, model=model, seed=3),
        on_step=lambda step, total, _preview: seen.append((step, total)),
    )
    assert [im.size for im in result.images] == [(64, 64)]
    assert [step for step, _ in seen] == [1]  # exactly one denoising step ran
    assert result.strength == strength and result.num_inference_steps == steps


def test_denoising_strength_always_gives_diffusers_at_least_one_step():
    from core.engine import MAX_STEPS, denoising_strength

    for steps in range(1, MAX_STEPS + 1):
        for strength in (1e-9, 0.001, 0.01, 0.1, 0.3, 0.5, 0.99, 1.0):
            used = denoising_strength(steps, strength)
            assert 0 < used <= 1
            assert min(int(steps * used), steps) >= 1
            if int(steps * strength) >= 1:
                assert used == strength  # left alone when diffusers can run it
            else:
                assert min(int(steps * used), steps) == 1
