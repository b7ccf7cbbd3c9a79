"""The portrait recipe (core/portrait.py): likeness moves the face weight and the strength in
opposite directions, "keep the pose" adds a ControlNet unit only when one of the architecture is
installed, and what is missing is one sentence per architecture."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.errors import InputError
from core.library import LibraryItem
from core.portrait import (
    DEFAULT_SUBJECT,
    RECIPES,
    missing,
    missing_error,
    portrait_request,
    portrait_size,
    pose_missing_error,
)
from core.registry import ModelInfo
from webui.styles import find_style, load_styles

SD1 = ModelInfo("photon", Path("/m/photon.safetensors"), "sd1", "base", "single-file")
SDXL = ModelInfo("juggernaut", Path("/m/jugg.safetensors"), "sdxl", "base", "single-file")
SD2 = ModelInfo("sd21", Path("/m/sd21.safetensors"), "sd2", "base", "single-file")
DEMO = ModelInfo("demo-tiny-sd", Path("/m/demo"), "sd1", "base", "diffusers", is_demo=True)


@dataclass
class Shelf:
    """A model library's listing (the recipe reads ``items(kind)`` only)."""

    entries: list[LibraryItem] = field(default_factory=list)

    def items(self, kind: str) -> list[LibraryItem]:
        return [item for item in self.entries if item.kind == kind]


def item(kind: str, name: str, arch: str | None, **detail: object) -> LibraryItem:
    return LibraryItem(kind, name, Path(f"/m/{kind}/{name}.safetensors"), arch, dict(detail))


ENCODER = item("clip_vision", "image_encoder", None, width=1280)
FACE_SD1 = item("ipadapter", "ip-adapter-plus-face_sd15", "sd1", variant="plus-face")
FACE_SDXL = item("ipadapter", "ip-adapter-plus-face_sdxl_vit-h", "sdxl", variant="plus-face")
CANNY_SD1 = item("controlnet", "control_v11p_sd15_canny", "sd1")
UNION_SDXL = item("controlnet", "controlnet-union-sdxl-1.0", "sdxl", union=True)
DEPTH_SD1 = item("controlnet", "control_v11f1p_sd15_depth", "sd1")


def full() -> Shelf:
    return Shelf([ENCODER, FACE_SD1, FACE_SDXL, CANNY_SD1, UNION_SDXL])


def request(info: ModelInfo = SD1, library: Shelf | None = None, likeness: float = 0.5,
            keep_pose: bool = False, style_id: str | None = "anime", **named):
    style = find_style(load_styles(), style_id) if style_id else None
    return portrait_request("", style, likeness, keep_pose, 4, 7, info,
                            full() if library is None else library, (512, 512), **named)


@pytest.mark.parametrize("info", [SD1, SDXL])
def test_likeness_raises_the_face_weight_and_lowers_the_strength_monotonically(info):
    steps = [i / 10 for i in range(11)]
    made = [request(info, likeness=value) for value in steps]
    weights = [r.ip_adapters[0].weight for r in made]
    strengths = [r.strength for r in made]
    assert all(a < b for a, b in zip(weights, weights[1:], strict=False)), weights
    assert all(a >= b for a, b in zip(strengths, strengths[1:], strict=False)), strengths
    assert strengths[0] > strengths[-1]
    low, high = RECIPES[info.arch].face_weight
    assert math.isclose(weights[0], low) and math.isclose(weights[-1], high)
    unit = made[5].ip_adapters[0]
    assert unit.crop_face and unit.images == [] and not unit.allow_no_face
    assert unit.model == (FACE_SD1 if info.arch == "sd1" else FACE_SDXL).name
    assert unit.guidance_end == RECIPES[info.arch].face_end
    assert made[5].controlnets == []


def test_the_request_uses_the_recipe_defaults_and_the_style():
    made = request(SDXL, style_id="ink-wash")
    assert made.model == "juggernaut" and made.batch_size == 4 and made.seed == 7
    assert (made.num_inference_steps, made.sampler, made.guidance_scale) == (30, "DPM++ 2M Karras", 6.0)
    assert made.prompt.startswith("traditional Chinese ink wash") and DEFAULT_SUBJECT in made.prompt
    assert "colourful" in made.negative_prompt
    # the style's own portrait_strength moves the middle of the slider (ink wash 0.85 > anime 0.8)
    assert made.strength > request(SDXL, style_id="anime").strength
    assert request(SDXL, style_id=None).prompt == DEFAULT_SUBJECT
    # the demo model keeps its own (tiny) defaults
    demo = request(DEMO)
    assert (demo.num_inference_steps, demo.width, demo.height) == (DEMO.spec.default_steps, 256, 256)


