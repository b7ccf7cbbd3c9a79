"""The transformer families (SD 3.5, FLUX.1, FLUX.2 [klein], Z-Image, Qwen-Image) through
``Engine.generate``: tiny random-weight models (tests/family_files.py) saved as diffusers folders,
found by the registry, loaded and painted at 64 px in 2 steps.

Every outcome is the real one: pictures compared pixel for pixel, progress and previews as the
pipelines' own step callbacks give them, refusals by their error codes.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from family_files import save_family  # type: ignore[import-not-found]
from netguard import network_guard  # type: ignore[import-not-found]
from PIL import Image

from core.control import ControlUnit
from core.engine import Engine, GenerationRequest, HiresFix
from core.errors import InputError, JobCancelled
from core.families import FAMILIES, VARIANTS, family, samplers_for
from core.flow import plain_prompt
from core.registry import ModelInfo, ModelRegistry

# (arch, variant): the default variant of each family, and FLUX.1 dev (embedded guidance).
MODELS = [
    ("sd3", "medium"),
    ("flux1", "schnell"),
    ("flux1", "dev"),
    ("flux2", "klein"),
    ("zimage", "turbo"),
    ("qwenimage", "base"),
]
DEFAULTS = [m for m in MODELS if m != ("flux1", "dev")]
# Variants with pipelines of their own (built once, painted by one test each).
VARIANT_MODELS = [("flux1", "kontext"), ("flux1", "fill"), ("flux2", "klein-base")]


def name(arch: str, variant: str) -> str:
    return f"{arch}-{variant}"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("families")
    for arch, variant in MODELS + VARIANT_MODELS:
        save_family(root / name(arch, variant), arch, variant)
    return root


@pytest.fixture(scope="module")
def engine(models: Path) -> Engine:
    return Engine(ModelRegistry(models), device="cpu")


def paint(engine: Engine, model: str, **kwargs: object) -> tuple[object, list[tuple[int, int, object]]]:
    steps: list[tuple[int, int, object]] = []
    request = GenerationRequest(
        **{"prompt": "a red boat", "model": model, "width": 64, "height": 64,
           "num_inference_steps": 2, "seed": 7, **kwargs}  # type: ignore[arg-type]
    )
    result = engine.generate(request, on_step=lambda i, n, p: steps.append((i, n, p)))
    return result, steps


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def photo() -> Image.Image:
    gradient = np.linspace(0, 255, 64, dtype=np.uint8)
    rgb = np.stack([np.tile(gradient, (64, 1)), np.tile(gradient[:, None], (1, 64)),
                    np.full((64, 64), 90, np.uint8)], axis=-1)
    return Image.fromarray(rgb, "RGB")


# -- the table ------------------------------------------------------------------------------
def test_the_table_names_real_pipelines_and_the_keywords_they_take():
    import diffusers

    for arch, variant in [(a, "") for a in FAMILIES] + list(VARIANTS):
        fam = family(arch, variant)
        for mode, cls_name in fam.pipelines.items():
            params = inspect.signature(getattr(diffusers, cls_name).__call__).parameters
            assert fam.cfg_param in params, (arch, variant, mode)
            if fam.negative_prompt:
                assert "negative_prompt" in params, (arch, variant, mode)
            if mode in ("img2img", "inpaint", "edit"):
                assert "image" in params, (arch, variant, mode)
        assert fam.size_multiple == 16
        assert set(fam.samplers) <= {"Euler", "Euler a", "Heun", "DPM++ 2M", "UniPC"}
    # guidance-distilled variants take neither a negative prompt nor CFG
    for arch, variant in [("flux1", "schnell"), ("flux2", "klein"), ("zimage", "turbo"),
                          ("sd3", "large-turbo")]:
        assert family(arch, variant).ignored_controls == ("negative_prompt", "cfg_scale")
    assert family("flux1", "dev").ignored_controls == ("negative_prompt",)
    assert family("qwenimage", "base").cfg_param == "true_cfg_scale"


def test_a1111_prompt_syntax_becomes_plain_words():
    assert plain_prompt("a (red:1.3) boat, [sea]", 10) == ("a red boat, sea", ["emphasis"])
    assert plain_prompt("a boat <lora:x:1>", 10) == ("a boat ", [])
    assert plain_prompt(r"a \(red\) boat", 10) == ("a (red) boat", [])
    assert plain_prompt("[cat:dog:0.5]", 10) == ("dog", ["prompt_editing"])
    assert plain_prompt("a BREAK b", 10)[1] == ["emphasis"]


# -- every family paints --------------------------------------------------------------------
@pytest.mark.parametrize(("arch", "variant"), MODELS)
def test_every_family_paints_from_text_with_progress_previews_and_seeds(engine, arch, variant):
    model = name(arch, variant)
    result, steps = paint(engine, model)
    assert result.images[0].size == (64, 64)
    assert result.model == model and result.mode == "txt2img"
    assert result.sampler == "Euler" and result.num_inference_steps == 2
    assert [(i, n) for i, n, _ in steps] == [(1, 2), (2, 2)]
    for _, _, preview in steps:  # a live preview per step, from the model's own latent space
        assert isinstance(preview, Image.Image) and preview.width >= 64
    again, _ = paint(engine, model)
    assert np.array_equal(pixels(again.images[0]), pixels(result.images[0]))
    other, _ = paint(engine, model, seed=8)
    assert not np.array_equal(pixels(other.images[0]), pixels(result.images[0]))
    batch, _ = paint(engine, model, batch_size=2)
    assert batch.seeds == [7, 8]
    assert np.abs(pixels(batch.images[0]) - pixels(result.images[0])).max() <= 2
    assert np.abs(pixels(batch.images[1]) - pixels(other.images[0])).max() <= 2


@pytest.mark.parametrize(("arch", "variant"), DEFAULTS)
def test_every_family_repaints_a_photo_and_inpaints(engine, arch, variant):
    model = name(arch, variant)
    text, _ = paint(engine, model)
    img2img, steps = paint(engine, model, image=photo(), strength=0.5, num_inference_steps=4)
    assert img2img.mode == "img2img" and img2img.images[0].size == (64, 64)
    if arch == "flux2":  # klein's img2img is its reference edit: every step runs
        assert steps[-1][:2] == (4, 4) and img2img.extras["ignored"] == ["strength"]
    else:  # strength 0.5 of 4 steps: the last 2 run, as A1111 counts them
        assert [(i, n) for i, n, _ in steps] == [(1, 2), (2, 2)]
    assert not np.array_equal(pixels(img2img.images[0]), pixels(text.images[0]))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inpaint, _ = paint(engine, model, image=photo(), mask=mask, strength=1.0)
    assert inpaint.mode == "inpaint" and inpaint.images[0].size == (64, 64)
    assert not np.array_equal(pixels(inpaint.images[0]), pixels(img2img.images[0]))


def test_flux2_klein_edits_with_reference_pictures(engine):
    model = name("flux2", "klein")
    plain, _ = paint(engine, model)
    edited, _ = paint(engine, model, references=[photo()])
    assert edited.extras["references"] == 1
    assert not np.array_equal(pixels(edited.images[0]), pixels(plain.images[0]))
    two, _ = paint(engine, model, references=[photo(), photo().rotate(90)])
    assert not np.array_equal(pixels(two.images[0]), pixels(edited.images[0]))


def test_flux1_kontext_edits_at_the_asked_size(engine):
    model = name("flux1", "kontext")
    plain, _ = paint(engine, model)
    assert plain.images[0].size == (64, 64)  # not Kontext's own 1 MP resize
    edited, _ = paint(engine, model, references=[photo()])
    assert edited.images[0].size == (64, 64) and edited.extras["references"] == 1
    assert not np.array_equal(pixels(edited.images[0]), pixels(plain.images[0]))
    repainted, _ = paint(engine, model, image=photo())
    assert repainted.mode == "img2img" and repainted.images[0].size == (64, 64)


def test_flux1_fill_paints_every_mode_as_inpainting(engine):
    model = name("flux1", "fill")
    text, _ = paint(engine, model)  # a blank canvas, all of it masked
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    filled, _ = paint(engine, model, image=photo(), mask=mask)
    assert text.images[0].size == filled.images[0].size == (64, 64)
    assert not np.array_equal(pixels(text.images[0]), pixels(filled.images[0]))
    with pytest.raises(InputError) as caught:
        paint(engine, model, references=[photo()])
    assert caught.value.code == "references_not_for_model"


def test_flux2_klein_base_takes_cfg_but_no_negative_prompt(engine):
    model = name("flux2", "klein-base")
    low, _ = paint(engine, model, guidance_scale=1.0)
    high, _ = paint(engine, model, guidance_scale=5.0, negative_prompt="blurry")
    assert high.extras["ignored"] == ["negative_prompt"] and high.guidance_scale == 5.0
    assert not np.array_equal(pixels(low.images[0]), pixels(high.images[0]))


@pytest.mark.parametrize(("arch", "variant"), DEFAULTS)
def test_a_cancelled_flow_job_stops_within_one_step(engine, arch, variant):
    model = name(arch, variant)
    seen: list[int] = []
    request = GenerationRequest("a boat", model=model, width=64, height=64,
                                num_inference_steps=6, seed=1)
    with pytest.raises(JobCancelled):
        engine.generate(request, on_step=lambda i, n, p: seen.append(i),
                        should_stop=lambda: len(seen) >= 1)
    assert seen == [1]
    result, _ = paint(engine, model)  # the engine goes on serving
    assert result.images


EULER: dict[str, np.ndarray] = {}  # each family's Euler picture, painted once


@pytest.mark.parametrize(
    ("arch", "variant", "sampler"),
    [(a, v, s) for a, v in DEFAULTS for s in samplers_for(a, v)],
)
def test_every_sampler_a_family_lists_runs(engine, arch, variant, sampler):
    model = name(arch, variant)
    result, steps = paint(engine, model, sampler=sampler, num_inference_steps=3)
    assert result.sampler == sampler
    assert steps and steps[-1][0] == steps[-1][1]  # ran to its last step
    if sampler == "Euler":
        EULER[model] = pixels(result.images[0])
    else:  # a different algorithm: a different picture from the same seed
        if model not in EULER:
            euler, _ = paint(engine, model, sampler="Euler", num_inference_steps=3)
            EULER[model] = pixels(euler.images[0])
        assert not np.array_equal(pixels(result.images[0]), EULER[model])


# -- controls a family does not use -------------------------------------------------------------
def test_a_distilled_model_ignores_negative_prompt_and_cfg_and_says_so(engine):
    model = name("flux1", "schnell")
    plain, _ = paint(engine, model)
    assert "ignored" not in plain.extras
    asked, _ = paint(engine, model, negative_prompt="blurry", guidance_scale=7.0)
    assert asked.extras["ignored"] == ["negative_prompt", "cfg_scale"]
    assert np.array_equal(pixels(asked.images[0]), pixels(plain.images[0]))
    assert asked.guidance_scale == 0.0  # what ran


def test_flux1_dev_takes_cfg_as_its_embedded_guidance_but_no_negative_prompt(engine):
    model = name("flux1", "dev")
    low, _ = paint(engine, model, guidance_scale=1.5)
    high, _ = paint(engine, model, guidance_scale=6.0, negative_prompt="blurry")
    assert high.extras["ignored"] == ["negative_prompt"] and high.guidance_scale == 6.0
    assert not np.array_equal(pixels(low.images[0]), pixels(high.images[0]))


@pytest.mark.parametrize("model", ["sd3-medium", "qwenimage-base"])
def test_true_cfg_families_use_the_negative_prompt(engine, model):
    plain, _ = paint(engine, model, guidance_scale=4.0)
    negative, _ = paint(engine, model, guidance_scale=4.0, negative_prompt="a green car")
    assert "ignored" not in negative.extras
    assert not np.array_equal(pixels(plain.images[0]), pixels(negative.images[0]))


def test_emphasis_is_reduced_to_the_words_and_reported(engine):
    model = name("zimage", "turbo")
    plain, _ = paint(engine, model, prompt="a red boat")
    weighted, _ = paint(engine, model, prompt="a (red:1.4) boat")
    assert weighted.extras["ignored"] == ["emphasis"]
    assert np.array_equal(pixels(plain.images[0]), pixels(weighted.images[0]))
    skipped, _ = paint(engine, model, clip_skip=2)
    assert skipped.extras["ignored"] == ["clip_skip"]


# -- refusals -------------------------------------------------------------------------------
REFUSALS = [
    ({"width": 72}, "flow_size_out_of_range"),
    ({"width": 32}, "flow_size_out_of_range"),
    ({"height": 4096}, "flow_size_out_of_range"),
    ({"sampler": "DPM2 a"}, "sampler_not_for_model"),
    ({"sampler": "DPM++ 2M Karras"}, "sampler_not_for_model"),
    ({"hires": HiresFix()}, "hires_flow_model"),
    ({"prompt": "a boat <lora:style:0.8>"}, "lora_flow_model"),
    ({"vae": "some-vae"}, "vae_flow_model"),
    ({"controlnets": [ControlUnit(model="canny")]}, "control_flow_model"),
    ({"references": [photo()]}, "references_not_for_model"),
]


@pytest.mark.parametrize(("fields", "code"), REFUSALS)
def test_what_a_flow_model_cannot_do_is_one_sentence_before_any_work(engine, fields, code):
    request = GenerationRequest(**{"prompt": "a boat", "model": "sd3-medium", **fields})
    with pytest.raises(InputError) as caught:
        engine.validate(request)
    assert caught.value.code == code
    assert "\n" not in str(caught.value) and "boat" not in str(caught.value)


def test_references_are_bounded(engine):
    request = GenerationRequest("a boat", model="flux2-klein", references=[photo()] * 5)
    with pytest.raises(InputError) as caught:
        engine.validate(request)
    assert caught.value.code == "too_many_references"
    request = GenerationRequest("a boat", model="flux2-klein", references=["photo.png"])  # type: ignore[list-item]
    with pytest.raises(InputError) as caught:
        engine.validate(request)
    assert caught.value.code == "not_an_image"


def test_a_lora_tag_is_dropped_and_named_when_missing_networks_are_allowed(engine):
    result, _ = paint(engine, "flux1-schnell", prompt="a red boat <lora:style:0.8>",
                      allow_missing_networks=True)
    plain, _ = paint(engine, "flux1-schnell", prompt="a red boat ")
    assert [s["code"] for s in result.extras["skipped_networks"]] == ["lora_flow_model"]
    assert np.array_equal(pixels(result.images[0]), pixels(plain.images[0]))


# -- nothing leaves the machine -------------------------------------------------------------------
def test_loading_and_painting_every_family_makes_no_connection(tmp_path: Path):
    with network_guard() as attempts:
        for arch, variant in DEFAULTS:
            save_family(tmp_path / name(arch, variant), arch, variant)
        engine = Engine(ModelRegistry(tmp_path), device="cpu")
        for arch, variant in DEFAULTS:
            result, _ = paint(engine, name(arch, variant))
            assert result.images
            paint(engine, name(arch, variant), image=photo())
    assert attempts == []


# -- single files, ComfyUI parts, GGUF ------------------------------------------------------------
FILE_LAYOUTS = [(a, v, fmt) for a, v in DEFAULTS for fmt in ("parts", "gguf")] + [
    ("sd3", "medium", "single-file"), ("flux1", "schnell", "single-file"),
]


def tiny_config(models: Path, arch: str, variant: str, tmp_path: Path) -> Path:
    """The tiny model's own config folder (its diffusers folder without weights): what the
    shipped core/configs/<arch>-<variant> folder is for a real model of that family."""
    import shutil

    folder = tmp_path / "config"
    shutil.copytree(models / name(arch, variant), folder,
                    ignore=shutil.ignore_patterns("*.safetensors"))
    return folder


@pytest.mark.parametrize(("arch", "variant", "fmt"), FILE_LAYOUTS)
def test_single_files_parts_and_gguf_paint_exactly_as_the_diffusers_folder(
    engine, models, tmp_path, monkeypatch, arch, variant, fmt
):
    from core import pipelines

    config = tiny_config(models, arch, variant, tmp_path)
    monkeypatch.setattr(pipelines, "flow_config_folder", lambda info: config)
    expected, _ = paint(engine, name(arch, variant))
    with network_guard() as attempts:
        save_family(tmp_path / "models", arch, variant, fmt=fmt)
        files = Engine(ModelRegistry(tmp_path / "models"), device="cpu")
        [info] = files.registry.models  # named after the transformer file
        assert (info.arch, info.variant, info.format) == (arch, variant, fmt)
        result, steps = paint(files, info.name)
    assert attempts == []
    assert len(steps) == 2
    assert np.array_equal(pixels(result.images[0]), pixels(expected.images[0]))


def test_a_text_encoder_of_another_size_is_refused_not_run_with_random_weights(
    models, tmp_path, monkeypatch
):
    from family_files import _t5  # type: ignore[import-not-found]
    from safetensors.torch import save_file

    from core import pipelines
    from core.errors import ModelError

    config = tiny_config(models, "flux1", "schnell", tmp_path)
    monkeypatch.setattr(pipelines, "flow_config_folder", lambda info: config)
    written = save_family(tmp_path / "models", "flux1", "schnell", fmt="parts")
    wider = {k: v.clone() for k, v in _t5(48).state_dict().items()}  # a T5 of another width
    save_file(wider, str(written["text_encoder_2"]))
    # the library's pairing refuses it (tests/core/test_family_detect.py); the loader, given it
    # anyway, refuses it too
    info = ModelInfo("flux1-schnell", written["transformer"], "flux1", "schnell", "parts",
                     parts=tuple((k, str(v)) for k, v in written.items()))
    with pytest.raises(ModelError) as caught:
        pipelines.load_flow_pipeline(info, torch.float32)
    assert caught.value.code in ("model_part_mismatch", "model_load_failed")
    assert "t5" not in str(caught.value).lower() and "\n" not in str(caught.value)


def test_a_config_without_tokenizers_takes_them_from_the_comfyui_install(
    engine, models, tmp_path, monkeypatch
):
    import shutil

    from core import pipelines
    from core.errors import ModelError

    config = tiny_config(models, "flux1", "schnell", tmp_path)
    t5 = tmp_path / "t5"
    shutil.move(str(config / "tokenizer_2"), t5)  # as the shipped folders are: no tokenizer
    monkeypatch.setattr(pipelines, "flow_config_folder", lambda info: config)
    # an install without Obscura's shipped T5 copy (the tiny model's T5 has its own vocabulary)
    from core import family_tokenizers

    monkeypatch.setattr(family_tokenizers, "shipped_folder", lambda kind: tmp_path / "none")
    expected, _ = paint(engine, "flux1-schnell")
    install = tmp_path / "ComfyUI"
    save_family(install / "models", "flux1", "schnell", fmt="parts")
    files = Engine(ModelRegistry(install / "models"), device="cpu")
    [info] = files.registry.models
    with pytest.raises(ModelError) as caught:
        paint(files, info.name)
    assert caught.value.code == "tokenizer_missing"
    shutil.copytree(t5, install / "comfy" / "text_encoders" / "t5_tokenizer")
    result, _ = paint(files, info.name)
    assert np.array_equal(pixels(result.images[0]), pixels(expected.images[0]))


def test_an_sd_model_refuses_reference_pictures_instead_of_dropping_them(models_dir):
    engine = Engine(ModelRegistry(models_dir), device="cpu")
    request = GenerationRequest("a boat", model="demo-tiny-sd", references=[photo()])
    with pytest.raises(InputError) as caught:
        engine.validate(request)
    assert caught.value.code == "references_not_for_model"


def test_a_large_reference_is_scaled_down_before_it_costs_tokens(engine):
    from core.flow import REFERENCE_AREA, _bounded

    big = _bounded(Image.new("RGB", (4000, 3000)), REFERENCE_AREA)
    assert big.width * big.height <= REFERENCE_AREA
    assert big.width % 16 == 0 and big.height % 16 == 0
    assert abs(big.width / big.height - 4 / 3) < 0.02
    small = Image.new("RGB", (64, 48))
    assert _bounded(small, REFERENCE_AREA) is small
    result, _ = paint(engine, "flux2-klein", references=[photo().resize((2048, 2048))])
    assert result.images[0].size == (64, 64)


# -- the shipped configs (core/configs, F1) against the table -------------------------------------
def shipped_family_configs() -> list[Path]:
    from importlib import resources

    root = Path(str(resources.files("core.configs")))
    return sorted(d for d in root.iterdir()
                  if (d / "model_index.json").is_file() and d.name.split("-")[0] in FAMILIES)


@pytest.mark.parametrize("folder", shipped_family_configs(), ids=lambda p: p.name)
def test_each_shipped_config_is_the_pipeline_the_table_loads_and_runs_its_samplers(folder):
    import json

    from core.samplers import FLOW_SAMPLERS, make_flow_scheduler

    arch, variant = folder.name.split("-", 1)
    variant = variant.removesuffix("-9b")
    fam = family(arch, variant)
    index = json.loads((folder / "model_index.json").read_text("utf-8"))
    assert index["_class_name"] == fam.base_pipeline
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text("utf-8"))
    for sampler in fam.samplers:
        scheduler = make_flow_scheduler(FLOW_SAMPLERS[sampler], config)
        options = {"mu": 0.8} if config.get("use_dynamic_shifting") else {}
        scheduler.set_timesteps(4, **options)
        sigmas = scheduler.sigmas
        assert len(scheduler.timesteps) >= 4 and float(sigmas[0]) > float(sigmas[-1]) >= 0.0


@pytest.mark.parametrize("model", ["flux1-schnell", "sd3-medium"])
def test_euler_a_noise_comes_from_the_seed_not_the_global_rng(engine, model):
    first, _ = paint(engine, model, sampler="Euler a", num_inference_steps=3)
    torch.manual_seed(12345)  # the global RNG moves; the picture must not
    torch.rand(100)
    again, _ = paint(engine, model, sampler="Euler a", num_inference_steps=3)
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))
    other, _ = paint(engine, model, sampler="Euler a", num_inference_steps=3, seed=8)
    assert not np.array_equal(pixels(first.images[0]), pixels(other.images[0]))
    batch, _ = paint(engine, model, sampler="Euler a", num_inference_steps=3, batch_size=2)
    assert np.abs(pixels(batch.images[1]) - pixels(other.images[0])).max() <= 2


@pytest.mark.parametrize("model", ["flux1-schnell", "qwenimage-base"])
def test_a_prompt_the_text_encoder_cuts_is_reported(engine, model):
    short, _ = paint(engine, model)
    assert "prompt_truncated" not in short.extras.get("ignored", [])
    long, _ = paint(engine, model, prompt="a red boat on a calm sea at dawn, " * 40)
    assert "prompt_truncated" in long.extras["ignored"]


@pytest.mark.parametrize(("arch", "variant"), DEFAULTS)
def test_the_fitted_preview_predicts_what_the_vae_draws(engine, arch, variant):
    """On latents it was not fitted on, the preview's projection explains part of the VAE's
    mean colour per latent cell (R² > 0: better than one flat colour), for every latent space."""
    from core.preview import decode_grid, fit_projection, preview_cells

    info = engine.load(name(arch, variant))
    pipe = engine._pipeline(info, "txt2img")
    fam = family(arch, variant)
    channels = fam.latent_channels * (4 if fam.packed else 1)
    factors, bias = fit_projection(pipe, fam.latent_space, channels, fam.packed)
    held_out = torch.randn((2, channels, 8, 8), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        pictures = decode_grid(pipe, fam.latent_space, held_out, fam.packed).float()
    cells = preview_cells(held_out, fam.packed)
    means = torch.nn.functional.avg_pool2d(pictures, pictures.shape[-1] // cells.shape[-1])
    predicted = torch.einsum("bchw,cr->brhw", cells, factors) + bias.view(1, 3, 1, 1)
    r2 = 1 - ((predicted - means) ** 2).sum() / ((means - means.mean()) ** 2).sum()
    assert float(r2) > 0.05
