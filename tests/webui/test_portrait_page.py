"""The Portrait page (webui/ui/portrait.py) through ``gradio_client`` on real servers.

A server with only the demo models says, in English and in Chinese, which face-keeping files are
missing (as the page's note from the moment it loads, and as the answer to Generate), and paints
styled variants when the person goes on without face-keeping. A second server whose models
folder also holds tiny IP-Adapter Plus-Face, CLIP image encoder and ControlNet files
(tests/portrait_files.py) paints the variants keeping the face of tests/data/astronaut-256.png.
"""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from leftovers import files_in, plaintext_images, wait_until
from PIL import Image

from core.engine import Engine
from core.portrait import missing_error, portrait_request
from core.registry import ModelRegistry
from tests.portrait_files import tiny_clip_vision, tiny_controlnet, tiny_ip_adapter
from webui.i18n import catalogue
from webui.styles import find_style, load_styles
from webui.ui.portrait import models_note, pose_note

SD, SDXL = "demo-tiny-sd", "demo-tiny-sdxl"
FACE = Path(__file__).resolve().parents[1] / "data" / "astronaut-256.png"
EN, ZH = catalogue("en")["errors"], catalogue("zh")["errors"]


def models_of(state_dir: Path, demo_models: Path) -> Path:
    """The server's own models folder (``<data>/models``) holding the two demo models."""
    folder = state_dir / "data" / "models"
    for name in (SD, SDXL):
        shutil.copytree(demo_models / name, folder / name)
    return folder


def studio_of(models: Path) -> SimpleNamespace:
    """What the page's notes read (the engine's models, the library), for the same folder."""
    registry = ModelRegistry(models)
    registry.scan()
    return SimpleNamespace(engine=Engine(registry, device="cpu", default_model=SD),
                           registry=registry)


