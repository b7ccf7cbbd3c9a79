"""The AUTOMATIC1111 API with the transformer families (issue 13), on a real in-process server.

The models folder is a ComfyUI one with tiny FLUX.2 [klein] and SD 3.5 Medium diffusers folders
(random weights, tests/family_files.py) in ``diffusers/``, and the same klein as parts
(``diffusion_models/`` + ``text_encoders/`` + ``vae/``, ComfyUI's file names). ``sd-models`` lists both with their family;
txt2img/img2img paint with them; what a family ignores is named in ``info.obscura_ignored``
(never silently dropped); ``sampler_name`` is mapped per family or refused with one sentence;
``init_images[1:]`` are an edit model's reference pictures. A network guard records every
non-loopback connection of the whole module: none.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import webuiapi
from netguard import network_guard  # noqa: E402
from PIL import Image
from test_api import Running, b64, png_of, start_server

KLEIN, SD35 = "flux-2-klein-tiny", "sd35-medium-tiny"
KLEIN_PARTS = "flux-2-klein-4b"  # ComfyUI's file name for FLUX.2 [klein] 4B


@pytest.fixture(scope="module")
def guard() -> Iterator[list[str]]:
    with network_guard() as attempts:
        yield attempts


@pytest.fixture(scope="module")
def family_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from family_files import save_family
    from library_files import ldm_vae

    folder = tmp_path_factory.mktemp("family-models")
    save_family(folder / "diffusers" / KLEIN, "flux2", "klein", "diffusers")
    save_family(folder / "diffusers" / SD35, "sd3", "medium", "diffusers")
    # The same tiny klein as ComfyUI users have it: diffusion_models/flux-2-klein-4b.safetensors,
    # text_encoders/qwen_3_4b.safetensors, vae/flux2-vae.safetensors (same seed: same weights).
    written = save_family(folder, "flux2", "klein", "parts")
    assert written["transformer"].name == f"{KLEIN_PARTS}.safetensors"
    ldm_vae(folder / "vae" / "sd-vae.safetensors")  # an SD VAE, for the saved-VAE test
    return folder


@pytest.fixture(scope="module")
def tiny_klein_config(family_models: Path, tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[None]:
    """The tiny klein's own config (its diffusers folder without weights) stands in for the
    shipped core/configs/flux2-klein, which describes the real 4B model's shapes."""
    import shutil

    from core import pipelines

    config = tmp_path_factory.mktemp("klein-config") / "flux2-klein"
    shutil.copytree(family_models / "diffusers" / KLEIN, config,
                    ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipelines, "flow_config_folder", lambda info: config)
        yield


