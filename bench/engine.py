"""Engine overhead: N jobs through Obscura's queue vs the same diffusers pipeline called directly,
for txt2img and for img2img from a 1024 px JPEG (both sides decode it with Pillow), interleaved.
The whole server path (scrub, spool, HTTP) is bench/api.py.

Prints a Markdown table (paste into docs/benchmarks.md with the machine it ran on). Not a test.

    python bench/engine.py                 # demo model on the CPU
    python bench/engine.py --families      # also each transformer family (tiny random models of
                                           # tests/family_files.py, 64 px, 4 steps) on the CPU
    python bench/engine.py --gpu           # also real SD 1.5 / SDXL UNet shapes, random weights,
                                           # and bench/planner_modes.py (FLUX.2 klein 4B and
                                           # SD 3.5 Medium per memory mode, 1024 px)
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

import core  # noqa: F401  (offline first)
from core.demo import save_demo_model
from core.engine import Engine, GenerationRequest
from core.jobs import JobQueue
from core.registry import ModelRegistry


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def photo_jpeg(side: int = 1024) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((side, side), 64).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def bench_model(
    models: Path, name: str, device: str, size: int, steps: int, runs: int, mode: str = "txt2img"
) -> dict:
    engine = Engine(ModelRegistry(models), device=device)
    info = engine.load(name)
    pipe = engine._pipeline(info, mode)
    request = dict(width=size, height=size, num_inference_steps=steps, guidance_scale=5.0)
    jpeg = photo_jpeg() if mode == "img2img" else b""

    def photo() -> Image.Image:
        return Image.open(io.BytesIO(jpeg)).convert("RGB")

    def direct() -> None:
        generator = [torch.Generator("cpu").manual_seed(1)]
        if mode == "img2img":
            image = photo().resize((size, size), Image.Resampling.LANCZOS)
            pipe("a lighthouse", generator=generator, image=image, strength=0.5,
                 num_inference_steps=steps, guidance_scale=5.0)
        else:
            pipe("a lighthouse", generator=generator, **request)

    def through_queue(queue: JobQueue) -> None:
        extra: dict = {"image": photo(), "strength": 0.5} if mode == "img2img" else {}
        queue.submit(
            GenerationRequest("a lighthouse", seed=1, model=name, **request, **extra),
            owner="bench",
        ).wait()

    queue = JobQueue([engine])
    queue.start()
    direct()
    through_queue(queue)  # warm-up both paths
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    times: dict[str, list[float]] = {"direct": [], "engine": []}
    for _ in range(runs):  # interleaved, so drift hits both alike
        for label, run in (("direct", direct), ("engine", lambda: through_queue(queue))):
            start = time.perf_counter()
            run()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[label].append(time.perf_counter() - start)
    queue.stop()
    direct_ms, engine_ms = _median_ms(times["direct"]), _median_ms(times["engine"])
    return {
        "model": name if mode == "txt2img" else f"{name} img2img (1024 px JPEG)",
        "device": device,
        "size": size,
        "steps": steps,
        "direct_ms": direct_ms,
        "engine_ms": engine_ms,
        "diff_ms": engine_ms - direct_ms,
        "diff_pct": 100 * (engine_ms - direct_ms) / direct_ms,
        "its": steps / (engine_ms / 1000),
    }


def bench_family(models: Path, name: str, runs: int, size: int = 64, steps: int = 4) -> dict:
    """One tiny flow-family model: Obscura's queue vs the same pipeline called directly with
    what the engine passes (the family's guidance keyword, a fresh Euler scheduler per job)."""
    from core.families import family_of
    from core.samplers import FLOW_SAMPLERS, make_flow_scheduler

    engine = Engine(ModelRegistry(models), device="cpu")
    info = engine.load(name)
    pipe = engine._pipeline(info, "txt2img")
    fam = family_of(info)
    guidance = float(fam.fixed_guidance) if fam.guidance == "none" else 4.0
    extra: dict = {fam.cfg_param: guidance}
    if fam.negative_prompt:
        extra["negative_prompt"] = ""
    config = dict(pipe.scheduler.config)

    def direct() -> None:
        pipe.scheduler = make_flow_scheduler(FLOW_SAMPLERS["Euler"], config)
        pipe(prompt="a lighthouse", generator=[torch.Generator("cpu").manual_seed(1)], width=size,
             height=size, num_inference_steps=steps, **extra)

    def through_queue(queue: JobQueue) -> None:
        queue.submit(
            GenerationRequest("a lighthouse", seed=1, model=name, width=size, height=size,
                              num_inference_steps=steps, guidance_scale=guidance),
            owner="bench",
        ).wait()

    queue = JobQueue([engine])
    queue.start()
    direct()
    through_queue(queue)
    times: dict[str, list[float]] = {"direct": [], "engine": []}
    for _ in range(runs):
        for label, run in (("direct", direct), ("engine", lambda: through_queue(queue))):
            start = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - start)
    queue.stop()
    direct_ms, engine_ms = _median_ms(times["direct"]), _median_ms(times["engine"])
    return {
        "model": f"{name} (tiny {info.arch})",
        "device": "cpu",
        "size": size,
        "steps": steps,
        "direct_ms": direct_ms,
        "engine_ms": engine_ms,
        "diff_ms": engine_ms - direct_ms,
        "diff_pct": 100 * (engine_ms - direct_ms) / direct_ms,
        "its": steps / (engine_ms / 1000),
    }


