"""Every number a client can send is bounded before any work; small input faults are one 4xx
sentence; the UI takes what scripts send (gradio_client, raw queue/join) with defaults.

Against a real server subprocess (``personal_server``, tests/webui/server_process.py): a value
that used to kill the process (Pillow's GaussianBlur segfaults for a radius ≥ 2**31) would take
``/healthz`` and every later test with it.
"""

from __future__ import annotations

import base64
import io
import json
import math

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from core.engine import MAX_BATCH, MAX_SEED, MAX_STEPS
from core.errors import InputError
from webui.api.endpoint import MAX_JSON_DEPTH
from webui.api.schemas import (
    BOUNDS,
    UNIT,
    DetectRequest,
    ExtrasFields,
    Img2ImgRequest,
    Txt2ImgRequest,
)
from webui.ui.common import build_request

PROMPT = "a lighthouse painted by a secretive otter"
IMG2IMG_ONLY = set(Img2ImgRequest.model_fields) - set(Txt2ImgRequest.model_fields)
EXTRAS = " (extras)"  # how BOUNDS names an extras field whose name img2img uses too
EXTRAS_ONLY = set(ExtrasFields.model_fields) - set(Img2ImgRequest.model_fields)
# UNIT (" (controlnet)"): how BOUNDS names a field of a ControlNet unit (alwayson_scripts).
DETECT_ONLY = set(DetectRequest.model_fields)  # POST /controlnet/detect


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


PHOTO = png_b64(Image.new("RGB", (64, 64), (200, 40, 40)))
MASK = png_b64(Image.new("L", (64, 64), 255))


def small(**fields) -> dict:
    return {"prompt": PROMPT, "width": 64, "height": 64, "steps": 2, "seed": 7, **fields}


def post(server, endpoint: str, body=None, content: bytes | None = None) -> httpx.Response:
    if endpoint.startswith("../../"):  # beside /sdapi/v1 (the ControlNet extension's routes)
        with server.client() as http:
            return http.post(f"/{endpoint.removeprefix('../../')}", json=body)
    with server.client() as http:
        if content is not None:
            return http.post(f"/sdapi/v1/{endpoint}", content=content,
                             headers={"content-type": "application/json"})
        return http.post(f"/sdapi/v1/{endpoint}", json=body)


