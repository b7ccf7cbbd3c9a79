"""The ControlNet extension's API (issue 12): units in txt2img / img2img and the /controlnet routes.

One accounts-mode server per module (started as ``obscura serve`` starts one), whose models folder
holds the demo SD model plus tiny working portrait files built in code (tests/portrait_files.py)
in A1111's and ComfyUI's folder names: a ControlNet (``ControlNet/``), an IP-Adapter Plus-Face
(``ipadapter/``) and a CLIP image encoder (``clip_vision/``). Bodies are the shapes A1111 clients
send (sd-webui-controlnet's ControlNetUnit fields); pictures are 64 px, jobs 2 steps.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from core.preprocess import preprocess
from tests.portrait_files import tiny_clip_vision, tiny_controlnet, tiny_ip_adapter
from tests.webui.test_api import SD, SDXL, Member, Running, member, start_server

CONTROLNET, IP_ADAPTER, ENCODER = "tiny-canny-sd15", "ip-adapter-plus-face_sd15", "tiny-vit-h"
FACE = Path(__file__).resolve().parents[1] / "data" / "astronaut-256.png"
PROMPT = "a portrait in ink wash, painted by a secretive otter"


def build_portrait_library(folder: Path, demo_models: Path) -> Path:
    """The demo SD and SDXL models and the tiny portrait files (for SD), in A1111 / ComfyUI
    folder names."""
    for name in (SD, SDXL):
        shutil.copytree(demo_models / name, folder / name)
    tiny_controlnet(folder / "ControlNet" / CONTROLNET)
    tiny_ip_adapter(folder / "ipadapter" / f"{IP_ADAPTER}.safetensors", variant="plus")
    tiny_clip_vision(folder / "clip_vision" / ENCODER)
    return folder


@pytest.fixture(scope="module")
def portrait_models(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_portrait_library(tmp_path_factory.mktemp("portrait-models"), models_dir)


@pytest.fixture(scope="module")
def server(portrait_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    yield from start_server(tmp_path_factory.mktemp("controlnet"), portrait_models,
                            accounts=True, default_model=SD)


@pytest.fixture(autouse=True)
def forgiven(request: pytest.FixtureRequest) -> None:
    """Failed tokens from 127.0.0.1 add up across tests; each test starts a quiet day later."""
    if "server" in request.fixturenames:
        request.getfixturevalue("server").clock[0] += 2 * 86400


@pytest.fixture(scope="module")
def alice(server: Running) -> Member:
    return member(server, "alice")


# -- pictures and bodies ---------------------------------------------------------------------
def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(image: Image.Image) -> str:
    return base64.b64encode(png(image)).decode()


def face() -> Image.Image:
    with Image.open(FACE) as image:
        return image.convert("RGB")


def drawing() -> Image.Image:
    """Black lines on white: a map with edges for Canny."""
    image = Image.new("RGB", (64, 64), "white")
    for x in range(8, 64, 12):
        for y in range(64):
            image.putpixel((x, y), (0, 0, 0))
    return image


def pixels(b64_text: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(b64_text))) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def small(**fields: Any) -> dict[str, Any]:
    return {"prompt": PROMPT, "width": 64, "height": 64, "steps": 2, "seed": 7, **fields}


def control_unit(**fields: Any) -> dict[str, Any]:
    return {"enabled": True, "module": "canny", "model": f"{CONTROLNET} [a1b2c3d4]",
            "image": b64(drawing()), "weight": 1.0, "resize_mode": "Crop and Resize",
            "processor_res": 64, "threshold_a": 64, "threshold_b": 64, "guidance_start": 0.0,
            "guidance_end": 1.0, "control_mode": "Balanced", "pixel_perfect": False, **fields}


def ip_unit(**fields: Any) -> dict[str, Any]:
    return {"enabled": True, "module": "ip-adapter_clip_sd15", "model": IP_ADAPTER,
            "image": b64(face()), "weight": 1.0, **fields}


def scripts(*units: dict[str, Any]) -> dict[str, Any]:
    return {"alwayson_scripts": {"controlnet": {"args": list(units)}}}


def post(server: Running, who: Member, endpoint: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/sdapi/v1/{endpoint}", json=body, headers=who.bearer,
                      timeout=120)


def painted(response: httpx.Response) -> tuple[np.ndarray, dict[str, Any]]:
    assert response.status_code == 200, response.text
    answer = response.json()
    return pixels(answer["images"][0]), json.loads(answer["info"])


def refused(response: httpx.Response, field: str, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["field"] == field, body
    assert body["detail"].startswith(f"{field}: ") and body["detail"].endswith("."), body
    assert "\n" not in body["detail"] and "Traceback" not in response.text
    return body


# -- units through txt2img and img2img --------------------------------------------------------
def test_a_controlnet_unit_changes_the_txt2img_picture_and_is_in_the_infotext(server, alice):
    plain, _ = painted(post(server, alice, "txt2img", small()))
    controlled, info = painted(post(server, alice, "txt2img", small(**scripts(control_unit()))))
    again, _ = painted(post(server, alice, "txt2img", small(**scripts(control_unit()))))
    assert np.abs(controlled - plain).max() > 0  # the unit did something
    assert np.array_equal(controlled, again)  # and the same thing each time
    line = info["extra_generation_params"]["ControlNet 0"]
    assert line.startswith(f"Module: canny, Model: {CONTROLNET}, Weight: 1.0, ")
    assert "Processor Res: 64, Threshold A: 64.0, Threshold B: 64.0" in line
    assert f'ControlNet 0: "{line}"' in info["infotexts"][0]
    assert info["obscura_ignored"] == []


def test_a_unit_picture_is_never_sent_back(server, alice):
    unit = control_unit()
    response = post(server, alice, "txt2img", small(**scripts(unit)))
    assert response.status_code == 200, response.text
    assert response.json()["parameters"]["alwayson_scripts"]["controlnet"]["args"][0][
        "image"] is None
    assert unit["image"] not in response.text


def test_a_controlnet_unit_without_a_picture_uses_the_img2img_photo(server, alice):
    photo = {"init_images": [b64(drawing())], "denoising_strength": 0.9}
    plain, _ = painted(post(server, alice, "img2img", small(**photo)))
    unit = control_unit(image=None, module="invert")
    controlled, info = painted(post(server, alice, "img2img", small(**photo, **scripts(unit))))
    assert np.abs(controlled - plain).max() > 0
    assert info["extra_generation_params"]["ControlNet 0"].startswith("Module: invert, ")


def test_an_ip_adapter_unit_with_a_face_crop_changes_the_picture_and_weight_0_does_not(
        server, alice):
    photo = {"init_images": [b64(face().resize((64, 64)))], "denoising_strength": 0.9}
    plain, _ = painted(post(server, alice, "img2img", small(**photo)))
    unit = ip_unit(obscura_crop_face=True)
    adapted, info = painted(post(server, alice, "img2img", small(**photo, **scripts(unit))))
    assert np.abs(adapted - plain).max() > 0
    assert info["extra_generation_params"]["ControlNet 0"].startswith(
        f"Module: ip-adapter-auto, Model: {IP_ADAPTER}, Weight: 1.0, ")
    assert info["obscura_face_found"] is True
    text = info["infotexts"][0].lower()  # nothing face-derived in a picture's text
    assert not re.search(r"face[ _]?(found|box|crop)|crop[ _]face|true", text)
    zero, _ = painted(post(server, alice, "img2img",
                           small(**photo, **scripts(ip_unit(weight=0, obscura_crop_face=True)))))
    assert np.array_equal(zero, plain)


def test_an_ip_adapter_unit_in_txt2img_takes_several_references(server, alice):
    plain, _ = painted(post(server, alice, "txt2img", small()))
    one, _ = painted(post(server, alice, "txt2img", small(**scripts(ip_unit()))))
    other = b64(drawing())
    two, _ = painted(post(server, alice, "txt2img", small(**scripts(
        ip_unit(image=[{"image": b64(face())}, {"image": other}])))))
    listed, _ = painted(post(server, alice, "txt2img", small(**scripts(
        ip_unit(image=[b64(face()), other, other])))))
    assert np.abs(one - plain).max() > 0
    assert np.abs(two - one).max() > 0  # the second reference counts
    assert listed.shape == plain.shape
    body = refused(post(server, alice, "txt2img", small(**scripts(
        ip_unit(image=[{"image": other}] * 5)))), f"{UNIT}.image")
    assert body["error"] == "too_many_references"


def test_a_disabled_unit_is_skipped(server, alice):
    plain, _ = painted(post(server, alice, "txt2img", small()))
    skipped, info = painted(post(server, alice, "txt2img",
                                 small(**scripts(control_unit(enabled=False, model="nope")))))
    assert np.array_equal(skipped, plain)
    assert "ControlNet 0" not in info["extra_generation_params"]
    assert info["obscura_ignored"] == []


def test_other_alwayson_scripts_are_still_named_as_ignored(server, alice):
    body = small(alwayson_scripts={"ADetailer": {"args": [True]},
                                   "ControlNet": {"args": [control_unit()]}})
    _, info = painted(post(server, alice, "txt2img", body))
    assert info["obscura_ignored"] == ["alwayson_scripts"]
    assert "ControlNet 0" in info["extra_generation_params"]  # the key in any case, as A1111


def test_settings_obscura_does_not_follow_are_named(server, alice):
    unit = control_unit(pixel_perfect=True, low_vram=True, mask=b64(drawing()))
    _, info = painted(post(server, alice, "txt2img", small(**scripts(unit))))
    base = "alwayson_scripts.controlnet.args.0"
    assert info["obscura_ignored"] == [f"{base}.mask", f"{base}.pixel_perfect", f"{base}.low_vram"]


def test_a1111_enum_numbers_and_old_names_are_understood(server, alice):
    named, _ = painted(post(server, alice, "txt2img", small(**scripts(control_unit(
        control_mode="My prompt is more important", resize_mode="Just Resize")))))
    numbered, info = painted(post(server, alice, "txt2img", small(**scripts(control_unit(
        control_mode=1, resize_mode=0, image=None, input_image=b64(drawing()))))))
    assert np.array_equal(named, numbered)
    line = info["extra_generation_params"]["ControlNet 0"]
    assert "Resize Mode: Just Resize" in line and "Control Mode: My prompt is more important" in line


# -- refused with one sentence ------------------------------------------------------------------
UNIT = "alwayson_scripts.controlnet.args.0"


@pytest.mark.parametrize(("fields", "field", "detail"), [
    ({"weight": 2.5}, f"{UNIT}.weight", "must be between 0 and 2"),
    ({"weight": True}, f"{UNIT}.weight", "must be a number, not true or false"),
    ({"guidance_start": 1.5}, f"{UNIT}.guidance_start", "must be between 0 and 1"),
    ({"guidance_start": 0.8, "guidance_end": 0.2}, f"{UNIT}.guidance_start", "must not be after"),
    ({"processor_res": 100_000}, f"{UNIT}.processor_res", "must be between -1 and 2048"),
    ({"threshold_a": 256}, f"{UNIT}.threshold_a", "must be between -1 and 255"),
    ({"control_mode": 3}, f"{UNIT}.control_mode", "must be between 0 and 2"),
    ({"control_mode": "Chaos"}, f"{UNIT}.control_mode", "must be 'Balanced', "),
    ({"resize_mode": 9}, f"{UNIT}.resize_mode", "must be between 0 and 3"),
    ({"module": "depth_leres_ultra"}, f"{UNIT}.module", "no such preprocessor"),
    ({"module": "ip-adapter_face_id_plus"}, f"{UNIT}.module", "InsightFace"),
    ({"model": "control_v11p_sd15_canny [d14c016b]"}, f"{UNIT}.model", "no such model"),
    ({"model": "None"}, f"{UNIT}.model", "choose a model"),
    ({"model": IP_ADAPTER}, f"{UNIT}.model", "this is an IP-Adapter"),
    ({"image": None}, f"{UNIT}.image", "txt2img has no photo"),
    ({"image": "bm90IGEgcGljdHVyZQ=="}, f"{UNIT}.image", ""),
])
def test_a_bad_unit_is_a_422_naming_its_field(server, alice, fields, field, detail):
    body = refused(post(server, alice, "txt2img", small(**scripts(control_unit(**fields)))), field)
    assert detail in body["detail"]
    assert "depth_leres_ultra" not in body["detail"] and "d14c016b" not in body["detail"]


def test_no_face_in_a_reference_is_one_sentence_or_goes_on_when_asked(server, alice):
    blank = b64(Image.new("RGB", (64, 64), (120, 160, 200)))
    photo = {"init_images": [blank], "denoising_strength": 0.9}
    unit = ip_unit(image=blank, obscura_crop_face=True)
    body = refused(post(server, alice, "img2img", small(**photo, **scripts(unit))),
                   f"{UNIT}.image")
    assert body["error"] == "no_face_found"
    plain, _ = painted(post(server, alice, "img2img", small(**photo)))
    unit["obscura_allow_no_face"] = True
    went_on, info = painted(post(server, alice, "img2img", small(**photo, **scripts(unit))))
    assert info["obscura_face_found"] is False
    assert np.array_equal(went_on, plain)  # painted without the unit, as asked


@pytest.mark.parametrize(("fields", "field"), [
    ({"processor_res": 10}, f"{UNIT}.processor_res"),
    ({"threshold_a": 0}, f"{UNIT}.threshold_a"),
])
def test_the_engines_own_unit_errors_name_the_units_field(server, alice, fields, field):
    refused(post(server, alice, "txt2img", small(**scripts(control_unit(**fields)))), field)


@pytest.mark.parametrize("unit", [control_unit(), ip_unit()], ids=["controlnet", "ip-adapter"])
def test_a_unit_for_another_architecture_names_the_units_model(server, alice, unit):
    body = small(override_settings={"sd_model_checkpoint": SDXL}, **scripts(unit))
    answer = refused(post(server, alice, "txt2img", body), f"{UNIT}.model")
    # Told from the file's shapes before any work, or (the tiny files' widths are no real
    # architecture's) when the weights do not fit the checkpoint.
    assert answer["error"] in ("controlnet_wrong_arch", "controlnet_mismatch",
                               "ipadapter_wrong_arch", "ipadapter_load_failed")


def test_an_ip_adapter_module_with_a_controlnet_model_is_refused(server, alice):
    body = refused(post(server, alice, "txt2img", small(**scripts(ip_unit(model=CONTROLNET)))),
                   f"{UNIT}.model")
    assert "needs an IP-Adapter model" in body["detail"]


def test_the_second_unit_is_named_when_it_is_the_bad_one(server, alice):
    body = small(**scripts(control_unit(), control_unit(weight=-1)))
    refused(post(server, alice, "txt2img", body), "alwayson_scripts.controlnet.args.1.weight")


@pytest.mark.parametrize("where", [
    "https://example.com/selfie.png", "http://192.168.1.20/me.jpg", "file:///etc/passwd",
    "ftp://example.com/a.png", "/home/alice/Pictures/selfie.png", "~/selfie.png",
    "../../data/spool/abc", "C:\\Users\\alice\\selfie.png",
])
def test_a_url_or_path_as_a_unit_picture_is_refused_and_nothing_is_fetched(
        server, alice, no_egress, where):
    for unit in (control_unit(image=where), ip_unit(image=[{"image": where}])):
        body = refused(post(server, alice, "txt2img", small(**scripts(unit))), f"{UNIT}.image")
        assert body["error"] == "image_not_base64"
        assert "never fetches a URL or opens a file path" in body["detail"]
        assert where not in body["detail"]
    assert no_egress == []  # the network guard saw no connection and no DNS look-up


def test_too_many_units_are_refused(server, alice):
    body = small(**scripts(*[control_unit() for _ in range(5)]))
    refused(post(server, alice, "txt2img", body), "alwayson_scripts.controlnet.args.4")


# -- the /controlnet routes -------------------------------------------------------------------
def get(server: Running, who: Member, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/controlnet/{path}", params=params, headers=who.bearer)
    assert response.status_code == 200, response.text
    return response.json()


def test_model_list_names_the_controlnets_and_ip_adapters(server, alice):
    assert get(server, alice, "model_list") == {"model_list": [CONTROLNET, IP_ADAPTER]}
    assert get(server, alice, "model_list", update="true") == {"model_list": [CONTROLNET, IP_ADAPTER]}


def test_module_list_has_a1111s_names_details_and_labels(server, alice):
    answer = get(server, alice, "module_list")
    assert answer["module_list"][:4] == ["none", "canny", "pyracanny", "invert"]
    assert "ip-adapter_clip_sd15" in answer["module_list"]
    assert set(answer["module_detail"]) == set(answer["module_list"])
    sliders = answer["module_detail"]["canny"]["sliders"]
    assert [s["name"] for s in sliders] == ["Resolution", "Canny Low Threshold",
                                            "Canny High Threshold"]
    assert set(sliders[0]) == {"name", "value", "min", "max", "step"}
    labels = get(server, alice, "module_list", alias_names="true")["module_list"]
    assert "invert (from white bg & black line)" in labels and "ip-adapter_clip_h" in labels


def test_control_types_have_a1111s_shape(server, alice):
    types = get(server, alice, "control_types")["control_types"]
    assert {"All", "Canny", "IP-Adapter"} <= set(types)
    for entry in types.values():
        assert set(entry) == {"module_list", "model_list", "default_option", "default_model"}
        assert entry["model_list"][0] == "None"
    assert types["Canny"]["default_model"] == CONTROLNET
    assert types["IP-Adapter"]["model_list"] == ["None", IP_ADAPTER]
    assert get(server, alice, "settings") == {"control_net_unit_count": 4}
    assert get(server, alice, "version") == {"version": 3}


def test_detect_returns_the_canny_edges_of_the_picture(server, alice):
    response = httpx.post(f"{server.url}/controlnet/detect", headers=alice.bearer, json={
        "controlnet_module": "canny", "controlnet_input_images": [b64(face())],
        "controlnet_processor_res": 128, "controlnet_threshold_a": 50,
        "controlnet_threshold_b": 150})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["info"] == "Success" and len(answer["images"]) == 1
    with Image.open(io.BytesIO(base64.b64decode(answer["images"][0]))) as edges:
        edges.load()
        assert not edges.info  # a plain PNG: no text chunks, no EXIF
        got = np.asarray(edges.convert("L"))
    expected = np.asarray(preprocess("canny", face(), 128, 50, 150).convert("L"))
    assert got.shape == (128, 128) and np.array_equal(got, expected)
    assert 0 < (got > 0).mean() < 0.5  # edges, not a blank or full map


@pytest.mark.parametrize(("body", "field"), [
    ({"controlnet_module": "ip-adapter_clip_sd15", "controlnet_input_images": ["x"]},
     "controlnet_module"),
    ({"controlnet_module": "canny", "controlnet_input_images": []}, "controlnet_input_images"),
    ({"controlnet_module": "canny", "controlnet_input_images": ["https://example.com/a.png"]},
     "controlnet_input_images.0"),
    ({"controlnet_module": "canny", "controlnet_processor_res": 5000,
      "controlnet_input_images": ["x"]}, "controlnet_processor_res"),
    ({"controlnet_module": "canny", "controlnet_processor_res": 10,
      "controlnet_input_images": [b64(drawing())]}, "controlnet_processor_res"),
    ({"controlnet_module": "pyracanny", "controlnet_threshold_a": 0,
      "controlnet_input_images": [b64(drawing())]}, "controlnet_threshold_a"),
    ({"controlnet_module": "canny", "controlnet_input_images": ["aGVsbG8="]},
     "controlnet_input_images.0"),
])
def test_detect_refuses_bad_input_with_one_sentence(server, alice, body, field):
    response = httpx.post(f"{server.url}/controlnet/detect", headers=alice.bearer, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


def test_the_controlnet_routes_need_a_caller_and_json(server, alice):
    for path in ("model_list", "module_list", "control_types", "settings"):
        response = httpx.get(f"{server.url}/controlnet/{path}")
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Basic")
    form = httpx.post(f"{server.url}/controlnet/detect", headers=alice.bearer,
                      data={"controlnet_module": "canny"})
    assert form.status_code == 415
    unknown = httpx.get(f"{server.url}/controlnet/render_openpose_json", headers=alice.bearer)
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_endpoint"


def test_every_union_control_type_name_is_one_the_engine_knows():
    from core import control
    from webui.api.controlnet import UNION_TYPES

    assert set(UNION_TYPES) == {"openpose", "depth", "soft edge", "hard edge", "normal map",
                                "segmentation", "tile", "inpaint"}  # the extension's names
    assert set(UNION_TYPES.values()) <= set(control.UNION_TYPES)


def test_bad_input_is_refused_at_once_not_after_waiting_in_line(server, alice):
    """The run checks every request complete before it is queued (the queue does not check
    one whose pictures wait in the spool): a txt2img naming no installed model is a 422 while
    another job still runs, and never waits behind it."""
    import threading
    import time

    long_body = small(steps=150, width=256, height=256)
    runner = threading.Thread(target=post, args=(server, alice, "txt2img", long_body))
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while not server.studio.queue.jobs_of(alice.user_id):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        bad = small(override_settings={"sd_model_checkpoint": "not-installed"})
        started = time.monotonic()
        response = post(server, alice, "txt2img", bad)
        waited = time.monotonic() - started
        painting = [job for job in server.studio.queue.jobs_of(alice.user_id) if not job.done]
        refused(response, "sd_model_checkpoint")
        assert painting, f"answered only after the other job ended ({waited:.1f} s)"
    finally:
        httpx.post(f"{server.url}/sdapi/v1/interrupt", headers=alice.bearer)
        runner.join(60)