def test_keep_pose_adds_a_controlnet_unit_only_when_one_of_the_arch_is_installed():
    sd1 = request(SD1, keep_pose=True)
    assert [u.model for u in sd1.controlnets] == [CANNY_SD1.name]
    unit = sd1.controlnets[0]
    assert unit.module == "pyracanny" and unit.image is None and unit.union_type is None
    assert (unit.weight, unit.guidance_end) == (RECIPES["sd1"].pose_weight, RECIPES["sd1"].pose_end)
    xl = request(SDXL, keep_pose=True)
    assert [u.model for u in xl.controlnets] == [UNION_SDXL.name]
    assert xl.controlnets[0].union_type == "canny"
    # No ControlNet of the architecture (an SD1 canny is no use to SDXL; a depth net needs a
    # depth map, not edges): the switch adds nothing, and says so.
    only_sd1 = Shelf([ENCODER, FACE_SDXL, CANNY_SD1, DEPTH_SD1])
    assert request(SDXL, only_sd1, keep_pose=True).controlnets == []
    assert pose_missing_error(SDXL, only_sd1).code == "portrait_needs_pose_controlnet"
    assert request(SD1, Shelf([ENCODER, FACE_SD1, DEPTH_SD1]), keep_pose=True).controlnets == []
    assert pose_missing_error(SD1, full()) is None
    assert request(SD1, keep_pose=False).controlnets == []


def test_missing_models_are_one_sentence_per_architecture():
    empty = Shelf()
    sd1 = missing(SD1, empty)
    assert sd1 is not None and sd1.count(". ") == 0 and sd1.endswith(".")
    assert "ip-adapter-plus-face_sd15.safetensors" in sd1 and "SD 1.x" in sd1
    assert "models/ipadapter/" in sd1 and "models/clip_vision/" in sd1
    xl = missing(SDXL, empty)
    assert xl is not None and "ip-adapter-plus-face_sdxl_vit-h.safetensors" in xl and "SDXL" in xl
    # an adapter of the other architecture does not count
    assert missing_error(SDXL, Shelf([ENCODER, FACE_SD1])).code == "portrait_needs_face_adapter_sdxl"
    # the adapter without its image encoder
    assert missing_error(SD1, Shelf([FACE_SD1])).code == "portrait_needs_image_encoder"
    # an encoder of the wrong width (ViT-bigG for a ViT-H adapter) does not count either
    bigg = item("clip_vision", "clip-vit-bigg", None, width=1664)
    vit_h_adapter = item("ipadapter", "ip-adapter-plus-face_sd15", "sd1", variant="plus-face",
                         encoder_width=1280)
    assert missing_error(SD1, Shelf([bigg, vit_h_adapter])).code == "portrait_needs_image_encoder"
    assert missing(SD1, full()) is None and missing(SDXL, full()) is None
    assert missing_error(SD2, full()).code == "portrait_arch_unsupported"


def test_missing_models_refuse_the_request_unless_the_person_goes_on_without():
    with pytest.raises(InputError) as err:
        request(SD1, Shelf())
    assert err.value.code == "portrait_needs_face_adapter_sd1"
    plain = request(SD1, Shelf([CANNY_SD1]), keep_pose=True, without_face_keeping=True)
    assert plain.ip_adapters == [] and [u.model for u in plain.controlnets] == [CANNY_SD1.name]
    # styled img2img only keeps more of the photo than the same likeness with the adapter
    assert plain.strength < request(SD1).strength
    # with the adapter there, the checkbox lets a photo with no face go on without it
    assert request(SD1, without_face_keeping=True).ip_adapters[0].allow_no_face
    assert request(SD2, without_face_keeping=True).ip_adapters == []


def test_plus_face_is_preferred_to_other_adapters():
    plain = item("ipadapter", "ip-adapter_sd15", "sd1", variant="plain")
    plus = item("ipadapter", "ip-adapter-plus_sd15", "sd1", variant="plus")
    shelf = Shelf([ENCODER, plain, plus, FACE_SD1])
    assert request(SD1, shelf).ip_adapters[0].model == FACE_SD1.name
    assert request(SD1, Shelf([ENCODER, plain, plus])).ip_adapters[0].model == plus.name


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, math.inf, "0.5", True, None])
def test_likeness_is_bounded(bad):
    with pytest.raises(InputError) as err:
        request(SD1, likeness=bad)
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
