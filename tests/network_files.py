"""Tiny LoRA and VAE files made in code, for the demo models (tests and bench/lora.py).

A LoRA here is a real Kohya/A1111-format ``.safetensors`` file: ``lora_unet_*`` / ``lora_te_*``
(SDXL: ``lora_te1_*`` and ``lora_te2_*``) keys with ``.lora_down.weight``, ``.lora_up.weight``
and ``.alpha``, named after the demo pipeline's own layers the way kohya's sd-scripts names them.
A VAE is an ``AutoencoderKL`` of the demo model's shape with other (seeded) weights, saved with
diffusers' tensor names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def _sgm(name: str, layers_per_block: int) -> str:
    """A diffusers UNet module name as kohya names SDXL's (the original LDM/SGM UNet's)."""
    parts = name.split(".")
    if parts[0] == "down_blocks" and parts[2] == "attentions":
        index = 1 + int(parts[1]) * (layers_per_block + 1) + int(parts[3])
        return ".".join(["input_blocks", str(index), "1", *parts[4:]])
    if parts[0] == "up_blocks" and parts[2] == "attentions":
        index = int(parts[1]) * (layers_per_block + 1) + int(parts[3])
        return ".".join(["output_blocks", str(index), "1", *parts[4:]])
    if parts[0] == "mid_block" and parts[1] == "attentions":
        return ".".join(["middle_block", "1", *parts[3:]])
    return name


def kohya_lora(
    pipe: Any,
    seed: int = 1,
    rank: int = 4,
    scale: float = 0.5,
    unet: bool = True,
    text_encoder: bool = True,
    sgm: bool = False,
) -> dict[str, torch.Tensor]:
    """A Kohya-format LoRA state dict for ``pipe``'s UNet and text encoder(s); ``sgm`` names
    the UNet's blocks the way kohya names SDXL's (``input_blocks_4_1_...``)."""
    generator = torch.Generator().manual_seed(seed)
    parts: list[tuple[str, Any]] = []
    if unet:
        parts.append(("lora_unet", pipe.unet))
    if text_encoder:
        if getattr(pipe, "text_encoder_2", None) is not None:
            parts += [("lora_te1", pipe.text_encoder), ("lora_te2", pipe.text_encoder_2)]
        else:
            parts.append(("lora_te", pipe.text_encoder))
    state: dict[str, torch.Tensor] = {}
    for prefix, model in parts:
        if any(".base_layer" in name for name, _ in model.named_modules()):
            raise ValueError("this pipeline has had a LoRA loaded; build a fresh one")
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and name.endswith(_TARGETS):
                if sgm and prefix == "lora_unet":
                    name = _sgm(name, int(model.config.layers_per_block))
                key = f"{prefix}_{name.replace('.', '_')}"
                down = torch.randn(rank, module.in_features, generator=generator) * scale
                up = torch.randn(module.out_features, rank, generator=generator) * scale
                state[f"{key}.lora_down.weight"] = down
                state[f"{key}.lora_up.weight"] = up
                state[f"{key}.alpha"] = torch.tensor(float(rank))
    return state


def loha(pipe: Any) -> dict[str, torch.Tensor]:
    """A LyCORIS LoHa state dict (diffusers cannot load these)."""
    state: dict[str, torch.Tensor] = {}
    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    for part in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"):
        state[f"{key}.{part}"] = torch.zeros(4, 4)
    state[f"{key}.alpha"] = torch.tensor(4.0)
    return state


def save_lora(path: Path, state: dict[str, torch.Tensor]) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def tiny_vae(pipe: Any, seed: int = 7, **changes: Any) -> dict[str, torch.Tensor]:
    """A VAE with the demo model's shape (or ``changes`` to its config) and other weights."""
    from diffusers import AutoencoderKL

    config = {**dict(pipe.vae.config), **changes}
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    torch.manual_seed(seed)
    vae = AutoencoderKL.from_config(config)
    return {k: v.contiguous() for k, v in vae.state_dict().items()}


def peft_format(pipe: Any, kohya: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same LoRA as diffusers' ``save_lora_weights`` writes it (``unet.….lora_A.weight``).

    ``pipe`` keeps peft's wrapped layers afterwards: give it a pipeline of its own."""
    from peft.utils import get_peft_model_state_dict

    pipe.load_lora_weights(dict(kohya), adapter_name="convert")
    state: dict[str, torch.Tensor] = {}
    for part in ("unet", "text_encoder", "text_encoder_2"):
        model = getattr(pipe, part, None)
        if model is not None and "convert" in getattr(model, "peft_config", {}):
            for key, value in get_peft_model_state_dict(model, adapter_name="convert").items():
                state[f"{part}.{key}"] = value.detach().clone()
    pipe.delete_adapters("convert")
    return state


def embedding(width: int = 32, vectors: int = 2, seed: int = 3, sdxl: bool = False) -> dict[str, torch.Tensor]:
    """A textual-inversion embedding: A1111's ``emb_params``, or SDXL's ``clip_l`` + ``clip_g``."""
    generator = torch.Generator().manual_seed(seed)
    if sdxl:
        return {
            "clip_l": torch.randn(vectors, width, generator=generator),
            "clip_g": torch.randn(vectors, width, generator=generator),
        }
    return {"emb_params": torch.randn(vectors, width, generator=generator)}
