"""A personal-mode server end to end, through HTTP and gradio_client (no browser)."""

from __future__ import annotations

import base64
import io
import tempfile
import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from leftovers import files_in, plaintext_images, wait_until
from PIL import Image
from samples import tiny_photo

from core.errors import InputError
from webui.config import Settings
from webui.server import check_exposure

START = time.time()
SMALL = dict(num_inference_steps=2, guidance_scale=5.0, seed=7, sampler="", model="",
             style="", negative_prompt="", batch_size=1)


def decode(result_image: dict) -> Image.Image:
    url = result_image["url"]
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


@pytest.fixture(scope="module")
def client(personal_server):
    return Client(personal_server.url + "/", verbose=False)


def test_healthz_names_the_mode_and_nothing_of_anyones_work(personal_server):
    with personal_server.client() as http:
        body = http.get("/healthz").json()
    assert body == {"status": "ok", "mode": "personal"}


def test_every_page_and_api_answer_carries_the_security_headers(personal_server):
    with personal_server.client() as http:
        for path in ("/", "/healthz", "/gradio_api/info", "/config"):
            response = http.get(path)
            assert response.status_code == 200, path
            csp = response.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "http" not in csp.replace("'self'", "")
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "no-referrer"
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["cache-control"] == "no-store"


def test_the_page_references_no_other_origin(personal_server):
    with personal_server.client() as http:
        page = http.get("/").text
    for needle in ("fonts.googleapis", "cdn.jsdelivr", "unpkg.com", "<script src=\"http"):
        assert needle not in page


def test_cross_origin_post_is_refused(personal_server):
    with personal_server.client() as http:
        response = http.post("/gradio_api/queue/join", json={}, headers={
            "origin": "http://evil.example"})
        assert response.status_code == 403
        response = http.post("/gradio_api/upload", files={"files": ("a.png", b"x")},
                             headers={"origin": "http://evil.example"})
        assert response.status_code == 403


def test_unused_gradio_routes_are_closed(personal_server):
    with personal_server.client() as http:
        for path in ("/monitoring", "/gradio_api/proxy=http://example.com/",
                     "/gradio_api/file=/etc/passwd", "/gradio_api/run/txt2img"):
            assert http.get(path).status_code in (403, 404, 405), path


def test_text_to_picture_over_gradio_client_returns_labelled_pictures(client):
    pictures, preview, status = client.predict(
        prompt="a lighthouse at dusk", width=64, height=64, api_name="/txt2img", **SMALL)
    assert "seed 7" in status
    assert len(pictures) == 1
    image = decode(pictures[0]["image"])
    assert image.size == (64, 64)
    assert "lighthouse" not in str(image.info)  # no prompt in the metadata
    assert "trainedAlgorithmicMedia" in str(image.info)


def test_photo_to_picture_scrubs_and_leaves_no_upload_behind(client, personal_server, tmp_path):
    photo = tmp_path / "holiday-in-paris.jpg"
    photo.write_bytes(tiny_photo())
    pictures, *_ = client.predict(
        image=handle_file(str(photo)), prompt="watercolour", strength=0.5, width=0, height=0,
        api_name="/img2img", **SMALL)
    image = decode(pictures[0]["image"])
    assert image.size == (64, 64)
    assert b"CanaryCam" not in str(image.info).encode()
    assert wait_until(lambda: not files_in(personal_server.ram_dir / "gradio"))
    assert wait_until(lambda: not [f for f in files_in(personal_server.data_dir / "spool")
                                   if not f.endswith(".obscura-spool")])


def test_inpaint_with_a_mask_file(client, tmp_path):
    photo = tmp_path / "p.png"
    Image.new("RGB", (64, 64), (10, 120, 200)).save(photo)
    mask = tmp_path / "m.png"
    painted = Image.new("L", (64, 64), 0)
    painted.paste(255, (16, 16, 48, 48))
    painted.save(mask)
    pictures, *_ = client.predict(
        image={"background": handle_file(str(photo)), "layers": [], "composite": None},
        mask=handle_file(str(mask)), prompt="a red door", strength=0.9, width=0, height=0,
        api_name="/inpaint", **SMALL)
    assert decode(pictures[0]["image"]).size == (64, 64)


def test_a_mask_file_of_the_wrong_size_is_explained(client, tmp_path):
    photo = tmp_path / "p.png"
    Image.new("RGB", (64, 64), (10, 120, 200)).save(photo)
    mask = tmp_path / "m.png"
    Image.new("L", (32, 48), 255).save(mask)
    with pytest.raises(AppError) as err:
        client.predict(
            image={"background": handle_file(str(photo)), "layers": [], "composite": None},
            mask=handle_file(str(mask)), prompt="x", strength=0.9, width=0, height=0,
            api_name="/inpaint", **SMALL)
    assert "the photo's proportions (64x64)" in str(err.value)


