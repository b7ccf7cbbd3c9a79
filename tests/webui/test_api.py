"""The AUTOMATIC1111-compatible API against real running servers with the demo models.

Two servers per module, started the way ``obscura serve`` starts one (``webui.server.prepare``
then ``build_app``): a personal-mode one driven by the ``webuiapi`` client (a client nobody here
wrote), and an accounts-mode one (alice, bob) driven over raw HTTP for auth, isolation and
bad input. Pictures are 64 px, jobs a few steps, Argon2 at its lowest cost.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import webuiapi
from PIL import Image

from core.engine import GenerationRequest
from privacy.accounts import Accounts
from privacy.output import GENERATED, PHOTO_BASED
from privacy.passwords import make_hasher
from privacy.throttle import LoginThrottle
from webui.config import Settings
from webui.ramdir import RamDir

FAST = make_hasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse battery staple"
PROMPT = "a lighthouse painted by a secretive otter"
SD, SDXL = "demo-tiny-sd", "demo-tiny-sdxl"


# -- servers ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Running:
    url: str
    studio: Any
    clock: list[float]


def start_server(
    tmp: Path, models_dir: Path, *, accounts: bool, **settings: Any
) -> Iterator[Running]:
    from webui.server import build_app, prepare, shutdown

    data = tmp / "data"
    data.mkdir()
    clock = [time.time()]
    options: dict[str, Any] = {}
    if accounts:
        store = Accounts(data / "obscura.db", hasher=FAST)
        store.create_user("alice", PASSWORD, role="admin")
        store.create_user("bob", PASSWORD)
        store.close()
        options = {"hasher": FAST, "throttle": LoginThrottle(clock=lambda: clock[0])}
    ram = RamDir(root=tmp / "ram", on_ram=False)
    ram.wipe()
    port = free_port()
    config = Settings(data_dir=data, models_dir=models_dir, port=port, **settings)
    studio, _tls, _warnings = prepare(config, ram, **options)
    app = build_app(studio)  # the server's own app, /sdapi/v1 included
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                       access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield Running(f"http://127.0.0.1:{port}", studio, clock)
    finally:
        server.should_exit = True
        thread.join(10)
        shutdown(studio)


@pytest.fixture(scope="module")
def api_models(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the demo models (refresh-checkpoints adds one)."""
    import shutil

    folder = tmp_path_factory.mktemp("api-models")
    for name in (SD, SDXL):
        shutil.copytree(models_dir / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def personal(api_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    yield from start_server(tmp_path_factory.mktemp("personal"), api_models, accounts=False,
                            default_model=SD)


@pytest.fixture(scope="module")
def team(api_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    yield from start_server(tmp_path_factory.mktemp("team"), api_models, accounts=True,
                            default_model=SD, max_upload_megapixels=1, max_upload_mb=1)


@pytest.fixture(scope="module")
def client(personal: Running) -> webuiapi.WebUIApi:
    return webuiapi.WebUIApi(baseurl=f"{personal.url}/sdapi/v1", sampler="Euler a", steps=3)


@pytest.fixture(autouse=True)
def forgiven(request: pytest.FixtureRequest) -> None:
    """Failed tokens from 127.0.0.1 add up across tests; each test starts a quiet day later."""
    if "team" in request.fixturenames:
        request.getfixturevalue("team").clock[0] += 2 * 86400


@dataclass
class Member:
    user_id: str
    token: str

    @property
    def bearer(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


def member(team: Running, name: str, token_name: str = "tests") -> Member:
    accounts = team.studio.accounts
    user_id = accounts.user_id_for(name)
    if token_name not in {t.name for t in accounts.list_tokens(user_id)}:
        token = accounts.create_token(user_id, token_name)
    else:
        accounts.revoke_token(user_id, token_name)
        token = accounts.create_token(user_id, token_name)
    return Member(user_id, token)


@pytest.fixture(scope="module")
def alice(team: Running) -> Member:
    return member(team, "alice")


@pytest.fixture(scope="module")
def bob(team: Running) -> Member:
    return member(team, "bob")


# -- pictures -----------------------------------------------------------------------------
def photo(size: tuple[int, int] = (64, 64), colour: tuple[int, int, int] = (200, 40, 40)) -> Image.Image:
    image = Image.new("RGB", size, colour)
    for x in range(0, size[0], 8):
        image.putpixel((x, size[1] // 2), (0, 0, 255))
    return image


def b64(image: Image.Image, fmt: str = "PNG", **options: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return base64.b64encode(buffer.getvalue()).decode()


def png_of(b64_text: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64_text)))
    image.load()
    return image


def small(**fields: Any) -> dict[str, Any]:
    return {"prompt": PROMPT, "width": 64, "height": 64, "steps": 2, "seed": 7, **fields}


def assert_healthy(server: Running, headers: dict[str, str] | None = None) -> None:
    assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"
    response = httpx.post(f"{server.url}/sdapi/v1/txt2img", json=small(), headers=headers,
                          timeout=60)
    assert response.status_code == 200, response.text
    assert len(response.json()["images"]) == 1


def assert_error(response: httpx.Response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    # A 401 may come from the server's access guard (``{"error": sentence}``) before the API.
    sentence = body.get("detail") if status != 401 else body.get("detail") or body.get("error")
    assert isinstance(sentence, str) and sentence.endswith("."), body
    assert "Traceback" not in response.text
    if field is not None:
        assert body["field"] == field, body
    return body


# -- the webuiapi client, personal mode -------------------------------------------------------
def test_webuiapi_txt2img_returns_labelled_pngs_and_the_seeds(client: webuiapi.WebUIApi):
    result = client.txt2img(prompt=PROMPT, width=64, height=64, steps=3, seed=1234, batch_size=2)
    assert [image.size for image in result.images] == [(64, 64), (64, 64)]
    assert result.info["seed"] == 1234
    assert result.info["all_seeds"] == [1234, 1235]
    assert result.info["steps"] == 3 and result.info["sampler_name"] == "Euler a"
    assert result.info["sd_model_name"] == SD
    assert result.parameters["prompt"] == PROMPT
    for image in result.images:
        assert "parameters" not in image.info  # no prompt in the file
        assert GENERATED in image.info["XML:com.adobe.xmp"]
    again = client.txt2img(prompt=PROMPT, width=64, height=64, steps=3, seed=1234)
    assert again.image.tobytes() == result.images[0].tobytes()


def test_webuiapi_img2img_starts_from_the_photo(client: webuiapi.WebUIApi, personal: Running):
    result = client.img2img(images=[photo(), photo()], prompt=PROMPT, width=64, height=64,
                            steps=4, denoising_strength=0.5, seed=3)
    assert result.image.size == (64, 64)
    assert "init_images[1:]" in result.info["obscura_ignored"]
    assert result.parameters["init_images"] is None  # the photo is not sent back
    assert result.info["denoising_strength"] == 0.5
    assert PHOTO_BASED in result.image.info["XML:com.adobe.xmp"]
    assert "parameters" not in result.image.info
    assert len(personal.studio.spool) == 0  # the photo was shredded with its job
    assert not [p for p in (personal.studio.settings.data_dir / "spool").iterdir()
                if not p.name.startswith(".")]


def test_webuiapi_inpainting_keeps_the_photo_outside_the_mask(client: webuiapi.WebUIApi):
    original = photo()
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))  # repaint the left half only
    result = client.img2img(images=[original], mask_image=mask, mask_blur=0, prompt=PROMPT,
                            width=64, height=64, steps=3, denoising_strength=1.0, seed=5,
                            inpainting_fill=1, inpaint_full_res=False)
    out = result.image.convert("RGB")
    assert out.crop((32, 0, 64, 64)).tobytes() == original.crop((32, 0, 64, 64)).tobytes()
    assert out.crop((0, 0, 32, 64)).tobytes() != original.crop((0, 0, 32, 64)).tobytes()
    assert result.info["is_using_inpainting_conditioning"] is True
    assert result.info["obscura_ignored"] == []


def test_webuiapi_lists_models_samplers_schedulers_and_styles(client: webuiapi.WebUIApi,
                                                              personal: Running):
    assert client.util_get_model_names() == [SD, SDXL]
    samplers = client.util_get_sampler_names()
    assert "Euler a" in samplers and "DPM++ 2M Karras" in samplers
    assert {"automatic", "karras", "sgm_uniform"} <= set(client.util_get_scheduler_names())
    styles = client.get_prompt_styles()
    assert [s["name"] for s in styles] == [s.name_en for s in personal.studio.styles.values()]
    assert all("{prompt}" in s["prompt"] for s in styles)
    assert client.get_cmd_flags()["api"] is True
    assert client.get_memory()["ram"]["total"] > 0


def test_webuiapi_switches_the_model_through_options(client: webuiapi.WebUIApi):
    assert client.util_get_current_model() == SD
    client.util_set_model(SDXL)
    try:
        assert client.get_options()["sd_model_checkpoint"] == SDXL
        result = client.txt2img(prompt=PROMPT, width=64, height=64, steps=2)
        assert result.info["sd_model_name"] == SDXL
    finally:
        client.util_set_model(SD)
    assert client.util_get_current_model() == SD


def test_scheduler_karras_picks_the_karras_sampler(client: webuiapi.WebUIApi):
    result = client.txt2img(prompt=PROMPT, width=64, height=64, steps=2, sampler_name="DPM++ 2M",
                            scheduler="karras")
    assert result.info["sampler_name"] == "DPM++ 2M Karras"


def test_refresh_checkpoints_finds_a_new_model(client: webuiapi.WebUIApi, api_models: Path):
    import shutil

    shutil.copytree(api_models / SD, api_models / "demo-copy")
    try:
        assert "demo-copy" not in client.util_get_model_names()
        client.refresh_checkpoints()
        assert "demo-copy" in client.util_get_model_names()
    finally:
        shutil.rmtree(api_models / "demo-copy")
        client.refresh_checkpoints()


def run_in_thread(function: Any, *args: Any, **kwargs: Any) -> tuple[threading.Thread, dict]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = function(*args, **kwargs)
        except Exception as err:  # noqa: BLE001
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def wait_for(predicate: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_webuiapi_reads_progress_with_a_preview_then_interrupts(client: webuiapi.WebUIApi,
                                                               personal: Running):
    assert client.get_progress()["state"]["job_count"] == 0
    thread, box = run_in_thread(client.txt2img, prompt=PROMPT, width=128, height=128, steps=150)

    def midway() -> dict | None:
        progress = client.get_progress()
        if progress["state"]["sampling_step"] >= 1 and progress["current_image"]:
            return progress
        return None

    progress = wait_for(midway)
    assert 0 < progress["progress"] < 1
    assert progress["state"]["sampling_steps"] == 150
    assert png_of(progress["current_image"]).size[0] > 0
    started = time.monotonic()
    assert client.interrupt() == {}
    thread.join(30)
    assert time.monotonic() - started < 10
    assert "error" not in box, box
    result = box["result"]
    assert result.images == [] and result.info["interrupted"] is True
    assert client.get_progress()["state"]["job_count"] == 0
    assert len(personal.studio.spool) == 0


def test_skip_moves_on_to_the_next_iteration(client: webuiapi.WebUIApi):
    thread, box = run_in_thread(client.txt2img, prompt=PROMPT, width=128, height=128, steps=150,
                                n_iter=2, seed=10)
    wait_for(lambda: client.get_progress()["state"]["sampling_step"] >= 1)
    client.skip()
    wait_for(lambda: client.get_progress()["state"]["job_no"] == 1)
    client.interrupt()
    thread.join(30)
    assert "error" not in box, box
    assert box["result"].images == []


def test_a_caller_that_hangs_up_has_its_job_cancelled(personal: Running):
    body = small(width=128, height=128, steps=150)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{personal.url}/sdapi/v1/txt2img", json=body,
                   timeout=httpx.Timeout(30, read=1.5))
    queue = personal.studio.queue
    wait_for(lambda: not [job for job in queue.jobs_of("personal") if not job.done], 10)
    assert len(personal.studio.spool) == 0


# -- raw HTTP, accounts mode ---------------------------------------------------------------
def test_every_call_needs_a_token_in_accounts_mode(team: Running):
    for method, path in [("GET", "sd-models"), ("POST", "txt2img"), ("GET", "progress"),
                         ("POST", "interrupt"), ("GET", "upscalers")]:
        response = httpx.request(method, f"{team.url}/sdapi/v1/{path}", json=small())
        assert response.status_code == 401, (path, response.text)
        assert "error" in response.json()
    assert team.studio.queue.jobs_of("") == []


def test_webuiapi_with_basic_auth_user_name_and_token(team: Running, alice: Member):
    client = webuiapi.WebUIApi(baseurl=f"{team.url}/sdapi/v1", sampler="Euler a", steps=2)
    client.set_auth("alice", alice.token)
    result = client.txt2img(prompt=PROMPT, width=64, height=64, steps=2, seed=9)
    assert result.info["seed"] == 9
    wrong = webuiapi.WebUIApi(baseurl=f"{team.url}/sdapi/v1")
    wrong.set_auth("bob", alice.token)  # alice's token is not bob's
    with pytest.raises(RuntimeError) as raised:
        wrong.txt2img(prompt=PROMPT, width=64, height=64, steps=2)
    assert raised.value.args[0] == 401
    wrong.set_auth("alice", PASSWORD)  # passwords are not API tokens
    assert httpx.get(f"{team.url}/sdapi/v1/sd-models", auth=("alice", PASSWORD)).status_code == 401


def test_a_revoked_token_is_refused_at_once(team: Running):
    fresh = member(team, "alice", "short-lived")
    url = f"{team.url}/sdapi/v1/sd-models"
    assert httpx.get(url, headers=fresh.bearer).status_code == 200
    team.studio.accounts.revoke_token(fresh.user_id, "short-lived")
    assert_error(httpx.get(url, headers=fresh.bearer), 401)
    assert_error(httpx.get(url, auth=("alice", fresh.token)), 401)


def test_bob_can_neither_stop_nor_watch_alices_job(team: Running, alice: Member, bob: Member):
    url = f"{team.url}/sdapi/v1"
    thread, box = run_in_thread(httpx.post, f"{url}/txt2img", headers=alice.bearer, timeout=60,
                                json=small(width=128, height=128, steps=60))

    def alice_midway() -> dict | None:
        progress = httpx.get(f"{url}/progress", headers=alice.bearer).json()
        return progress if progress["current_image"] and progress["state"]["sampling_step"] else None

    wait_for(alice_midway)
    bobs = httpx.get(f"{url}/progress", headers=bob.bearer).json()
    assert bobs["current_image"] is None and bobs["state"]["job_count"] == 0
    assert bobs["progress"] == 0 and bobs["state"]["sampling_step"] == 0
    assert httpx.post(f"{url}/interrupt", headers=bob.bearer).json() == {}
    assert httpx.post(f"{url}/skip", headers=bob.bearer).json() == {}
    thread.join(60)
    response = box["result"]
    assert response.status_code == 200
    assert len(response.json()["images"]) == 1
    assert "interrupted" not in json.loads(response.json()["info"])


MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"RIFF")


def plaintext_pictures(folder: Path) -> list[str]:
    """Files that start like a picture or hold the EXIF canary."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            head = path.read_bytes()[: 1 << 20]
            if head.startswith(MAGIC) or b"holiday-canary" in head or b"Exif" in head:
                found.append(path.name)
    return found


def test_a_waiting_photo_is_encrypted_then_destroyed(team: Running, alice: Member, bob: Member):
    url = f"{team.url}/sdapi/v1"
    spool = team.studio.spool
    long_job, _ = run_in_thread(httpx.post, f"{url}/txt2img", headers=alice.bearer, timeout=60,
                                json=small(width=128, height=128, steps=150))
    wait_for(lambda: httpx.get(f"{url}/progress", headers=alice.bearer).json()["state"][
        "sampling_step"])
    exif = Image.Exif()
    exif[0x010E] = "holiday-canary"
    waiting, box = run_in_thread(httpx.post, f"{url}/img2img", headers=bob.bearer, timeout=60,
                                 json=small(init_images=[b64(photo(), "JPEG", exif=exif)]))
    wait_for(lambda: len(spool) == 1)
    bobs = httpx.get(f"{url}/progress", headers=bob.bearer).json()
    assert bobs["state"]["sampling_step"] == 0 and bobs["textinfo"] == "Waiting: number 1 in line"
    assert len(list(spool.root.iterdir())) >= 1
    assert plaintext_pictures(team.studio.settings.data_dir) == []
    httpx.post(f"{url}/interrupt", headers=alice.bearer)
    waiting.join(60)
    long_job.join(60)
    assert box["result"].status_code == 200
    assert len(spool) == 0
    assert [p.name for p in spool.root.iterdir() if not p.name.startswith(".")] == []


def test_api_and_ui_jobs_share_one_queue(team: Running, alice: Member):
    queue = team.studio.queue
    ui_job = queue.submit(GenerationRequest(PROMPT, width=128, height=128, num_inference_steps=150),
                          alice.user_id)
    try:
        wait_for(lambda: ui_job.step >= 1)
        progress = httpx.get(f"{team.url}/sdapi/v1/progress", headers=alice.bearer).json()
        assert progress["state"]["sampling_steps"] == 150
        httpx.post(f"{team.url}/sdapi/v1/interrupt", headers=alice.bearer)
        wait_for(lambda: ui_job.done, 10)
    finally:
        ui_job.cancel()


def test_save_images_keeps_pictures_in_the_callers_gallery_only(team: Running, alice: Member,
                                                               bob: Member):
    gallery = team.studio.gallery
    before = (len(gallery.list(alice.user_id)), len(gallery.list(bob.user_id)))
    url = f"{team.url}/sdapi/v1/txt2img"
    kept = httpx.post(url, headers=alice.bearer, json=small(save_images=True), timeout=60).json()
    assert json.loads(kept["info"])["obscura_saved_to_gallery"] is True
    httpx.post(url, headers=alice.bearer, json=small(), timeout=60)
    assert (len(gallery.list(alice.user_id)), len(gallery.list(bob.user_id))) == (
        before[0] + 1, before[1])


def test_prompt_is_embedded_only_for_an_account_that_opted_in(team: Running, alice: Member,
                                                             bob: Member):
    accounts = team.studio.accounts
    accounts.update_settings(alice.user_id, embed_parameters=True)
    try:
        url = f"{team.url}/sdapi/v1/txt2img"
        mine = httpx.post(url, headers=alice.bearer, json=small(), timeout=60).json()
        theirs = httpx.post(url, headers=bob.bearer, json=small(), timeout=60).json()
        assert PROMPT in png_of(mine["images"][0]).info["parameters"]
        assert "parameters" not in png_of(theirs["images"][0]).info
        assert httpx.get(f"{team.url}/sdapi/v1/options", headers=alice.bearer).json()[
            "enable_pnginfo"] is True
    finally:
        accounts.update_settings(alice.user_id, embed_parameters=False)


def test_nothing_of_a_request_is_logged(team: Running, alice: Member,
                                        caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    exif = Image.Exif()
    exif[0x010E] = "holiday-photo-description"
    body = small(init_images=[b64(photo(), "JPEG", exif=exif)], steps=60, width=128, height=128)
    thread, _box = run_in_thread(httpx.post, f"{team.url}/sdapi/v1/img2img", json=body,
                                 headers=alice.bearer, timeout=60)
    wait_for(lambda: team.studio.queue.jobs_of(alice.user_id))
    httpx.post(f"{team.url}/sdapi/v1/txt2img", json=small(steps="many"), headers=alice.bearer)
    httpx.post(f"{team.url}/sdapi/v1/interrupt", headers=alice.bearer)
    thread.join(30)
    client_side = ("httpx", "httpcore", "PIL", "urllib3")  # this test's own HTTP client
    logged = "\n".join(r.getMessage() for r in caplog.records
                       if not r.name.startswith(client_side))
    assert "job" in logged  # the server did log (pseudonymous job ids)
    for secret in (PROMPT, "alice", alice.user_id, alice.token, "holiday", "127.0.0.1"):
        assert secret not in logged


@pytest.mark.parametrize(
    ("endpoint", "fields", "status", "field"),
    [
        ("img2img", {"init_images": ["not base64 at all!"]}, 422, "init_images"),
        ("img2img", {"init_images": [base64.b64encode(b"hello, not a picture").decode()]}, 422,
         "init_images"),
        ("img2img", {"init_images": [b64(photo((1200, 1000)))]}, 413, "init_images"),
        ("img2img", {"init_images": [base64.b64encode(os.urandom(1_100_000)).decode()]}, 413,
         "init_images"),
        ("img2img", {"init_images": [b64(photo())], "mask": b64(photo((1200, 1000)))}, 413,
         "mask"),
        ("img2img", {"init_images": [b64(photo())], "mask": "%%%"}, 422, "mask"),
        ("img2img", {}, 422, "init_images"),
        ("txt2img", {"steps": 1000}, 422, "steps"),
        ("txt2img", {"steps": "many"}, 422, "steps"),
        ("txt2img", {"width": 4096}, 422, "width"),
        ("txt2img", {"height": 100_000}, 422, "height"),
        ("txt2img", {"cfg_scale": 99}, 422, "cfg_scale"),
        ("txt2img", {"sampler_name": "Nope"}, 422, "sampler_name"),
        ("txt2img", {"styles": ["no such style"]}, 422, "styles"),
        ("txt2img", {"override_settings": {"sd_model_checkpoint": "missing"}}, 422,
         "sd_model_checkpoint"),
        ("txt2img", {"script_name": "x/y/z plot"}, 422, "script_name"),
        ("txt2img", {"n_iter": 1000}, 422, "n_iter"),
    ],
)
def test_bad_input_gets_a_json_error_naming_the_field(team: Running, alice: Member, endpoint: str,
                                                      fields: dict, status: int, field: str):
    response = httpx.post(f"{team.url}/sdapi/v1/{endpoint}", json=small(**fields),
                          headers=alice.bearer, timeout=60)
    assert_error(response, status, field)
    assert len(team.studio.spool) == 0
    assert_healthy(team, alice.bearer)


def test_bodies_that_are_not_json_objects_are_refused(team: Running, alice: Member):
    url = f"{team.url}/sdapi/v1/txt2img"
    assert_error(httpx.post(url, content=b"{not json", headers=alice.bearer), 422)
    assert_error(httpx.post(url, json=[1, 2], headers=alice.bearer), 422)
    huge = b'{"prompt": "' + b"a" * 8_000_000 + b'"}'  # over 4 pictures (4/3 x max_upload_mb) + 1 MB
    assert_error(httpx.post(url, content=huge, headers=alice.bearer), 413)
    assert_error(httpx.post(f"{team.url}/sdapi/v1/options", json={"sd_model_checkpoint": "nope"},
                            headers=alice.bearer), 422, "sd_model_checkpoint")
    assert_healthy(team, alice.bearer)


@pytest.mark.parametrize(
    ("method", "endpoint", "status"),
    [("GET", "face-restorers", 501), ("POST", "interrogate", 501), ("POST", "png-info", 501),
     ("GET", "extra-single-image", 405), ("GET", "realesrgan-models", 501), ("GET", "scripts", 501),
     ("GET", "no-such-thing", 404), ("GET", "txt2img", 405)],
)
def test_other_endpoints_are_named_as_unsupported(team: Running, alice: Member, method: str,
                                                   endpoint: str, status: int):
    response = httpx.request(method, f"{team.url}/sdapi/v1/{endpoint}", headers=alice.bearer)
    body = assert_error(response, status)
    assert f"/sdapi/v1/{endpoint}" in body["detail"]


def test_save_images_keeps_nothing_in_personal_mode(personal: Running):
    data_dir = personal.studio.settings.data_dir
    before = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*") if p.is_file())
    response = httpx.post(f"{personal.url}/sdapi/v1/txt2img", json=small(save_images=True),
                          timeout=60)
    info = json.loads(response.json()["info"])
    assert info["obscura_saved_to_gallery"] is False
    assert "save_images" in info["obscura_ignored"]
    after = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*") if p.is_file())
    assert after == before


def test_a_logged_in_browser_may_call_the_api_but_no_other_site(team: Running):
    with httpx.Client(base_url=team.url) as browser:
        login = browser.post("/login", data={"username": "bob", "password": PASSWORD})
        assert login.status_code == 200, login.text
        assert browser.get("/sdapi/v1/options").status_code == 200
        forged = browser.post("/sdapi/v1/interrupt", headers={"origin": "http://evil.example"})
        assert forged.status_code == 403


def test_no_swagger_page_or_schema_is_served(personal: Running):
    for path in ("/docs", "/redoc", "/openapi.json", "/sdapi/v1/docs"):
        response = httpx.get(f"{personal.url}{path}")
        assert "swagger" not in response.text.lower(), path
        assert "cdn.jsdelivr" not in response.text, path


def test_wrong_tokens_never_lock_out_a_good_token_from_the_same_address(team: Running,
                                                                         alice: Member):
    # Issue 9.6: six random Bearer tokens used to make every valid token from there 401.
    url = f"{team.url}/sdapi/v1/sd-models"
    for _ in range(8):
        wrong = httpx.get(url, headers={"authorization": "Bearer obs_wrong"})
        assert wrong.status_code == 401 and "error" in wrong.json()
    assert httpx.get(url, headers=alice.bearer).status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_a_body_a_form_could_send_is_refused_so_no_page_can_forge_a_call(personal: Running,
                                                                      content_type: str):
    # Personal mode has no cookie to check; a form's content type is what gives it away.
    body = json.dumps({"prompt": "forged", "steps": 1, "width": 64, "height": 64})
    with httpx.Client(base_url=personal.url, timeout=60) as http:
        for path in ("/sdapi/v1/txt2img", "/sdapi/v1/interrupt", "/sdapi/v1/options"):
            response = http.post(path, content=body, headers={"content-type": content_type})
            assert response.status_code == 415, (path, response.text)
            assert response.json()["error"] == "json_only"
        assert http.post("/sdapi/v1/interrupt").status_code == 200  # no body: fine
