"""Tiny ControlNet, IP-Adapter and CLIP vision files made in code, in the real tools' formats.

Two sorts, both with the tensor names the real tools write:

* **Working** files that fit the demo models (core/demo.py: SD UNet cross-attention 32 wide,
  SDXL 64 wide, blocks (16, 32)), so a test can paint with them on a CPU:
  :func:`tiny_controlnet` (diffusers folder, or the same weights under A1111/LDM names),
  :func:`tiny_clip_vision` (a ``CLIPVisionModelWithProjection``, hidden 32, projection 24 — two
  widths, so plain and Plus adapters read different ones) and :func:`tiny_ip_adapter` (plain /
  Plus / FaceID, h94's safetensors names). A ControlNet made from a UNet has zero output convs
  (no effect at all); :func:`tiny_controlnet` un-zeroes them so it changes the picture.
* **Header** files with the real widths (768 / 2048 cross-attention, ViT-H / ViT-bigG) and tiny
  other dimensions, for detection tests only: :func:`header_controlnet`,
  :func:`header_ip_adapter`, :func:`header_clip_vision`, :func:`control_lora`, :func:`lllite`.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

TINY_CLIP = {"hidden": 32, "projection": 24, "layers": 2, "heads": 4, "image_size": 32, "patch": 8}
_DEMO_ARCH = {"sd1": "sd", "sdxl": "sdxl"}


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


@functools.lru_cache(maxsize=2)
def _demo_unet(arch: str) -> Any:
    from core.demo import build_demo_pipeline

    return build_demo_pipeline(_DEMO_ARCH[arch]).unet


def demo_cross_attention(arch: str) -> list[int]:
    """The hidden size of each cross-attention (attn2) layer of the demo UNet, in diffusers'
    attn_processors order: what an IP-Adapter's ip_adapter.1, .3, .5 ... layers must fit."""
    unet = _demo_unet(arch)
    channels = list(unet.config.block_out_channels)
    sizes = []
    for name in unet.attn_processors:
        if not name.endswith("attn2.processor"):
            continue
        if name.startswith("mid_block"):
            sizes.append(channels[-1])
        elif name.startswith("up_blocks"):
            sizes.append(list(reversed(channels))[int(name.split(".")[1])])
        else:
            sizes.append(channels[int(name.split(".")[1])])
    return sizes