def test_an_upload_over_the_size_limit_is_refused_and_not_kept(personal_server):
    with personal_server.client() as http:
        response = http.post("/gradio_api/upload",
                             files={"files": ("big.png", b"\x89PNG" + b"0" * 6_000_000)})
    assert response.status_code == 413
    assert files_in(personal_server.ram_dir / "gradio") == []


def test_a_non_image_upload_gets_one_clear_sentence_and_is_deleted(client, personal_server,
                                                                   tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_bytes(b"this is not a picture at all" * 10)
    with pytest.raises(AppError) as err:
        client.predict(image=handle_file(str(fake)), prompt="x", strength=0.5, width=0,
                       height=0, api_name="/img2img", **SMALL)
    message = str(err.value)
    assert "PNG, JPEG" in message and "Traceback" not in message
    assert wait_until(lambda: not files_in(personal_server.ram_dir / "gradio"))


def test_out_of_range_settings_are_explained(client):
    with pytest.raises(AppError) as err:
        client.predict(prompt="x", width=64, height=64, api_name="/txt2img",
                       **{**SMALL, "num_inference_steps": 999})
    assert "Steps must be between 1 and 150" in str(err.value)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"style": "Jane Doe lives at 5 Main St"}, "no style with that name"),
    ],
)
def test_a_typed_style_gets_a_sentence_and_stays_out_of_the_log(
    client, personal_server, changes, fragment
):
    with pytest.raises(AppError) as err:
        client.predict(prompt="x", width=64, height=64, api_name="/txt2img", **{**SMALL, **changes})
    assert fragment in str(err.value)
    log = (personal_server.state_dir / "server.log").read_text()
    assert "Jane Doe" not in log and "Traceback" not in log


def test_no_plaintext_picture_is_left_anywhere_after_the_session(personal_server):
    skip = (personal_server.data_dir / "models",)
    assert plaintext_images(personal_server.ram_dir) == []
    assert plaintext_images(personal_server.data_dir, skip=skip) == []
    assert plaintext_images(personal_server.system_tmp) == []
    # Gradio's default cache, had it been used
    assert plaintext_images(Path(tempfile.gettempdir()) / "gradio", newer_than=START) == []


def test_no_connection_left_the_machine(personal_server):
    time.sleep(0.6)
    assert personal_server.net_attempts() == []


def test_personal_mode_refuses_a_lan_address_and_says_how_to_create_an_account():
    with pytest.raises(InputError) as err:
        check_exposure(Settings(host="0.0.0.0"), personal=True, tls=False)
    assert "obscura user add" in str(err.value)


def test_accounts_mode_on_the_lan_needs_tls_unless_overridden():
    with pytest.raises(InputError) as err:
        check_exposure(Settings(host="192.168.1.5"), personal=False, tls=False)
    assert err.value.code == "lan_needs_tls"
    assert check_exposure(Settings(host="192.168.1.5"), personal=False, tls=True) == []
    warnings = check_exposure(Settings(host="192.168.1.5", insecure_http=True), personal=False,
                              tls=False)
    assert warnings and "WARNING" in warnings[0]


def test_progress_previews_and_queue_position_are_reported(personal_server):
    first = Client(personal_server.url + "/", verbose=False)
    second = Client(personal_server.url + "/", verbose=False)
    long = {**SMALL, "num_inference_steps": 40}
    running = first.submit(prompt="one", width=192, height=192, api_name="/txt2img", **long)
    assert wait_until(lambda: any("step" in str(out[2]) for out in running.outputs()), 60)
    waiting = second.submit(prompt="two", width=64, height=64, api_name="/txt2img", **SMALL)
    running.result(timeout=120)
    waiting.result(timeout=120)
    statuses = [str(out[2]) for out in running.outputs()]
    assert any(s.startswith("Painting: step") for s in statuses)
    previews = [out[1] for out in running.outputs() if isinstance(out[1], dict) and "url" in out[1]]
    assert previews and previews[0]["url"].startswith("data:image/png")
    assert "Waiting: 1 job(s) ahead of yours." in [str(out[2]) for out in waiting.outputs()]


def test_stopping_the_server_wipes_the_ram_dir_and_the_spool(personal_server):
    personal_server.stop()
    assert personal_server.process.returncode is not None
    assert not personal_server.ram_dir.exists()
    spool = personal_server.data_dir / "spool"
    assert [f for f in files_in(spool) if not f.endswith(".obscura-spool")] == []
    assert personal_server.net_attempts() == []
