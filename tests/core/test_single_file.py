"""Single-file loading of a real architecture, offline, through the shipped configs and tokenizer.

Real-size weights (SD 1.5: ~1.07 B parameters, a 4 GB file) make this minutes on a CPU, so it is
marked ``slow`` (run by hand: ``pytest -m slow``) and ``gpu`` (run where a GPU is lent).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import torch
from ldm_checkpoint import save_sd1_ldm_checkpoint  # type: ignore[import-not-found]
from netguard import network_guard  # type: ignore[import-not-found]

CONFIGS = Path(str(resources.files("core.configs")))


def _random_sd15_pipeline():
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel

    from core.tokenizer import clip_tokenizer

    folder = CONFIGS / "sd1-base"
    torch.manual_seed(0)
    return diffusers.StableDiffusionPipeline(
        unet=diffusers.UNet2DConditionModel.from_config(
            diffusers.UNet2DConditionModel.load_config(folder / "unet")
        ),
        vae=diffusers.AutoencoderKL.from_config(
            diffusers.AutoencoderKL.load_config(folder / "vae")
        ),
        text_encoder=CLIPTextModel(
            CLIPTextConfig.from_json_file(folder / "text_encoder" / "config.json")
        ),
        tokenizer=clip_tokenizer(),
        scheduler=diffusers.EulerDiscreteScheduler.from_config(
            diffusers.EulerDiscreteScheduler.load_config(folder / "scheduler")
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@pytest.mark.slow
@pytest.mark.gpu
def test_a_random_sd15_checkpoint_loads_from_a_single_file_offline(tmp_path):
    from core.engine import Engine, GenerationRequest
    from core.registry import ModelRegistry

    source = _random_sd15_pipeline()
    save_sd1_ldm_checkpoint(source, tmp_path / "random-sd15.safetensors")
    expected = {k: v.clone() for k, v in list(source.unet.state_dict().items())[:5]}
    del source

    with network_guard() as attempts:
        registry = ModelRegistry(tmp_path)
        [info] = registry.models
        assert (info.arch, info.variant, info.format) == ("sd1", "base", "single-file")
        engine = Engine(registry, device="auto", dtype="float32")
        engine.load(info.name)
        loaded = engine._pipes["txt2img"].unet.state_dict()
        for name, tensor in expected.items():
            assert torch.equal(loaded[name].cpu(), tensor), name
        result = engine.generate(
            GenerationRequest("a lighthouse", width=64, height=64, num_inference_steps=1, seed=1)
        )
    assert result.images[0].size == (64, 64)
    assert attempts == []