# -- ControlNet -------------------------------------------------------------------------------
def _unzero(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(("controlnet_down_blocks.", "controlnet_mid_block.")) or (
                name.startswith("controlnet_cond_embedding.conv_out.")
            ):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


def build_controlnet(arch: str = "sd1", union: bool = False, seed: int = 11) -> Any:
    """A ControlNet(-Union) for the demo UNet of ``arch``, with outputs that are not zero."""
    from diffusers import ControlNetModel, ControlNetUnionModel

    unet = _demo_unet(arch)
    torch.manual_seed(seed)  # the condition embedding and Union's layers start random
    if union:
        if arch != "sdxl":
            raise ValueError("ControlNet-Union exists for SDXL only")
        made = ControlNetUnionModel.from_unet(unet, load_weights_from_unet=True)
        # from_unet keeps the real model's 320-wide control-type transformer; it must be as
        # wide as the demo UNet's first block
        width = int(unet.config.block_out_channels[0])
        config = {k: v for k, v in made.config.items() if k != "_use_default_values"}
        config.update(num_trans_channel=width, num_trans_head=2, num_proj_channel=width)
        model = ControlNetUnionModel.from_config(config)
        own = model.state_dict()
        model.load_state_dict(
            {k: v for k, v in made.state_dict().items() if k in own and own[k].shape == v.shape},
            strict=False,
        )
    else:
        model = ControlNetModel.from_unet(unet, load_weights_from_unet=True)
    _unzero(model, seed)
    if union:
        with torch.no_grad():  # spatial_ch_projs is zero-initialised too
            generator = torch.Generator().manual_seed(seed + 1)
            weight = model.spatial_ch_projs.weight
            weight.copy_(torch.randn(weight.shape, generator=generator) * 0.1)
    return model.eval()


def _ldm_name(key: str, layers_per_block: int, hint_blocks: int) -> str:
    """A diffusers ControlNet tensor name as the original cldm code (A1111's files) names it."""
    resnet = (
        ("norm1", "in_layers.0"),
        ("conv1", "in_layers.2"),
        ("time_emb_proj", "emb_layers.1"),
        ("norm2", "out_layers.0"),
        ("conv2", "out_layers.3"),
        ("conv_shortcut", "skip_connection"),
    )

    def resnet_part(rest: str) -> str:
        for old, new in resnet:
            if rest.startswith(old + "."):
                return new + rest[len(old) :]
        return rest

    fixed = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "add_embedding.linear_1.": "label_emb.0.0.",
        "add_embedding.linear_2.": "label_emb.0.2.",
        "conv_in.": "input_blocks.0.0.",
        "controlnet_mid_block.": "middle_block_out.0.",
        "controlnet_cond_embedding.conv_in.": "input_hint_block.0.",
        "controlnet_cond_embedding.conv_out.": f"input_hint_block.{2 * (hint_blocks + 1)}.",
    }
    for old, new in fixed.items():
        if key.startswith(old):
            return new + key[len(old) :]
    if m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.*)", key):
        return f"input_hint_block.{2 * (int(m.group(1)) + 1)}.{m.group(2)}"
    if m := re.match(r"controlnet_down_blocks\.(\d+)\.(.*)", key):
        return f"zero_convs.{m.group(1)}.0.{m.group(2)}"
    if m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        index = 1 + int(m.group(1)) * (layers_per_block + 1) + int(m.group(2))
        return f"input_blocks.{index}.0.{resnet_part(m.group(3))}"
    if m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
        index = 1 + int(m.group(1)) * (layers_per_block + 1) + int(m.group(2))
        return f"input_blocks.{index}.1.{m.group(3)}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        index = (int(m.group(1)) + 1) * (layers_per_block + 1)
        return f"input_blocks.{index}.0.op.{m.group(2)}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m.group(1))}.{resnet_part(m.group(2))}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m.group(1)}"
    raise ValueError(f"no LDM name for {key}")


def tiny_controlnet(
    path: Path, arch: str = "sd1", fmt: str = "diffusers", union: bool = False, seed: int = 11
) -> Path:
    """A working tiny ControlNet for the demo model of ``arch``.

    ``fmt="diffusers"``: ``path`` is a folder (config.json + diffusion_pytorch_model.safetensors,
    as diffusers saves it; the library names it after the folder) — returned is the folder.
    ``fmt="single"``: the same tensors in one ``.safetensors`` file, no config.
    ``fmt="ldm"``: one file with A1111/cldm names (``control_model.input_hint_block.0.weight``,
    ``zero_convs``, ``middle_block_out``...), which diffusers' ``from_single_file`` converts back.
    """
    model = build_controlnet(arch, union=union, seed=seed)
    path = Path(path)
    if fmt == "diffusers":
        model.save_pretrained(str(path), safe_serialization=True)
        return path
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if fmt == "single":
        return _save(path, state)
    if fmt == "ldm":
        if union:
            raise ValueError("ControlNet-Union files exist in the diffusers layout only")
        hint_blocks = len(model.controlnet_cond_embedding.blocks)
        layers = int(model.config.layers_per_block)
        return _save(
            path,
            {f"control_model.{_ldm_name(k, layers, hint_blocks)}": v for k, v in state.items()},
        )
    raise ValueError(f"fmt must be diffusers, single or ldm, not {fmt!r}")


# -- CLIP vision ------------------------------------------------------------------------------
def build_clip_vision(seed: int = 5, **changes: int) -> Any:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    dims = {**TINY_CLIP, **changes}
    config = CLIPVisionConfig(
        hidden_size=dims["hidden"],
        intermediate_size=dims["hidden"] * 2,
        num_hidden_layers=dims["layers"],
        num_attention_heads=dims["heads"],
        image_size=dims["image_size"],
        patch_size=dims["patch"],
        projection_dim=dims["projection"],
        hidden_act="gelu",
    )
    torch.manual_seed(seed)
    return CLIPVisionModelWithProjection(config).eval()


