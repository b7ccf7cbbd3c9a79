"""The memory planner's modes on real shapes: FLUX.2 [klein] 4B and SD 3.5 Medium with random
weights at 1024x1024, one row per mode: steps/s, seconds a picture, the peak GPU memory
(``torch.cuda.max_memory_allocated``) next to the planner's expected peak (core/planner.py).

Needs a CUDA GPU with room for the full mode (~19 GB) and ~40 GB of free disk and RAM; on a
machine without one it says so and stops. Not a test. ``bench/engine.py --gpu`` runs it too.

    python bench/planner_modes.py                       # both families, every mode
    python bench/planner_modes.py --family klein --modes full group-offload
    python bench/planner_modes.py --dry-run             # the same code on tiny shapes, CPU

Shapes: the published config values of each model (transformer/config.json, text encoders'
config.json), written out below; the weights are random (same FLOPs and bytes, noise out).
The tokenizers are tiny ones built in code (tests/family_files.py): only the token ids differ,
the sequence lengths (max_sequence_length) are the pipelines' own.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import core  # noqa: F401  (offline first)
from core import planner
from core.pipelines import _quiet_libraries
from core.registry import ModelInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# black-forest-labs/FLUX.2-klein-4B transformer/config.json (5 double + 20 single blocks, 3072
# wide; joint_attention_dim = 3 stacked Qwen3-4B layers x 2560)
KLEIN_4B = dict(
    patch_size=1, in_channels=128, out_channels=None, num_layers=5, num_single_layers=20,
    attention_head_dim=128, num_attention_heads=24, joint_attention_dim=7680,
    timestep_guidance_channels=256, mlp_ratio=3.0, axes_dims_rope=(32, 32, 32, 32),
    rope_theta=2000, guidance_embeds=False,
)
# Qwen/Qwen3-4B config.json
QWEN3_4B = dict(
    vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
    num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
    rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
)
# stabilityai/stable-diffusion-3.5-medium transformer/config.json (MMDiT-X)
SD35_MEDIUM = dict(
    sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
    pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=384,
    dual_attention_layers=tuple(range(13)), qk_norm="rms_norm",
)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, projection_dim=768, max_position_embeddings=77,
              hidden_act="quick_gelu")
CLIP_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
              num_attention_heads=20, projection_dim=1280, max_position_embeddings=77,
              hidden_act="gelu")
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              relative_attention_num_buckets=32, feed_forward_proj="gated-gelu",
              is_encoder_decoder=False, use_cache=False)
SD3_VAE = dict(in_channels=3, out_channels=3, latent_channels=16,
               block_out_channels=(128, 256, 512, 512),
               down_block_types=("DownEncoderBlock2D",) * 4,
               up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2,
               scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
               use_post_quant_conv=False, sample_size=1024)

FAMILIES = {"klein": ("flux2", "klein", "Flux2KleinPipeline"),
            "sd35m": ("sd3", "medium", "StableDiffusion3Pipeline")}
MODES = ("full", "model-offload", "group-offload", "sequential-offload", "fp8-layerwise")
CPU_MODES = ("full", "group-offload", "fp8-layerwise")  # the others need CUDA (accelerate hooks)


def _real_components(family: str, device: str) -> dict[str, Any]:
    """Random weights in the real shapes, initialised on ``device`` (fast on a GPU), bf16."""
    import diffusers
    import transformers
    from family_files import qwen_tokenizer, t5_tokenizer

    from core.tokenizer import clip_tokenizer

    with torch.device(device):
        if family == "klein":
            parts: dict[str, Any] = {
                "transformer": diffusers.Flux2Transformer2DModel(**KLEIN_4B),
                "text_encoder": transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**QWEN3_4B)),
                "vae": diffusers.AutoencoderKLFlux2(),  # its defaults are FLUX.2's VAE
            }
            extra: dict[str, Any] = {"tokenizer": qwen_tokenizer(), "is_distilled": True}
            scheduler = dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                             base_image_seq_len=256, max_image_seq_len=4096)
        else:
            parts = {
                "transformer": diffusers.SD3Transformer2DModel(**SD35_MEDIUM),
                "text_encoder": transformers.CLIPTextModelWithProjection(
                    transformers.CLIPTextConfig(**CLIP_L)),
                "text_encoder_2": transformers.CLIPTextModelWithProjection(
                    transformers.CLIPTextConfig(**CLIP_G)),
                "text_encoder_3": transformers.T5EncoderModel(transformers.T5Config(**T5_XXL)),
                "vae": diffusers.AutoencoderKL(**SD3_VAE),
            }
            extra = {"tokenizer": clip_tokenizer(), "tokenizer_2": clip_tokenizer("!"),
                     "tokenizer_3": t5_tokenizer()}
            scheduler = dict(shift=3.0)
    parts = {name: module.to(torch.bfloat16).to("cpu") for name, module in parts.items()}
    parts["scheduler"] = diffusers.FlowMatchEulerDiscreteScheduler(**scheduler)
    return {**parts, **extra}


def build(family: str, folder: Path, *, tiny: bool, device: str) -> Path:
    """Save one family model (real shapes, or the tests' tiny ones) as a diffusers folder."""
    import diffusers
    from family_files import build_components

    arch, variant, cls_name = FAMILIES[family]
    components = build_components(arch, variant) if tiny else _real_components(family, device)
    pipe = getattr(diffusers, cls_name)(**components)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    del pipe, components
    gc.collect()
    return folder


def _plan(info: ModelInfo, mode: str, device: str, dtype: torch.dtype) -> planner.Plan:
    if device.startswith("cuda"):
        return planner.plan_here(info, device, dtype, mode)
    # The CPU has no GPU modes; the dry run places the pipeline as the GPU plan would.
    placement = "full" if mode == "fp8-layerwise" else mode
    return planner.Plan(device, dtype, "none" if placement == "full" else placement, False,
                        placement != "full", placement=placement,
                        storage="fp8" if mode == "fp8-layerwise" else "native")


def run_mode(folder: Path, family: str, mode: str, device: str, size: int, steps: int) -> dict:
    import diffusers

    arch, variant, cls_name = FAMILIES[family]
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    info = ModelInfo(family, folder, arch, variant, "diffusers")
    plan = _plan(info, mode, device, dtype)
    _quiet_libraries()
    pipes = [getattr(diffusers, cls_name).from_pretrained(
        str(folder), dtype=dtype, local_files_only=True
    )]
    pipes[0].set_progress_bar_config(disable=True)
    planner.apply(pipes[0], plan)
    stamps: list[float] = []

    def stamp(_pipe: Any, _i: int, _t: Any, kwargs: dict) -> dict:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        return kwargs

    def paint(n: int) -> None:
        generator = torch.Generator("cpu").manual_seed(1)
        pipes[0](prompt="a lighthouse at dusk", num_inference_steps=n, height=size, width=size,
             generator=generator, output_type="np", callback_on_step_end=stamp)

    paint(2)  # warm-up: kernels, allocator, group-offload streams
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    stamps.clear()
    start = time.perf_counter()
    paint(steps)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    total = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else 0
    per_step = (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)
    row = {
        "family": family, "mode": plan.mode, "size": size, "steps": steps,
        "expected_gb": plan.peak_vram / planner.GB, "peak_gb": peak / planner.GB,
        "steps_per_s": 1 / per_step if per_step > 0 else float("nan"), "s_per_image": total,
    }
    pipes.clear()
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| model | mode | size | steps | planner's expected peak GB | measured peak GB | "
        "steps/s | s/picture |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['mode']} | {r['size']} | {r['steps']} | "
            f"{r['expected_gb']:.1f} | {r['peak_gb']:.1f} | {r['steps_per_s']:.2f} | "
            f"{r['s_per_image']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=sorted(FAMILIES), action="append")
    parser.add_argument("--modes", nargs="+", choices=MODES)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny shapes on the CPU (checks the code path, measures nothing)")
    args = parser.parse_args(argv)
    if args.dry_run:
        device, size, steps = "cpu", 64, 3
        modes = [m for m in (args.modes or MODES) if m in CPU_MODES]
    elif not torch.cuda.is_available():
        print("bench/planner_modes.py: no CUDA GPU here, so nothing is measured; run it on a "
              "machine with one (or --dry-run to check the code on the CPU).")
        return 0
    else:
        device, size, steps, modes = "cuda:0", args.size, args.steps, list(args.modes or MODES)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.family or sorted(FAMILIES):
            folder = build(family, Path(tmp) / family, tiny=args.dry_run, device=device)
            for mode in modes:
                n = min(steps, 3) if mode == "sequential-offload" else steps
                rows.append(run_mode(folder, family, mode, device, size, n))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"\nGPU: {gpu}, torch {torch.__version__}\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
