"""The painting pages follow the chosen model's family (issue 13).

What a family ignores is hidden (negative prompt and CFG on a guidance-distilled model; the SD
path's VAE, CLIP skip, LoRA picker and hires fix on the transformer families), its defaults,
samplers and aspect ratios are put in, and a stale value a hidden control still holds is
dropped by the handler and named in the status line. In-process checks of the page's functions
(as tests/webui/test_page_values.py does), then a real server with tiny FLUX.2 [klein] and
SD 3.5 models: the page's Gradio config, and jobs through gradio_client.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from types import SimpleNamespace

import httpx
import torch
from PIL import Image

from core.engine import GenerationRequest, HiresFix
from core.errors import InputError
from core.planner import Plan
from core.registry import ModelInfo
from webui.ui.common import family_controls, family_updates, for_family, ignored_line

KLEIN = ModelInfo("klein", Path("/m/klein"), "flux2", "klein", "diffusers")
SD35 = ModelInfo("sd35", Path("/m/sd35"), "sd3", "medium", "diffusers")
SCHNELL = ModelInfo("schnell", Path("/m/schnell"), "flux1", "schnell", "diffusers")
FLUX_DEV = ModelInfo("dev", Path("/m/dev"), "flux1", "dev", "diffusers")
SD15 = ModelInfo("sd15", Path("/m/sd15.safetensors"), "sd1", "base", "single-file")


def studio_with(*models: ModelInfo) -> SimpleNamespace:
    """The two things the family functions ask of a studio: the model a name means."""
    by_name = {m.name: m for m in models}

    def model_for(name: str | None) -> ModelInfo:
        if name is None:
            return models[0]
        if name not in by_name:
            raise InputError("unknown_model", "Unknown model.")
        return by_name[name]

    def plan_for(info: ModelInfo) -> Plan:
        if info.arch == "sd3":
            raise InputError("model_cannot_fit", "This model needs more memory than there is.")
        return Plan("cuda:0", torch.bfloat16, "group-offload", False, False,
                    placement="group-offload", peak_vram=6_100_000_000)

    return SimpleNamespace(engine=SimpleNamespace(model_for=model_for, plan_for=plan_for))


def test_distilled_flux_hides_negative_prompt_and_cfg_sd35_shows_them() -> None:
    klein, sd35, sd15 = family_controls(KLEIN), family_controls(SD35), family_controls(SD15)
    assert (klein.negative_prompt, klein.cfg, klein.sd_only) == (False, False, False)
    assert (sd35.negative_prompt, sd35.cfg, sd35.sd_only) == (True, True, False)
    assert (sd15.negative_prompt, sd15.cfg, sd15.sd_only) == (True, True, True)
    # FLUX.1 dev: no negative prompt, but its (embedded) guidance does change the picture.
    dev = family_controls(FLUX_DEV)
    assert (dev.negative_prompt, dev.cfg) == (False, True)
    assert family_controls(SCHNELL).cfg is False


def test_defaults_samplers_and_aspect_ratios_follow_the_family() -> None:
    klein = family_controls(KLEIN)
    assert (klein.steps, klein.size, klein.size_multiple) == (KLEIN.spec.default_steps, 1024, 16)
    assert "Euler" in klein.samplers and "DPM++ 2M Karras" not in klein.samplers
    assert all(w % 16 == 0 and h % 16 == 0 for _, w, h in klein.aspect_ratios)
    assert klein.references == 4  # FLUX.2 [klein] edits with up to 4 references
    assert family_controls(SD35).references == 0
    sd15 = family_controls(SD15)
    assert "DPM++ 2M Karras" in sd15.samplers
    assert sd15.aspect_ratios[0] == ("1:1", 512, 512)
    assert all(w % 8 == 0 and h % 8 == 0 for _, w, h in sd15.aspect_ratios)


def test_choosing_a_model_shows_and_hides_the_controls_of_its_family() -> None:
    studio = studio_with(SD35, KLEIN)
    klein = family_updates(studio, "klein", "en", with_size=True, references=True)
    assert klein["negative"]["visible"] is False and klein["guidance"]["visible"] is False
    assert klein["sd_only"]["visible"] is False and klein["hires"]["visible"] is False
    assert klein["references"]["visible"] is True
    assert klein["width"]["value"] == 1024 and klein["width"]["step"] == 16
    assert ("Euler", "Euler") in klein["sampler"]["choices"]
    assert klein["plan"]["value"].startswith("Memory: ") and "6.1 GB" in klein["plan"]["value"]
    sd35 = family_updates(studio, "sd35", "en", with_size=True, references=True)
    assert sd35["negative"]["visible"] is True and sd35["guidance"]["visible"] is True
    assert sd35["references"]["visible"] is False
    # A model that fits in no memory mode: the plan line is the planner's sentence.
    assert sd35["plan"]["value"] == "This model needs more memory than there is."
    assert family_updates(studio, "no such model", "en", with_size=True) == {}


def test_a_hidden_controls_stale_value_is_dropped_and_named() -> None:
    studio = studio_with(KLEIN, SD35)
    sent = GenerationRequest(prompt="a lighthouse", negative_prompt="blurry", guidance_scale=7.0,
                             model="klein", clip_skip=2, vae="some-vae", hires=HiresFix())
    kept, ignored = for_family(studio, sent, guidance_default=True)
    assert ignored == ["negative_prompt", "cfg_scale", "clip_skip", "vae", "hires"]
    assert (kept.negative_prompt, kept.guidance_scale, kept.clip_skip, kept.vae, kept.hires) == (
        "", None, 1, None, None)
    assert kept.prompt == "a lighthouse"
    # The family's own default in the (hidden) guidance box is no stale value: not named.
    _, ignored = for_family(studio, GenerationRequest(prompt="x", model="klein",
                                                      guidance_scale=KLEIN.spec.default_guidance),
                            guidance_default=True)
    assert ignored == []
    # SD 3.5 takes a negative prompt and CFG: nothing dropped but the SD-only controls.
    kept, ignored = for_family(studio, GenerationRequest(
        prompt="x", negative_prompt="blurry", guidance_scale=5.0, model="sd35"))
    assert ignored == [] and kept.negative_prompt == "blurry" and kept.guidance_scale == 5.0


def test_the_ignored_line_is_translated() -> None:
    assert ignored_line(["negative_prompt", "cfg_scale"], "en") == (
        "Not used by this model: Negative prompt, Guidance.")
    assert ignored_line(["negative_prompt"], "zh").startswith("此模型不使用：")
    assert ignored_line([], "en") == ""


# -- a real server with tiny family models (conftest.py's family_server) -----------------------

def component(config: dict, elem_id: str) -> dict:
    found = [c for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id]
    assert len(found) == 1, elem_id
    return found[0]["props"]


def test_the_page_starts_with_the_default_models_controls(family_server) -> None:
    config = httpx.get(family_server.url + "/config", timeout=30).json()
    for page in ("txt2img", "img2img", "inpaint"):
        assert component(config, f"{page}-negative")["visible"] is False  # FLUX.2 [klein]
    assert component(config, "edit-references")["visible"] is True
    assert component(config, "hires")["visible"] is False


def picture(result) -> Image.Image:
    url = result[0][0]["image"]["url"]
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_a_flow_job_through_the_page_paints_and_names_what_it_ignored(family_server) -> None:
    from gradio_client import Client

    ui = Client(family_server.url + "/", verbose=False)
    result = ui.predict(prompt="a lighthouse", negative_prompt="blurry", style="",
                        model="a-klein-tiny", sampler="", num_inference_steps=2,
                        guidance_scale=6.0, width=64, height=64, seed=3, batch_size=1,
                        api_name="/txt2img")
    assert picture(result).size == (64, 64)
    assert "Not used by this model: Negative prompt, Guidance." in result[2]
    plain = ui.predict(prompt="a lighthouse", negative_prompt="blurry", style="",
                       model="b-sd35-tiny", sampler="", num_inference_steps=2,
                       guidance_scale=4.0, width=64, height=64, seed=3, batch_size=1,
                       api_name="/txt2img")
    assert picture(plain).size == (64, 64)
    assert "Not used by this model" not in plain[2]
    assert family_server.net_attempts() == []


def test_an_edit_model_takes_reference_pictures_on_the_photo_page(family_server,
                                                                   tmp_path: Path) -> None:
    from gradio_client import Client, handle_file
    from leftovers import files_in, wait_until

    photo, reference = tmp_path / "photo.png", tmp_path / "ref.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(photo)
    Image.linear_gradient("L").resize((64, 80)).convert("RGB").save(reference)
    ui = Client(family_server.url + "/", verbose=False)
    result = ui.predict(image=handle_file(str(photo)), prompt="make it blue",
                        negative_prompt="", strength=0.6, style="", model="a-klein-tiny",
                        sampler="", num_inference_steps=2, guidance_scale=1.0, seed=5,
                        batch_size=1, reference_1=handle_file(str(reference)),
                        api_name="/img2img")
    assert picture(result).size[0] > 0
    assert "reference" not in result[2]
    # SD 3.5 is no edit model: a stale reference is not used, and the status says so.
    result = ui.predict(image=handle_file(str(photo)), prompt="blue", negative_prompt="",
                        strength=0.6, style="", model="b-sd35-tiny", sampler="",
                        num_inference_steps=2, guidance_scale=4.0, seed=5, batch_size=1,
                        reference_1=handle_file(str(reference)), api_name="/img2img")
    assert "Not used by this model: reference pictures." in result[2]
    spool = family_server.data_dir / "spool"
    assert wait_until(lambda: [f for f in files_in(spool) if not f.endswith(".obscura-spool")]
                      == [])
    assert json.loads((family_server.state_dir / "net.json").read_text()) == []
