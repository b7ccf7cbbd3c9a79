"""The demo model: a tiny random-weight pipeline built here, with no download.

It exists so that Obscura runs end to end on any machine (and in tests) before the owner adds a
real model. It draws coloured noise, and every place that shows it says so. The tokenizer is made
locally: the CLIP special tokens plus one token per byte character, and no BPE merges.

The VAE downsamples 8x like the real Stable Diffusion VAE, so image sizes and latent shapes behave
as they do with real models (a 512 px request gives 64x64 latents), only with a network small
enough to run on a CPU in a blink.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch

DEMO_MARKER = "obscura-demo.json"
DEMO_NAME = {"sd": "demo-tiny-sd", "sdxl": "demo-tiny-sdxl"}
DEMO_DEFAULT_SIZE = 256

Arch = Literal["sd", "sdxl"]


def _byte_vocabulary() -> dict[str, int]:
    """CLIP's special tokens plus each byte character, alone and as a word end (no merges)."""
    from core.tokenizer import bytes_to_unicode

    vocab: dict[str, int] = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
    for char in bytes_to_unicode():
        for token in (char, char + "</w>"):
            vocab.setdefault(token, len(vocab))
    return vocab


def build_tokenizer(folder: Path):  # -> CLIPTokenizer
    """A working CLIP tokenizer from local files only (one token per character)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(_byte_vocabulary()), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77, local_files_only=True)


def _text_config(hidden: int, projection: int | None = None):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=1000,
        max_position_embeddings=77,
        projection_dim=projection or hidden,
        hidden_act="gelu",
    )


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[8, 8, 16, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=DEMO_DEFAULT_SIZE,
    )


def _with_mean(encoder: Any) -> Any:
    """A real CLIP's last layer norm has a bias, so its output's mean is far from 0; a random
    one's is 0, and AUTOMATIC1111's emphasis (which rescales to the original mean) would
    divide by almost nothing. Give the demo's encoders a bias as real ones have."""
    with torch.no_grad():
        for name, parameter in encoder.named_parameters():
            if name.endswith("final_layer_norm.bias"):
                parameter.fill_(0.5)
    return encoder


def build_demo_pipeline(arch: Arch = "sd", seed: int = 0):
    """Build the tiny random-weight pipeline in memory (deterministic for a given seed)."""
    from diffusers import (
        EulerAncestralDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
    )
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer(Path(tmp) / "tokenizer")
        if arch == "sd":
            unet = UNet2DConditionModel(
                block_out_channels=(16, 32),
                layers_per_block=1,
                sample_size=DEMO_DEFAULT_SIZE // 8,
                in_channels=4,
                out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                cross_attention_dim=32,
                attention_head_dim=4,
                norm_num_groups=4,
            )
            return StableDiffusionPipeline(
                vae=_vae(),
                text_encoder=_with_mean(CLIPTextModel(_text_config(32))),
                tokenizer=tokenizer,
                unet=unet,
                scheduler=scheduler,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        if arch == "sdxl":
            unet = UNet2DConditionModel(
                block_out_channels=(16, 32),
                layers_per_block=1,
                sample_size=DEMO_DEFAULT_SIZE // 8,
                in_channels=4,
                out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                attention_head_dim=(2, 4),
                use_linear_projection=True,
                addition_embed_type="text_time",
                addition_time_embed_dim=8,
                transformer_layers_per_block=(1, 1),
                projection_class_embeddings_input_dim=6 * 8 + 32,
                cross_attention_dim=64,
                norm_num_groups=4,
            )
            tokenizer_2 = build_tokenizer(Path(tmp) / "tokenizer_2")
            return StableDiffusionXLPipeline(
                vae=_vae(),
                text_encoder=_with_mean(CLIPTextModel(_text_config(32))),
                text_encoder_2=_with_mean(
                    CLIPTextModelWithProjection(_text_config(32, projection=32))
                ),
                tokenizer=tokenizer,
                tokenizer_2=tokenizer_2,
                unet=unet,
                scheduler=scheduler,
            )
    raise ValueError(f"arch must be 'sd' or 'sdxl', not {arch!r}")


def save_demo_model(folder: Path, arch: Arch = "sd") -> Path:
    """Build the demo pipeline and save it as a normal diffusers folder (safetensors weights)."""
    folder = Path(folder)
    pipe = build_demo_pipeline(arch)
    pipe.save_pretrained(folder, safe_serialization=True)
    marker = {
        "demo": True,
        "arch": arch,
        "default_size": DEMO_DEFAULT_SIZE,
        "note": "Random weights: this model draws noise. See docs/models.md to add a real model.",
    }
    (folder / DEMO_MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
    return folder