@pytest.fixture(scope="module")
def server(guard: list[str], family_models: Path, tiny_klein_config: None,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    yield from start_server(tmp_path_factory.mktemp("families"), family_models, accounts=False,
                            default_model=KLEIN)


def post(server: Running, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/sdapi/v1/{path}", json=body, timeout=300)


def small(**fields) -> dict:
    return {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 2, "seed": 7,
            **fields}


def test_sd_models_lists_each_family_with_a1111s_fields(server: Running) -> None:
    models = {m["model_name"]: m for m in httpx.get(f"{server.url}/sdapi/v1/sd-models").json()}
    assert {KLEIN, SD35} <= set(models)
    klein = models[KLEIN]
    assert {"title", "model_name", "hash", "sha256", "filename", "config"} <= set(klein)
    assert klein["filename"] == KLEIN  # a name, never the server's path
    family = klein["obscura_family"]
    assert (family["arch"], family["variant"], family["format"]) == ("flux2", "klein", "diffusers")
    assert set(family["ignores"]) == {"negative_prompt", "cfg_scale"}
    assert family["max_references"] == 4 and family["size_multiple"] == 16
    assert models[SD35]["obscura_family"]["ignores"] == []
    samplers = {s["name"]: s for s in httpx.get(f"{server.url}/sdapi/v1/samplers").json()}
    assert "flux2" in samplers["Euler"]["obscura_families"]
    assert samplers["DPM++ 2M Karras"]["obscura_families"] == ["sd1", "sd2", "sdxl"]


def test_txt2img_with_a_distilled_model_names_what_it_ignored(server: Running) -> None:
    answer = post(server, "txt2img", small(negative_prompt="blurry", cfg_scale=7))
    assert answer.status_code == 200, answer.text
    assert png_of(answer.json()["images"][0]).size == (64, 64)
    info = json.loads(answer.json()["info"])
    assert info["sd_model_name"] == KLEIN
    assert {"negative_prompt", "cfg_scale"} <= set(info["obscura_ignored"])
    # SD 3.5 takes both: nothing named.
    answer = post(server, "txt2img", small(negative_prompt="blurry", cfg_scale=4,
                                           override_settings={"sd_model_checkpoint": SD35}))
    assert answer.status_code == 200, answer.text
    info = json.loads(answer.json()["info"])
    assert info["sd_model_name"] == SD35
    assert not {"negative_prompt", "cfg_scale"} & set(info["obscura_ignored"])


def test_comfyui_parts_paint_the_same_picture_as_the_diffusers_folder(server: Running) -> None:
    models = {m["model_name"]: m for m in httpx.get(f"{server.url}/sdapi/v1/sd-models").json()}
    assert models[KLEIN_PARTS]["obscura_family"]["format"] == "parts"
    assert models[KLEIN_PARTS]["filename"] == f"{KLEIN_PARTS}.safetensors"
    pictures = []
    for model in (KLEIN_PARTS, KLEIN):
        answer = post(server, "txt2img", small(override_settings={"sd_model_checkpoint": model}))
        assert answer.status_code == 200, answer.text
        assert json.loads(answer.json()["info"])["sd_model_name"] == model
        pictures.append(png_of(answer.json()["images"][0]).tobytes())
    assert pictures[0] == pictures[1]


def test_webuiapi_paints_with_a_flow_family(server: Running) -> None:
    client = webuiapi.WebUIApi(baseurl=f"{server.url}/sdapi/v1", sampler="Euler", steps=2)
    result = client.txt2img(prompt="a red fox", width=64, height=64, seed=3,
                            override_settings={"sd_model_checkpoint": SD35})
    assert result.image.size == (64, 64)
    assert result.info["sampler_name"] == "Euler"


@pytest.mark.parametrize("asked, used", [("euler", "Euler"), ("Euler Karras", "Euler")])
def test_a1111_sampler_names_map_to_the_familys_sampler(server: Running, asked: str,
                                                        used: str) -> None:
    answer = post(server, "txt2img", small(sampler_name=asked))
    assert answer.status_code == 200, answer.text
    info = json.loads(answer.json()["info"])
    assert info["sampler_name"] == used
    if asked != "euler":  # the Karras schedule is the SD samplers'; it is named, not hidden
        assert "scheduler" in info["obscura_ignored"]


def test_an_sd_sampler_a_family_lacks_is_one_sentence_listing_its_samplers(
        server: Running) -> None:
    answer = post(server, "txt2img", small(sampler_name="DPM++ 2M SDE Karras"))
    assert answer.status_code == 422
    detail = answer.json()
    text = json.dumps(detail)
    assert "sampler_name" in text and "Euler" in text and "Traceback" not in text


def test_init_images_after_the_first_are_an_edit_models_references(server: Running) -> None:
    photo = Image.new("RGB", (64, 64), (200, 40, 40))
    reference = Image.linear_gradient("L").resize((64, 80)).convert("RGB")
    body = small(init_images=[b64(photo), b64(reference)], denoising_strength=0.6)
    answer = post(server, "img2img", body)
    assert answer.status_code == 200, answer.text
    info = json.loads(answer.json()["info"])
    assert "init_images[1:]" not in info["obscura_ignored"]
    assert answer.json()["parameters"]["init_images"] is None  # never sent back
    too_many = post(server, "img2img", small(init_images=[b64(photo)] * 6))
    assert too_many.status_code == 422 and "init_images" in too_many.text
    tiny = post(server, "img2img", small(init_images=[b64(photo), b64(reference.resize((40, 48)))]))
    assert tiny.status_code == 422, tiny.text  # one sentence, not the pipeline's 500
    assert tiny.json()["error"] == "reference_too_small" and "64 pixels" in tiny.json()["detail"]
    # Not an edit model: as before, the extra pictures are not used and info says so.
    answer = post(server, "img2img", small(init_images=[b64(photo), b64(reference)],
                                           override_settings={"sd_model_checkpoint": SD35}))
    assert answer.status_code == 200, answer.text
    assert "init_images[1:]" in json.loads(answer.json()["info"])["obscura_ignored"]


def test_a_saved_sd_vae_is_not_used_for_a_flow_family_and_is_named(server: Running) -> None:
    assert post(server, "options", {"sd_vae": "sd-vae.safetensors"}).status_code == 200
    try:
        answer = post(server, "txt2img", small())
        assert answer.status_code == 200, answer.text
        assert "sd_vae" in json.loads(answer.json()["info"])["obscura_ignored"]
        asked = post(server, "txt2img", small(override_settings={"sd_vae": "sd-vae.safetensors"}))
        assert asked.status_code == 422 and "VAE" in asked.text  # asked in the call: refused
    finally:
        assert post(server, "options", {"sd_vae": "Automatic"}).status_code == 200


def test_nothing_left_the_machine(server: Running, guard: list[str]) -> None:
    assert post(server, "txt2img", small()).status_code == 200
    assert guard == []


def test_obscura_generate_paints_with_a_flow_family_and_names_what_it_ignored(
        family_models: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from webui.cli import main

    out = tmp_path / "klein.png"
    result = CliRunner().invoke(main, [
        "generate", "--data-dir", str(tmp_path / "data"), "--models-dir", str(family_models),
        "--model", KLEIN, "--prompt", "a (lighthouse:1.3) at dusk", "--negative-prompt", "blurry",
        "--guidance", "6", "--steps", "2", "--width", "64", "--height", "64", "--seed", "3",
        "--out", str(out),
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (64, 64)
    assert KLEIN in result.stdout and "seed 3" in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("Not used")]
    assert lines == ["Not used by this model: prompt weights, --negative-prompt, --guidance."]


def test_obscura_generate_edits_with_reference_pictures(family_models: Path,
                                                       tmp_path: Path) -> None:
    from click.testing import CliRunner

    from webui.cli import main

    photo, reference = tmp_path / "photo.png", tmp_path / "ref.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(photo)
    Image.linear_gradient("L").resize((64, 80)).convert("RGB").save(reference)
    common = ["generate", "--data-dir", str(tmp_path / "data"), "--models-dir",
              str(family_models), "--model", KLEIN, "--prompt", "make it blue", "--steps", "2",
              "--seed", "4", "--image", str(photo)]
    out = tmp_path / "edit.png"
    result = CliRunner().invoke(main, [*common, "--reference", str(reference), "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (64, 64)
    five = CliRunner().invoke(main, [*common, *["--reference", str(reference)] * 5,
                                     "--out", str(tmp_path / "no.png")])
    assert five.exit_code != 0 and "At most 4 reference pictures" in five.output
    assert not (tmp_path / "no.png").exists()