def assert_refused(response: httpx.Response, status: int = 422, field: str | None = None,
                   code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"].endswith("."), body
    assert "\n" not in body["detail"] and "Traceback" not in response.text
    assert PROMPT not in response.text
    assert body.get("field") == field, body
    if code is not None:
        assert body["error"] == code, body
    # The answer carries the server's headers like any other.
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in response.headers["content-security-policy"]
    return body


def assert_alive(server) -> None:
    assert server.process.poll() is None, "the server process died"
    with server.client() as http:
        assert http.get("/healthz").json()["status"] == "ok"


def assert_quiet_log(server) -> None:
    log = (server.state_dir / "server.log").read_text()
    assert "Traceback" not in log and PROMPT not in log


# -- the segfault -------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["mask_blur", "mask_blur_x", "mask_blur_y"])
@pytest.mark.parametrize("radius", [1180591620717411303424, 2**63, 2**31, 65])
def test_a_huge_mask_blur_is_a_422_and_the_server_lives(personal_server, field, radius):
    body = small(init_images=[PHOTO], mask=MASK, **{field: radius})
    if field != "mask_blur":
        body["mask_blur"] = None  # then mask_blur_x/_y are the radius, as in AUTOMATIC1111
    answer = assert_refused(post(personal_server, "img2img", body), field=field)
    assert answer["detail"] == f"{field}: must be between 0 and 64."
    assert_alive(personal_server)


def test_the_largest_mask_blur_still_paints(personal_server):
    response = post(personal_server, "img2img",
                    small(init_images=[PHOTO], mask=MASK, mask_blur=64))
    assert response.status_code == 200, response.text
    assert len(response.json()["images"]) == 1


# -- every bounded field --------------------------------------------------------------------
def beyond(low: float, high: float) -> list[float]:
    step = 1 if isinstance(high, int) else max(0.01, abs(high) / 100)
    return [high + step, low - step, 2**70]


CASES = [(name, value) for name, (low, high) in sorted(BOUNDS.items())
         for value in beyond(low, high)]


@pytest.mark.parametrize(("field", "value"), CASES)
def test_every_bounded_number_past_its_bound_is_a_422_naming_field_and_range(
        personal_server, field, value):
    name = field.removesuffix(EXTRAS)
    if field.endswith(UNIT):
        name = f"alwayson_scripts.controlnet.args.0.{field.removesuffix(UNIT)}"
        unit = {"module": "none", "model": "None", field.removesuffix(UNIT): value}
        endpoint, body = "txt2img", small(alwayson_scripts={"controlnet": {"args": [unit]}})
    elif field in DETECT_ONLY:
        endpoint, body = "../../controlnet/detect", {"controlnet_input_images": [PHOTO],
                                                     field: value}
    elif name in EXTRAS_ONLY or field.endswith(EXTRAS):
        endpoint, body = "extra-single-image", {"image": PHOTO, name: value}
    elif field in IMG2IMG_ONLY:
        endpoint, body = "img2img", small(init_images=[PHOTO], **{field: value})
    else:
        endpoint, body = "txt2img", small(**{field: value})
    answer = assert_refused(post(personal_server, endpoint, body), field=name)
    low, high = BOUNDS[field]
    shown = [f"{n:g}" if isinstance(n, float) else str(n) for n in (low, high)]
    assert answer["detail"] == f"{name}: must be between {shown[0]} and {shown[1]}."
    assert_alive(personal_server)


def test_the_bounds_cover_what_automatic1111_clients_send():
    expected = {
        "seed", "subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h",
        "batch_size", "n_iter", "steps", "cfg_scale", "width", "height", "eta", "s_min_uncond",
        "s_churn", "s_tmax", "s_tmin", "s_noise", "denoising_strength", "refiner_switch_at",
        "hr_scale", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "hr_cfg",
        "firstphase_width", "firstphase_height", "resize_mode", "image_cfg_scale",
        "mask_blur", "mask_blur_x", "mask_blur_y", "inpainting_fill",
        "inpaint_full_res_padding", "inpainting_mask_invert", "initial_noise_multiplier",
    }
    assert expected <= set(BOUNDS)
    # Every int/float field of both bodies is bounded.
    for model in (Txt2ImgRequest, Img2ImgRequest):
        for name, info in model.model_fields.items():
            kind = str(info.annotation)
            if ("int" in kind or "float" in kind) and "bool" not in kind:
                assert name in BOUNDS, name
    assert BOUNDS["steps"] == (1, MAX_STEPS) and BOUNDS["batch_size"] == (1, MAX_BATCH)
    assert BOUNDS["seed"] == (-1, MAX_SEED)


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"steps": True}, "steps"), ({"batch_size": False}, "batch_size"),
     ({"seed": True}, "seed"), ({"cfg_scale": True}, "cfg_scale"),
     ({"n_iter": True}, "n_iter"), ({"seed": -2}, "seed"), ({"subseed": -5}, "subseed"),
     ({"steps": 2.5}, "steps"), ({"steps": "many"}, "steps"), ({"cfg_scale": "NaN"}, "cfg_scale"),
     ({"cfg_scale": "inf"}, "cfg_scale")],
)
def test_true_false_fractions_and_text_are_not_numbers(personal_server, fields, field):
    assert_refused(post(personal_server, "txt2img", small(**fields)), field=field)
    assert_alive(personal_server)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"])
def test_non_finite_numbers_anywhere_in_the_body_are_a_422(personal_server, literal):
    for place in (b'"cfg_scale": %s', b'"override_settings": {"x": [%s]}'):
        content = b'{"prompt": "x", "steps": 2, ' + place % literal + b"}"
        assert_refused(post(personal_server, "txt2img", content=content), code="not_finite")
    assert_alive(personal_server)


# -- nesting, text --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content",
    [b"[" * 100_000 + b"]" * 100_000,
     b'{"prompt": "x", "a": ' + b"[" * 5000 + b"]" * 5000 + b"}",
     b'{"override_settings": ' + b'{"a": ' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 2),
     b'{"alwayson_scripts": {"x": {"args": ' + b"[" * 900 + b"]" * 900 + b"}}}"],
)
def test_deeply_nested_bodies_are_a_422(personal_server, content):
    for endpoint in ("txt2img", "img2img", "options"):
        assert_refused(post(personal_server, endpoint, content=content), code="nested_too_deeply")
    assert_alive(personal_server)
    assert_quiet_log(personal_server)


