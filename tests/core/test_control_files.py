"""ControlNet, IP-Adapter and CLIP vision files: found in A1111's, ComfyUI's and Obscura's folders,
told apart by their headers, refused with a reason when unusable (FaceID, Control-LoRA, LLLite,
pickles), and loaded from local files only.

Header files carry the real widths (768 / 2048 cross-attention, ViT-H / ViT-bigG); the working
tiny files (tests/portrait_files.py) fit the demo models and are painted with here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from library_files import pickle_trap, sd_checkpoint
from PIL import Image
from portrait_files import (
    control_lora,
    header_clip_vision,
    header_controlnet,
    header_ip_adapter,
    lllite,
    tiny_clip_vision,
    tiny_controlnet,
    tiny_ip_adapter,
)

from core import control_files
from core.errors import InputError, ModelError
from core.library import ModelLibrary
from core.registry import read_safetensors_header


def _item(library: ModelLibrary, kind: str, name: str):
    return library.find(kind, name)


def _refusal(library: ModelLibrary, name: str):
    found = [r for r in library.refused if r.name == name]
    assert found, f"{name} was not refused"
    return found[0]


# -- detection --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "arch, layout, union, detail",
    [
        ("sd1", "ldm", False, {"format": "ldm", "union": False}),
        ("sdxl", "ldm", False, {"format": "ldm", "union": False}),
        ("sd1", "fp16-ldm", False, {"format": "ldm", "union": False}),
        ("sd2", "ldm", False, {"format": "ldm", "union": False}),
        ("sd1", "diffusers", False, {"format": "diffusers", "union": False}),
        ("sdxl", "diffusers", False, {"format": "diffusers", "union": False, "size": "large"}),
        ("sdxl", "diffusers", True, {"format": "diffusers", "union": True, "control_types": 8}),
    ],
)
def test_controlnet_formats_and_architectures(tmp_path: Path, arch, layout, union, detail):
    header_controlnet(tmp_path / "controlnet" / "cn.safetensors", arch, layout, union)
    item = _item(ModelLibrary(tmp_path), "controlnet", "cn")
    assert item.arch == arch
    assert detail.items() <= item.detail.items()


@pytest.mark.parametrize(
    "variant, arch, encoder, name, expected",
    [
        ("plain", "sd1", "ViT-H", "ip-adapter_sd15", ("plain", "image_embeds", 1024)),
        ("plain", "sdxl", "ViT-bigG", "ip-adapter_sdxl", ("plain", "image_embeds", 1280)),
        ("plus", "sd1", "ViT-H", "ip-adapter-plus_sd15", ("plus", "hidden_states", 1280)),
        ("plus", "sd1", "ViT-H", "ip-adapter-plus-face_sd15", ("plus-face", "hidden_states", 1280)),
        ("plus", "sdxl", "ViT-H", "ip-adapter-plus-face_sdxl_vit-h", ("plus-face", "hidden_states", 1280)),
        ("plus", "sdxl", "ViT-bigG", "ip-adapter-plus_sdxl", ("plus", "hidden_states", 1664)),
        ("full-face", "sd1", "ViT-H", "ip-adapter-full-face_sd15", ("full-face", "hidden_states", 1280)),
    ],
)
def test_ip_adapter_variants_architectures_and_encoders(tmp_path: Path, variant, arch, encoder, name, expected):
    header_ip_adapter(tmp_path / "ipadapter" / f"{name}.safetensors", variant, arch, encoder)
    item = _item(ModelLibrary(tmp_path), "ipadapter", name)
    assert item.arch == arch
    assert (item.detail["variant"], item.detail["encoder_input"], item.detail["encoder_width"]) == expected
    assert item.detail["image_encoder"] == encoder
    assert item.detail["layers"] == (70 if arch == "sdxl" else 16)


@pytest.mark.parametrize("encoder, width, layers", [("ViT-H", 1280, 32), ("ViT-bigG", 1664, 48)])
def test_clip_vision_single_files(tmp_path: Path, encoder, width, layers):
    header_clip_vision(tmp_path / "clip_vision" / "CLIP-ViT.safetensors", encoder)
    item = _item(ModelLibrary(tmp_path), "clip_vision", "CLIP-ViT")
    assert item.arch is None
    assert item.detail["encoder"] == encoder
    assert (item.detail["width"], item.detail["layers"], item.detail["image_size"]) == (width, layers, 224)


def test_the_encoder_an_adapter_needs_is_matched_by_width(tmp_path: Path):
    header_ip_adapter(tmp_path / "ipadapter" / "plus.safetensors", "plus", "sd1", "ViT-H")
    header_ip_adapter(tmp_path / "ipadapter" / "plain.safetensors", "plain", "sdxl", "ViT-bigG")
    header_clip_vision(tmp_path / "clip_vision" / "h.safetensors", "ViT-H")
    header_clip_vision(tmp_path / "clip_vision" / "g.safetensors", "ViT-bigG")
    library = ModelLibrary(tmp_path)
    plus, plain = _item(library, "ipadapter", "plus"), _item(library, "ipadapter", "plain")
    h, g = _item(library, "clip_vision", "h"), _item(library, "clip_vision", "g")
    assert control_files.image_encoder_fits(plus, h) and not control_files.image_encoder_fits(plus, g)
    assert control_files.image_encoder_fits(plain, g) and not control_files.image_encoder_fits(plain, h)


# -- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, name",
    [
        (lambda p: header_ip_adapter(p, "faceid"), "ip-adapter-faceid_sd15"),
        (lambda p: header_ip_adapter(p, "faceid-plus"), "ip-adapter-faceid-plusv2_sd15"),
        (lambda p: header_ip_adapter(p, "plus"), "ip-adapter-faceid-portrait_sd15"),  # by name
        (lambda p: tiny_ip_adapter(p, "faceid"), "tiny-face-id"),  # by shape, any name
    ],
)
def test_faceid_is_refused_with_the_licence_sentence(tmp_path: Path, make, name):
    make(tmp_path / "ipadapter" / f"{name}.safetensors")
    library = ModelLibrary(tmp_path)
    refused = _refusal(library, name)
    assert refused.kind == "ipadapter"
    assert refused.reason == control_files.FACEID_REASON
    assert "non-commercial research only" in refused.reason
    with pytest.raises(InputError) as err:
        library.find("ipadapter", name)
    assert err.value.code == "ipadapter_refused" and "InsightFace" in err.value.message


@pytest.mark.parametrize(
    "make, reason",
    [(control_lora, control_files.CONTROL_LORA_REASON), (lllite, control_files.LLLITE_REASON)],
)
def test_control_lora_and_lllite_are_refused_as_controlnets(tmp_path: Path, make, reason):
    make(tmp_path / "controlnet" / "odd.safetensors")
    refused = _refusal(ModelLibrary(tmp_path), "odd")
    assert (refused.kind, refused.reason) == ("controlnet", reason)


def test_clip_vision_without_projection_or_in_open_clip_layout_is_refused(tmp_path: Path):
    header_clip_vision(tmp_path / "clip_vision" / "noproj.safetensors", projection=False)
    header_clip_vision(tmp_path / "clip_vision" / "openclip.safetensors", open_clip=True)
    library = ModelLibrary(tmp_path)
    assert _refusal(library, "noproj").reason == control_files.NO_PROJECTION_REASON
    assert _refusal(library, "openclip").reason == control_files.OPEN_CLIP_REASON
    assert library.items("clip_vision") == []


def test_pickled_controlnets_and_adapters_are_refused_unopened(tmp_path: Path):
    marker = tmp_path / "opened"
    pickle_trap(tmp_path / "models" / "ControlNet" / "control_v11p_sd15_canny.pth", marker)
    pickle_trap(tmp_path / "models" / "ControlNet" / "ip-adapter_sd15.bin", marker)
    (tmp_path / "models" / "Stable-diffusion").mkdir()
    library = ModelLibrary(tmp_path / "models")
    assert not marker.exists()
    assert {(r.name, r.kind) for r in library.refused} == {
        ("control_v11p_sd15_canny", "controlnet"),
        ("ip-adapter_sd15", "controlnet"),
    }
    with pytest.raises(InputError) as err:
        library.find("controlnet", "control_v11p_sd15_canny")
    assert err.value.code == "controlnet_refused" and "Pickle" in err.value.message


def test_unknown_names_get_one_sentence_per_kind(tmp_path: Path):
    library = ModelLibrary(tmp_path)
    for kind, code in (
        ("controlnet", "unknown_controlnet"),
        ("ipadapter", "unknown_ipadapter"),
        ("clip_vision", "unknown_clip_vision"),
    ):
        with pytest.raises(InputError) as err:
            library.find(kind, "some-private-name")
        assert err.value.code == code and "some-private-name" not in err.value.message


# -- folder layouts ---------------------------------------------------------------------------
def test_a1111_layout_controlnet_folder_holds_controlnets_and_ip_adapters(tmp_path: Path):
    models = tmp_path / "models"
    sd_checkpoint(models / "Stable-diffusion" / "v1-5.safetensors")
    header_controlnet(models / "ControlNet" / "control_v11p_sd15_canny.safetensors", "sd1", "ldm")
    header_ip_adapter(models / "ControlNet" / "ip-adapter-plus-face_sd15.safetensors", "plus")
    header_clip_vision(models / "clip_vision" / "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors")
    library = ModelLibrary(models)
    assert library.layout() == "AUTOMATIC1111"
    assert [i.name for i in library.items("controlnet")] == ["control_v11p_sd15_canny"]
    assert [i.name for i in library.items("ipadapter")] == ["ip-adapter-plus-face_sd15"]
    assert [i.name for i in library.items("clip_vision")] == ["CLIP-ViT-H-14-laion2B-s32B-b79K"]
    assert library.items("ipadapter")[0].detail["relative"] == "ip-adapter-plus-face_sd15.safetensors"


def test_comfyui_and_obscura_layouts(tmp_path: Path):
    for root in (tmp_path / "comfy", tmp_path / "flat"):
        if root.name == "comfy":
            sd_checkpoint(root / "checkpoints" / "base.safetensors")
        else:
            sd_checkpoint(root / "base.safetensors")
        header_controlnet(root / "controlnet" / "sdxl" / "canny-sdxl.safetensors", "sdxl", "diffusers")
        header_ip_adapter(root / "ipadapter" / "ip-adapter-plus_sdxl.safetensors", "plus", "sdxl", "ViT-bigG")
        tiny_clip_vision(root / "clip_vision" / "image_encoder")  # h94's folder: config.json + model
        library = ModelLibrary(root)
        assert library.layout() == ("ComfyUI" if root.name == "comfy" else "Obscura")
        assert [(i.name, i.arch) for i in library.items("controlnet")] == [("canny-sdxl", "sdxl")]
        assert [(i.name, i.arch) for i in library.items("ipadapter")] == [("ip-adapter-plus_sdxl", "sdxl")]
        assert [i.name for i in library.items("clip_vision")] == ["image_encoder"]
        assert library.refused == []


def test_obscura_models_lists_the_new_kinds_with_arch_and_detail(tmp_path: Path):
    from webui.cli import main

    models = tmp_path / "models"
    header_controlnet(models / "controlnet" / "union.safetensors", "sdxl", "diffusers", union=True)
    header_ip_adapter(models / "ipadapter" / "ip-adapter-plus-face_sd15.safetensors", "plus")
    header_clip_vision(models / "clip_vision" / "vit-h.safetensors")
    header_ip_adapter(models / "ipadapter" / "ip-adapter-faceid_sd15.safetensors", "faceid")
    result = CliRunner().invoke(
        main, ["models", "--models-dir", str(models), "--data-dir", str(tmp_path / "d")],
        catch_exceptions=False,
    )
    out = result.output
    assert result.exit_code == 0, out
    assert "ControlNets (1):" in out and "union  (SDXL, ControlNet-Union, diffusers layout)" in out
    assert "ip-adapter-plus-face_sd15  (SD 1.x, IP-Adapter plus-face, needs ViT-H)" in out
    assert "CLIP vision encoders (1):" in out and "vit-h  (ViT-H, 32 layers)" in out
    assert "refused: ipadapter/ip-adapter-faceid_sd15.safetensors (IP-Adapter): This is an IP-Adapter FaceID" in out


# -- loading and painting with the tiny working files ----------------------------------------
@pytest.fixture(scope="module")
def tiny_library(tmp_path_factory: pytest.TempPathFactory) -> ModelLibrary:
    root = tmp_path_factory.mktemp("portrait-models")
    tiny_controlnet(root / "controlnet" / "tiny-canny", "sd1")
    tiny_controlnet(root / "controlnet" / "tiny-canny-ldm.safetensors", "sd1", fmt="ldm")
    tiny_controlnet(root / "controlnet" / "tiny-union", "sdxl", union=True)
    tiny_controlnet(root / "controlnet" / "tiny-union-single.safetensors", "sdxl", fmt="single", union=True)
    tiny_controlnet(root / "controlnet" / "tiny-canny-single.safetensors", "sd1", fmt="single")
    tiny_clip_vision(root / "clip_vision" / "image_encoder")
    tiny_clip_vision(root / "clip_vision" / "tiny-single.safetensors", folder=False)
    tiny_ip_adapter(root / "ipadapter" / "tiny-plain.safetensors", "plain")
    tiny_ip_adapter(root / "ipadapter" / "tiny-plus-face.safetensors", "plus")
    return ModelLibrary(root)


def test_tiny_files_are_found_as_what_they_are(tiny_library: ModelLibrary):
    assert tiny_library.refused == []
    assert {i.name for i in tiny_library.items("controlnet")} == {
        "tiny-canny", "tiny-canny-ldm", "tiny-union", "tiny-union-single", "tiny-canny-single"
    }
    assert _item(tiny_library, "controlnet", "tiny-union").detail["union"] is True
    assert _item(tiny_library, "ipadapter", "tiny-plus-face").detail["variant"] == "plus-face"
    encoder = _item(tiny_library, "clip_vision", "image_encoder")
    for name in ("tiny-plain", "tiny-plus-face"):
        assert control_files.image_encoder_fits(_item(tiny_library, "ipadapter", name), encoder)


def test_the_ldm_file_has_the_real_a1111_names(tiny_library: ModelLibrary):
    """diffusers' own converter turns the LDM-named file back into the same ControlNet."""
    from diffusers import ControlNetModel

    folder = _item(tiny_library, "controlnet", "tiny-canny").path.parent
    ldm = _item(tiny_library, "controlnet", "tiny-canny-ldm").path
    assert "control_model.input_hint_block.0.weight" in read_safetensors_header(ldm)
    converted = ControlNetModel.from_single_file(str(ldm), config=str(folder), local_files_only=True)
    original = control_files.load_controlnet(_item(tiny_library, "controlnet", "tiny-canny"), torch.float32)
    a, b = original.state_dict(), converted.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loaders_use_local_files_only(tiny_library: ModelLibrary, no_egress):
    union = control_files.load_controlnet(_item(tiny_library, "controlnet", "tiny-union"), torch.float32)
    assert type(union).__name__ == "ControlNetUnionModel" and union.config.num_control_type == 6
    clip = control_files.load_clip_vision(_item(tiny_library, "clip_vision", "image_encoder"), torch.float32)
    assert type(clip).__name__ == "CLIPVisionModelWithProjection"
    with pytest.raises(ModelError) as err:  # a single file of a width with no shipped config
        control_files.load_clip_vision(_item(tiny_library, "clip_vision", "tiny-single"), torch.float32)
    assert err.value.code == "clip_vision_needs_config"
    with pytest.raises(ModelError) as err:  # a tiny LDM file: no shipped config of its shape
        control_files.load_controlnet(_item(tiny_library, "controlnet", "tiny-canny-ldm"), torch.float32)
    assert err.value.code == "controlnet_needs_config"
    with pytest.raises(ModelError) as err:  # an SD 1.x-sized file with no config: none shipped
        control_files.load_controlnet(_item(tiny_library, "controlnet", "tiny-canny-single"), torch.float32)
    assert err.value.code == "controlnet_needs_config"
    with pytest.raises(ModelError) as err:  # SDXL Union: the shipped (full-size) config, wrong shapes
        control_files.load_controlnet(_item(tiny_library, "controlnet", "tiny-union-single"), torch.float32)
    assert err.value.code == "control_model_mismatch"
    state = control_files.ipadapter_state(_item(tiny_library, "ipadapter", "tiny-plain"))
    assert set(state) == {"image_proj", "ip_adapter"}
    assert "proj.weight" in state["image_proj"] and "1.to_k_ip.weight" in state["ip_adapter"]