def tiny_clip_vision(path: Path, folder: bool = True, seed: int = 5, **changes: int) -> Path:
    """A tiny CLIP image encoder: a folder (config.json + model.safetensors, as h94's
    ``image_encoder/``) or, ``folder=False``, one ``.safetensors`` file (ComfyUI's clip_vision)."""
    model = build_clip_vision(seed, **changes)
    path = Path(path)
    if folder:
        model.save_pretrained(str(path), safe_serialization=True)
        return path
    return _save(path, {k: v.detach().clone() for k, v in model.state_dict().items()})


# -- IP-Adapter -------------------------------------------------------------------------------
def _randn(generator: torch.Generator, *shape: int, scale: float = 0.2) -> torch.Tensor:
    return torch.randn(*shape, generator=generator) * scale


def _layer_norm(state: dict[str, torch.Tensor], name: str, width: int) -> None:
    state[f"{name}.weight"] = torch.ones(width)
    state[f"{name}.bias"] = torch.zeros(width)


def tiny_ip_adapter(
    path: Path,
    variant: str = "plain",
    arch: str = "sd1",
    seed: int = 9,
    clip: dict[str, int] | None = None,
) -> Path:
    """A working tiny IP-Adapter for the demo model of ``arch`` and :func:`tiny_clip_vision`,
    with h94's safetensors names (``image_proj.*`` + ``ip_adapter.<n>.to_k_ip/to_v_ip``).

    ``variant``: "plain" (image_proj.proj + norm: 4 tokens from the projected embedding),
    "plus" (a 4-layer Resampler on the penultimate hidden states; also Plus-Face's shape), or
    "faceid" (an InsightFace-embedding MLP + to_k_lora layers: for refusal tests)."""
    dims = {**TINY_CLIP, **(clip or {})}
    generator = torch.Generator().manual_seed(seed)
    cross = int(_demo_unet(arch).config.cross_attention_dim)
    state: dict[str, torch.Tensor] = {}
    if variant == "plain":
        state["image_proj.proj.weight"] = _randn(generator, 4 * cross, dims["projection"])
        state["image_proj.proj.bias"] = torch.zeros(4 * cross)
        _layer_norm(state, "image_proj.norm", cross)
    elif variant == "plus":
        dim, queries = 64, 8  # diffusers reads heads as to_q rows // 64: the width is 64 at least
        state["image_proj.latents"] = _randn(generator, 1, queries, dim, scale=1.0)
        state["image_proj.proj_in.weight"] = _randn(generator, dim, dims["hidden"])
        state["image_proj.proj_in.bias"] = torch.zeros(dim)
        state["image_proj.proj_out.weight"] = _randn(generator, cross, dim)
        state["image_proj.proj_out.bias"] = torch.zeros(cross)
        _layer_norm(state, "image_proj.norm_out", cross)
        for layer in range(4):
            base = f"image_proj.layers.{layer}"
            _layer_norm(state, f"{base}.0.norm1", dim)
            _layer_norm(state, f"{base}.0.norm2", dim)
            state[f"{base}.0.to_q.weight"] = _randn(generator, dim, dim)
            state[f"{base}.0.to_kv.weight"] = _randn(generator, 2 * dim, dim)
            state[f"{base}.0.to_out.weight"] = _randn(generator, dim, dim)
            _layer_norm(state, f"{base}.1.0", dim)
            state[f"{base}.1.1.weight"] = _randn(generator, 4 * dim, dim)
            state[f"{base}.1.3.weight"] = _randn(generator, dim, 4 * dim)
    elif variant == "faceid":
        state["image_proj.proj.0.weight"] = _randn(generator, 2 * 512, 512)
        state["image_proj.proj.0.bias"] = torch.zeros(2 * 512)
        state["image_proj.proj.2.weight"] = _randn(generator, 4 * cross, 2 * 512)
        state["image_proj.proj.2.bias"] = torch.zeros(4 * cross)
        _layer_norm(state, "image_proj.norm", cross)
    else:
        raise ValueError(f"variant must be plain, plus or faceid, not {variant!r}")
    for index, hidden in enumerate(demo_cross_attention(arch)):
        key = 2 * index + 1
        state[f"ip_adapter.{key}.to_k_ip.weight"] = _randn(generator, hidden, cross)
        state[f"ip_adapter.{key}.to_v_ip.weight"] = _randn(generator, hidden, cross)
        if variant == "faceid":
            state[f"ip_adapter.{key}.to_k_lora.down.weight"] = _randn(generator, 4, hidden)
            state[f"ip_adapter.{key}.to_k_lora.up.weight"] = _randn(generator, hidden, 4)
    return _save(path, state)