def test_the_depth_is_counted_outside_strings_and_exactly():
    from webui.api.endpoint import nested_too_deeply

    def nest(levels: int) -> bytes:
        return b'{"a": ' * (levels - 1) + b"[1]" + b"}" * (levels - 1)

    assert not nested_too_deeply(nest(MAX_JSON_DEPTH))
    assert nested_too_deeply(nest(MAX_JSON_DEPTH + 1))
    # Brackets inside strings, escaped quotes and backslashes do not count.
    assert not nested_too_deeply(b'{"a": "' + b"[" * 100 + rb'", "b": "\\", "c": "\\\"[["}')
    assert nested_too_deeply(rb'{"a": "\\", "b": ' + b"[" * 40 + b"]" * 40 + b"}")
    # Alternating objects and lists count one level each.
    half = MAX_JSON_DEPTH // 2
    assert nested_too_deeply(b'{"a": [' * half + b'{"z": 1}' + b"]}" * half)
    assert not nested_too_deeply(b'{"a": [' * half + b"1" + b"]}" * half)


def test_ordinary_extension_nesting_is_accepted(personal_server):
    scripts = {"adetailer": {"args": [{"enabled": False, "image": None, "weights": [[1, 2]]}]},
               "controlnet": {"args": [{"enabled": False, "image": None, "weights": [[1, 2]]}]}}
    response = post(personal_server, "txt2img", small(alwayson_scripts=scripts))
    assert response.status_code == 200, response.text
    assert "alwayson_scripts" in json.loads(response.json()["info"])["obscura_ignored"]


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
@pytest.mark.parametrize("endpoint", ["txt2img", "img2img"])
def test_a_lone_surrogate_in_a_prompt_is_one_sentence(personal_server, field, endpoint):
    content = (b'{"%s": "a fox \\ud800 in snow", "steps": 2, "init_images": ["%s"]}'
               % (field.encode(), PHOTO.encode()))
    body = assert_refused(post(personal_server, endpoint, content=content), field=field,
                          code="prompt_not_text")
    assert body["detail"] == (f"{field}: The prompt contains characters that are not valid "
                              "text.")
    assert_alive(personal_server)


def test_a_lone_surrogate_elsewhere_is_a_422_not_a_500(personal_server):
    for content, field in [(b'{"prompt": "x", "styles": ["\\udfff"]}', "styles"),
                           (b'{"prompt": "x", "override_settings": {"\\ud800": 1}}',
                            "override_settings"),
                           (b'{"prompt": "x", "my_extension": {"\\ud800": 1}}', None)]:
        assert_refused(post(personal_server, "txt2img", content=content), field=field,
                       code="not_text")
    assert_alive(personal_server)


# -- steps x strength ------------------------------------------------------------------------
@pytest.mark.parametrize(("steps", "strength"), [(1, 0.3), (3, 0.2), (10, 0.05)])
@pytest.mark.parametrize("with_mask", [False, True])
def test_steps_times_strength_under_one_runs_one_step(personal_server, steps, strength,
                                                       with_mask):
    body = small(init_images=[PHOTO], steps=steps, denoising_strength=strength)
    if with_mask:
        body["mask"] = MASK
    response = post(personal_server, "img2img", body)
    assert response.status_code == 200, response.text
    assert len(response.json()["images"]) == 1
    assert_quiet_log(personal_server)


# -- the UI -------------------------------------------------------------------------------
VALUES = dict(prompt="x", negative_prompt="", style=None, model=None, sampler=None,
              num_inference_steps=20, guidance_scale=7, width=64, height=64, seed=-1)


@pytest.mark.parametrize(
    ("name", "bad", "code"),
    [("num_inference_steps", True, "not_a_number"), ("batch_size", False, "not_a_number"),
     ("seed", [1], "not_a_number"), ("width", {"a": 1}, "not_a_number"),
     ("guidance_scale", "NaN", "not_a_number"), ("seed", 10**400, "not_a_number"),
     ("num_inference_steps", 2.5, "not_a_whole_number"), ("seed", "7.5", "not_a_whole_number")],
)
def test_page_values_that_are_not_numbers_are_one_sentence(name, bad, code):
    with pytest.raises(InputError) as err:
        build_request(_studio(), **{**VALUES, name: bad})
    assert err.value.code == code


