"""Hires fix and extras (upscale) through the AUTOMATIC1111 API, on a real in-process server.

The ``webuiapi`` client (written by others) sends its own hires and extras bodies; raw HTTP
checks the bounds. The models folder is a ComfyUI-style one: the SD demo model under
``checkpoints/`` and a tiny RealESRGAN-Compact 4x upscaler under ``upscale_models/``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import webuiapi
from leftovers import files_in, plaintext_images, wait_until
from PIL import Image
from safetensors.torch import save_file
from test_api import PROMPT, SD, Running, b64, png_of, small, start_server

from core.upscale import load_spandrel
from privacy.output import PHOTO_BASED


def tiny_upscaler() -> torch.nn.Module:
    load_spandrel()
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    return Compact(num_feat=8, num_conv=2, upscale=4).eval()


@pytest.fixture(scope="module")
def hires_models(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hires-models")
    shutil.copytree(models_dir / SD, folder / "checkpoints" / SD)
    (folder / "upscale_models").mkdir()
    state = {k: v.contiguous() for k, v in tiny_upscaler().state_dict().items()}
    save_file(state, str(folder / "upscale_models" / "tiny-compact-4x.safetensors"))
    return folder


@pytest.fixture(scope="module")
def server(hires_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    yield from start_server(tmp_path_factory.mktemp("hires"), hires_models, accounts=False,
                            default_model=SD)


@pytest.fixture(scope="module")
def client(server: Running) -> webuiapi.WebUIApi:
    return webuiapi.WebUIApi(baseurl=f"{server.url}/sdapi/v1", sampler="Euler a", steps=2)


def post(server: Running, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/sdapi/v1/{path}", json=body, timeout=120)


def a_photo(width: int = 40, height: int = 32) -> Image.Image:
    rng = np.random.default_rng(5)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def no_trace_left(server: Running) -> None:
    data = server.studio.settings.data_dir
    spool = data / "spool"
    assert wait_until(lambda: [f for f in files_in(spool) if not f.endswith(".obscura-spool")]
                      == [])
    assert plaintext_images(data) == []
    assert plaintext_images(server.studio.ram.root) == []


# -- hires fix ------------------------------------------------------------------------------
def test_enable_hr_returns_the_scaled_size_and_a1111s_hr_fields(server: Running) -> None:
    response = post(server, "txt2img", small(
        enable_hr=True, hr_scale=2, hr_upscaler="Latent (bicubic)", hr_second_pass_steps=3,
        denoising_strength=0.55, hr_sampler_name="DDIM"))
    assert response.status_code == 200, response.text
    image = png_of(response.json()["images"][0])
    assert image.size == (128, 128)
    info = json.loads(response.json()["info"])
    assert (info["width"], info["height"]) == (64, 64)  # A1111: Size is the first pass's
    assert info["denoising_strength"] == 0.55
    assert info["extra_generation_params"]["Hires upscale"] == 2.0
    assert info["extra_generation_params"]["Hires upscaler"] == "Latent (bicubic)"
    assert info["extra_generation_params"]["Hires steps"] == 3
    assert info["extra_generation_params"]["Hires sampler"] == "DDIM"
    assert "enable_hr" not in info["obscura_ignored"]
    assert ("Denoising strength: 0.55, Hires upscale: 2, Hires steps: 3, "
            "Hires upscaler: Latent (bicubic)") in info["infotexts"][0]


def test_webuiapi_hires_with_resize_and_a_model_upscaler(client: webuiapi.WebUIApi) -> None:
    result = client.txt2img(prompt=PROMPT, width=64, height=64, seed=3, enable_hr=True,
                            hr_resize_x=128, hr_resize_y=96, hr_upscaler="tiny-compact-4x",
                            denoising_strength=0.4)
    assert result.image.size == (128, 96)
    assert result.info["extra_generation_params"]["Hires resize"] == "128x96"
    plain = client.txt2img(prompt=PROMPT, width=64, height=64, seed=3)
    assert plain.image.size == (64, 64)


@pytest.mark.parametrize(
    ("fields", "status", "field"),
    [
        ({"hr_scale": 5}, 422, "hr_scale"),
        ({"hr_scale": True}, 422, "hr_scale"),
        ({"hr_second_pass_steps": 10**6}, 422, "hr_second_pass_steps"),
        ({"denoising_strength": 2}, 422, "denoising_strength"),
        ({"hr_resize_x": 10**7}, 422, "hr_resize_x"),
        ({"hr_upscaler": "x" * 300}, 422, "hr_upscaler"),
        ({"hr_upscaler": "R-ESRGAN 4x+ Anime6B"}, 422, None),
        ({"hr_scale": 4, "width": 256, "height": 256}, 422, None),  # past the model's 512
    ],
)
def test_hires_bounds_are_one_sentence(server: Running, fields: dict, status: int,
                                       field: str | None) -> None:
    response = post(server, "txt2img", small(enable_hr=True, **fields))
    assert response.status_code == status, response.text
    body = response.json()
    assert body["detail"].endswith(".")
    assert "Anime6B" not in body["detail"]
    if field is not None:
        assert body.get("field") == field or body["detail"].startswith(field), body


# -- extras -----------------------------------------------------------------------------------
def test_extra_single_image_returns_a_4x_picture_and_leaves_no_plaintext(
    server: Running, client: webuiapi.WebUIApi
) -> None:
    photo = a_photo()
    result = client.extra_single_image(photo, upscaler_1="tiny-compact-4x", upscaling_resize=4)
    assert result.image.size == (160, 128)
    assert PHOTO_BASED in result.image.info["XML:com.adobe.xmp"]
    assert "Postprocess upscaler: tiny-compact-4x" in result.info
    # The picture is the model's: the same network run here gives the same pixels.
    x = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        expected = (tiny_upscaler()(x).clamp(0, 1)[0] * 255).round().byte().permute(1, 2, 0)
    assert np.array_equal(np.asarray(result.image.convert("RGB")), expected.numpy())
    no_trace_left(server)


def test_extra_batch_images_upscales_each_and_never_echoes_names(server: Running) -> None:
    pictures = [b64(a_photo(24, 24)), b64(a_photo(32, 16))]
    response = post(server, "extra-batch-images", {
        "imageList": [{"data": data, "name": f"holiday-{i}.png"} for i, data in
                      enumerate(pictures)],
        "upscaler_1": "Lanczos", "upscaling_resize": 2,
    })
    assert response.status_code == 200, response.text
    sizes = [png_of(image).size for image in response.json()["images"]]
    assert sizes == [(48, 48), (64, 32)]
    assert "holiday" not in response.text
    no_trace_left(server)


def test_extras_to_a_box_with_crop(server: Running) -> None:
    response = post(server, "extra-single-image", {
        "image": b64(a_photo(40, 32)), "resize_mode": 1, "upscaling_resize_w": 96,
        "upscaling_resize_h": 96, "upscaling_crop": True, "upscaler_1": "Nearest"})
    assert response.status_code == 200, response.text
    assert png_of(response.json()["image"]).size == (96, 96)


@pytest.mark.parametrize(
    ("fields", "status", "field"),
    [
        ({"upscaling_resize": 9}, 422, "upscaling_resize"),
        ({"upscaling_resize": float("nan")}, 422, None),
        ({"upscaler_1": "Latent"}, 422, "upscaler_1"),
        ({"upscaler_1": "4x-UltraSharp"}, 422, "upscaler_1"),
        ({"extras_upscaler_2_visibility": 3}, 422, "extras_upscaler_2_visibility"),
        ({"image": "not base64 at all!"}, 422, "image"),
        ({"image": b64(Image.new("RGB", (1200, 1000))), "upscaling_resize": 8}, 422,
         "upscaling_resize"),  # 9600 px a side: refused before any work
    ],
)
def test_extras_bounds_are_one_sentence(server: Running, fields: dict, status: int,
                                        field: str | None) -> None:
    body = {"image": b64(a_photo()), "upscaler_1": "Lanczos", **fields}
    if isinstance(body.get("upscaling_resize"), float) and body["upscaling_resize"] != 1:
        content = json.dumps(body, allow_nan=True).encode()
        response = httpx.post(f"{server.url}/sdapi/v1/extra-single-image", content=content,
                              headers={"content-type": "application/json"}, timeout=60)
    else:
        response = post(server, "extra-single-image", body)
    assert response.status_code in (status, 422, 413), response.text
    if field is not None:
        assert response.status_code == status
        assert response.json().get("field") == field, response.text
    assert response.json()["detail"].endswith(".")
    assert "UltraSharp" not in response.text
    # Everyone else keeps being served.
    assert post(server, "extra-single-image", {"image": b64(a_photo()),
                                               "upscaler_1": "Lanczos"}).status_code == 200
