"""API overhead: a txt2img / img2img call through ``/sdapi/v1`` vs the same job put into the
queue directly (auth, JSON, base64, scrubbing, spool encryption, PNG encoding, HTTP).

Prints a Markdown table (paste into docs/benchmarks.md with the machine it ran on). Not a test.

    python bench/api.py               # personal mode, demo model, CPU
    python bench/api.py --runs 20 --size 128
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
from pathlib import Path

import httpx
import uvicorn
from PIL import Image

import core  # noqa: F401  (offline first)
from core.demo import save_demo_model
from core.engine import GenerationRequest
from webui.config import Settings
from webui.ramdir import RamDir


def photo_b64(size: int) -> tuple[Image.Image, str]:
    image = Image.effect_noise((size, size), 64).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return image, base64.b64encode(buffer.getvalue()).decode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--size", type=int, default=64, help="picture side in pixels")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--photo", type=int, default=1024, help="init image side in pixels")
    args = parser.parse_args()

    from webui.api import build_api_router  # noqa: F401  (fails early if missing)
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
    photo, encoded = photo_b64(args.photo)
    common = {"prompt": "a lighthouse", "width": args.size, "height": args.size,
              "steps": args.steps, "seed": 1, "sampler_name": "Euler a"}
    request = dict(width=args.size, height=args.size, num_inference_steps=args.steps, seed=1,
                   sampler="Euler a")

    def queue_txt2img() -> None:
        studio.queue.submit(GenerationRequest("a lighthouse", **request), "bench").wait()

    def queue_img2img() -> None:
        studio.queue.submit(GenerationRequest("a lighthouse", image=photo, strength=0.5,
                                              **request), "bench").wait()

    def api_txt2img() -> None:
        assert client.post(f"{url}/txt2img", json=common).status_code == 200

    def api_img2img() -> None:
        body = {**common, "init_images": [encoded], "denoising_strength": 0.5}
        assert client.post(f"{url}/img2img", json=body).status_code == 200

    def queue_nothing() -> None:
        pass

    def api_samplers() -> None:
        assert client.get(f"{url}/samplers").status_code == 200

    cases = [("GET samplers (no job)", queue_nothing, api_samplers),
             ("txt2img", queue_txt2img, api_txt2img), ("img2img", queue_img2img, api_img2img)]
    rows = []
    try:
        for label, direct, api in cases:
            direct()
            api()  # warm-up
            times: dict[str, list[float]] = {"queue": [], "api": []}
            for _ in range(args.runs):  # interleaved, so drift hits both alike
                for kind, run in (("queue", direct), ("api", api)):
                    start = time.perf_counter()
                    run()
                    times[kind].append(time.perf_counter() - start)
            queue_ms = statistics.median(times["queue"]) * 1000
            api_ms = statistics.median(times["api"]) * 1000
            rows.append((label, queue_ms, api_ms))
    finally:
        server.should_exit = True
        shutdown(studio)
    print(f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}; demo model on "
          f"{studio.engine.device}; {args.size}x{args.size}, {args.steps} steps, "
          f"init image {args.photo}x{args.photo} JPEG; median of {args.runs}")
    print()
    print("| call | queue directly (ms) | through /sdapi/v1 (ms) | API overhead (ms) |")
    print("|---|---:|---:|---:|")
    for label, queue_ms, api_ms in rows:
        print(f"| {label} | {queue_ms:.0f} | {api_ms:.0f} | {api_ms - queue_ms:.0f} |")


if __name__ == "__main__":
    main()