def test_page_values_keep_the_documented_defaults_and_pass_the_rest_to_the_engine():
    request = build_request(_studio(), **{**VALUES, "num_inference_steps": 0, "width": None,
                                           "height": "", "guidance_scale": -1, "seed": -1,
                                           "batch_size": 0})
    assert request.num_inference_steps is None and request.width is None
    assert request.height is None and request.guidance_scale is None
    assert request.seed is None and request.batch_size == 1
    # Everything else reaches the engine's checks unchanged (the same bounds as the API).
    request = build_request(_studio(), **{**VALUES, "seed": -2, "num_inference_steps": -3,
                                           "batch_size": 9, "guidance_scale": -0.5})
    assert (request.seed, request.num_inference_steps, request.batch_size,
            request.guidance_scale) == (-2, -3, 9, -0.5)
    assert build_request(_studio(), **{**VALUES, "seed": "12"}).seed == 12


def _studio():
    from types import SimpleNamespace

    return SimpleNamespace(styles={})


@pytest.fixture(scope="module")
def ui(personal_server) -> Client:
    return Client(personal_server.url + "/", verbose=False)


def test_gradio_client_needs_only_a_prompt(ui):
    pictures, _preview, status, *_ = ui.predict(prompt="a fox", api_name="/txt2img")
    assert len(pictures) == 1 and "seed" in status
    info = ui.view_api(return_format="dict", print_info=False)
    for name in ("/txt2img", "/img2img", "/inpaint", "/portrait"):
        parameters = info["named_endpoints"][name]["parameters"]
        assert all(p["parameter_has_default"] for p in parameters), name


@pytest.mark.parametrize(
    ("fields", "sentence"),
    [({"num_inference_steps": "twelve"}, "Steps must be a number."),
     ({"num_inference_steps": True}, "Steps must be a number."),
     ({"seed": -2}, "The seed must be -1 (random) or a whole number from 0 to 4294967295."),
     ({"seed": 1.5}, "Seed must be a whole number."),
     ({"batch_size": 9}, f"Pictures per run must be between 1 and {MAX_BATCH}."),
     ({"batch_size": "lots"}, "Pictures per run must be a number."),
     ({"num_inference_steps": MAX_STEPS + 1}, f"Steps must be between 1 and {MAX_STEPS}.")],
)
def test_gradio_client_bad_values_are_one_sentence(ui, personal_server, fields, sentence):
    with pytest.raises(AppError) as err:
        ui.predict(prompt="x", width=64, height=64, api_name="/txt2img", **fields)
    message = str(err.value)
    assert sentence in message, message
    assert "upstream" not in message.lower() and "Traceback" not in message
    assert_alive(personal_server)
    assert_quiet_log(personal_server)


def raw_join(server, api_name: str, data: list, session_hash: str = "boundsraw1",
             headers: dict[str, str] | None = None) -> dict:
    """Join the queue as a script may (NaN literals included) and read the stream to its end."""
    with server.client() as http:
        config = http.get("/config").json()
        index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)
        content = json.dumps({"data": data, "fn_index": index, "session_hash": session_hash,
                              "event_data": None, "trigger_id": None}, allow_nan=True)
        joined = http.post("/gradio_api/queue/join", content=content,
                           headers={"content-type": "application/json", **(headers or {})})
        assert joined.status_code == 200, joined.text
        with http.stream("GET", f"/gradio_api/queue/data?session_hash={session_hash}") as events:
            for line in events.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("msg") == "process_completed":
                        return message
    raise AssertionError("stream ended early")


