"""The registry finds local models, reads only safetensors headers, and refuses pickles unopened."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from core.errors import InputError, ModelError
from core.registry import ModelRegistry, ensure_demo_model, read_safetensors_header


class _Trap:
    """Unpickling this creates a file: proof that something opened the pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _ldm_checkpoint(path: Path, arch: str, in_channels: int = 4) -> Path:
    tensors = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, in_channels, 3, 3)}
    text = {
        "sd1": ["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"],
        "sd2": ["cond_stage_model.model.ln_final.weight"],
        "sdxl": [
            "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
            "conditioner.embedders.1.model.ln_final.weight",
        ],
        "refiner": ["conditioner.embedders.0.model.ln_final.weight"],
        "unknown": ["something.else.weight"],
    }[arch]
    tensors.update({key: torch.zeros(2) for key in text})
    save_file(tensors, str(path))
    return path


def test_finds_diffusers_folders_and_labels_the_demo(models_dir):
    registry = ModelRegistry(models_dir)
    names = {m.name: m for m in registry.models}
    assert set(names) == {"demo-tiny-sd", "demo-tiny-sdxl"}
    assert names["demo-tiny-sd"].arch == "sd1" and names["demo-tiny-sdxl"].arch == "sdxl"
    assert all(
        m.is_demo and "noise" in m.label and "docs/models.md" in m.label for m in registry.models
    )


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin", ".pkl"])
def test_pickle_files_are_refused_and_never_opened(tmp_path, suffix, monkeypatch):
    marker = tmp_path / "unpickled"
    (tmp_path / f"model{suffix}").write_bytes(pickle.dumps(_Trap(marker)))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    registry = ModelRegistry(tmp_path)
    assert registry.models == []
    [refused] = registry.refused
    assert "run code" in refused.reason and "safetensors" in refused.reason
    with pytest.raises(InputError) as info:
        registry.get("model")
    assert info.value.code == "model_refused"
    assert not marker.exists()


def test_a_diffusers_folder_with_stray_pickle_weights_is_refused(models_dir, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(models_dir / "demo-tiny-sd", folder)
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    registry = ModelRegistry(tmp_path)
    assert registry.models == [] and "pickle" in registry.refused[0].reason


@pytest.mark.parametrize(
    ("arch", "channels", "expected"),
    [
        ("sd1", 4, ("sd1", "base")),
        ("sd2", 4, ("sd2", "base")),
        ("sdxl", 4, ("sdxl", "base")),
        ("sd1", 9, ("sd1", "inpaint")),
        ("sdxl", 9, ("sdxl", "inpaint")),
    ],
)
def test_single_file_architecture_is_read_from_tensor_names(tmp_path, arch, channels, expected):
    _ldm_checkpoint(tmp_path / "my-model.safetensors", arch, channels)
    [info] = ModelRegistry(tmp_path).models
    assert (info.arch, info.variant) == expected
    assert info.format == "single-file" and info.name == "my-model"


def test_sdxl_turbo_is_recognised_by_name_and_gets_turbo_defaults(tmp_path):
    _ldm_checkpoint(tmp_path / "sd_xl_turbo_1.0.safetensors", "sdxl")
    [info] = ModelRegistry(tmp_path).models
    assert info.variant == "turbo"
    assert info.spec.default_guidance == 0.0 and info.spec.default_steps <= 4


@pytest.mark.parametrize("arch", ["refiner", "unknown"])
def test_unsupported_architectures_are_refused_with_a_reason(tmp_path, arch):
    _ldm_checkpoint(tmp_path / "x.safetensors", arch)
    registry = ModelRegistry(tmp_path)
    assert registry.models == [] and "docs/models.md" in registry.refused[0].reason


def test_truncated_and_corrupt_files_are_refused(tmp_path):
    good = _ldm_checkpoint(tmp_path / "good.safetensors", "sd1")
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    (tmp_path / "garbage.safetensors").write_bytes(
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}"
    )
    (tmp_path / "empty.safetensors").write_bytes(b"")
    registry = ModelRegistry(tmp_path)
    assert [m.name for m in registry.models] == ["good"]
    reasons = {r.name: r.reason for r in registry.refused}
    assert "truncated" in reasons["cut.safetensors"]
    assert "not a valid safetensors" in reasons["garbage.safetensors"]
    assert "truncated" in reasons["empty.safetensors"]
    with pytest.raises(ModelError):
        read_safetensors_header(tmp_path / "cut.safetensors")


def test_an_unreadable_model_index_is_refused(models_dir, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(models_dir / "demo-tiny-sd", folder)
    (folder / "model_index.json").write_text("{", encoding="utf-8")
    assert ModelRegistry(tmp_path).refused[0].name == "broken"


def test_an_unknown_pipeline_type_is_refused(models_dir, tmp_path):
    folder = tmp_path / "hunyuan"
    shutil.copytree(models_dir / "demo-tiny-sd", folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "HunyuanDiTPipeline"  # FLUX is supported now (tests/core/test_family_detect.py)
    (folder / "model_index.json").write_text(json.dumps(index))
    registry = ModelRegistry(tmp_path)
    assert registry.models == [] and "not supported" in registry.refused[0].reason


def test_unknown_model_name_lists_the_installed_ones(models_dir):
    with pytest.raises(InputError) as info:
        ModelRegistry(models_dir).get("nope")
    assert info.value.code == "unknown_model" and "demo-tiny-sd" in str(info.value)


def test_demo_model_is_created_only_when_no_model_is_installed(tmp_path, models_dir):
    created = ensure_demo_model(tmp_path / "models")
    assert created is not None and created.is_demo
    assert ensure_demo_model(tmp_path / "models") is None
    assert ensure_demo_model(models_dir) is None


def test_a_corrupt_weight_file_fails_to_load_with_one_sentence(models_dir, tmp_path):
    from core.engine import Engine, GenerationRequest

    folder = tmp_path / "damaged"
    shutil.copytree(models_dir / "demo-tiny-sd", folder)
    # A valid safetensors file holding the wrong tensors (the VAE's where the UNet's belong).
    shutil.copy(
        folder / "vae" / "diffusion_pytorch_model.safetensors",
        folder / "unet" / "diffusion_pytorch_model.safetensors",
    )
    engine = Engine(ModelRegistry(tmp_path), device="cpu")
    with pytest.raises(ModelError) as info:
        engine.generate(GenerationRequest("x", width=64, height=64, num_inference_steps=1))
    assert info.value.code == "model_load_failed"


def test_memory_estimate_counts_parameters_in_the_run_dtype(models_dir):
    from core.pipelines import estimate_bytes
    from core.registry import ModelRegistry as Registry

    info = Registry(models_dir).get("demo-tiny-sd")
    fp32, fp16 = estimate_bytes(info, torch.float32), estimate_bytes(info, torch.float16)
    assert fp32 == 2 * fp16 > 0
    weights = sum(p.stat().st_size for p in info.path.rglob("*.safetensors"))
    assert 0.9 * weights < fp32 <= weights  # demo weights are stored in float32
