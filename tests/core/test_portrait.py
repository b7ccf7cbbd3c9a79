"""The portrait recipe (core/portrait.py): likeness moves the face weight and the strength in
opposite directions, "keep the pose" adds a ControlNet unit only when one of the architecture is
installed, and what is missing is one sentence per architecture."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from core.errors import InputError
from core.library import ModelLibrary
from core.portrait import (
    DEFAULT_SUBJECT,
    PORTRAIT_NEGATIVE,
    RECIPES,
    missing,
    missing_error,
    portrait_request,
    portrait_size,
    pose_missing_error,
)
from core.registry import ModelInfo
from tests.portrait_files import header_clip_vision, header_controlnet, header_ip_adapter
from webui.styles import find_style, load_styles

SD1 = ModelInfo("photon", Path("/m/photon.safetensors"), "sd1", "base", "single-file")
SDXL = ModelInfo("juggernaut", Path("/m/jugg.safetensors"), "sdxl", "base", "single-file")
SD2 = ModelInfo("sd21", Path("/m/sd21.safetensors"), "sd2", "base", "single-file")
DEMO = ModelInfo("demo-tiny-sd", Path("/m/demo"), "sd1", "base", "diffusers", is_demo=True)
KLEIN = ModelInfo("klein", Path("/m/klein"), "flux2", "klein", "diffusers")

# The published files (h94/IP-Adapter, lllyasviel, xinsir, ComfyUI's clip_vision names) as
# header files with their real widths, in Obscura's folders; the library reads their kinds.
FILES = {
    "ENCODER": ("clip_vision/CLIP-ViT-H-14-laion2B-s32B-b79K",
                lambda path: header_clip_vision(path, "ViT-H")),
    "ENCODER_BIGG": ("clip_vision/CLIP-ViT-bigG-14-laion2B-39B-b160k",
                     lambda path: header_clip_vision(path, "ViT-bigG")),
    "FACE_SD1": ("ipadapter/ip-adapter-plus-face_sd15",
                 lambda path: header_ip_adapter(path, "plus", "sd1")),
    "FACE_SDXL": ("ipadapter/ip-adapter-plus-face_sdxl_vit-h",
                  lambda path: header_ip_adapter(path, "plus", "sdxl")),
    "PLUS_SD1": ("ipadapter/ip-adapter-plus_sd15", lambda path: header_ip_adapter(path, "plus", "sd1")),
    "PLAIN_SD1": ("ipadapter/ip-adapter_sd15", lambda path: header_ip_adapter(path, "plain", "sd1")),
    "CANNY_SD1": ("controlnet/control_v11p_sd15_canny",
                  lambda path: header_controlnet(path, "sd1", "ldm")),
    "DEPTH_SD1": ("controlnet/control_v11f1p_sd15_depth",
                  lambda path: header_controlnet(path, "sd1", "ldm")),
    "UNION_SDXL": ("controlnet/controlnet-union-sdxl-1.0",
                   lambda path: header_controlnet(path, "sdxl", "diffusers", union=True)),
}
ALL = ("ENCODER", "FACE_SD1", "FACE_SDXL", "CANNY_SD1", "UNION_SDXL")
_count = [0]


def name(key: str) -> str:
    return FILES[key][0].split("/")[1]


def library(tmp_path: Path, *keys: str) -> ModelLibrary:
    _count[0] += 1
    folder = tmp_path / f"models-{_count[0]}"
    for key in keys:
        relative, build = FILES[key]
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        build(folder / f"{relative}.safetensors")
    folder.mkdir(exist_ok=True)
    shelf = ModelLibrary(folder)
    shelf.scan()
    assert not shelf.refused
    return shelf


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> ModelLibrary:
    return library(tmp_path_factory.mktemp("portrait-full"), *ALL)


def request(info: ModelInfo, library: ModelLibrary, likeness: float = 0.5,
            keep_pose: bool = False, style_id: str | None = "anime", **named):
    style = find_style(load_styles(), style_id) if style_id else None
    return portrait_request("", style, likeness, keep_pose, 4, 7, info, library, (512, 512),
                            **named)


@pytest.mark.parametrize("info", [SD1, SDXL])
def test_likeness_raises_the_face_weight_and_lowers_the_strength_monotonically(info, full):
    steps = [i / 10 for i in range(11)]
    made = [request(info, full, likeness=value) for value in steps]
    weights = [r.ip_adapters[0].weight for r in made]
    strengths = [r.strength for r in made]
    assert all(a < b for a, b in zip(weights, weights[1:], strict=False)), weights
    assert all(a >= b for a, b in zip(strengths, strengths[1:], strict=False)), strengths
    assert strengths[0] > strengths[-1]
    low, high = RECIPES[info.arch].face_weight
    assert math.isclose(weights[0], low) and math.isclose(weights[-1], high)
    unit = made[5].ip_adapters[0]
    assert unit.crop_face and unit.images == [] and not unit.allow_no_face
    assert unit.model == name("FACE_SD1" if info.arch == "sd1" else "FACE_SDXL")
    assert unit.guidance_end == RECIPES[info.arch].face_end
    assert made[5].controlnets == []


def test_the_request_uses_the_recipe_defaults_and_the_style(full):
    made = request(SDXL, full, style_id="ink-wash")
    assert made.model == "juggernaut" and made.batch_size == 4 and made.seed == 7
    assert (made.num_inference_steps, made.sampler, made.guidance_scale) == (30, "DPM++ 2M Karras", 6.0)
    assert made.prompt.startswith("traditional Chinese ink wash") and DEFAULT_SUBJECT in made.prompt
    assert "colourful" in made.negative_prompt
    # the style's own portrait_strength moves the middle of the slider (ink wash 0.85 > anime 0.8)
    assert made.strength > request(SDXL, full, style_id="anime").strength
    plain = request(SDXL, full, style_id=None)
    assert plain.prompt == DEFAULT_SUBJECT and plain.negative_prompt == PORTRAIT_NEGATIVE
    # the person's words follow the subject; their negative words come first
    words = portrait_request(" smiling, red scarf ", None, 0.5, False, 1, None, SD1, full,
                             None, negative_prompt="hat")
    assert words.prompt == f"{DEFAULT_SUBJECT}, smiling, red scarf"
    assert words.negative_prompt == f"hat, {PORTRAIT_NEGATIVE}"
    # the demo model keeps its own (tiny) defaults
    demo = request(DEMO, full)
    assert (demo.num_inference_steps, demo.width, demo.height) == (DEMO.spec.default_steps, 256, 256)


def test_keep_pose_adds_a_controlnet_unit_only_when_one_of_the_arch_is_installed(full, tmp_path):
    sd1 = request(SD1, full, keep_pose=True)
    assert [u.model for u in sd1.controlnets] == [name("CANNY_SD1")]
    unit = sd1.controlnets[0]
    assert unit.module == "pyracanny" and unit.image is None and unit.union_type is None
    assert (unit.weight, unit.guidance_end) == (RECIPES["sd1"].pose_weight, RECIPES["sd1"].pose_end)
    xl = request(SDXL, full, keep_pose=True)
    assert [u.model for u in xl.controlnets] == [name("UNION_SDXL")]
    assert xl.controlnets[0].union_type == "canny"
    assert pose_missing_error(SD1, full) is None and pose_missing_error(SDXL, full) is None
    assert request(SD1, full, keep_pose=False).controlnets == []
    # No ControlNet of the architecture (an SD1 canny is no use to SDXL; a depth net needs a
    # depth map, not edges): the switch adds nothing, and says so.
    only_sd1 = library(tmp_path, "ENCODER", "FACE_SD1", "FACE_SDXL", "CANNY_SD1", "DEPTH_SD1")
    assert request(SDXL, only_sd1, keep_pose=True).controlnets == []
    assert pose_missing_error(SDXL, only_sd1).code == "portrait_needs_pose_controlnet"
    depth = library(tmp_path, "ENCODER", "FACE_SD1", "DEPTH_SD1")
    assert request(SD1, depth, keep_pose=True).controlnets == []


def test_missing_models_are_one_sentence_per_architecture(full, tmp_path):
    empty = library(tmp_path)
    sd1 = missing(SD1, empty)
    assert sd1 is not None and sd1.count(". ") == 0 and sd1.endswith(".")
    assert "ip-adapter-plus-face_sd15.safetensors" in sd1 and "SD 1.x" in sd1
    assert "models/ipadapter/" in sd1 and "models/clip_vision/" in sd1
    xl = missing(SDXL, empty)
    assert xl is not None and "ip-adapter-plus-face_sdxl_vit-h.safetensors" in xl and "SDXL" in xl
    # an adapter of the other architecture does not count
    other = library(tmp_path, "ENCODER", "FACE_SD1")
    assert missing_error(SDXL, other).code == "portrait_needs_face_adapter_sdxl"
    # the adapter without its image encoder, or with one of another width (ViT-bigG for ViT-H)
    assert missing_error(SD1, library(tmp_path, "FACE_SD1")).code == "portrait_needs_image_encoder"
    bigg = library(tmp_path, "FACE_SD1", "ENCODER_BIGG")
    assert missing_error(SD1, bigg).code == "portrait_needs_image_encoder"
    assert missing(SD1, full) is None and missing(SDXL, full) is None
    assert missing_error(SD2, full).code == "portrait_arch_unsupported"


def test_missing_models_refuse_the_request_unless_the_person_goes_on_without(full, tmp_path):
    with pytest.raises(InputError) as err:
        request(SD1, library(tmp_path))
    assert err.value.code == "portrait_needs_face_adapter_sd1"
    plain = request(SD1, library(tmp_path, "CANNY_SD1"), keep_pose=True,
                    without_face_keeping=True)
    assert plain.ip_adapters == [] and [u.model for u in plain.controlnets] == [name("CANNY_SD1")]
    # styled img2img only keeps more of the photo than the same likeness with the adapter
    assert plain.strength < request(SD1, full).strength
    # with the adapter there, the checkbox lets a photo with no face go on without it
    assert request(SD1, full, without_face_keeping=True).ip_adapters[0].allow_no_face
    assert request(SD2, full, without_face_keeping=True).ip_adapters == []
    # a family without a recipe (FLUX.2 [klein]: 4 distilled steps) keeps its own numbers
    klein = request(KLEIN, full, keep_pose=True, without_face_keeping=True)
    assert klein.ip_adapters == [] and klein.controlnets == []
    assert PORTRAIT_NEGATIVE not in klein.negative_prompt
    assert (klein.num_inference_steps, klein.sampler, klein.guidance_scale) == (
        KLEIN.spec.default_steps, KLEIN.spec.default_sampler, KLEIN.spec.default_guidance)
    assert missing_error(KLEIN, full).code == "portrait_arch_unsupported"


def test_plus_face_is_preferred_to_other_adapters(tmp_path):
    every = library(tmp_path, "ENCODER", "PLAIN_SD1", "PLUS_SD1", "FACE_SD1")
    assert request(SD1, every).ip_adapters[0].model == name("FACE_SD1")
    no_face = library(tmp_path, "ENCODER", "PLAIN_SD1", "PLUS_SD1")
    assert request(SD1, no_face).ip_adapters[0].model == name("PLUS_SD1")


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, math.inf, "0.5", True, None])
def test_likeness_is_bounded(bad, full):
    with pytest.raises(InputError) as err:
        request(SD1, full, likeness=bad)
    assert err.value.code == "portrait_likeness_out_of_range"


def test_the_result_keeps_the_photo_proportions_at_the_native_area():
    assert portrait_size(SD1, (3000, 4000)) == (448, 576)
    assert portrait_size(SDXL, (4000, 3000)) == (1152, 896)
    assert portrait_size(SD1, (100, 10_000)) == (384, 704)  # clamped to 1:2
    assert portrait_size(SDXL, None) == (1024, 1024)
    for info in (SD1, SDXL, DEMO):
        width, height = portrait_size(info, (1234, 987))
        assert width % 8 == 0 and height % 8 == 0
        assert info.spec.min_size <= min(width, height) <= max(width, height) <= info.spec.max_size
