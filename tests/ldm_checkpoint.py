"""Write a diffusers SD 1.x pipeline as an original-format (LDM) single-file checkpoint.

Only for tests: real single-file checkpoints are too big to ship, so the slow/gpu tests build a
random-weight pipeline in the real shapes and save it under the original Stable Diffusion tensor
names, which is what people download. The naming follows the CompVis/Stability layout:
``model.diffusion_model.*`` (UNet), ``first_stage_model.*`` (VAE),
``cond_stage_model.transformer.*`` (CLIP ViT-L text encoder).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

_RESNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]


def _unet_name(name: str, layers_per_block: int = 2) -> str:
    fixed = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    for new, old in fixed.items():
        if name.startswith(new + "."):
            return old + name[len(new) :]
    match = re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", name)
    if match:
        block, kind, index, rest = int(match[1]), match[2], int(match[3]), match[4]
        slot = 1 + block * (layers_per_block + 1) + index
        return f"input_blocks.{slot}.{0 if kind == 'resnets' else 1}.{_resnet(rest) if kind == 'resnets' else rest}"
    match = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", name)
    if match:
        slot = (int(match[1]) + 1) * (layers_per_block + 1)
        return f"input_blocks.{slot}.0.op.{match[2]}"
    match = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", name)
    if match:
        kind, index, rest = match[1], int(match[2]), match[3]
        if kind == "attentions":
            return f"middle_block.1.{rest}"
        return f"middle_block.{0 if index == 0 else 2}.{_resnet(rest)}"
    match = re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", name)
    if match:
        block, kind, index, rest = int(match[1]), match[2], int(match[3]), match[4]
        slot = block * (layers_per_block + 1) + index
        return f"output_blocks.{slot}.{0 if kind == 'resnets' else 1}.{_resnet(rest) if kind == 'resnets' else rest}"
    raise KeyError(name)


def _resnet(rest: str) -> str:
    for new, old in _RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new) :]
    return rest


def _unet_state(unet: Any) -> dict[str, torch.Tensor]:
    state = unet.state_dict()
    out: dict[str, torch.Tensor] = {}
    has_attention = [
        any(k.startswith(f"up_blocks.{i}.attentions.") for k in state) for i in range(4)
    ]
    for name, tensor in state.items():
        match = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", name)
        if match:
            block = int(match[1])
            slot = block * 3 + 2
            out[
                f"model.diffusion_model.output_blocks.{slot}.{2 if has_attention[block] else 1}.conv.{match[2]}"
            ] = tensor
            continue
        out["model.diffusion_model." + _unet_name(name)] = tensor
    return out


def _vae_state(vae: Any) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    blocks = len(vae.config.block_out_channels)
    attention = {
        "group_norm": "norm",
        "to_q": "q",
        "to_k": "k",
        "to_v": "v",
        "to_out.0": "proj_out",
    }
    for name, tensor in vae.state_dict().items():
        new = name.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        new = re.sub(
            r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)", r"encoder.down.\1.block.\2", new
        )
        new = re.sub(
            r"encoder\.down_blocks\.(\d+)\.downsamplers\.0", r"encoder.down.\1.downsample", new
        )
        new = re.sub(
            r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)",
            lambda m: f"decoder.up.{blocks - 1 - int(m[1])}.block.{m[2]}",
            new,
        )
        new = re.sub(
            r"decoder\.up_blocks\.(\d+)\.upsamplers\.0",
            lambda m: f"decoder.up.{blocks - 1 - int(m[1])}.upsample",
            new,
        )
        new = new.replace("mid_block.resnets.0", "mid.block_1").replace(
            "mid_block.resnets.1", "mid.block_2"
        )
        if "mid_block.attentions.0." in new:
            rest = new.split("mid_block.attentions.0.")[1]
            for diffusers_name, ldm_name in attention.items():
                if rest.startswith(diffusers_name + "."):
                    rest = ldm_name + rest[len(diffusers_name) :]
                    break
            new = new.split("mid_block.attentions.0.")[0] + "mid.attn_1." + rest
            if tensor.ndim == 2:  # LDM keeps the VAE attention projections as 1x1 convolutions
                tensor = tensor[:, :, None, None]
        out["first_stage_model." + new] = tensor
    return out


def save_sd1_ldm_checkpoint(pipe: Any, path: Path) -> Path:
    """Save ``pipe`` (a StableDiffusionPipeline in SD 1.x shapes) as one LDM .safetensors file."""
    state = {**_unet_state(pipe.unet), **_vae_state(pipe.vae)}
    for name, tensor in pipe.text_encoder.state_dict().items():
        # Original files use the transformers 4 names (``text_model.`` prefix); transformers 5
        # dropped that prefix from CLIPTextModel's own state dict.
        name = name if name.startswith("text_model.") else "text_model." + name
        state["cond_stage_model.transformer." + name] = tensor
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path
