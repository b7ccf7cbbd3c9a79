"""Tiny model files with the tensor names the real tools write, built in code (no downloads).

Kohya's sd-scripts LoRAs, A1111 / SDXL embeddings, LDM VAEs, ESRGAN-family upscalers, LDM
checkpoints. Shapes are tiny except the one dimension that tells architectures apart (768 / 1024
/ 2048 wide cross-attention, 768 / 1024 / 1280 wide text encoders). Used by tests/core.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors.torch import save_file


class _Trap:
    """Unpickling this creates a file: proof that something opened the pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


# -- the files, with real key names -----------------------------------------------------------
def sd_checkpoint(path: Path, arch: str = "sd1") -> Path:
    text = {
        "sd1": "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
        "sdxl": "conditioner.embedders.1.model.ln_final.weight",
    }[arch]
    tensors = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3),
        text: torch.zeros(2),
    }
    if arch == "sdxl":
        tensors["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"] = torch.zeros(2)
    return _save(path, tensors)


def kohya_lora(path: Path, arch: str = "sd1", *, unet: bool = True, metadata=None) -> Path:
    """A Kohya (sd-scripts) LoRA: lora_unet_* / lora_te_* (lora_te1_/lora_te2_ for SDXL)."""
    context = {"sd1": 768, "sd2": 1024, "sdxl": 2048}[arch]
    tensors: dict[str, torch.Tensor] = {}
    if unet:
        block = (
            "input_blocks_4_1" if arch == "sdxl" else "down_blocks_0_attentions_0"
        )
        base = f"lora_unet_{block}_transformer_blocks_0_attn2_to_k"
        tensors[f"{base}.lora_down.weight"] = torch.zeros(1, context)
        tensors[f"{base}.lora_up.weight"] = torch.zeros(8, 1)
        tensors[f"{base}.alpha"] = torch.tensor(1.0)
    encoders = (
        [("lora_te1_", 768), ("lora_te2_", 1280)]
        if arch == "sdxl"
        else [("lora_te_", context if arch == "sd2" else 768)]
    )
    for prefix, width in encoders:
        base = f"{prefix}text_model_encoder_layers_0_self_attn_q_proj"
        tensors[f"{base}.lora_down.weight"] = torch.zeros(1, width)
        tensors[f"{base}.lora_up.weight"] = torch.zeros(width, 1)
    return _save(path, tensors, metadata)


def peft_lora(path: Path, context: int = 768) -> Path:
    """A diffusers/PEFT LoRA (what `save_lora_weights` writes)."""
    base = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    return _save(
        path,
        {f"{base}.lora_A.weight": torch.zeros(1, context), f"{base}.lora_B.weight": torch.zeros(8, 1)},
    )


def lycoris(path: Path, kind: str) -> Path:
    base = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    names = {"loha": ["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"], "lokr": ["lokr_w1", "lokr_w2"]}
    return _save(path, {f"{base}.{n}": torch.zeros(2, 2) for n in names[kind]})


def embedding(path: Path, arch: str = "sd1", vectors: int = 2) -> Path:
    if arch == "sdxl":
        return _save(path, {"clip_l": torch.zeros(vectors, 768), "clip_g": torch.zeros(vectors, 1280)})
    width = {"sd1": 768, "sd2": 1024}[arch]
    return _save(path, {"emb_params": torch.zeros(vectors, width)})  # A1111's safetensors form


def ldm_vae(path: Path, latent_channels: int = 4) -> Path:
    return _save(
        path,
        {
            "encoder.conv_in.weight": torch.zeros(8, 3, 3, 3),
            "encoder.down.0.block.0.conv1.weight": torch.zeros(8, 8, 3, 3),
            "decoder.conv_in.weight": torch.zeros(8, latent_channels, 3, 3),
            "decoder.up.0.block.0.conv1.weight": torch.zeros(8, 8, 3, 3),
        },
    )


def esrgan_old(path: Path) -> Path:  # the original ESRGAN layout (4x_*.pth community models)
    return _save(
        path,
        {
            "model.0.weight": torch.zeros(4, 3, 3, 3),
            "model.1.sub.0.RDB1.conv1.0.weight": torch.zeros(4, 4, 3, 3),
            "model.10.weight": torch.zeros(3, 4, 3, 3),
        },
    )


def rrdbnet(path: Path, ups: int = 2) -> Path:  # BasicSR RRDBNet: RealESRGAN_x4plus
    tensors = {
        "conv_first.weight": torch.zeros(4, 3, 3, 3),
        "body.0.rdb1.conv1.weight": torch.zeros(4, 4, 3, 3),
        "conv_body.weight": torch.zeros(4, 4, 3, 3),
        "conv_last.weight": torch.zeros(3, 4, 3, 3),
    }
    for index in range(1, ups + 1):
        tensors[f"conv_up{index}.weight"] = torch.zeros(4, 4, 3, 3)
    return _save(path, tensors)


def compact(path: Path, scale: int = 4) -> Path:  # SRVGGNetCompact (realesr-general-x4v3)
    return _save(
        path,
        {
            "body.0.weight": torch.zeros(4, 3, 3, 3),
            "body.0.bias": torch.zeros(4),
            "body.1.weight": torch.zeros(4),  # PReLU
            "body.2.weight": torch.zeros(3 * scale * scale, 4, 3, 3),
            "body.2.bias": torch.zeros(3 * scale * scale),
        },
    )


def swinir(path: Path) -> Path:
    block = "layers.0.residual_group.blocks.0"
    return _save(
        path,
        {
            "conv_first.weight": torch.zeros(4, 3, 3, 3),
            f"{block}.norm1.weight": torch.zeros(4),
            f"{block}.attn.relative_position_index": torch.zeros(4, 4),
            f"{block}.mlp.fc1.bias": torch.zeros(4),
        },
    )


def dat(path: Path) -> Path:
    return _save(
        path,
        {
            "conv_first.weight": torch.zeros(4, 3, 3, 3),
            "before_RG.1.weight": torch.zeros(4),
            "before_RG.1.bias": torch.zeros(4),
            "layers.0.blocks.0.ffn.fc1.weight": torch.zeros(4, 4),
        },
    )


def pickle_trap(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(_Trap(marker)))
    return path