@pytest.mark.parametrize("bad", [math.nan, math.inf, "twelve", True, None])
def test_raw_queue_join_with_nan_or_text_is_one_translated_sentence(personal_server, bad):
    # prompt, negative, style, model, sampler, steps, guidance, width, height, seed, batch,
    # VAE, CLIP skip, hires fix (enable, upscaler, scale, steps, denoising, resize x, y)
    data = ["x", "", "", "", "", bad, 5.0, 64, 64, 7, 1, "", 1, False, "Latent", 2, 0, 0.7, 0, 0]
    message = raw_join(personal_server, "txt2img", data)
    if bad is None:  # empty: the model's default steps
        assert message["success"], message
        return
    assert not message["success"]
    assert message["output"]["error"] == "Steps must be a number."
    data[5], data[6] = 2, bad  # the guidance, for a Chinese browser
    message = raw_join(personal_server, "txt2img", data, session_hash="boundsraw2",
                       headers={"accept-language": "zh-CN,zh;q=0.9"})
    assert message["output"]["error"] == "设置中有一项不是有效的数字（Guidance），请检查。"
    assert_alive(personal_server)
    assert_quiet_log(personal_server)


def test_raw_queue_join_with_a_lone_surrogate_prompt_is_one_sentence(personal_server):
    hires = [False, "Latent", 2, 0, 0.7, 0, 0]
    for data in (["a fox \ud800", "", "", "", "", 2, 5.0, 64, 64, 7, 1, "", 1, *hires],
                 ["a fox", "\udfff", "", "", "", 2, 5.0, 64, 64, 7, 1, "", 1, *hires]):
        message = raw_join(personal_server, "txt2img", data, session_hash="boundsraw3")
        assert not message["success"]
        assert message["output"]["error"] == ("The prompt contains characters that are not "
                                              "valid text.")
    assert_alive(personal_server)
    assert_quiet_log(personal_server)


def test_gradio_client_batch_zero_means_the_default(ui):
    pictures, *_ = ui.predict(prompt="x", width=64, height=64, num_inference_steps=1,
                              batch_size=0, api_name="/txt2img")
    assert len(pictures) == 1


def test_docs_list_every_bound():
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    table = docs[docs.index("### Bounds"):docs.index("### Errors")]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    for name, (low, high) in BOUNDS.items():
        if name.endswith(UNIT):  # a ControlNet unit's field: its own row, so marked
            row = next((r for r in rows if f"`{name.removesuffix(UNIT)}`{UNIT}" in r), None)
        elif name.endswith(EXTRAS):  # a field name img2img uses too: its own row, so marked
            row = next((r for r in rows if f"`{name.removesuffix(EXTRAS)}`{EXTRAS}" in r), None)
        else:
            shared = f"{name}{EXTRAS}" in BOUNDS  # then the extras row is the other one's
            row = next((r for r in rows if f"`{name}`" in r
                        and not (shared and f"`{name}`{EXTRAS}" in r)), None)
        assert row is not None, name
        shown = [f"{n:g}" if isinstance(n, float) else str(n) for n in (low, high)]
        assert f"{shown[0]} – {shown[1]}".replace("-1", "−1") in row.replace("-1", "−1"), name


@pytest.mark.parametrize(("strength", "sentence"),
                         [(2.0, "Strength must be above 0 and at most 1."),
                          ("half", "Strength must be a number.")])
def test_gradio_client_strength_past_its_bound_is_one_sentence(ui, personal_server, tmp_path,
                                                                 strength, sentence):
    from gradio_client import handle_file

    photo = tmp_path / "p.png"
    Image.new("RGB", (64, 64), (10, 120, 200)).save(photo)
    with pytest.raises(AppError) as err:
        ui.predict(image=handle_file(str(photo)), prompt="x", strength=strength,
                   num_inference_steps=2, api_name="/img2img")
    assert sentence in str(err.value) and "upstream" not in str(err.value).lower()
    assert_alive(personal_server)
    assert_quiet_log(personal_server)


@pytest.mark.parametrize("where", ["options", "override_settings"])
def test_a_clip_skip_too_big_for_a_float_is_a_422_not_a_500(personal_server, where):
    huge = "1" + "0" * 400  # a JSON integer no float holds
    with httpx.Client(base_url=personal_server.url, timeout=60) as http:
        if where == "options":
            response = http.post("/sdapi/v1/options", content='{"CLIP_stop_at_last_layers": '
                                 + huge + "}", headers={"content-type": "application/json"})
        else:
            response = http.post(
                "/sdapi/v1/txt2img", headers={"content-type": "application/json"},
                content='{"prompt": "x", "steps": 1, "width": 64, "height": 64, '
                        '"override_settings": {"CLIP_stop_at_last_layers": ' + huge + "}}")
    assert response.status_code == 422, response.text
    assert_alive(personal_server)
