"""The shipped config folders and tokenizer describe the real architectures (no weights needed)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import torch

from core.tokenizer import clip_tokenizer

CONFIGS = Path(str(resources.files("core.configs")))

# Parameter counts of the published models (diffusers' own checkpoints).
EXPECTED_UNET = {"sd1": 859_520_964, "sd2": 865_910_724, "sdxl": 2_567_463_684}
EXPECTED_TEXT = {"sd1": 123_060_480, "sd2": 340_387_840, "sdxl": 123_060_480}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl"])
def test_unet_and_text_encoder_configs_have_the_real_parameter_counts(arch):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(CONFIGS / f"{arch}-base" / "unet")
        )
        text = CLIPTextModel(
            CLIPTextConfig.from_json_file(CONFIGS / f"{arch}-base" / "text_encoder" / "config.json")
        )
    assert _count(unet) == EXPECTED_UNET[arch]
    assert _count(text) == EXPECTED_TEXT[arch]


def test_every_config_folder_names_a_loadable_pipeline():
    import diffusers

    folders = sorted(
        p for p in CONFIGS.iterdir() if p.is_dir() and (p / "model_index.json").exists()
    )
    assert {p.name for p in folders} >= {
        f"{a}-{v}" for a in ("sd1", "sd2", "sdxl") for v in ("base", "inpaint")
    }
    for folder in folders:
        index = json.loads((folder / "model_index.json").read_text())
        assert hasattr(diffusers, index["_class_name"])
        if "unet" in index:  # the transformer families: tests/core/test_family_detect.py
            unet = json.loads((folder / "unet" / "config.json").read_text())
            assert unet["in_channels"] == (9 if folder.name.endswith("inpaint") else 4)
        assert not list(folder.rglob("*.safetensors")) and not list(folder.rglob("*.bin"))


def test_clip_tokenizer_matches_the_published_ids():
    tokenizer = clip_tokenizer()
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    assert clip_tokenizer("!").pad_token_id == 0
