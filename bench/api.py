"""Overhead over bare diffusers: the same txt2img / img2img work called on the diffusers pipeline
directly, through Obscura's queue and engine, and through ``/sdapi/v1`` (auth, JSON, base64,
scrubbing, spool encryption, PNG encoding, HTTP), interleaved in one run on the same machine.

The img2img case starts from a 1024 px JPEG: bare diffusers decodes it with Pillow and resizes
it (what any script has to do); Obscura also scrubs it, keeps it encrypted while the job waits
and shreds it.

Prints a Markdown table (paste into docs/benchmarks.md with the machine it ran on). Not a test.

    python bench/api.py               # personal mode, demo model, CPU
    python bench/api.py --runs 20 --size 128
    python bench/api.py --cpu         # server CPU per job: web UI vs API, 20 sessions at once

``--cpu`` runs the server in a process of its own and reads its CPU time (psutil, all threads)
around the same number of 64 px jobs sent by 20 concurrent web UI sessions (gradio_client) and
by 20 concurrent API callers.
"""

from __future__ import annotations

import argparse
import base64
import io
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import torch
import uvicorn
from PIL import Image

import core  # noqa: F401  (offline first)
from core.demo import save_demo_model
from core.engine import GenerationRequest
from core.samplers import find_sampler, make_scheduler
from webui.config import Settings
from webui.ramdir import RamDir

PROMPT = "a lighthouse"
SAMPLER = "Euler a"
GUIDANCE = 5.0


def photo_jpeg(size: int) -> bytes:
    image = Image.effect_noise((size, size), 64).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def interleaved(paths: dict[str, Callable[[], None]], runs: int) -> dict[str, float]:
    for run in paths.values():
        run()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(runs):  # interleaved, so drift hits every path alike
        for name, run in paths.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: median_ms(samples) for name, samples in times.items()}


SERVER = """
import sys
from pathlib import Path
import core
from core.demo import save_demo_model
from webui.config import Settings
from webui.ramdir import RamDir
tmp, port = Path(sys.argv[1]), int(sys.argv[2])
save_demo_model(tmp / "models" / "demo-tiny-sd", arch="sd")
ram = RamDir(root=tmp / "ram", on_ram=False)
ram.activate()  # GRADIO_TEMP_DIR before gradio is imported
import uvicorn
from webui.server import build_app, prepare
studio, _, _ = prepare(Settings(data_dir=tmp / "data", models_dir=tmp / "models", port=port), ram)
uvicorn.run(build_app(studio), host="127.0.0.1", port=port, log_level="warning")
"""


