"""The transformer families are found from headers: diffusers folders, single transformer files
(original and diffusers key names), all-in-one checkpoints, GGUF, text encoders and VAEs; a
transformer is paired with its parts or refused with one sentence naming what is missing.

Header-only files carry the real tensor names and the real widths that decide (sparse files:
no disk); the tiny random models come from tests/family_files.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from family_files import save_family, save_gguf, write_header_file  # noqa: E402

from core.library import ModelLibrary  # noqa: E402
from core.registry import ModelRegistry  # noqa: E402

P = "model.diffusion_model."


# -- real key names, tiny shapes except the widths that decide ----------------------------------
def flux1_bfl(path: Path, *, guidance: bool = True, in_ch: int = 64, prefix: str = "") -> Path:
    shapes = {
        "double_blocks.0.img_attn.norm.key_norm.scale": [128],
        "double_blocks.0.img_attn.qkv.weight": [24, 8],
        "single_blocks.0.linear1.weight": [24, 8],
        "img_in.weight": [8, in_ch],
        "txt_in.weight": [8, 4096],
        "vector_in.in_layer.weight": [8, 768],
        "time_in.in_layer.weight": [8, 256],
        "final_layer.linear.weight": [64, 8],
    }
    if guidance:
        shapes["guidance_in.in_layer.weight"] = [8, 256]
    return write_header_file(path, {prefix + k: v for k, v in shapes.items()})


def flux2_bfl(path: Path, *, text_width: int = 2560, guidance: bool = False) -> Path:
    shapes = {
        "double_stream_modulation_img.lin.weight": [48, 8],
        "single_stream_modulation.lin.weight": [24, 8],
        "double_blocks.0.img_attn.qkv.weight": [24, 8],
        "img_in.weight": [8, 128],
        "txt_in.weight": [8, 3 * text_width],
        "final_layer.linear.weight": [128, 8],
    }
    if guidance:
        shapes["guidance_in.in_layer.weight"] = [8, 256]
    return write_header_file(path, shapes)


def sd3_original(path: Path, layers: int = 24, prefix: str = P, extra: dict | None = None) -> Path:
    shapes = {
        f"joint_blocks.{i}.context_block.adaLN_modulation.1.bias": [16] for i in range(layers)
    }
    shapes.update({
        "x_embedder.proj.weight": [64 * layers, 16, 2, 2],
        "pos_embed": [1, 36864, 4],
        "context_embedder.weight": [4, 4096],
        "y_embedder.mlp.0.weight": [4, 2048],
        "final_layer.linear.weight": [64, 4],
    })
    shapes = {prefix + k: v for k, v in shapes.items()}
    shapes.update(extra or {})
    return write_header_file(path, shapes)


def zimage_original(path: Path) -> Path:
    return write_header_file(path, {
        "layers.0.adaLN_modulation.0.weight": [24, 8],
        "layers.0.attention.qkv.weight": [24, 8],
        "cap_embedder.0.weight": [2560],
        "cap_embedder.1.weight": [8, 2560],
        "x_embedder.weight": [8, 64],
        "noise_refiner.0.adaLN_modulation.0.weight": [24, 8],
        "x_pad_token": [1, 8],
    })


def qwen_image(path: Path) -> Path:
    return write_header_file(path, {
        "txt_norm.weight": [3584],
        "img_in.weight": [8, 64],
        "txt_in.weight": [8, 3584],
        "transformer_blocks.0.img_mod.1.weight": [48, 8],
        "proj_out.weight": [64, 8],
    })


def clip_text(path: Path, width: int, prefix: str = "") -> dict:
    shapes = {
        "text_model.embeddings.token_embedding.weight": [10, width],
        "text_model.embeddings.position_embedding.weight": [77, width],
        "text_model.encoder.layers.0.self_attn.q_proj.weight": [4, width],
        "text_projection.weight": [width, 4],
    }
    shapes = {prefix + k: v for k, v in shapes.items()}
    if path is not None:
        write_header_file(path, shapes)
    return shapes


def t5(path: Path | None, width: int = 4096, vocab: int = 10, prefix: str = "", **extra: list) -> dict:
    shapes = {
        "shared.weight": [vocab, width],
        "encoder.block.0.layer.0.SelfAttention.q.weight": [4, width],
        "encoder.final_layer_norm.weight": [width],
        **extra,
    }
    shapes = {prefix + k: v for k, v in shapes.items()}
    if path is not None:
        write_header_file(path, shapes)
    return shapes


def qwen3(path: Path, width: int = 2560) -> Path:
    return write_header_file(path, {
        "model.embed_tokens.weight": [10, width],
        "model.layers.0.self_attn.q_proj.weight": [4, width],
        "model.layers.0.self_attn.q_norm.weight": [128],
        "model.norm.weight": [width],
    })


def qwen25vl(path: Path) -> Path:
    return write_header_file(path, {
        "model.embed_tokens.weight": [10, 3584],
        "model.layers.0.self_attn.q_proj.weight": [4, 3584],
        "model.layers.0.self_attn.q_proj.bias": [4],
        "visual.blocks.0.attn.qkv.weight": [12, 4],
    })


def kl_vae(path: Path | None, channels: int = 16, prefix: str = "", bn: bool = False) -> dict:
    shapes = {
        "encoder.conv_in.weight": [4, 3, 3, 3],
        "encoder.conv_out.weight": [2 * channels, 4, 3, 3],
        "decoder.conv_in.weight": [4, channels, 3, 3],
        "decoder.conv_out.weight": [3, 4, 3, 3],
    }
    if bn:
        shapes["bn.running_mean"] = [4 * channels]
        shapes["bn.running_var"] = [4 * channels]
    shapes = {prefix + k: v for k, v in shapes.items()}
    if path is not None:
        write_header_file(path, shapes)
    return shapes


def wan_vae(path: Path) -> Path:
    return write_header_file(path, {
        "encoder.conv1.weight": [4, 3, 3, 3, 3],
        "decoder.conv1.weight": [4, 16, 3, 3, 3],
        "decoder.middle.0.residual.0.gamma": [4, 1, 1, 1],
        "conv1.weight": [32, 32, 1, 1, 1],
        "conv2.weight": [16, 16, 1, 1, 1],
    })


def _library(root: Path) -> ModelLibrary:
    return ModelLibrary(root)


def _refusal(lib: ModelLibrary, name: str, kind: str = "checkpoint") -> str:
    reasons = {r.name: r.reason for r in lib.refused if r.kind == kind}
    assert name in reasons, (name, [(r.kind, r.name) for r in lib.refused])
    return reasons[name]


def _checkpoint(lib: ModelLibrary, name: str):
    found = {i.name: i for i in lib.items("checkpoint")}
    assert name in found, (name, [(r.name, r.reason) for r in lib.refused])
    return found[name]


# -- diffusers folders ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arch", "variant", "folder"),
    [
        ("sd3", "medium", "stable-diffusion-3.5-medium"),
        ("sd3", "large", "stable-diffusion-3.5-large"),
        ("sd3", "large-turbo", "stable-diffusion-3.5-large-turbo"),
        ("flux1", "schnell", "FLUX.1-schnell"),
        ("flux1", "dev", "FLUX.1-dev"),
        ("flux1", "fill", "FLUX.1-Fill-dev"),
        ("flux1", "kontext", "FLUX.1-Kontext-dev"),
        ("flux2", "klein", "FLUX.2-klein-4B"),
        ("flux2", "klein-base", "FLUX.2-klein-base-4B"),
        ("zimage", "turbo", "Z-Image-Turbo"),
        ("zimage", "base", "Z-Image-base"),
        ("qwenimage", "base", "Qwen-Image"),
    ],
)
def test_diffusers_folders_of_each_family(tmp_path: Path, arch: str, variant: str, folder: str):
    save_family(tmp_path / "diffusers" / folder, arch, variant, fmt="diffusers")
    registry = ModelRegistry(tmp_path)
    assert [(m.name, m.arch, m.variant, m.format) for m in registry.models] == [
        (folder, arch, variant, "diffusers")
    ]
    assert registry.models[0].is_flow and registry.models[0].spec.default_size == 1024


def test_qwen_image_edit_folders_by_their_pipeline_class(tmp_path: Path):
    for cls, name in (("QwenImageEditPipeline", "Qwen-Image-Edit"),
                      ("QwenImageEditPlusPipeline", "Qwen-Image-Edit-2509")):
        folder = tmp_path / name
        save_family(folder, "qwenimage", "base", fmt="diffusers")
        index = json.loads((folder / "model_index.json").read_text())
        index["_class_name"] = cls
        (folder / "model_index.json").write_text(json.dumps(index))
    variants = {m.name: m.variant for m in ModelRegistry(tmp_path).models}
    assert variants == {"Qwen-Image-Edit": "edit", "Qwen-Image-Edit-2509": "edit-plus"}


def test_other_pipeline_classes_are_refused_with_the_family_list(tmp_path: Path):
    folder = tmp_path / "hidream"
    save_family(folder, "flux1", "schnell", fmt="diffusers")
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "HiDreamImagePipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    registry = ModelRegistry(tmp_path)
    assert registry.models == []
    reason = registry.refused[0].reason
    assert "not supported" in reason and "FLUX.2 [klein]" in reason and "Qwen-Image" in reason


def test_a_flow_folder_without_transformer_config_is_refused(tmp_path: Path):
    folder = tmp_path / "flux"
    save_family(folder, "flux1", "schnell", fmt="diffusers")
    (folder / "transformer" / "config.json").unlink()
    assert "transformer/config.json" in ModelRegistry(tmp_path).refused[0].reason


# -- single transformer files: family and variant from real key names ---------------------------
def test_flux1_variants_from_bfl_keys(tmp_path: Path):
    d = tmp_path / "diffusion_models"
    flux1_bfl(d / "flux1-schnell.safetensors", guidance=False)
    flux1_bfl(d / "flux1-dev.safetensors")
    flux1_bfl(d / "flux1-fill-dev.safetensors", in_ch=384)
    flux1_bfl(d / "flux1-kontext-dev.safetensors")
    flux1_bfl(d / "flux1-depth-dev.safetensors", in_ch=128)
    flux1_bfl(d / "comfy-prefixed.safetensors", prefix=P, guidance=False)
    lib = _library(tmp_path)
    found = {i.name: (i.arch, i.detail["variant"], i.detail["layout"]) for i in lib.items("diffusion_model")}
    assert found == {
        "comfy-prefixed": ("flux1", "schnell", "original"),
        "flux1-dev": ("flux1", "dev", "original"),
        "flux1-fill-dev": ("flux1", "fill", "original"),
        "flux1-kontext-dev": ("flux1", "kontext", "original"),
        "flux1-schnell": ("flux1", "schnell", "original"),
    }
    assert "Depth/Canny" in _refusal(lib, "flux1-depth-dev", "diffusion_model")


def test_sd3_flux2_zimage_qwen_from_original_keys(tmp_path: Path):
    d = tmp_path / "diffusion_models"
    sd3_original(d / "sd3.5_medium.safetensors", layers=24)
    sd3_original(d / "sd3.5_large.safetensors", layers=38)
    sd3_original(d / "sd3.5_large_turbo.safetensors", layers=38)
    flux2_bfl(d / "flux-2-klein-4b.safetensors")
    flux2_bfl(d / "flux-2-klein-base-9b.safetensors", text_width=4096)
    flux2_bfl(d / "flux2_dev_fp8mixed.safetensors", text_width=5120, guidance=True)
    zimage_original(d / "z_image_turbo_bf16.safetensors")
    qwen_image(d / "qwen_image_fp8_e4m3fn.safetensors")
    qwen_image(d / "qwen_image_edit_2509_fp8_e4m3fn.safetensors")
    lib = _library(tmp_path)
    found = {
        i.name: (i.arch, i.detail["variant"], i.detail["title"]) for i in lib.items("diffusion_model")
    }
    assert found == {
        "sd3.5_medium": ("sd3", "medium", "Stable Diffusion 3.5 Medium"),
        "sd3.5_large": ("sd3", "large", "Stable Diffusion 3.5 Large"),
        "sd3.5_large_turbo": ("sd3", "large-turbo", "Stable Diffusion 3.5 Large Turbo"),
        "flux-2-klein-4b": ("flux2", "klein", "FLUX.2 [klein] 4B"),
        "flux-2-klein-base-9b": ("flux2", "klein-base", "FLUX.2 [klein] Base 9B"),
        "z_image_turbo_bf16": ("zimage", "turbo", "Z-Image Turbo"),
        "qwen_image_fp8_e4m3fn": ("qwenimage", "base", "Qwen-Image"),
        "qwen_image_edit_2509_fp8_e4m3fn": ("qwenimage", "edit-plus", "Qwen-Image Edit Plus"),
    }
    assert "FLUX.2 [dev] transformer files are not supported" in _refusal(
        lib, "flux2_dev_fp8mixed", "diffusion_model"
    )


def test_diffusers_layout_transformer_files(tmp_path: Path):
    for arch in ("sd3", "flux1", "flux2", "zimage", "qwenimage"):
        save_family(tmp_path / arch, arch, fmt="parts")
        lib = _library(tmp_path / arch)
        [item] = lib.items("diffusion_model")
        assert (item.arch, item.detail["layout"]) == (arch, "diffusers")


def test_chroma_is_not_taken_for_flux1(tmp_path: Path):
    write_header_file(tmp_path / "diffusion_models" / "chroma.safetensors", {
        "double_blocks.0.img_attn.norm.key_norm.scale": [128],
        "distilled_guidance_layer.in_proj.bias": [8],
        "img_in.weight": [8, 64],
    })
    lib = _library(tmp_path)
    assert lib.items("diffusion_model") == []
    assert "not supported" in _refusal(lib, "chroma", "diffusion_model")


def test_scaled_fp8_transformer_is_refused(tmp_path: Path):
    path = flux1_bfl(tmp_path / "diffusion_models" / "flux1-dev-fp8-scaled.safetensors")
    header_names = {"scaled_fp8": [2], "double_blocks.0.img_attn.qkv.scale_weight": [1]}
    from core.registry import read_safetensors_header

    shapes = {k: v["shape"] for k, v in read_safetensors_header(path).items() if k != "__metadata__"}
    write_header_file(path, {**shapes, **header_names})
    assert "scaled" in _refusal(_library(tmp_path), "flux1-dev-fp8-scaled", "diffusion_model")


# -- text encoders and VAEs -------------------------------------------------------------------
def test_text_encoders_by_structure_and_width(tmp_path: Path):
    te = tmp_path / "text_encoders"
    clip_text(te / "clip_l.safetensors", 768)
    clip_text(te / "clip_g.safetensors", 1280)
    t5(te / "t5xxl_fp16.safetensors")
    qwen3(te / "qwen_3_4b.safetensors", 2560)
    qwen3(tmp_path / "clip" / "qwen_3_8b.safetensors", 4096)  # ComfyUI's older folder name
    qwen25vl(te / "qwen_2.5_vl_7b_fp8_scaled_not.safetensors")
    lib = _library(tmp_path)
    roles = {i.name: (i.detail["family"], i.detail["role"], i.detail["width"]) for i in lib.items("text_encoder")}
    assert roles == {
        "clip_g": ("clip", "clip-g", 1280),
        "clip_l": ("clip", "clip-l", 768),
        "qwen_2.5_vl_7b_fp8_scaled_not": ("qwen25vl", "qwen2.5-vl-7b", 3584),
        "qwen_3_4b": ("qwen3", "qwen3-4b", 2560),
        "qwen_3_8b": ("qwen3", "qwen3-8b", 4096),
        "t5xxl_fp16": ("t5", "t5xxl", 4096),
    }


def test_text_encoders_that_cannot_be_loaded_say_why(tmp_path: Path):
    te = tmp_path / "text_encoders"
    t5(te / "t5xxl_fp8_e4m3fn_scaled.safetensors", scaled_fp8=[2],
       **{"encoder.block.0.layer.0.SelfAttention.q.scale_weight": [1]})
    t5(te / "umt5_xxl_fp16.safetensors", vocab=256384)
    write_header_file(te / "open_clip_bigG.safetensors", {
        "token_embedding.weight": [10, 1280],
        "transformer.resblocks.0.attn.in_proj_weight": [12, 1280],
    })
    (te / "t5-v1_1-xxl-encoder-Q8_0.gguf").write_bytes(b"GGUF never opened")
    lib = _library(tmp_path)
    assert lib.items("text_encoder") == []
    assert "scaled" in _refusal(lib, "t5xxl_fp8_e4m3fn_scaled", "text_encoder")
    assert "UMT5" in _refusal(lib, "umt5_xxl_fp16", "text_encoder")
    assert "OpenCLIP" in _refusal(lib, "open_clip_bigG", "text_encoder")
    assert "GGUF text encoders are not supported" in _refusal(lib, "t5-v1_1-xxl-encoder-Q8_0", "text_encoder")


def test_vaes_are_tagged_with_their_latent_family(tmp_path: Path):
    v = tmp_path / "vae"
    kl_vae(v / "ae.safetensors", 16)
    kl_vae(v / "sd3_vae.safetensors", 16)
    kl_vae(v / "some16.safetensors", 16)
    kl_vae(v / "flux2-vae.safetensors", 32, bn=True)
    wan_vae(v / "qwen_image_vae.safetensors")
    kl_vae(v / "sdxl_vae.safetensors", 4)
    kl_vae(v / "odd.safetensors", 8)
    lib = _library(tmp_path)
    tags = {i.name: (i.arch, i.detail["latent"], i.detail["families"]) for i in lib.items("vae")}
    assert tags == {
        "ae": ("flux1", "kl16", ["flux1", "zimage"]),
        "flux2-vae": ("flux2", "flux2", ["flux2"]),
        "qwen_image_vae": ("qwenimage", "wan16", ["qwenimage"]),
        "sd3_vae": ("sd3", "kl16", ["sd3"]),
        "sdxl_vae": (None, "sd", ["sd1", "sd2", "sdxl"]),
        "some16": ("flux1", "kl16", ["flux1", "zimage", "sd3"]),
    }
    assert "8 latent channels" in _refusal(lib, "odd", "vae")


def test_an_sd_model_cannot_take_a_flux_vae(tmp_path: Path):
    from core.errors import InputError
    from core.networks import _find_vae
    from core.registry import ModelInfo

    kl_vae(tmp_path / "vae" / "ae.safetensors", 16)
    lib = _library(tmp_path)
    sd = ModelInfo("m", tmp_path / "m", "sd1", "base", "single-file")
    with pytest.raises(InputError) as info:
        _find_vae(lib, "ae", sd)
    assert info.value.code == "vae_wrong_arch"


# -- pairing ----------------------------------------------------------------------------------
def test_a_transformer_without_its_parts_names_each_missing_file(tmp_path: Path):
    flux2_bfl(tmp_path / "diffusion_models" / "flux-2-klein-4b.safetensors")
    (tmp_path / "checkpoints").mkdir()
    lib = _library(tmp_path)
    assert lib.items("checkpoint") == []
    assert _refusal(lib, "flux-2-klein-4b") == (
        "FLUX.2 [klein] 4B needs the Qwen3-4B text encoder (qwen_3_4b.safetensors) in "
        "text_encoders/ and the FLUX.2 VAE (flux2-vae.safetensors) in vae/ (see docs/models.md)."
    )
    qwen3(tmp_path / "text_encoders" / "qwen_3_8b.safetensors", 4096)  # the 9B's encoder: no fit
    kl_vae(tmp_path / "vae" / "flux2-vae.safetensors", 32, bn=True)
    lib = _library(tmp_path)
    assert _refusal(lib, "flux-2-klein-4b") == (
        "FLUX.2 [klein] 4B needs the Qwen3-4B text encoder (qwen_3_4b.safetensors) in "
        "text_encoders/ (see docs/models.md)."
    )
    encoder = qwen3(tmp_path / "text_encoders" / "qwen_3_4b.safetensors", 2560)
    registry = ModelRegistry(tmp_path)
    [info] = registry.models
    assert (info.arch, info.variant, info.format) == ("flux2", "klein", "parts")
    assert dict(info.parts) == {
        "transformer": str(tmp_path / "diffusion_models" / "flux-2-klein-4b.safetensors"),
        "text_encoder": str(encoder),
        "vae": str(tmp_path / "vae" / "flux2-vae.safetensors"),
    }
    assert info.spec.default_steps == 4 and info.label == "flux-2-klein-4b (FLUX.2 [klein])"


def test_each_family_is_paired_in_a_comfyui_folder(tmp_path: Path):
    d, te, v = tmp_path / "diffusion_models", tmp_path / "text_encoders", tmp_path / "vae"
    (tmp_path / "checkpoints").mkdir()
    sd3_original(d / "sd3.5_large.safetensors", layers=38, prefix="")
    flux1_bfl(d / "flux1-dev.safetensors")
    zimage_original(d / "z_image_turbo_bf16.safetensors")
    qwen_image(d / "qwen_image_fp8_e4m3fn.safetensors")
    clip_text(te / "clip_l.safetensors", 768)
    clip_text(te / "clip_g.safetensors", 1280)
    t5(te / "t5xxl_fp16.safetensors")
    t5(te / "t5xxl_fp8_e4m3fn.safetensors")
    qwen3(te / "qwen_3_4b.safetensors")
    qwen25vl(te / "qwen_2.5_vl_7b.safetensors")
    kl_vae(v / "ae.safetensors")
    kl_vae(v / "sd3_vae.safetensors")
    wan_vae(v / "qwen_image_vae.safetensors")
    registry = ModelRegistry(tmp_path)
    parts = {m.name: {c: Path(p).name for c, p in m.parts if c != "transformer"} for m in registry.models}
    assert parts == {
        "sd3.5_large": {"text_encoder": "clip_l.safetensors", "text_encoder_2": "clip_g.safetensors",
                        "text_encoder_3": "t5xxl_fp16.safetensors", "vae": "sd3_vae.safetensors"},
        "flux1-dev": {"text_encoder": "clip_l.safetensors", "text_encoder_2": "t5xxl_fp16.safetensors",
                      "vae": "ae.safetensors"},
        "z_image_turbo_bf16": {"text_encoder": "qwen_3_4b.safetensors", "vae": "ae.safetensors"},
        "qwen_image_fp8_e4m3fn": {"text_encoder": "qwen_2.5_vl_7b.safetensors",
                                  "vae": "qwen_image_vae.safetensors"},
    }
    assert {m.format for m in registry.models} == {"parts"}


def test_of_several_fitting_parts_the_one_sharing_the_most_words_is_chosen(tmp_path: Path):
    flux1_bfl(tmp_path / "diffusion_models" / "flux1-dev-fp8.safetensors")
    clip_text(tmp_path / "text_encoders" / "clip_l.safetensors", 768)
    t5(tmp_path / "text_encoders" / "t5xxl_fp16.safetensors")
    t5(tmp_path / "text_encoders" / "t5xxl_fp8_e4m3fn.safetensors")
    kl_vae(tmp_path / "vae" / "ae.safetensors")
    kl_vae(tmp_path / "vae" / "sd3_vae.safetensors")  # names another family: not FLUX's first pick
    [info] = ModelRegistry(tmp_path).models
    assert info.part("text_encoder_2").name == "t5xxl_fp8_e4m3fn.safetensors"
    assert info.part("vae").name == "ae.safetensors"


def test_forge_layout(tmp_path: Path):
    models = tmp_path / "models"
    (models / "Lora").mkdir(parents=True)
    flux1_bfl(models / "Stable-diffusion" / "flux1-dev.safetensors")
    zimage_original(models / "Stable-diffusion" / "z_image_turbo.safetensors")
    clip_text(models / "text_encoder" / "clip_l.safetensors", 768)
    t5(models / "text_encoder" / "t5xxl_fp16.safetensors")
    kl_vae(models / "VAE" / "ae.safetensors")
    lib = _library(models)
    assert _checkpoint(lib, "flux1-dev").detail["format"] == "parts"
    assert _refusal(lib, "z_image_turbo") == (
        "Z-Image Turbo needs the Qwen3-4B text encoder (qwen_3_4b.safetensors) in text_encoder/ "
        "(see docs/models.md)."
    )


def test_all_in_one_checkpoints_use_their_own_parts(tmp_path: Path):
    ck = tmp_path / "checkpoints"
    extra = {**clip_text(None, 768, "text_encoders.clip_l.transformer."),
             **clip_text(None, 1280, "text_encoders.clip_g.transformer."),
             **t5(None, prefix="text_encoders.t5xxl.transformer."),
             **kl_vae(None, 16, "first_stage_model.")}
    path = sd3_original(ck / "sd3.5_large_incl_clips_t5xxlfp8.safetensors", layers=38, extra=extra)
    flux = {**{P + k: v for k, v in {
        "double_blocks.0.img_attn.norm.key_norm.scale": [128], "img_in.weight": [8, 64],
        "txt_in.weight": [8, 4096], "vector_in.in_layer.weight": [8, 768],
        "final_layer.linear.weight": [64, 8], "guidance_in.in_layer.weight": [8, 256]}.items()},
        **clip_text(None, 768, "text_encoders.clip_l.transformer."),
        **t5(None, prefix="text_encoders.t5xxl.transformer."),
        **kl_vae(None, 16, "vae.")}
    flux_path = write_header_file(ck / "flux1-dev-fp8.safetensors", flux)
    lib = _library(tmp_path)
    sd3 = _checkpoint(lib, "sd3.5_large_incl_clips_t5xxlfp8")
    assert sd3.arch == "sd3" and sd3.detail["format"] == "single-file"
    assert {c: p for c, p in sd3.detail["parts"]} == {
        c: str(path) for c in ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae")
    }
    assert sd3.detail["part_prefixes"] == {
        "text_encoder": "text_encoders.clip_l.transformer.text_model.",
        "text_encoder_2": "text_encoders.clip_g.transformer.text_model.",
        "text_encoder_3": "text_encoders.t5xxl.transformer.",
        "vae": "first_stage_model.",
    }
    fl = _checkpoint(lib, "flux1-dev-fp8")
    assert (fl.detail["variant"], fl.detail["format"]) == ("dev", "single-file")
    assert fl.detail["part_prefixes"]["vae"] == "vae." and str(flux_path) in dict(fl.detail["parts"]).values()


def test_an_all_in_one_missing_t5_takes_it_from_text_encoders(tmp_path: Path):
    extra = {**clip_text(None, 768, "text_encoders.clip_l.transformer."),
             **clip_text(None, 1280, "text_encoders.clip_g.transformer."),
             **kl_vae(None, 16, "first_stage_model.")}
    path = sd3_original(tmp_path / "checkpoints" / "sd3.5_medium_incl_clips.safetensors", extra=extra)
    t5xxl = t5(None)
    write_header_file(tmp_path / "text_encoders" / "t5xxl_fp16.safetensors", t5xxl)
    item = _checkpoint(_library(tmp_path), "sd3.5_medium_incl_clips")
    parts = dict(item.detail["parts"])
    assert item.detail["format"] == "parts" and parts["text_encoder"] == str(path)
    assert parts["text_encoder_3"] == str(tmp_path / "text_encoders" / "t5xxl_fp16.safetensors")


# -- GGUF -------------------------------------------------------------------------------------
def test_gguf_transformers_from_their_tensor_table(tmp_path: Path):
    import numpy as np
    import torch

    unet = tmp_path / "unet"
    names = {"double_blocks.0.img_attn.norm.key_norm.scale": (128,), "img_in.weight": (8, 64),
             "txt_in.weight": (8, 4096), "vector_in.in_layer.weight": (8, 768),
             "final_layer.linear.weight": (64, 8), "guidance_in.in_layer.weight": (8, 256)}
    save_gguf({k: torch.from_numpy(np.zeros(s, np.float32)) for k, s in names.items()},
              unet / "flux1-dev-Q4_K_S.gguf", "flux")
    (unet / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    # a header that claims 2**40 tensors is refused before any parsing
    (unet / "huge.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + (2**40).to_bytes(8, "little") + bytes(64))
    clip_text(tmp_path / "clip" / "clip_l.safetensors", 768)
    t5(tmp_path / "clip" / "t5xxl_fp16.safetensors")
    kl_vae(tmp_path / "vae" / "ae.safetensors")
    lib = _library(tmp_path)
    [item] = lib.items("diffusion_model")
    assert (item.arch, item.detail["variant"], item.detail["format"]) == ("flux1", "dev", "gguf")
    assert item.detail["gguf_architecture"] == "flux"
    assert item.detail["needs"] == {"context": 4096, "pooled": 768}  # torch's shape order
    assert _checkpoint(lib, "flux1-dev-Q4_K_S").detail["format"] == "gguf"
    assert "not a valid GGUF file" in _refusal(lib, "broken", "diffusion_model")
    assert "too many entries" in _refusal(lib, "huge", "diffusion_model")


def test_tiny_gguf_and_parts_of_every_family_pair(tmp_path: Path):
    for arch in ("sd3", "flux1", "flux2", "zimage", "qwenimage"):
        root = tmp_path / arch
        save_family(root, arch, fmt="gguf")
        [info] = ModelRegistry(root).models
        assert (info.arch, info.format) == (arch, "gguf")
        assert {c for c, _ in info.parts} >= {"transformer", "text_encoder", "vae"}


# -- obscura models ---------------------------------------------------------------------------
def test_obscura_models_lists_the_family_files(tmp_path: Path):
    from click.testing import CliRunner

    from webui.cli import main

    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    flux2_bfl(models / "diffusion_models" / "flux-2-klein-4b.safetensors")
    flux1_bfl(models / "diffusion_models" / "flux1-schnell.safetensors", guidance=False)
    qwen3(models / "text_encoders" / "qwen_3_4b.safetensors")
    kl_vae(models / "vae" / "flux2-vae.safetensors", 32, bn=True)
    result = CliRunner().invoke(
        main, ["models", "--models-dir", str(models), "--data-dir", str(tmp_path / "d")],
        catch_exceptions=False,
    )
    out = result.output
    assert result.exit_code == 0, out
    assert "flux-2-klein-4b (FLUX.2 [klein])  [parts]" in out
    assert "Diffusion models (transformer files) (2):" in out and "Text encoders (1):" in out
    assert "qwen_3_4b  (qwen3-4b, width 2560)" in out
    assert "FLUX.1 [schnell] needs the CLIP-L text encoder" in out


# -- shipped configs (core/configs/<arch>-<variant>/, JSON only) ---------------------------------
CONFIGS = Path(__file__).resolve().parents[2] / "core" / "configs"


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_every_family_variant_has_a_shipped_config_folder():
    from core.family_detect import FLOW_PIPELINES
    from core.registry import VARIANT_SPECS, ModelInfo

    for arch, variant in VARIANT_SPECS:
        if (arch, variant) == ("flux2", "dev"):
            continue  # FLUX.2 [dev] (Mistral text encoder): diffusers folders only
        sizes = ("4B", "9B") if arch == "flux2" else ("",)
        for size in sizes:
            info = ModelInfo("m", Path("m"), arch, variant, "parts", size=size)
            folder = CONFIGS / info.config_name
            index = _json(folder / "model_index.json")
            cls = index["_class_name"]
            assert FLOW_PIPELINES[cls][0] == arch and FLOW_PIPELINES[cls][1] in (None, variant), folder
            assert (folder / "scheduler" / "scheduler_config.json").is_file()
            for component, spec in index.items():
                if component.startswith(("text_encoder", "transformer", "vae")) and spec[0]:
                    assert (folder / component / "config.json").is_file(), (folder, component)
    assert not [p for p in CONFIGS.rglob("*") if p.is_file() and p.suffix not in
                (".json", ".md", ".py", ".gz", ".txt", "")], "configs are data only"


def test_shipped_configs_fit_the_widths_detection_pairs_by():
    """The transformer takes what its text encoders give and the VAE's latent channels."""
    def cfg(name: str, component: str) -> dict:
        return _json(CONFIGS / name / component / "config.json")

    for name in ("flux1-schnell", "flux1-dev", "flux1-fill", "flux1-kontext"):
        t = cfg(name, "transformer")
        assert t["joint_attention_dim"] == cfg(name, "text_encoder_2")["d_model"] == 4096
        assert t["pooled_projection_dim"] == cfg(name, "text_encoder")["hidden_size"] == 768
        assert (t["out_channels"] or t["in_channels"]) == 4 * cfg(name, "vae")["latent_channels"]
    assert cfg("flux1-schnell", "transformer")["guidance_embeds"] is False
    assert cfg("flux1-dev", "transformer")["guidance_embeds"] is True
    for name in ("sd3-medium", "sd3-large", "sd3-large-turbo"):
        t = cfg(name, "transformer")
        assert t["pooled_projection_dim"] == (
            cfg(name, "text_encoder")["projection_dim"] + cfg(name, "text_encoder_2")["projection_dim"]
        )
        assert t["joint_attention_dim"] == cfg(name, "text_encoder_3")["d_model"]
        assert t["in_channels"] == cfg(name, "vae")["latent_channels"] == 16
    assert cfg("sd3-medium", "transformer")["num_layers"] == 24
    assert cfg("sd3-large", "transformer")["num_layers"] == 38
    for name, width in (("flux2-klein", 2560), ("flux2-klein-base", 2560), ("flux2-klein-9b", 4096)):
        t = cfg(name, "transformer")
        assert t["joint_attention_dim"] == 3 * cfg(name, "text_encoder")["hidden_size"] == 3 * width
        assert t["in_channels"] == 4 * cfg(name, "vae")["latent_channels"] == 128
        assert t["guidance_embeds"] is False
    assert _json(CONFIGS / "flux2-klein" / "model_index.json")["is_distilled"] is True
    assert _json(CONFIGS / "flux2-klein-base" / "model_index.json")["is_distilled"] is False
    for name in ("zimage-turbo", "zimage-base"):
        assert cfg(name, "transformer")["cap_feat_dim"] == cfg(name, "text_encoder")["hidden_size"]
        assert cfg(name, "vae")["scaling_factor"] == 0.3611  # FLUX.1's ae
    for name in ("qwenimage-base", "qwenimage-edit", "qwenimage-edit-plus"):
        text = cfg(name, "text_encoder")
        hidden = text.get("text_config", text)["hidden_size"]
        assert cfg(name, "transformer")["joint_attention_dim"] == hidden == 3584
        assert cfg(name, "vae")["z_dim"] == 16