def test_shipped_configs_have_the_published_sizes():
    from diffusers import ControlNetModel, ControlNetUnionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    def count(model) -> float:
        return sum(p.numel() for p in model.parameters()) / 1e6

    configs = control_files._configs
    with torch.device("meta"):
        h = CLIPVisionModelWithProjection(CLIPVisionConfig.from_pretrained(str(configs("clip-vision-vit-h"))))
        g = CLIPVisionModelWithProjection(CLIPVisionConfig.from_pretrained(str(configs("clip-vision-vit-bigg"))))
        sd1 = ControlNetModel.from_config(ControlNetModel.load_config(str(configs("controlnet-sd1"))))
        sdxl = ControlNetModel.from_config(ControlNetModel.load_config(str(configs("controlnet-sdxl"))))
        union = ControlNetUnionModel.from_config(ControlNetUnionModel.load_config(str(configs("controlnet-union-sdxl"))))
    # h94/IP-Adapter's model card: ViT-H-14 632.08M, ViT-bigG-14 1844.9M parameters
    assert round(count(h), 2) == 632.08 and round(count(g), 1) == 1844.9
    assert round(count(sd1)) == 361  # control_v11p_sd15_canny
    assert round(count(sdxl)) == 1251  # diffusers/controlnet-canny-sdxl-1.0
    assert round(count(union)) == 1256  # xinsir/controlnet-union-sdxl-1.0


