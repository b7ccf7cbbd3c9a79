"""The UI's Hires fix section and Upscale tab, driven by gradio_client against a real server."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from leftovers import files_in, plaintext_images, wait_until
from PIL import Image

COMMON = dict(negative_prompt="", style="", model="", sampler="Euler a", num_inference_steps=2,
              guidance_scale=5.0, seed=7, batch_size=1)


def picture(result) -> Image.Image:
    url = result[0][0]["image"]["url"]
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_hires_fix_from_the_ui_paints_the_scaled_size(personal_server) -> None:
    ui = Client(personal_server.url + "/", verbose=False)
    plain = picture(ui.predict(prompt="a quiet harbour", width=64, height=64,
                               api_name="/txt2img", **COMMON))
    assert plain.size == (64, 64)
    hires = picture(ui.predict(prompt="a quiet harbour", width=64, height=64, enable_hr=True,
                               hr_upscaler="Latent (nearest-exact)", hr_scale=2,
                               hr_second_pass_steps=2, denoising_strength=0.5,
                               api_name="/txt2img", **COMMON))
    assert hires.size == (128, 128)
    boxed = picture(ui.predict(prompt="a quiet harbour", width=64, height=64, enable_hr=True,
                               hr_upscaler="Lanczos", hr_resize_x=96, hr_resize_y=128,
                               denoising_strength=0.3, api_name="/txt2img", **COMMON))
    assert boxed.size == (96, 128)


def test_a_hires_mistake_is_one_translated_sentence(personal_server) -> None:
    ui = Client(personal_server.url + "/", verbose=False)
    with pytest.raises(Exception) as caught:
        ui.predict(prompt="x", width=64, height=64, enable_hr=True, hr_scale=9,
                   api_name="/txt2img", **COMMON)
    assert "Hires fix upscale must be between 1 and 4." in str(caught.value)


def test_upscale_tab_upscales_and_leaves_no_plaintext(personal_server, tmp_path: Path) -> None:
    photo = Image.linear_gradient("L").resize((48, 40)).convert("RGB")
    path = tmp_path / "photo.png"
    photo.save(path)
    ui = Client(personal_server.url + "/", verbose=False)
    result = ui.predict(image=handle_file(str(path)), upscaler="Lanczos", scale=2.5,
                        api_name="/upscale")
    assert picture(result).size == (120, 96)  # A1111: int(side x scale) // 8 x 8
    with pytest.raises(Exception) as caught:
        ui.predict(image=handle_file(str(path)), upscaler="Latent", scale=2,
                   api_name="/upscale")
    assert "Latent upscalers work inside the hires fix only" in str(caught.value)
    spool = personal_server.data_dir / "spool"
    assert wait_until(lambda: [f for f in files_in(spool) if not f.endswith(".obscura-spool")]
                      == [])
    assert wait_until(lambda: files_in(personal_server.ram_dir / "gradio") == [])
    assert plaintext_images(personal_server.data_dir, skip=(personal_server.data_dir / "models",)) == []
    assert personal_server.net_attempts() == []