# -- header files with the real widths (detection only) -------------------------------------
_CONTEXT = {"sd1": 768, "sd2": 1024, "sdxl": 2048}


def header_controlnet(path: Path, arch: str = "sd1", layout: str = "ldm", union: bool = False) -> Path:
    """A ControlNet's tell-tale tensors with the real cross-attention width of ``arch``."""
    context = _CONTEXT[arch]
    tensors: dict[str, torch.Tensor] = {}
    if layout == "ldm":
        prefix = "control_model."
        block = "input_blocks.4.1" if arch == "sdxl" else "input_blocks.1.1"
        tensors[f"{prefix}input_hint_block.0.weight"] = torch.zeros(16, 3, 3, 3)
        tensors[f"{prefix}zero_convs.0.0.weight"] = torch.zeros(4, 4, 1, 1)
        tensors[f"{prefix}middle_block_out.0.weight"] = torch.zeros(4, 4, 1, 1)
        tensors[f"{prefix}{block}.transformer_blocks.0.attn2.to_k.weight"] = torch.zeros(8, context)
        if arch == "sdxl":
            tensors[f"{prefix}label_emb.0.0.weight"] = torch.zeros(8, 16)
    elif layout == "fp16-ldm":  # the same without "control_model." (the fp16 safetensors re-packs)
        tensors["input_hint_block.0.weight"] = torch.zeros(16, 3, 3, 3)
        tensors["zero_convs.0.0.weight"] = torch.zeros(4, 4, 1, 1)
        tensors["input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] = torch.zeros(8, context)
    else:
        block = "down_blocks.1" if arch == "sdxl" else "down_blocks.0"
        tensors["controlnet_cond_embedding.conv_in.weight"] = torch.zeros(16, 3, 3, 3)
        tensors["controlnet_down_blocks.0.weight"] = torch.zeros(4, 4, 1, 1)
        tensors["controlnet_mid_block.weight"] = torch.zeros(4, 4, 1, 1)
        tensors[f"{block}.attentions.0.transformer_blocks.0.attn2.to_k.weight"] = torch.zeros(8, context)
        if arch == "sdxl":
            tensors["add_embedding.linear_1.weight"] = torch.zeros(8, 16)
            tensors["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k.weight"] = torch.zeros(8, 8)
        if union:
            tensors["task_embedding"] = torch.zeros(8, 320)
            tensors["transformer_layes.0.attn.in_proj_weight"] = torch.zeros(12, 4)
            tensors["spatial_ch_projs.weight"] = torch.zeros(4, 4)
            tensors["control_add_embedding.linear_1.weight"] = torch.zeros(8, 16)
    return _save(path, tensors)


def control_lora(path: Path) -> Path:
    """Stability's Control-LoRA layout (a ``lora_controlnet`` marker tensor, .up/.down pairs)."""
    return _save(
        path,
        {
            "lora_controlnet": torch.zeros(1),
            "input_hint_block.0.weight": torch.zeros(16, 3, 3, 3),
            "input_blocks.1.0.in_layers.2.up": torch.zeros(4, 2),
            "input_blocks.1.0.in_layers.2.down": torch.zeros(2, 4),
        },
    )


def lllite(path: Path) -> Path:
    """kohya's ControlNet-LLLite layout."""
    base = "lllite_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    return _save(
        path,
        {
            f"{base}.conditioning1.0.weight": torch.zeros(4, 3, 4, 4),
            f"{base}.down.0.weight": torch.zeros(4, 8),
            f"{base}.up.0.weight": torch.zeros(8, 4),
        },
    )