def build_real_shape_model(arch: str, folder: Path) -> Path:
    """Random weights in the real SD 1.5 / SDXL shapes (same FLOPs), saved as a diffusers folder."""
    from importlib import resources

    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from core.tokenizer import clip_tokenizer

    configs = Path(str(resources.files("core.configs"))) / f"{arch}-base"
    unet = diffusers.UNet2DConditionModel.from_config(
        diffusers.UNet2DConditionModel.load_config(configs / "unet")
    )
    vae = diffusers.AutoencoderKL.from_config(diffusers.AutoencoderKL.load_config(configs / "vae"))
    scheduler = diffusers.EulerDiscreteScheduler.from_config(
        diffusers.EulerDiscreteScheduler.load_config(configs / "scheduler")
    )
    text = CLIPTextModel(CLIPTextConfig.from_json_file(configs / "text_encoder" / "config.json"))
    if arch == "sdxl":
        text_2 = CLIPTextModelWithProjection(
            CLIPTextConfig.from_json_file(configs / "text_encoder_2" / "config.json")
        )
        pipe = diffusers.StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text,
            text_encoder_2=text_2,
            tokenizer=clip_tokenizer(),
            tokenizer_2=clip_tokenizer("!"),
            unet=unet,
            scheduler=scheduler,
        )
    else:
        pipe = diffusers.StableDiffusionPipeline(
            vae=vae,
            text_encoder=text,
            tokenizer=clip_tokenizer(),
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--gpu", action="store_true", help="also benchmark real-size architectures on CUDA"
    )
    parser.add_argument(
        "--families", action="store_true",
        help="also each transformer family, tiny random models on the CPU",
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        save_demo_model(models / "demo-tiny-sd", arch="sd")
        rows.append(bench_model(models, "demo-tiny-sd", "cpu", 256, 8, args.runs))
        rows.append(bench_model(models, "demo-tiny-sd", "cpu", 256, 8, args.runs, "img2img"))
        if args.families:
            import sys

            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from family_files import DEFAULT_VARIANT, save_family

            for arch, variant in DEFAULT_VARIANT.items():
                save_family(models / f"{arch}-{variant}", arch, variant)
                rows.append(bench_family(models, f"{arch}-{variant}", args.runs))
        if args.gpu and torch.cuda.is_available():
            build_real_shape_model("sd1", models / "random-sd15")
            rows.append(bench_model(models, "random-sd15", "cuda:0", 512, 20, args.runs))
            build_real_shape_model("sdxl", models / "random-sdxl")
            rows.append(bench_model(models, "random-sdxl", "cuda:0", 1024, 20, args.runs))
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(
        f"machine: {cpu}, {torch.get_num_threads()} threads, GPU: {gpu}, torch {torch.__version__}, runs={args.runs}\n"
    )
    print(
        "| model | device | size | steps | direct ms | engine ms | diff ms | diff % | it/s (engine) |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['device']} | {r['size']} | {r['steps']} | {r['direct_ms']:.1f} | "
            f"{r['engine_ms']:.1f} | {r['diff_ms']:+.1f} | {r['diff_pct']:+.1f}% | {r['its']:.2f} |"
        )
    if args.gpu:  # the planner's memory modes on real transformer shapes (says so without CUDA)
        import planner_modes

        print()
        planner_modes.main([])


if __name__ == "__main__":
    main()
