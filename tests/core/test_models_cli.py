"""`obscura models` lists every kind of model file and every refusal; `embeddings_dir` is a setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from library_files import compact, embedding, kohya_lora, ldm_vae, lycoris, sd_checkpoint

from webui.config import load_settings


def _run(*args: str):
    from webui.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def comfy(tmp_path: Path) -> Path:
    models = tmp_path / "ComfyUI" / "models"
    sd_checkpoint(models / "checkpoints" / "sd_xl_base_1.0.safetensors", "sdxl")
    kohya_lora(models / "loras" / "styles" / "ink.safetensors")
    lycoris(models / "loras" / "fluffy.safetensors", "lokr")
    embedding(models / "embeddings" / "badhands.safetensors")
    ldm_vae(models / "vae" / "sdxl_vae.safetensors")
    compact(models / "upscale_models" / "realesr-general-x4v3.safetensors")
    (models / "upscale_models" / "4x_NMKD.pth").write_bytes(b"never opened")
    return models


def test_models_lists_every_kind_and_every_refusal(comfy: Path, tmp_path: Path):
    result = _run("models", "--models-dir", str(comfy), "--data-dir", str(tmp_path / "d"))
    assert result.exit_code == 0
    out = result.output
    assert "(ComfyUI layout)" in out
    for heading in ("Checkpoints (1)", "LoRAs (1)", "Embeddings (1)", "VAEs (1)", "Upscalers (1)"):
        assert heading in out
    assert "sd_xl_base_1.0 (SDXL)" in out and "checkpoints/sd_xl_base_1.0.safetensors" in out
    assert "ink  (SD 1.x, LoRA)  loras/styles/ink.safetensors" in out
    assert "realesr-general-x4v3  (RealESRGAN Compact 4x)" in out
    assert "refused: loras/fluffy.safetensors (LoRA): This is a LoKr LyCORIS file" in out
    assert "refused: upscale_models/4x_NMKD.pth (upscaler)" in out


def test_models_json_has_every_kind(comfy: Path, tmp_path: Path):
    result = _run("models", "--json", "--models-dir", str(comfy), "--data-dir", str(tmp_path / "d"))
    listing = json.loads(result.output)
    assert listing["layout"] == "ComfyUI"
    assert {kind: [i["name"] for i in items] for kind, items in listing["items"].items()} == {
        "checkpoint": ["sd_xl_base_1.0"],
        "lora": ["ink"],
        "embedding": ["badhands"],
        "vae": ["sdxl_vae"],
        "upscaler": ["realesr-general-x4v3"],
        "controlnet": [],
        "ipadapter": [],
        "clip_vision": [],
        "diffusion_model": [],
        "text_encoder": [],
    }
    assert listing["items"]["lora"][0]["arch"] == "sd1"
    assert listing["items"]["checkpoint"][0]["label"] == "sd_xl_base_1.0 (SDXL)"
    refused = {r["path"]: r for r in listing["refused"]}
    assert refused["upscale_models/4x_NMKD.pth"]["kind"] == "upscaler"
    assert "LoHa/LoKr" in refused["loras/fluffy.safetensors"]["reason"]


def test_embeddings_dir_is_a_setting_flag_and_environment_variable(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("OBSCURA_CONFIG", raising=False)
    assert load_settings({"data_dir": tmp_path}).embeddings_dir is None
    monkeypatch.setenv("OBSCURA_EMBEDDINGS_DIR", str(tmp_path / "from-env"))
    assert load_settings({"data_dir": tmp_path}).embeddings_dir == tmp_path / "from-env"
    flagged = load_settings({"data_dir": tmp_path, "embeddings_dir": tmp_path / "from-flag"})
    assert flagged.embeddings_dir == tmp_path / "from-flag"
    monkeypatch.delenv("OBSCURA_EMBEDDINGS_DIR")
    (tmp_path / "obscura.toml").write_text('embeddings_dir = "~/my-embeddings"\n')
    assert load_settings({"data_dir": tmp_path}).embeddings_dir == Path("~/my-embeddings").expanduser()


def test_the_embeddings_dir_flag_is_searched(tmp_path: Path):
    embedding(tmp_path / "elsewhere" / "nested" / "mine.safetensors", "sd2")
    models = tmp_path / "models"
    models.mkdir()
    result = _run(
        "models", "--json", "--models-dir", str(models), "--embeddings-dir",
        str(tmp_path / "elsewhere"), "--data-dir", str(tmp_path / "d"),
    )
    listing = json.loads(result.output)
    assert [(i["name"], i["arch"]) for i in listing["items"]["embedding"]] == [("mine", "sd2")]
    assert listing["embeddings_dirs"] == [str(tmp_path / "elsewhere")]


@pytest.mark.parametrize("command", [["serve"], ["generate"], ["models"]])
def test_the_embeddings_dir_flag_is_on_serve_generate_and_models(command):
    result = _run(*command, "--help")
    assert result.exit_code == 0 and "--embeddings-dir" in result.output


def test_convert_has_complete_help():
    result = _run("models", "convert", "--help")
    assert result.exit_code == 0
    for words in ("weights_only=True", "--out", "--yes", "no network"):
        assert words in result.output


def test_demo_model_is_not_written_into_an_a1111_folder_unless_a_folder_is_named(tmp_path: Path):
    models = tmp_path / "webui" / "models"
    kohya_lora(models / "Lora" / "x.safetensors")
    before = sorted(p.relative_to(models) for p in models.rglob("*"))
    refused = _run("demo-model", "--models-dir", str(models), "--data-dir", str(tmp_path / "d"))
    assert refused.exit_code != 0 and "never writes" in refused.output
    assert sorted(p.relative_to(models) for p in models.rglob("*")) == before
