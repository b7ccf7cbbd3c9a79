"""LoRA cost per job: 0, 1 and 3 LoRAs vs the bare model, and what reading a new LoRA file costs.

Prints a Markdown table (paste into docs/benchmarks.md with the machine it ran on). Not a test.
The LoRAs are tiny Kohya-format files made in code for the demo model (tests/network_files.py),
rank 4 on every attention and MLP layer of the UNet and the text encoder, as real style LoRAs are.

    python bench/lora.py                  # demo model on the CPU
    python bench/lora.py --runs 12 --steps 8 --size 256
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny LoRA builder the tests use

from network_files import kohya_lora, save_lora  # noqa: E402

import core  # noqa: E402,F401  (offline first)
from core.demo import DEMO_NAME, build_demo_pipeline, save_demo_model  # noqa: E402
from core.engine import Engine, GenerationRequest  # noqa: E402
from core.registry import ModelRegistry  # noqa: E402

NAME = DEMO_NAME["sd"]
PROMPTS = {
    "bare model (never saw a LoRA)": "a lighthouse",
    "0 LoRAs (after LoRA jobs)": "a lighthouse",
    "1 LoRA (loaded before)": "<lora:a:0.8>a lighthouse",
    "3 LoRAs (loaded before)": "<lora:a:0.8> <lora:b:0.5> <lora:c:-0.3>a lighthouse",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (1 keeps the figures steady on a shared machine)",
    )
    args = parser.parse_args()
    torch.set_num_threads(max(1, args.threads))

    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        save_demo_model(models / NAME, arch="sd")
        pipe = build_demo_pipeline("sd")
        for i, name in enumerate("abc"):
            save_lora(models / f"{name}.safetensors", kohya_lora(pipe, seed=i + 1))
        cold = [f"cold{i}" for i in range(args.runs)]
        for i, name in enumerate(cold):
            save_lora(models / f"{name}.safetensors", kohya_lora(pipe, seed=100 + i))

        bare = Engine(ModelRegistry(models), device=args.device)
        engine = Engine(ModelRegistry(models), device=args.device)

        def job(on: Engine, prompt: str) -> tuple[float, float]:
            request = GenerationRequest(
                prompt, model=NAME, width=args.size, height=args.size,
                num_inference_steps=args.steps, guidance_scale=5.0, seed=1,
            )
            start, cpu = time.perf_counter(), time.process_time()
            on.generate(request)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return time.perf_counter() - start, time.process_time() - cpu

        # Warm up both engines; the second one loads every LoRA once.
        job(bare, "a lighthouse")
        job(engine, PROMPTS["3 LoRAs (loaded before)"])
        times: dict[str, list[tuple[float, float]]] = {label: [] for label in PROMPTS}
        times["1 LoRA, first use (file read + load)"] = []
        for run in range(args.runs):  # interleaved, so drift hits every row alike
            for label, prompt in PROMPTS.items():
                times[label].append(job(bare if label.startswith("bare") else engine, prompt))
            times["1 LoRA, first use (file read + load)"].append(
                job(engine, f"<lora:{cold[run]}:0.8>a lighthouse")
            )

    bare = times["bare model (never saw a LoRA)"]
    base_wall = statistics.median(w for w, _ in bare)
    base_cpu = statistics.median(c for _, c in bare)
    print(
        f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__}, "
        f"device {args.device}, {args.threads} thread(s), {NAME} {args.size}px, "
        f"{args.steps} steps, median of {args.runs}\n"
    )
    print("| job | wall ms | added wall ms | CPU ms | added CPU ms | added CPU % |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, samples in times.items():
        wall = statistics.median(w for w, _ in samples)
        cpu = statistics.median(c for _, c in samples)
        print(
            f"| {label} | {wall * 1000:.1f} | {(wall - base_wall) * 1000:+.1f} | "
            f"{cpu * 1000:.1f} | {(cpu - base_cpu) * 1000:+.1f} | "
            f"{(cpu - base_cpu) / base_cpu * 100:+.1f}% |"
        )


if __name__ == "__main__":
    main()