def header_ip_adapter(path: Path, variant: str = "plus", arch: str = "sd1", encoder: str = "ViT-H") -> Path:
    """An IP-Adapter's image_proj + ip_adapter tensors with the real widths (h94's names):
    ``variant`` "plain" | "plus" | "full-face" | "faceid" | "faceid-plus"."""
    context = _CONTEXT[arch]
    layers = 70 if arch == "sdxl" else 16
    hidden = {"ViT-H": 1280, "ViT-bigG": 1664}[encoder]
    projection = {"ViT-H": 1024, "ViT-bigG": 1280}[encoder]
    tensors: dict[str, torch.Tensor] = {}
    if variant == "plain":
        tensors["image_proj.proj.weight"] = torch.zeros(4 * context, projection, dtype=torch.float16)
        tensors["image_proj.norm.weight"] = torch.zeros(context)
    elif variant == "plus":
        tensors["image_proj.latents"] = torch.zeros(1, 16, 8)
        tensors["image_proj.proj_in.weight"] = torch.zeros(8, hidden)
        tensors["image_proj.proj_out.weight"] = torch.zeros(context, 8)
        tensors["image_proj.layers.0.0.to_q.weight"] = torch.zeros(8, 8)
    elif variant == "full-face":
        tensors["image_proj.proj.0.weight"] = torch.zeros(8, hidden)
        tensors["image_proj.proj.3.weight"] = torch.zeros(context)
    elif variant == "faceid":
        tensors["image_proj.proj.0.weight"] = torch.zeros(8, 512)
        tensors["image_proj.proj.2.weight"] = torch.zeros(4 * context, 8)
        tensors["image_proj.norm.weight"] = torch.zeros(context)
    elif variant == "faceid-plus":
        tensors["image_proj.proj.0.weight"] = torch.zeros(8, 512)
        tensors["image_proj.perceiver_resampler.proj_in.weight"] = torch.zeros(8, hidden)
    else:
        raise ValueError(variant)
    for index in range(layers):
        tensors[f"ip_adapter.{2 * index + 1}.to_k_ip.weight"] = torch.zeros(2, context)
        tensors[f"ip_adapter.{2 * index + 1}.to_v_ip.weight"] = torch.zeros(2, context)
    return _save(path, tensors)


def header_clip_vision(path: Path, encoder: str = "ViT-H", projection: bool = True, open_clip: bool = False) -> Path:
    """A CLIP vision encoder's tensors with the real width and depth of ``encoder``."""
    hidden, layers, proj = {"ViT-H": (1280, 32, 1024), "ViT-bigG": (1664, 48, 1280)}[encoder]
    if open_clip:
        return _save(
            path,
            {"visual.conv1.weight": torch.zeros(hidden, 3, 14, 14, dtype=torch.bfloat16),
             "visual.transformer.resblocks.0.ln_1.weight": torch.zeros(hidden)},
        )
    tensors = {
        "vision_model.embeddings.patch_embedding.weight": torch.zeros(hidden, 3, 14, 14, dtype=torch.bfloat16),
        "vision_model.embeddings.position_embedding.weight": torch.zeros(257, 1),
        "vision_model.post_layernorm.weight": torch.zeros(hidden),
    }
    for index in range(layers):
        tensors[f"vision_model.encoder.layers.{index}.layer_norm1.weight"] = torch.zeros(1)
    if projection:
        tensors["visual_projection.weight"] = torch.zeros(proj, 1)
    return _save(path, tensors)