@pytest.fixture(scope="module")
def bare(models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from conftest import start_server

    state_dir = tmp_path_factory.mktemp("portrait-bare")
    models_of(state_dir, models_dir)
    yield from start_server(state_dir, "personal")


@pytest.fixture(scope="module")
def ui(bare) -> Client:
    return Client(bare.url + "/", verbose=False)


@pytest.fixture(scope="module")
def ui_zh(bare) -> Client:
    return Client(bare.url + "/", verbose=False, headers={"Accept-Language": "zh-CN,zh;q=0.9"})


def pictures_of(answer: tuple) -> list[Image.Image]:
    pictures, _preview, status, *_ = answer
    assert pictures, status
    # the pictures come as data: URLs (nothing of them is written to the server's disk)
    urls = [entry["image"]["url"] for entry in pictures]
    assert all(url.startswith("data:image/png;base64,") for url in urls)
    return [Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
            for url in urls]


def test_every_input_has_a_default_and_the_endpoint_is_named_portrait(ui: Client):
    info = ui.view_api(return_format="dict", print_info=False)
    parameters = info["named_endpoints"]["/portrait"]["parameters"]
    assert parameters and all(p["parameter_has_default"] for p in parameters)
    names = [p["parameter_name"] for p in parameters]
    assert names[:5] == ["image", "prompt", "style", "likeness", "keep_pose"]


def test_missing_face_models_are_one_sentence_in_english_and_chinese(ui: Client, ui_zh: Client):
    with pytest.raises(AppError) as err:
        ui.predict(image=handle_file(str(FACE)), api_name="/portrait")
    assert EN["portrait_needs_face_adapter_sd1"] in str(err.value)
    assert "ip-adapter-plus-face_sd15.safetensors" in str(err.value)
    with pytest.raises(AppError) as err:
        ui_zh.predict(image=handle_file(str(FACE)), model=SDXL, api_name="/portrait")
    assert ZH["portrait_needs_face_adapter_sdxl"] in str(err.value)
    assert "Traceback" not in str(err.value)


def test_the_page_shows_the_missing_models_note_from_page_load(bare):
    studio = studio_of(bare.data_dir / "models")
    assert models_note(studio, None, "en") == EN["portrait_needs_face_adapter_sd1"]
    assert models_note(studio, SDXL, "zh") == ZH["portrait_needs_face_adapter_sdxl"]
    assert pose_note(studio, SD, "zh") == ZH["portrait_needs_pose_controlnet"]
    # ...and the note is an output of a page-load event (shown before anyone clicks anything)
    config = Client(bare.url + "/", verbose=False).config
    ids = {c.get("props", {}).get("elem_id"): c["id"] for c in config["components"]}
    loads = [d for d in config["dependencies"]
             if any(t[1] == "load" for t in d.get("targets", []))]
    assert any(ids["portrait-missing"] in d["outputs"] for d in loads)


def test_going_on_without_face_keeping_paints_styled_variants(ui: Client):
    answer = ui.predict(image=handle_file(str(FACE)), style="水彩", batch_size=2, seed=11,
                        without_face_keeping=True, api_name="/portrait")
    pictures = pictures_of(answer)
    assert len(pictures) == 2
    # The result keeps the photo's proportions at the model's size (a square photo: square).
    assert pictures[0].size == (256, 256)
    assert "11" in answer[2]
    assert catalogue("en")["messages"]["portrait_painted_plain"] in answer[2]


@pytest.mark.parametrize(
    ("fields", "key"),
    [({"likeness": 2}, "portrait_likeness_out_of_range"),
     ({"likeness": -0.5}, "portrait_likeness_out_of_range"),
     ({"style": "baroque"}, "bad_style"),
     ({"batch_size": 99}, "batch_out_of_range")],
)
def test_bad_values_are_one_sentence(ui: Client, fields, key):
    with pytest.raises(AppError) as err:
        ui.predict(image=handle_file(str(FACE)), without_face_keeping=True,
                   api_name="/portrait", **fields)
    sentence = EN[key].split("{")[0]
    assert sentence in str(err.value), str(err.value)
    assert "Traceback" not in str(err.value)


def test_no_photo_is_one_sentence(ui: Client):
    with pytest.raises(AppError) as err:
        ui.predict(api_name="/portrait")
    assert catalogue("en")["messages"]["no_photo"] in str(err.value)


# -- with the face-keeping models -----------------------------------------------------------
@pytest.fixture(scope="module")
def equipped(models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The demo models plus tiny working IP-Adapter Plus-Face (its published file name), CLIP
    image encoder (h94's ``image_encoder/`` folder) and Canny ControlNet for the demo SD UNet."""
    from conftest import start_server

    state_dir = tmp_path_factory.mktemp("portrait")
    models = models_of(state_dir, models_dir)
    for sub in ("ipadapter", "clip_vision", "controlnet"):
        (models / sub).mkdir()
    tiny_ip_adapter(models / "ipadapter" / "ip-adapter-plus-face_sd15.safetensors", "plus", "sd1")
    tiny_clip_vision(models / "clip_vision" / "image_encoder")
    tiny_controlnet(models / "controlnet" / "control_v11p_sd15_canny", "sd1", "diffusers")
    yield from start_server(state_dir, "personal")


def recipe_as_img2img(server, studio: SimpleNamespace, likeness: float,
                      without: bool) -> list[Image.Image]:
    """The page's request for FACE (core/portrait.py), painted by /sdapi/v1/img2img with no
    ControlNet or IP-Adapter unit: what the page would give if it ignored its units."""
    info = studio.engine.model_for(SD)
    made = portrait_request("", find_style(load_styles(), "anime"), likeness, False, 2, 5, info,
                            studio.registry.library, (256, 256), without_face_keeping=without)
    body = {"init_images": [base64.b64encode(FACE.read_bytes()).decode()],
            "prompt": made.prompt, "negative_prompt": made.negative_prompt,
            "denoising_strength": made.strength, "steps": made.num_inference_steps,
            "cfg_scale": made.guidance_scale, "sampler_name": made.sampler, "seed": made.seed,
            "width": made.width, "height": made.height, "batch_size": made.batch_size}
    answer = httpx.post(f"{server.url}/sdapi/v1/img2img", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    return [Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
            for data in answer.json()["images"]]


def test_without_face_models_the_page_paints_the_recipe_as_plain_img2img(ui: Client, bare):
    """The control: with no unit, the page's pictures are exactly the recipe's img2img."""
    page = pictures_of(ui.predict(image=handle_file(str(FACE)), batch_size=2, seed=5,
                                  likeness=1.0, without_face_keeping=True, api_name="/portrait"))
    api = recipe_as_img2img(bare, studio_of(bare.data_dir / "models"), 1.0, without=True)
    assert [p.tobytes() for p in page] == [a.tobytes() for a in api]


def test_with_the_face_models_the_page_keeps_the_face(equipped):
    studio = studio_of(equipped.data_dir / "models")
    info = studio.engine.model_for(SD)
    assert missing_error(info, studio.registry.library) is None
    assert models_note(studio, SD, "en") == "" and pose_note(studio, SD, "en") == ""
    ui = Client(equipped.url + "/", verbose=False)
    common = dict(image=handle_file(str(FACE)), batch_size=2, seed=5, api_name="/portrait")
    kept = pictures_of(ui.predict(likeness=1.0, **common))
    assert len(kept) == 2
    # the same request without its IP-Adapter unit: the face-keeping adapter changed the picture
    plain = recipe_as_img2img(equipped, studio, 1.0, without=False)
    assert kept[0].size == plain[0].size and kept[0].tobytes() != plain[0].tobytes()
    posed = pictures_of(ui.predict(likeness=1.0, keep_pose=True, **common))
    assert posed[0].tobytes() != kept[0].tobytes()
    no_trace_left(equipped)


def no_trace_left(server) -> None:
    """The photo went the one run path: nothing of it stays on disk, in the RAM folder or in
    the server's temp folder (no image file, and not its raw pixels either)."""
    spool = server.data_dir / "spool"
    assert wait_until(lambda: [f for f in files_in(spool) if not f.endswith(".obscura-spool")]
                      == [])
    assert wait_until(lambda: files_in(server.ram_dir / "gradio") == [])
    models = server.data_dir / "models"
    for folder in (server.data_dir, server.ram_dir, server.system_tmp):
        assert plaintext_images(folder, skip=(models,)) == []
    pixels = Image.open(FACE).convert("RGB").tobytes()
    row = pixels[128 * 256 * 3:129 * 256 * 3]  # one row of the face, as raw RGB
    for folder in (server.data_dir, server.ram_dir, server.system_tmp):
        for name in files_in(folder):
            if not Path(name).is_relative_to(models):
                assert row not in Path(name).read_bytes(), name


def test_a_photo_without_a_face_is_one_sentence_unless_the_person_goes_on(equipped, tmp_path):
    blank = tmp_path / "wall.png"
    Image.new("RGB", (256, 256), (180, 170, 160)).save(blank)
    ui = Client(equipped.url + "/", verbose=False)
    with pytest.raises(AppError) as err:
        ui.predict(image=handle_file(str(blank)), batch_size=1, api_name="/portrait")
    assert "No face was found" in str(err.value) and "Traceback" not in str(err.value)
    answer = ui.predict(image=handle_file(str(blank)), batch_size=1, without_face_keeping=True,
                        api_name="/portrait")
    assert len(pictures_of(answer)) == 1
    assert catalogue("en")["messages"]["no_face_painted"] in answer[2]
