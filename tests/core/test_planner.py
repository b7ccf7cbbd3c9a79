"""The memory planner (core/planner.py): choices on simulated devices, refusals, forced modes,
sizes read from real files, and that ``apply`` enacts each mode with diffusers' own methods.

The simulated models use PUBLISHED parameter counts (model cards / config.json of each model,
labelled below); the activation figures are the planner's documented estimates. Nothing here
needs a GPU: ``model-offload`` and ``sequential-offload`` are CUDA-only in diffusers/accelerate,
so for those two ``apply`` is checked with the pipeline method replaced by a recorder (said
again where it is done); group offload and fp8 layerwise storage really run on the CPU.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from family_files import build_pipeline, save_family  # noqa: E402

from core import planner
from core.devices import plan as legacy_plan
from core.errors import InputError
from core.planner import GB, Part, Plan, apply, describe, model_sizes, plan_model
from core.registry import ModelInfo

M = 10**6
BF16 = torch.bfloat16


# -- published sizes (parameter counts) ---------------------------------------------------------
def _denoiser(params: int, blocks: int, name: str = "transformer", largest: int | None = None,
              leftover: float = 0.03) -> Part:
    block = largest or params // blocks
    return Part(name, params, largest_block=block, largest_tensor=block // 6,
                in_blocks=int(params * (1 - leftover)))


VAE = Part("vae", 84 * M, largest_tensor=2 * M)  # FLUX.1 / SD3 / FLUX.2 VAE: ~84 M (config)
CLIP_L = Part("text_encoder", 123 * M, largest_tensor=38 * M)  # openai/clip-vit-large-patch14
CLIP_G = Part("text_encoder_2", 695 * M, largest_tensor=63 * M)  # OpenCLIP bigG text tower
QWEN3_4B = Part("text_encoder", 4022 * M, largest_tensor=389 * M)  # Qwen3-4B: 4.0 B, 151936x2560


def _t5(name: str) -> Part:  # google/t5-v1_1-xxl encoder: 4.76 B (9.5 GB bf16), 32128x4096
    return Part(name, 4762 * M, largest_tensor=132 * M)


PUBLISHED: dict[tuple[str, str], tuple[Part, ...]] = {
    # FLUX.2 [klein] 4B: ~7.8 GB bf16 transformer (model card) + Qwen3-4B (8 GB bf16)
    ("flux2", "klein"): (_denoiser(3880 * M, 25), QWEN3_4B, VAE),
    # FLUX.1 [dev]: 12 B transformer, 23.8 GB bf16 (model card), 19 double + 38 single blocks
    ("flux1", "dev"): (_denoiser(11901 * M, 57, largest=339 * M), CLIP_L, _t5("text_encoder_2"),
                       VAE),
    # SD 3.5 Medium: 2.5 B MMDiT-X (model card), 24 blocks; CLIP-L, CLIP-G, T5-XXL
    ("sd3", "medium"): (_denoiser(2470 * M, 24), CLIP_L, CLIP_G, _t5("text_encoder_3"), VAE),
    # SD 3.5 Large: 8.1 B MMDiT (model card), 38 blocks
    ("sd3", "large"): (_denoiser(8060 * M, 38), CLIP_L, CLIP_G, _t5("text_encoder_3"), VAE),
    # Z-Image-Turbo: 6 B single-stream DiT (model card), Qwen3-4B text encoder, FLUX.1 VAE
    ("zimage", "turbo"): (_denoiser(6150 * M, 30), QWEN3_4B, VAE),
    # Qwen-Image: 20 B MMDiT (model card), 60 blocks; Qwen2.5-VL-7B (8.3 B) text encoder
    ("qwenimage", "base"): (_denoiser(20430 * M, 60),
                            Part("text_encoder", 8292 * M, largest_tensor=545 * M),
                            Part("vae", 127 * M, largest_tensor=2 * M)),
    # SDXL base 1.0: UNet 2.57 B; SD 1.5: UNet 0.86 B (model cards)
    ("sdxl", "base"): (_denoiser(2567 * M, 70, "unet", leftover=0.1), CLIP_L, CLIP_G, VAE),
    ("sd1", "base"): (_denoiser(860 * M, 25, "unet", leftover=0.1), CLIP_L, VAE),
}
# city96/FLUX.1-dev-gguf flux1-dev-Q4_K_S.gguf: 6.81 GB
FLUX1_DEV_GGUF = (Part("transformer", 11901 * M, largest_block=339 * M // 3, largest_tensor=20 * M,
                       in_blocks=11500 * M, stored_bytes=6810 * M),) + PUBLISHED[("flux1", "dev")][1:]


def info_for(arch: str, variant: str, fmt: str = "diffusers") -> ModelInfo:
    return ModelInfo(f"{arch}-{variant}", Path("/nowhere"), arch, variant, fmt)


def plan_on(key: tuple[str, str], vram_gb: float | None, ram_gb: float, *, force: str | None = None,
            installed: frozenset[str] = frozenset(), parts: tuple[Part, ...] | None = None,
            device: str = "cuda:0") -> Plan:
    return plan_model(
        info_for(*key), device, BF16,
        free_vram=None if vram_gb is None else int(vram_gb * GB), free_ram=int(ram_gb * GB),
        force=force, installed=installed, parts=parts or PUBLISHED[key],
    )


def one_sentence(text: str) -> bool:
    return text.endswith(".") and "\n" not in text and not re.search(r"[.!?]\s+[A-Z]", text)


# -- the table of choices ------------------------------------------------------------------------
VRAMS = (8, 12, 16, 24, 48)
# (arch, variant) -> {VRAM GB: mode}, with 64 GB of RAM free.
EXPECTED_64: dict[tuple[str, str], dict[int, str]] = {
    ("flux2", "klein"): {8: "group-offload", 12: "model-offload", 16: "model-offload",
                         24: "full", 48: "full"},
    ("flux1", "dev"): {8: "group-offload", 12: "group-offload",
                       16: "fp8-layerwise + model-offload", 24: "fp8-layerwise + model-offload",
                       48: "full"},
    ("sd3", "medium"): {8: "group-offload", 12: "model-offload", 16: "model-offload",
                        24: "full", 48: "full"},
    ("sd3", "large"): {8: "group-offload", 12: "fp8-layerwise + model-offload",
                       16: "fp8-layerwise + model-offload", 24: "model-offload", 48: "full"},
    ("zimage", "turbo"): {8: "group-offload", 12: "fp8-layerwise + model-offload",
                          16: "model-offload", 24: "full", 48: "full"},
    ("qwenimage", "base"): {8: "group-offload", 12: "group-offload", 16: "group-offload",
                            24: "fp8-layerwise + model-offload", 48: "model-offload"},
    ("sdxl", "base"): {8: "model-offload", 12: "model-offload", 16: "full", 24: "full",
                       48: "full"},
    ("sd1", "base"): {8: "full", 12: "full", 16: "full", 24: "full", 48: "full"},
}


@pytest.mark.parametrize("key", list(EXPECTED_64), ids=lambda k: "-".join(k))
def test_the_table_of_choices_with_64_gb_of_ram(key: tuple[str, str]) -> None:
    got = {vram: plan_on(key, vram, 64).mode for vram in VRAMS}
    assert got == EXPECTED_64[key]


@pytest.mark.parametrize("key", [k for k in PUBLISHED if k[0] not in ("sd1", "sd2", "sdxl")],
                         ids=lambda k: "-".join(k))
@pytest.mark.parametrize("vram", VRAMS)
@pytest.mark.parametrize("ram", (16, 32, 64))
def test_every_choice_fits_and_no_faster_mode_would(key: tuple[str, str], vram: int,
                                                    ram: int) -> None:
    try:
        plan = plan_on(key, vram, ram)
    except InputError as err:
        assert err.code in ("model_cannot_fit", "model_cannot_fit_ram")
        assert one_sentence(str(err)), str(err)
        return
    assert plan.peak_vram + planner.VRAM_RESERVE <= vram * GB
    assert plan.peak_ram + planner.RAM_RESERVE <= ram * GB
    assert plan.peak_vram > 0 and plan.peak_ram > 0
    assert plan.storage != "bnb-4bit" and "bnb" not in plan.mode  # not installed here
    order = planner._candidates(info_for(*key), False, frozenset())
    for placement, storage in order[: order.index((plan.placement, plan.storage))]:
        try:  # forcing an earlier (faster) candidate: it must not fit
            earlier = plan_on(key, vram, ram, force=_force_name(placement, storage))
        except InputError as err:
            assert err.code == "model_cannot_fit_gpu"
            continue
        assert (earlier.placement, earlier.storage) != (placement, storage)


def _force_name(placement: str, storage: str) -> str:
    return {"fp8": "fp8-layerwise"}.get(storage, placement)


def test_klein_runs_all_on_a_48_gb_gpu_and_offloads_on_8_gb() -> None:
    assert plan_on(("flux2", "klein"), 48, 32).mode == "full"
    small = plan_on(("flux2", "klein"), 8, 32)
    assert small.placement in ("group-offload", "model-offload")
    assert small.peak_vram < 8 * GB
    assert small.vae_tiling and not small.attention_slicing


def test_a_model_too_big_for_the_ram_is_refused_with_what_would_make_it_fit() -> None:
    # FLUX.1 dev's weights are 33.7 GB in bf16: no GPU mode helps with 32 GB of RAM free.
    with pytest.raises(InputError) as caught:
        plan_on(("flux1", "dev"), 48, 32)
    err = caught.value
    assert err.code == "model_cannot_fit"
    assert one_sentence(str(err))
    assert "GGUF Q4 transformer (about 6.8 GB)" in str(err)
    assert "32.0 GB free" in str(err)
    # ... and the GGUF Q4 file it names does fit.
    assert plan_on(("flux1", "dev"), 48, 32, parts=FLUX1_DEV_GGUF).storage == "gguf"


def test_ram_too_small_even_for_gguf_says_add_memory() -> None:
    with pytest.raises(InputError) as caught:
        plan_on(("qwenimage", "base"), 48, 16)
    assert caught.value.code == "model_cannot_fit_ram"
    assert one_sentence(str(caught.value))
    with pytest.raises(InputError) as caught:
        plan_on(("sdxl", "base"), 24, 4)
    assert caught.value.code == "model_cannot_fit_ram"


def test_sd_models_keep_the_rule_they_always_had() -> None:
    for key in (("sdxl", "base"), ("sd1", "base")):
        total = sum(p.params for p in PUBLISHED[key]) * 2
        for vram in (2, 3, 4, 6, 8, 12, 16, 24, 48):
            new = plan_on(key, vram, 64)
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr("core.devices.free_memory_bytes", lambda _d, v=vram: v * GB)
                old = legacy_plan("cuda:0", BF16, total)
            assert (new.memory_mode, new.attention_slicing, new.vae_tiling) == (
                old.memory_mode, old.attention_slicing, old.vae_tiling), (key, vram)


def test_gguf_models_plan_with_their_file_size() -> None:
    key = ("flux1", "dev")
    assert plan_on(key, 24, 32, parts=FLUX1_DEV_GGUF).mode == "gguf"
    assert plan_on(key, 12, 32, parts=FLUX1_DEV_GGUF).mode == "gguf + model-offload"
    full = plan_on(key, 24, 32, parts=FLUX1_DEV_GGUF)
    assert full.peak_vram < plan_on(key, 48, 64).peak_vram - 15 * GB
    with pytest.raises(InputError) as caught:
        plan_on(key, 24, 32, parts=FLUX1_DEV_GGUF, force="fp8-layerwise")
    assert caught.value.code == "memory_mode_not_for_gguf"


# -- forced modes ----------------------------------------------------------------------------------
def test_a_forced_mode_is_honoured_and_shown_as_forced() -> None:
    plan = plan_on(("flux2", "klein"), 48, 32, force="model-offload")
    assert (plan.mode, plan.forced) == ("model-offload", True)
    assert "(forced)" in plan.sentence and "(forced)" in describe(plan, "en")
    assert plan_on(("flux2", "klein"), 48, 32, force="none").mode == "full"
    fp8 = plan_on(("flux2", "klein"), 16, 32, force="fp8-layerwise")
    assert (fp8.storage, fp8.placement) == ("fp8", "full")
    group = plan_on(("sdxl", "base"), 48, 32, force="group-offload")
    assert group.placement == "group-offload" and group.memory_mode == "group-offload"


def test_a_forced_mode_that_cannot_fit_is_one_sentence() -> None:
    with pytest.raises(InputError) as caught:
        plan_on(("flux2", "klein"), 8, 32, force="full")
    assert caught.value.code == "model_cannot_fit_gpu"
    assert one_sentence(str(caught.value)) and "8.0 GB free" in str(caught.value)
    with pytest.raises(InputError) as caught:
        plan_on(("flux2", "klein"), 48, 32, force="turbo")
    assert caught.value.code == "bad_memory_mode"


def test_bitsandbytes_absent_is_never_chosen_and_a_forced_choice_says_how_to_install() -> None:
    assert ("bnb" in planner.installed_backends()) == (
        _imports("bitsandbytes") and planner.BNB_LOADER)
    for key in PUBLISHED:
        for vram in VRAMS:
            for ram in (16, 32, 64):
                try:
                    assert "bnb" not in plan_on(key, vram, ram).storage
                except InputError:
                    pass
    with pytest.raises(InputError) as caught:
        plan_on(("flux1", "dev"), 24, 64, force="bnb-4bit")
    assert caught.value.code == "bnb_not_installed"
    assert "pip install bitsandbytes" in str(caught.value)


def test_bitsandbytes_when_installed_is_what_lets_a_big_model_fit_small_ram() -> None:
    bnb = frozenset({"bnb"})
    plan = plan_on(("flux1", "dev"), 24, 32, installed=bnb)  # refused without it (see above)
    assert plan.storage in ("bnb-8bit", "bnb-4bit")
    assert plan.peak_ram + planner.RAM_RESERVE <= 32 * GB
    assert plan_on(("flux1", "dev"), 48, 64, installed=bnb).mode == "full"  # not when not needed
    with pytest.raises(InputError) as caught:
        plan_on(("sdxl", "base"), 24, 64, installed=bnb, force="bnb-8bit")
    assert caught.value.code == "memory_mode_not_for_unet"


def _imports(name: str) -> bool:
    try:
        __import__(name)
    except Exception:
        return False
    return True


# -- the CPU, and the line shown ---------------------------------------------------------------------
def test_on_the_cpu_the_plan_is_the_ram_in_float32() -> None:
    key = ("flux2", "klein")
    plan = plan_model(info_for(*key), "cpu", torch.float32, free_vram=None, free_ram=128 * GB,
                      parts=PUBLISHED[key], installed=frozenset())
    weights = sum(p.params for p in PUBLISHED[key]) * 4
    assert plan.placement == "cpu" and plan.peak_vram == 0
    assert weights < plan.peak_ram < weights + 6 * GB
    assert describe(plan, "en") == f"cpu, about {plan.peak_ram / GB:.1f} GB of RAM"
    assert describe(plan, "zh").startswith("CPU，约 ")
    with pytest.raises(InputError) as caught:
        plan_model(info_for(*key), "cpu", torch.float32, free_vram=None, free_ram=16 * GB,
                   parts=PUBLISHED[key], installed=frozenset())
    assert caught.value.code == "model_cannot_fit_ram"  # a GGUF Q4 would not fit 16 GB either
    assert "for the CPU" in str(caught.value) and one_sentence(str(caught.value))


def test_describe_is_one_short_line_in_both_languages() -> None:
    group = plan_on(("flux2", "klein"), 8, 32)
    assert describe(group, "en") == f"group offload, about {group.peak_vram / GB:.1f} GB on the GPU"
    assert describe(group, "zh") == f"分组卸载，GPU 上约 {group.peak_vram / GB:.1f} GB"
    fp8 = plan_on(("flux1", "dev"), 24, 64)
    assert describe(fp8, "en").startswith("fp8 weights + model offload, about ")
    assert describe(plan_on(("flux2", "klein"), 48, 32), "en").startswith("all on the GPU, about")
    assert fp8.as_json()["mode"] == "fp8-layerwise + model-offload"
    assert fp8.as_json()["peak_vram_bytes"] == fp8.peak_vram


# -- sizes from real files ----------------------------------------------------------------------------
def _numel(module: Any, tied_once: bool = False) -> int:
    """Parameters in the file: save_pretrained writes a tied weight once, a state dict twice."""
    if tied_once:
        return sum(t.numel() for t in module.parameters())
    return sum(t.numel() for t in module.state_dict().values())


@pytest.mark.parametrize("fmt", ["diffusers", "parts", "single-file", "gguf"])
def test_sizes_are_read_from_the_headers_of_each_layout(tmp_path: Path, fmt: str) -> None:
    pipe = build_pipeline("flux2")
    written = save_family(tmp_path, "flux2", fmt=fmt)
    if fmt == "diffusers":
        info = ModelInfo("k", written["pipeline"], "flux2", "klein", "diffusers")
    elif fmt == "single-file":
        info = ModelInfo("k", written["checkpoint"], "flux2", "klein", "single-file")
    else:
        info = ModelInfo("k", written["transformer"], "flux2", "klein", fmt,
                         parts=tuple((c, str(p)) for c, p in written.items()))
    sizes = {p.name: p for p in model_sizes(info)}
    assert sizes["transformer"].params == _numel(pipe.transformer)
    assert sizes["vae"].params == _numel(pipe.vae)
    assert sum(p.params for n, p in sizes.items() if n.startswith("text_encoder")) == _numel(
        pipe.text_encoder, tied_once=fmt == "diffusers")
    blocks = [k for k in pipe.transformer.state_dict() if k.startswith("single_transformer_blocks.0.")]
    assert sizes["transformer"].largest_block >= sum(
        pipe.transformer.state_dict()[k].numel() for k in blocks)
    if fmt == "gguf":  # the file's own size counts (F32 here), not the run dtype's
        assert sizes["transformer"].stored_bytes == 4 * _numel(pipe.transformer)
    else:
        assert sizes["transformer"].stored_bytes is None


def test_an_all_in_one_file_is_split_by_its_prefixes_and_counted_once(tmp_path: Path) -> None:
    from family_files import write_header_file

    path = write_header_file(tmp_path / "klein-aio.safetensors", {
        "model.diffusion_model.double_blocks.0.img_attn.qkv.weight": [24, 8],
        "model.diffusion_model.double_blocks.1.img_attn.qkv.weight": [24, 8],
        "model.diffusion_model.img_in.weight": [8, 4],
        "text_encoders.qwen3_4b.transformer.model.layers.0.mlp.up_proj.weight": [16, 8],
        "text_encoders.qwen3_4b.transformer.model.embed_tokens.weight": [50, 8],
        "vae.decoder.conv_in.weight": [4, 4, 3, 3],
    })
    info = ModelInfo("k", path, "flux2", "klein", "single-file",
                     parts=(("vae", str(path)), ("text_encoder", str(path))))
    sizes = {p.name: p for p in model_sizes(info)}
    assert {n: p.params for n, p in sizes.items()} == {
        "transformer": 2 * 24 * 8 + 8 * 4, "text_encoder_qwen3_4b": 16 * 8 + 50 * 8, "vae": 144}
    assert sizes["transformer"].largest_block == 24 * 8
    assert sizes["transformer"].in_blocks == 2 * 24 * 8
    assert sizes["text_encoder_qwen3_4b"].largest_tensor == 50 * 8


def test_sizes_of_an_sd_demo_model(models_dir: Path) -> None:
    import diffusers

    folder = next(p for p in models_dir.iterdir() if "sdxl" not in p.name)
    sizes = {p.name: p.params for p in model_sizes(ModelInfo("d", folder, "sd1", "base",
                                                             "diffusers"))}
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    assert sizes == {n: _numel(getattr(pipe, n)) for n in ("text_encoder", "unet", "vae")}


# -- apply() on real tiny pipelines -------------------------------------------------------------------
def _cpu_plan(placement: str, storage: str = "native") -> Plan:
    return Plan("cpu", torch.float32, "none" if placement == "full" else placement, False, False,
                placement=placement, storage=storage)


def _paint(pipe: Any) -> Any:
    generator = torch.Generator("cpu").manual_seed(3)
    return pipe(prompt="a lighthouse", num_inference_steps=1, height=64, width=64,
                generator=generator, output_type="np").images


@pytest.mark.parametrize("arch", ["flux2", "sd3"])
def test_group_offload_runs_and_paints_the_same_picture(arch: str) -> None:
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    reference = _paint(build_pipeline(arch))
    pipe = build_pipeline(arch)
    apply(pipe, _cpu_plan("group-offload"))
    apply(pipe, _cpu_plan("group-offload"))  # again (a derived pipeline, a new VAE): no error
    assert _is_group_offload_enabled(pipe.transformer)
    assert _is_group_offload_enabled(pipe.text_encoder)
    assert not _is_group_offload_enabled(pipe.vae)  # the VAE stays on the device
    assert (_paint(pipe) == reference).all()


@pytest.mark.parametrize("arch", ["flux2", "sd3"])
def test_fp8_layerwise_stores_the_transformer_in_fp8_and_still_paints(arch: str) -> None:
    reference = _paint(build_pipeline(arch))
    pipe = build_pipeline(arch)
    before = sum(t.numel() * t.element_size() for t in pipe.transformer.state_dict().values())
    apply(pipe, _cpu_plan("full", "fp8"))
    apply(pipe, _cpu_plan("full", "fp8"))  # not cast twice
    after = sum(t.numel() * t.element_size() for t in pipe.transformer.state_dict().values())
    blocks = {p.dtype for n, p in pipe.transformer.named_parameters()
              if "transformer_blocks." in n and ".to_q.weight" in n}
    assert blocks == {torch.float8_e4m3fn}  # every block's projections; norms/embeddings kept
    assert after < before * 0.85
    picture = _paint(pipe)
    assert picture.shape == reference.shape and abs(picture - reference).mean() < 0.1


def test_offload_modes_call_the_diffusers_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    """enable_model_cpu_offload / enable_sequential_cpu_offload need a CUDA device (accelerate
    hooks): here only those two methods are replaced by recorders; everything else is real."""
    pipe = build_pipeline("flux2")
    calls: list[tuple[str, Any]] = []
    monkeypatch.setattr(pipe, "enable_model_cpu_offload",
                        lambda device=None: calls.append(("model", device)))
    monkeypatch.setattr(pipe, "enable_sequential_cpu_offload",
                        lambda device=None: calls.append(("sequential", device)))
    plan = Plan("cuda:0", BF16, "model-offload", False, True, placement="model-offload")
    apply(pipe, plan)
    apply(pipe, replace_placement(plan, "sequential-offload"))
    assert calls == [("model", "cuda:0"), ("sequential", "cuda:0")]
    assert pipe.vae.use_tiling


def replace_placement(plan: Plan, placement: str) -> Plan:
    from dataclasses import replace

    return replace(plan, placement=placement, memory_mode=placement)


def test_load_kwargs_name_the_quantizer_of_the_plan() -> None:
    from diffusers import GGUFQuantizationConfig

    assert planner.transformer_load_kwargs(_cpu_plan("full")) == {}
    kwargs = planner.transformer_load_kwargs(_cpu_plan("full", "gguf"))
    assert isinstance(kwargs["quantization_config"], GGUFQuantizationConfig)


# -- the engine plans with it ---------------------------------------------------------------------------
def test_the_engine_plans_each_model_and_refuses_before_loading(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core import pipelines
    from core.engine import Engine
    from core.registry import ModelRegistry

    engine = Engine(ModelRegistry(models_dir), device="cpu")
    info = engine.load()
    assert isinstance(engine.plan, Plan) and engine.plan.placement == "cpu"
    assert engine.plan_for(info) is engine.plan
    engine.unload()

    loads: list[str] = []
    monkeypatch.setattr(pipelines, "load_base_pipeline", lambda *a: loads.append("load"))
    monkeypatch.setattr(planner, "free_ram_bytes", lambda: 1000)  # a machine with no RAM free
    with pytest.raises(InputError) as caught:
        engine.load()
    assert caught.value.code == "model_cannot_fit_ram" and loads == []
    assert one_sentence(str(caught.value))


def test_a_model_that_cannot_fit_does_not_evict_the_loaded_one(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Choosing a model that fits nowhere is refused before the loaded model is let go: one
    person's mistake must not make everybody else's model reload (found by the review)."""
    from core.demo import DEMO_NAME
    from core.engine import Engine, GenerationRequest
    from core.registry import ModelRegistry

    engine = Engine(ModelRegistry(models_dir), device="cpu")
    loaded = engine.load(DEMO_NAME["sd"])
    pipes = dict(engine._pipes)
    real_plan_here = planner.plan_here

    def plan_here(info: ModelInfo, *args: Any, **kwargs: Any) -> Plan:
        if info.name == DEMO_NAME["sdxl"]:
            raise InputError("model_cannot_fit_ram", "It needs more memory than this machine has.")
        return real_plan_here(info, *args, **kwargs)

    monkeypatch.setattr(planner, "plan_here", plan_here)
    with pytest.raises(InputError) as caught:
        engine.load(DEMO_NAME["sdxl"])
    assert caught.value.code == "model_cannot_fit_ram"
    # ... and a job for it is refused when it is submitted, before it waits in line
    with pytest.raises(InputError) as caught:
        engine.validate(GenerationRequest(prompt="a cat", model=DEMO_NAME["sdxl"]))
    assert caught.value.code == "model_cannot_fit_ram"
    assert engine.current_model == loaded.name
    assert engine._pipes["txt2img"] is pipes["txt2img"]