def _paint(pipe, **kwargs) -> np.ndarray:
    generator = torch.Generator().manual_seed(1)
    result = pipe(prompt="a", num_inference_steps=2, height=64, width=64, generator=generator,
                  output_type="np", **kwargs)
    return np.asarray(result.images[0])


def test_tiny_ip_adapters_work_scale_zero_is_bit_identical(tiny_library: ModelLibrary):
    from core.demo import build_demo_pipeline

    pipe = build_demo_pipeline("sd")
    pipe.set_progress_bar_config(disable=True)
    reference = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    plain = _paint(pipe)
    encoder = control_files.load_clip_vision(_item(tiny_library, "clip_vision", "image_encoder"), torch.float32)
    for name in ("tiny-plain", "tiny-plus-face"):
        pipe.register_modules(image_encoder=encoder)
        pipe.load_ip_adapter(
            control_files.ipadapter_state(_item(tiny_library, "ipadapter", name)),
            subfolder="", weight_name="", image_encoder_folder=None,
        )
        pipe.set_ip_adapter_scale(0.0)
        assert np.array_equal(_paint(pipe, ip_adapter_image=reference), plain), name
        pipe.set_ip_adapter_scale(1.0)
        assert np.abs(_paint(pipe, ip_adapter_image=reference) - plain).max() > 0.05, name
        pipe.unload_ip_adapter()


def test_the_tiny_controlnet_changes_the_picture(tiny_library: ModelLibrary):
    from diffusers import StableDiffusionControlNetPipeline

    from core.demo import build_demo_pipeline

    pipe = build_demo_pipeline("sd")
    pipe.set_progress_bar_config(disable=True)
    plain = _paint(pipe)
    controlnet = control_files.load_controlnet(_item(tiny_library, "controlnet", "tiny-canny"), torch.float32)
    control = StableDiffusionControlNetPipeline(**pipe.components, controlnet=controlnet)
    control.set_progress_bar_config(disable=True)
    edges = Image.new("RGB", (64, 64))
    edges.paste((255, 255, 255), (16, 16, 48, 48))
    with_map = _paint(control, image=edges)
    assert np.abs(with_map - plain).max() > 0.05
    assert np.array_equal(_paint(control, image=edges, controlnet_conditioning_scale=0.0), plain)
