"""The one run path (:mod:`webui.run`): the UI and the API give the same pictures and leave the
same (zero) traces; one mask rule; a hang-up or a stop is answered at once; the UI's memory
stays flat over many jobs and idle sessions expire."""

from __future__ import annotations

import base64
import gc
import io
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from gradio_client import Client, handle_file
from leftovers import files_in, plaintext_images, wait_until
from PIL import Image

from core.jobs import JobState
from webui.config import Settings
from webui.ramdir import RamDir

PROMPT = "a red door in a blue wall"
STEPS, SEED, CFG, STRENGTH = 2, 7, 5.0, 0.8


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def photo_and_mask() -> tuple[Image.Image, Image.Image]:
    photo = Image.merge("RGB", [Image.linear_gradient("L").resize((64, 64)),
                                Image.linear_gradient("L").rotate(90).resize((64, 64)),
                                Image.new("L", (64, 64), 90)])
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))  # repaint the left half
    return photo, mask


def ui_picture(result: Any) -> Image.Image:
    pictures = result[0]
    url = pictures[0]["image"]["url"]
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def api_picture(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    data = base64.b64decode(response.json()["images"][0])
    return Image.open(io.BytesIO(data)).convert("RGB")


UI_COMMON = dict(negative_prompt="", style="", model="", sampler="Euler a",
                 num_inference_steps=STEPS, guidance_scale=CFG, seed=SEED, batch_size=1)
API_COMMON = dict(negative_prompt="", sampler_name="Euler a", steps=STEPS, cfg_scale=CFG,
                  seed=SEED, width=64, height=64)


def no_trace_left(server: Any) -> None:
    spool = server.data_dir / "spool"
    assert wait_until(lambda: [f for f in files_in(spool) if not f.endswith(".obscura-spool")]
                      == [])
    assert wait_until(lambda: files_in(server.ram_dir / "gradio") == [])
    assert plaintext_images(server.data_dir, skip=(server.data_dir / "models",)) == []
    assert plaintext_images(server.system_tmp) == []


def test_the_ui_and_the_api_give_the_same_pictures_and_leave_no_trace(personal_server, tmp_path):
    photo, mask = photo_and_mask()
    photo_file, mask_file = tmp_path / "photo.png", tmp_path / "mask.png"
    photo_file.write_bytes(png(photo))
    mask_file.write_bytes(png(mask))
    ui = Client(personal_server.url + "/", verbose=False)
    api = f"{personal_server.url}/sdapi/v1"

    ui_txt = ui_picture(ui.predict(prompt=PROMPT, width=64, height=64, api_name="/txt2img",
                                   **UI_COMMON))
    api_txt = api_picture(httpx.post(f"{api}/txt2img", json={"prompt": PROMPT, **API_COMMON},
                                     timeout=60))
    assert ui_txt.tobytes() == api_txt.tobytes()

    ui_img = ui_picture(ui.predict(image=handle_file(str(photo_file)), prompt=PROMPT,
                                   strength=STRENGTH, width=64, height=64, api_name="/img2img",
                                   **UI_COMMON))
    api_img = api_picture(httpx.post(f"{api}/img2img", json={
        "prompt": PROMPT, "init_images": [b64(png(photo))], "denoising_strength": STRENGTH,
        **API_COMMON}, timeout=60))
    assert ui_img.tobytes() == api_img.tobytes()
    assert ui_img.tobytes() != ui_txt.tobytes()  # it did start from the photo

    ui_inpaint = ui_picture(ui.predict(
        image={"background": handle_file(str(photo_file)), "layers": [], "composite": None},
        mask=handle_file(str(mask_file)), prompt=PROMPT, strength=STRENGTH, width=64,
        height=64, api_name="/inpaint", **UI_COMMON))
    api_inpaint = api_picture(httpx.post(f"{api}/img2img", json={
        "prompt": PROMPT, "init_images": [b64(png(photo))], "mask": b64(png(mask)),
        "denoising_strength": STRENGTH, "mask_blur": 4, **API_COMMON}, timeout=60))
    assert ui_inpaint.tobytes() == api_inpaint.tobytes()
    # Both paste the original back outside the blurred mask (AUTOMATIC1111's overlay).
    right = (56, 0, 64, 64)  # beyond the blur (sigma 4) of the mask's edge at x=32
    assert ui_inpaint.crop(right).tobytes() == photo.crop(right).tobytes()
    assert ui_inpaint.crop((0, 0, 24, 64)).tobytes() != photo.crop((0, 0, 24, 64)).tobytes()

    no_trace_left(personal_server)
    assert personal_server.net_attempts() == []


def test_one_mask_rule_for_the_ui_and_the_api(personal_server, tmp_path):
    """A mask of the photo's proportions is resized to it; another shape is one sentence."""
    photo, mask = photo_and_mask()
    api = f"{personal_server.url}/sdapi/v1"
    half = mask.resize((32, 32), Image.Resampling.NEAREST)
    body = {"prompt": PROMPT, "init_images": [b64(png(photo))], "denoising_strength": STRENGTH,
            "mask_blur": 4, **API_COMMON}
    same = api_picture(httpx.post(f"{api}/img2img", json={**body, "mask": b64(png(mask))},
                                  timeout=60))
    scaled = api_picture(httpx.post(f"{api}/img2img", json={**body, "mask": b64(png(half))},
                                    timeout=60))
    assert scaled.tobytes() == same.tobytes()
    wrong = httpx.post(f"{api}/img2img", json={**body, "mask": b64(png(Image.new("L", (32, 48))))},
                       timeout=60)
    assert wrong.status_code == 422
    assert wrong.json()["error"] == "mask_shape_mismatch" and wrong.json()["field"] == "mask"
    assert "proportions (64x64)" in wrong.json()["detail"]

    photo_file, mask_file = tmp_path / "photo.png", tmp_path / "half.png"
    photo_file.write_bytes(png(photo))
    mask_file.write_bytes(png(half))
    ui = Client(personal_server.url + "/", verbose=False)
    from_ui = ui_picture(ui.predict(
        image={"background": handle_file(str(photo_file)), "layers": [], "composite": None},
        mask=handle_file(str(mask_file)), prompt=PROMPT, strength=STRENGTH, width=64,
        height=64, api_name="/inpaint", **UI_COMMON))
    assert from_ui.tobytes() == same.tobytes()
    no_trace_left(personal_server)


# -- in-process server (the test looks at the studio and Gradio's session state) -------------
@dataclass
class InProcess:
    url: str
    studio: Any
    blocks: Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def local(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    import webui.server as server_module
    from webui.server import build_app, prepare, shutdown

    tmp = tmp_path_factory.mktemp("run")
    ram = RamDir(root=tmp / "ram", on_ram=False)
    ram.wipe()
    port = free_port()
    settings = Settings(data_dir=tmp / "data", models_dir=models_dir, port=port,
                        default_model="demo-tiny-sd")
    studio, _tls, _warnings = prepare(settings, ram)
    built: list[Any] = []
    original = server_module.build_blocks

    def capture(*args: Any, **kwargs: Any) -> Any:
        built.append(original(*args, **kwargs))
        return built[-1]

    server_module.build_blocks = capture
    try:
        app = build_app(studio)
    finally:
        server_module.build_blocks = original
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield InProcess(f"http://127.0.0.1:{port}", studio, built[0])
    finally:
        server.should_exit = True
        thread.join(10)
        shutdown(studio)


def running_job(studio: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = [job for job in studio.queue.jobs_of("personal")
                if job.state is JobState.RUNNING and job.step >= 1]
        if jobs:
            return jobs[0]
        time.sleep(0.005)
    raise AssertionError("no job started")


def test_a_caller_that_hangs_up_is_cancelled_and_shredded_well_under_a_second(local):
    photo, _ = photo_and_mask()
    body = {"prompt": PROMPT, "init_images": [b64(png(photo))], "denoising_strength": 1.0,
            **API_COMMON, "steps": 150, "width": 128, "height": 128}
    payload = httpx.Request("POST", f"{local.url}/sdapi/v1/img2img", json=body)
    delays = []
    for _ in range(3):
        raw = socket.create_connection(("127.0.0.1", int(local.url.rsplit(":", 1)[1])))
        head = (f"POST /sdapi/v1/img2img HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload.content)}\r\n"
                "\r\n").encode()
        raw.sendall(head + payload.content)
        job = running_job(local.studio)
        assert len(local.studio.spool) == 1
        hung_up = time.monotonic()
        raw.close()
        assert wait_until(lambda: job.done and len(local.studio.spool) == 0, 5)
        delays.append(time.monotonic() - hung_up)
        assert job.state is JobState.CANCELLED
    assert max(delays) < 0.5, delays
    assert local.studio.runs.of("personal") == []


def test_ui_memory_stays_flat_over_many_jobs_and_idle_sessions_expire(local, monkeypatch):
    from webui.ui import common

    holder = local.blocks.state_holder
    client = Client(local.url + "/", verbose=False)

    def paint(count: int) -> None:
        for index in range(count):
            client.predict(prompt=PROMPT, width=64, height=64, api_name="/txt2img",
                           **{**UI_COMMON, "num_inference_steps": 1, "seed": index})

    def components() -> int:
        import gradio as gr

        return sum(1 for obj in gc.get_objects() if isinstance(obj, gr.components.Component))

    paint(10)  # warm-up: caches, the session's first state
    gc.collect()
    before_components = components()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        paint(120)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert components() - before_components <= 2  # gr.skip() on a component adds one per yield
    assert after - before < 1_000_000, f"{(after - before) / 120:.0f} bytes per job"
    assert len(holder.session_data) >= 1

    # A session idle past SESSION_IDLE_SECONDS is dropped the next time someone paints.
    monkeypatch.setattr(common, "SESSION_IDLE_SECONDS", 0.2)
    monkeypatch.setattr(common, "SWEEP_EVERY_SECONDS", 0.0)
    idle = set(holder.session_data)
    time.sleep(0.5)
    other = Client(local.url + "/", verbose=False)
    other.predict(prompt=PROMPT, width=64, height=64, api_name="/txt2img",
                  **{**UI_COMMON, "num_inference_steps": 1})
    assert not idle & set(holder.session_data)
    assert len(holder.session_data) == 1


def test_a_stopping_server_answers_503_in_the_api_and_a_sentence_in_the_ui(local):
    """Last in this module: it stops the queue."""
    answers: dict[str, Any] = {}

    def call_api() -> None:
        body = {"prompt": PROMPT, **API_COMMON, "steps": 150, "width": 128, "height": 128}
        answers["api"] = httpx.post(f"{local.url}/sdapi/v1/txt2img", json=body, timeout=60)

    def call_ui() -> None:
        client = Client(local.url + "/", verbose=False)
        job = client.submit(prompt=PROMPT, width=64, height=64, api_name="/txt2img",
                            **{**UI_COMMON, "num_inference_steps": 2})
        try:
            job.result(timeout=60)
        except Exception as err:  # noqa: BLE001  (the AppError Gradio raises)
            answers["ui"] = str(err)

    threads = [threading.Thread(target=call_api), threading.Thread(target=call_ui)]
    threads[0].start()
    running_job(local.studio)
    threads[1].start()
    assert wait_until(lambda: local.studio.queue.waiting == 1, 30)  # the UI's job waits
    local.studio.queue.stop()
    for thread in threads:
        thread.join(60)
    api = answers["api"]
    assert api.status_code == 503 and api.json()["error"] == "shutting_down"
    assert api.json()["detail"].startswith("The server is stopping")
    assert "The server is stopping" in answers["ui"]
    assert len(local.studio.spool) == 0