# -- `obscura models` shows the plan ------------------------------------------------------------------
def _models_cli(*args: str) -> Any:
    from click.testing import CliRunner

    from webui.cli import main

    return CliRunner().invoke(main, ["models", *args], catch_exceptions=False)


def test_obscura_models_shows_each_checkpoints_plan(models_dir: Path, tmp_path: Path) -> None:
    folders = ("--models-dir", str(models_dir), "--data-dir", str(tmp_path))
    out = _models_cli(*folders).output
    assert re.search(r"plan: cpu, about \d+\.\d+ GB of RAM\n", out), out
    listing = json.loads(_models_cli("--json", *folders).output)
    plan = listing["items"]["checkpoint"][0]["plan"]
    assert plan["fits"] and plan["mode"] == "cpu" and plan["peak_ram_bytes"] > 0
    forced = json.loads(_models_cli("--json", "--memory-mode", "group-offload", *folders).output)
    assert "applies to a GPU only" in forced["items"]["checkpoint"][0]["plan"]["sentence"]


def test_obscura_models_on_a_gpu_shows_the_mode_and_a_forced_one(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A simulated 8 GB GPU: only the device look-ups are replaced (no CUDA here)."""
    import core.devices

    monkeypatch.setattr(core.devices, "resolve_device", lambda _r="auto": "cuda:0")
    monkeypatch.setattr(core.devices, "resolve_dtype", lambda _d, _r="auto": BF16)
    monkeypatch.setattr(core.devices, "free_memory_bytes", lambda _d: 8 * GB)
    folders = ("--models-dir", str(models_dir), "--data-dir", str(tmp_path))
    out = _models_cli(*folders).output
    assert re.search(r"plan: all on the GPU, about \d+\.\d+ GB on the GPU\n", out), out
    out = _models_cli("--memory-mode", "model-offload", *folders).output
    assert re.search(r"plan: model offload, about \d+\.\d+ GB on the GPU \(forced\)\n", out), out
    listing = json.loads(_models_cli("--json", "--memory-mode", "bnb-4bit", *folders).output)
    refused = listing["items"]["checkpoint"][0]["plan"]
    assert not refused["fits"] and refused["code"] in ("bnb_not_installed",
                                                       "memory_mode_not_for_unet")


# -- on a GPU (skipped without CUDA): each mode loads and paints one step ----------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA)")
@pytest.mark.parametrize("arch", ["flux2", "sd3"])
@pytest.mark.parametrize(("placement", "storage"), [
    ("full", "native"), ("model-offload", "native"), ("group-offload", "native"),
    ("sequential-offload", "native"), ("full", "fp8"), ("model-offload", "fp8"),
])
def test_each_mode_runs_one_step_on_the_gpu(arch: str, placement: str, storage: str) -> None:
    pipe = build_pipeline(arch).to(torch.bfloat16)
    plan = Plan("cuda:0", torch.bfloat16, "none" if placement == "full" else placement, False,
                placement != "full", placement=placement, storage=storage)
    torch.cuda.reset_peak_memory_stats()
    apply(pipe, plan)
    generator = torch.Generator("cpu").manual_seed(3)
    picture = pipe(prompt="a lighthouse", num_inference_steps=1, height=64, width=64,
                   generator=generator, output_type="np").images
    assert picture.shape == (1, 64, 64, 3)
    assert torch.isfinite(torch.from_numpy(picture)).all()
    assert torch.cuda.max_memory_allocated() > 0


def test_a_tiny_test_model_is_planned_as_tiny(tmp_path: Path) -> None:
    """Activations scale with the model's size against the family's published one, so a tiny
    random-weight model is not refused on a machine with little RAM free."""
    written = save_family(tmp_path, "flux2")
    info = ModelInfo("k", written["pipeline"], "flux2", "klein", "diffusers")
    plan = plan_model(info, "cpu", torch.float32, free_vram=None, free_ram=int(1.1 * GB),
                      installed=frozenset())
    assert plan.peak_ram < 10**8
    assert describe(plan).startswith("cpu, about 0.0")