def cpu_per_job(sessions: int, jobs: int, steps: int) -> None:
    import subprocess
    import sys

    import psutil
    from gradio_client import Client

    tmp = Path(tempfile.mkdtemp(prefix="obscura-bench-cpu-"))
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(tmp), str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "no server"
            time.sleep(0.3)
        server = psutil.Process(process.pid)
        ui_args = dict(prompt=PROMPT, negative_prompt="", style="", model="", sampler=SAMPLER,
                       num_inference_steps=steps, guidance_scale=GUIDANCE, width=64, height=64,
                       seed=1, batch_size=1, api_name="/txt2img")
        api_body = {"prompt": PROMPT, "width": 64, "height": 64, "steps": steps, "seed": 1,
                    "sampler_name": SAMPLER, "cfg_scale": GUIDANCE}
        clients = [Client(url + "/", verbose=False) for _ in range(sessions)]
        api_client = httpx.Client(timeout=300, limits=httpx.Limits(max_connections=sessions))

        def ui(index: int) -> None:
            for _ in range(jobs):
                clients[index].predict(**ui_args)

        def api(index: int) -> None:
            for _ in range(jobs):
                assert api_client.post(f"{url}/sdapi/v1/txt2img", json=api_body).is_success

        def measure(work: Callable[[int], None]) -> tuple[float, float]:
            work(0)  # warm-up
            threads = [threading.Thread(target=work, args=(i,)) for i in range(sessions)]
            before, started = server.cpu_times(), time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            after, wall = server.cpu_times(), time.perf_counter() - started
            cpu = (after.user - before.user) + (after.system - before.system)
            return cpu / (sessions * jobs) * 1000, wall / (sessions * jobs) * 1000

        rows = []
        for _ in range(2):  # interleaved
            rows.append(("web UI", *measure(ui)))
            rows.append(("API", *measure(api)))
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    print(f"Server CPU per 64 px job ({steps} steps), {sessions} sessions at once, "
          f"{sessions * jobs} jobs per round, {psutil.cpu_count()} CPUs")
    print()
    print("| round | caller | server CPU per job (ms) | wall per job (ms) |")
    print("|---|---|---:|---:|")
    for index, (caller, cpu, wall) in enumerate(rows):
        print(f"| {index // 2 + 1} | {caller} | {cpu:.0f} | {wall:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--size", type=int, default=64, help="picture side in pixels")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--photo", type=int, default=1024, help="init image side in pixels")
    parser.add_argument("--cpu", action="store_true", help="server CPU per job: UI vs API")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=5, help="jobs per session (--cpu)")
    args = parser.parse_args()
    if args.cpu:
        cpu_per_job(args.sessions, args.jobs, args.steps)
        return

    from webui.server import build_app, prepare, shutdown

    tmp = Path(tempfile.mkdtemp(prefix="obscura-bench-"))
    save_demo_model(tmp / "models" / "demo-tiny-sd", arch="sd")
    ram = RamDir(root=tmp / "ram", on_ram=False)
    ram.wipe()
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(data_dir=tmp / "data", models_dir=tmp / "models", port=port)
    studio, _, _ = prepare(settings, ram)
    server = uvicorn.Server(uvicorn.Config(build_app(studio), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/sdapi/v1"
    client = httpx.Client(timeout=120)
    jpeg = photo_jpeg(args.photo)
    encoded = base64.b64encode(jpeg).decode()
    size, steps = args.size, args.steps

    engine = studio.engine
    info = engine.load(None)
    pipes = {mode: engine._pipeline(info, mode) for mode in ("txt2img", "img2img")}
    scheduler_config = dict(pipes["txt2img"].scheduler.config)

    def bare(mode: str) -> None:
        pipe = pipes[mode]
        with engine._lock:  # the same pipeline object the worker uses; never at the same time
            pipe.scheduler = make_scheduler(find_sampler(SAMPLER), scheduler_config)
            generator = [torch.Generator("cpu").manual_seed(1)]
            kwargs: dict = {"num_inference_steps": steps, "guidance_scale": GUIDANCE,
                            "generator": generator}
            if mode == "img2img":
                photo = Image.open(io.BytesIO(jpeg)).convert("RGB")
                kwargs.update(image=photo.resize((size, size), Image.Resampling.LANCZOS),
                              strength=0.5)
            else:
                kwargs.update(width=size, height=size)
            pipe(PROMPT, **kwargs)

    request = dict(width=size, height=size, num_inference_steps=steps, seed=1, sampler=SAMPLER,
                   guidance_scale=GUIDANCE)

    def queue_txt2img() -> None:
        studio.queue.submit(GenerationRequest(PROMPT, **request), "bench").wait()

    def queue_img2img() -> None:
        photo = Image.open(io.BytesIO(jpeg)).convert("RGB")
        studio.queue.submit(GenerationRequest(PROMPT, image=photo, strength=0.5, **request),
                            "bench").wait()

    common = {"prompt": PROMPT, "width": size, "height": size, "steps": steps, "seed": 1,
              "sampler_name": SAMPLER, "cfg_scale": GUIDANCE}

    def api_txt2img() -> None:
        assert client.post(f"{url}/txt2img", json=common).status_code == 200

    def api_img2img() -> None:
        body = {**common, "init_images": [encoded], "denoising_strength": 0.5}
        response = client.post(f"{url}/img2img", json=body)
        assert response.status_code == 200, response.text

    def api_samplers() -> None:
        assert client.get(f"{url}/samplers").status_code == 200

    cases = [
        ("GET samplers (no job)", {"bare": lambda: None, "queue": lambda: None,
                                   "api": api_samplers}),
        ("txt2img", {"bare": lambda: bare("txt2img"), "queue": queue_txt2img,
                     "api": api_txt2img}),
        (f"img2img from a {args.photo} px JPEG", {"bare": lambda: bare("img2img"),
                                                  "queue": queue_img2img, "api": api_img2img}),
    ]
    rows = []
    try:
        for label, paths in cases:
            rows.append((label, interleaved(paths, args.runs)))
    finally:
        server.should_exit = True
        shutdown(studio)
    print(f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
          f"{torch.get_num_threads()} torch threads; demo model on {engine.device}; "
          f"{size}x{size}, {steps} steps; median of {args.runs} interleaved runs")
    print()
    print("| call | bare diffusers (ms) | queue + engine (ms) | /sdapi/v1 (ms) "
          "| engine overhead (ms) | API overhead (ms) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, ms in rows:
        print(f"| {label} | {ms['bare']:.1f} | {ms['queue']:.1f} | {ms['api']:.1f} | "
              f"{ms['queue'] - ms['bare']:+.1f} | {ms['api'] - ms['bare']:+.1f} |")


if __name__ == "__main__":
    main()