def test_shipped_configs_build_models_of_the_published_sizes():
    """Built empty (no memory) from the shipped JSON: the parameter counts the model cards
    publish (FLUX.1 12B, FLUX.2 [klein] 4B / 9B, Z-Image 6B, Qwen3-4B 4B)."""
    import diffusers
    import transformers
    from accelerate import init_empty_weights

    def count(name: str, component: str) -> float:
        lib, cls = _json(CONFIGS / name / "model_index.json")[component]
        folder = str(CONFIGS / name / component)
        with init_empty_weights():
            if lib == "diffusers":
                c = getattr(diffusers, cls)
                model = c.from_config(c.load_config(folder))
            else:
                config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
                model = getattr(transformers, cls)(config)
        return sum(p.numel() for p in model.parameters()) / 1e9

    assert 11.8 < count("flux1-dev", "transformer") < 12.0
    assert 3.8 < count("flux2-klein", "transformer") < 4.0
    assert 9.0 < count("flux2-klein-9b", "transformer") < 9.2
    assert 6.1 < count("zimage-turbo", "transformer") < 6.2
    assert 4.0 < count("zimage-turbo", "text_encoder") < 4.1


# -- tokenizers (core/family_tokenizers.py) -----------------------------------------------------
def test_tokenizers_are_found_in_a_comfyui_install_and_give_the_files_ids(tmp_path: Path):
    import gzip

    from family_files import qwen_tokenizer, t5_tokenizer

    from core.family_tokenizers import family_tokenizers, load_tokenizer

    install = tmp_path / "ComfyUI"
    models = install / "models"
    (models / "checkpoints").mkdir(parents=True)
    t5_source, qwen_source = t5_tokenizer(), qwen_tokenizer()
    t5_dir = install / "comfy" / "text_encoders" / "t5_tokenizer"
    qwen_dir = install / "comfy" / "text_encoders" / "qwen25_tokenizer"
    t5_source.save_pretrained(str(t5_dir))
    qwen_source.save_pretrained(str(qwen_dir))
    # ComfyUI's copy is vocab.json + merges.txt + tokenizer_config.json (any of them gzipped)
    model = json.loads((qwen_dir / "tokenizer.json").read_text())["model"]
    (qwen_dir / "vocab.json").write_text(json.dumps(model["vocab"]))
    merges = "#version: 0.2\n" + "".join(" ".join(m) + "\n" for m in model["merges"])
    (qwen_dir / "merges.txt.gz").write_bytes(gzip.compress(merges.encode()))
    (qwen_dir / "tokenizer.json").unlink()
    (qwen_dir / "chat_template.jinja").unlink()
    t5 = load_tokenizer("t5", models)
    assert t5("a dog").input_ids == t5_source("a dog").input_ids
    qwen = load_tokenizer("qwen2", models)
    assert qwen("a dog <|im_start|>").input_ids == qwen_source("a dog <|im_start|>").input_ids
    text = qwen.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                    add_generation_prompt=True, enable_thinking=False)
    assert text.startswith("<|im_start|>user\nhi<|im_end|>") and "<think>" in text
    assert set(family_tokenizers("sd3", models)) == {"tokenizer", "tokenizer_2", "tokenizer_3"}
    clip = family_tokenizers("flux1", models)["tokenizer"]
    assert clip("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_tokenizers_come_from_a_diffusers_folder_of_the_family(tmp_path: Path):
    from family_files import t5_tokenizer

    from core.family_tokenizers import load_tokenizer

    folder = tmp_path / "FLUX.1-schnell"
    save_family(folder, "flux1", "schnell", fmt="diffusers")
    assert load_tokenizer("t5", tmp_path, [folder])("a dog").input_ids == t5_tokenizer()("a dog").input_ids


def test_a_missing_tokenizer_says_which_file(tmp_path: Path):
    from core.errors import ModelError
    from core.family_tokenizers import load_tokenizer

    with pytest.raises(ModelError) as info:
        load_tokenizer("qwen2", tmp_path / "models")
    assert info.value.code == "tokenizer_missing"
    assert "Qwen2.5/Qwen3 tokenizer (vocab.json and merges.txt)" in info.value.message


# -- transformer config from the header ---------------------------------------------------------
@pytest.mark.parametrize(
    ("arch", "variant"),
    [("sd3", "medium"), ("sd3", "large"), ("flux1", "schnell"), ("flux1", "fill"),
     ("flux2", "klein"), ("zimage", "turbo"), ("qwenimage", "base")],
)
def test_the_header_settles_the_transformer_config(tmp_path: Path, arch: str, variant: str):
    from family_files import build_components

    save_family(tmp_path, arch, variant, fmt="parts")
    (tmp_path / "checkpoints").mkdir()
    [info] = ModelRegistry(tmp_path).models
    derived = info.transformer_config
    real = dict(build_components(arch, variant)["transformer"].config)
    assert len(derived) >= 6
    for key, value in derived.items():
        want = real[key]
        want = list(want) if isinstance(want, tuple) else want
        if key == "out_channels" and want is None:
            want = real["in_channels"]
        assert value == want, (key, value, want)


def test_the_header_settles_flux1_depth_and_widths_in_bfl_names(tmp_path: Path):
    shapes = {
        "img_in.weight": [3072, 64], "txt_in.weight": [3072, 4096],
        "vector_in.in_layer.weight": [3072, 768], "final_layer.linear.weight": [64, 3072],
        "guidance_in.in_layer.weight": [3072, 256],
    }
    shapes.update({f"double_blocks.{i}.img_attn.norm.key_norm.scale": [128] for i in range(8)})
    shapes.update({f"single_blocks.{i}.linear1.weight": [4, 4] for i in range(20)})  # a "lite" FLUX
    write_header_file(tmp_path / "diffusion_models" / "flux.1-lite-8B.safetensors", shapes)
    [item] = _library(tmp_path).items("diffusion_model")
    assert item.detail["config"] == {
        "in_channels": 64, "attention_head_dim": 128, "num_attention_heads": 24, "num_layers": 8,
        "num_single_layers": 20, "out_channels": 64, "joint_attention_dim": 4096,
        "guidance_embeds": True, "pooled_projection_dim": 768,
    }
    shipped = _json(CONFIGS / "flux1-dev" / "transformer" / "config.json")
    assert {k: shipped[k] for k in ("num_attention_heads", "joint_attention_dim", "attention_head_dim")} == {
        "num_attention_heads": 24, "joint_attention_dim": 4096, "attention_head_dim": 128}


def test_a_q8_gguf_reads_the_same_shapes_as_its_f32_twin(tmp_path: Path):
    save_family(tmp_path / "f32", "flux1", "dev", fmt="gguf")
    save_family(tmp_path / "q8", "flux1", "dev", fmt="gguf", quant="Q8_0")
    [f32] = _library(tmp_path / "f32").items("diffusion_model")
    [q8] = _library(tmp_path / "q8").items("diffusion_model")
    assert q8.detail["quantization"] == ["F32", "Q8_0"] and f32.detail["quantization"] == ["F32"]
    assert q8.detail["config"] == f32.detail["config"] and q8.detail["needs"] == f32.detail["needs"]


def test_an_all_in_one_z_image_uses_its_own_qwen3(tmp_path: Path):
    shapes = {P + k: v for k, v in {
        "layers.0.adaLN_modulation.0.weight": [24, 8], "cap_embedder.1.weight": [8, 2560],
        "x_embedder.weight": [8, 64]}.items()}
    shapes.update({f"text_encoders.qwen3_4b.transformer.{k}": v for k, v in {
        "model.embed_tokens.weight": [10, 2560], "model.layers.0.self_attn.q_proj.weight": [4, 2560],
        "model.layers.0.self_attn.q_norm.weight": [128]}.items()})
    shapes.update(kl_vae(None, 16, "vae."))
    path = write_header_file(tmp_path / "checkpoints" / "z_image_turbo_aio.safetensors", shapes)
    item = _checkpoint(_library(tmp_path), "z_image_turbo_aio")
    assert item.detail["format"] == "single-file"
    assert dict(item.detail["parts"]) == {c: str(path) for c in ("transformer", "text_encoder", "vae")}
    assert item.detail["part_prefixes"]["text_encoder"] == "text_encoders.qwen3_4b.transformer.model."


def test_a_vae_named_for_another_family_is_not_paired(tmp_path: Path):
    """FLUX.1's ae and SD 3.5's VAE have the same shapes but not the same weights."""
    sd3_original(tmp_path / "diffusion_models" / "sd3.5_large.safetensors", layers=38, prefix="")
    clip_text(tmp_path / "text_encoders" / "clip_l.safetensors", 768)
    clip_text(tmp_path / "text_encoders" / "clip_g.safetensors", 1280)
    t5(tmp_path / "text_encoders" / "t5xxl_fp16.safetensors")
    kl_vae(tmp_path / "vae" / "ae.safetensors")
    lib = _library(tmp_path)
    assert "the SD 3.5 VAE" in _refusal(lib, "sd3.5_large")
    kl_vae(tmp_path / "vae" / "diffusion_pytorch_model.safetensors")  # a name for no family
    assert _checkpoint(_library(tmp_path), "sd3.5_large").detail["part_names"]["vae"] == (
        "diffusion_pytorch_model"
    )


def test_the_shipped_t5_tokenizer_is_the_published_one_and_loads_offline(tmp_path: Path):
    """core/configs/tokenizers/t5 is FLUX.1's published tokenizer_2/tokenizer.json (google's
    T5 v1.1 vocabulary), byte for byte; with no copy of the owner's it is the one used."""
    import gzip
    import hashlib

    from netguard import network_guard

    from core.family_tokenizers import load_tokenizer, shipped_folder

    raw = gzip.decompress((shipped_folder("t5") / "tokenizer.json.gz").read_bytes())
    assert hashlib.sha256(raw).hexdigest() == (
        "6cd1badb7467cdab971403bbeb1945070ca385652385a2b6549f672b08089dfc"
    )
    vocab = json.loads(raw)["model"]["vocab"]
    assert len(vocab) == 32100
    with network_guard() as attempts:
        t5 = load_tokenizer("t5", tmp_path / "models")
        ids = t5("a photo of a cat").input_ids
    assert attempts == []
    # The pieces of the published vocabulary: "▁" 3, "a" 9, "▁photo" 1202, "▁of" 13, "▁cat" 1712.
    assert ids == [3, 9, 1202, 13, 3, 9, 1712, 1]
    assert [vocab[i][0] for i in ids[:-1]] == ["▁", "a", "▁photo", "▁of", "▁", "a", "▁cat"]
