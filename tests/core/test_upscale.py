"""Upscaler models through spandrel (no torchvision), extras jobs and their bounds.

The upscalers are tiny RealESRGAN-Compact (SRVGGNetCompact) and ESRGAN (RRDBNet) networks built
here with spandrel's own classes and random weights, saved as ``.safetensors`` in an A1111/ComfyUI
upscaler folder: the same loading path as a downloaded 4x model.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from core.demo import DEMO_NAME, save_demo_model
from core.engine import Engine, GenerationRequest, HiresFix, Upscale
from core.errors import InputError, JobCancelled
from core.registry import ModelRegistry
from core.upscale import TILE, load_spandrel

ROOT = Path(__file__).resolve().parents[2]


def compact(scale: int, seed: int = 0) -> torch.nn.Module:
    load_spandrel()
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    return Compact(num_feat=8, num_conv=2, upscale=scale).eval()


def esrgan(seed: int = 0) -> torch.nn.Module:
    load_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    return ESRGAN(num_filters=8, num_blocks=1, scale=4).eval()


def save(module: torch.nn.Module, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ComfyUI-style models folder: a checkpoint and upscale_models/ (plus A1111's ESRGAN/)."""
    root = tmp_path_factory.mktemp("upscale-models")
    save_demo_model(root / "checkpoints" / DEMO_NAME["sd"], arch="sd")
    save(compact(4), root / "upscale_models" / "tiny-compact-4x.safetensors")
    save(compact(2, seed=1), root / "upscale_models" / "tiny-compact-2x.safetensors")
    save(compact(1, seed=2), root / "upscale_models" / "tiny-compact-1x.safetensors")
    save(esrgan(), root / "ESRGAN" / "tiny-esrgan-4x.safetensors")
    good = (root / "upscale_models" / "tiny-compact-4x.safetensors").read_bytes()
    (root / "upscale_models" / "damaged-4x.safetensors").write_bytes(good[: len(good) - 64])
    (root / "upscale_models" / "pickled-4x.pth").write_bytes(b"\x80\x04not opened")
    return root


@pytest.fixture(scope="module")
def upscale_engine(folder: Path) -> Engine:
    return Engine(ModelRegistry(folder), device="cpu")


def photo(width: int = 48, height: int = 40) -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def run_model(module: torch.nn.Module, image: Image.Image) -> np.ndarray:
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        y = module(x).clamp(0, 1)[0]
    return (y * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def upscale(engine: Engine, image: Image.Image, **fields: object):
    return engine.generate(GenerationRequest(prompt="", image=image,
                                             upscale=Upscale(**fields)))  # type: ignore[arg-type]


def test_spandrel_loads_without_torchvision() -> None:
    """The CPU install has no torchvision: the upscaler architectures load all the same."""
    code = (
        "import sys; from core.upscale import load_spandrel, SPANDREL_ARCHITECTURES;"
        "registry = load_spandrel();"
        "assert len(list(registry)) == len(SPANDREL_ARCHITECTURES), len(list(registry));"
        "assert 'torchvision' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


def test_library_lists_the_upscalers(upscale_engine: Engine) -> None:
    names = {item.name for item in upscale_engine.registry.library.items("upscaler")}
    assert {"tiny-compact-4x", "tiny-compact-2x", "tiny-esrgan-4x"} <= names
    assert "pickled-4x" not in names


def test_extras_with_a_compact_model_gives_the_models_pixels(upscale_engine: Engine) -> None:
    image = photo()
    result = upscale(upscale_engine, image, scale=4.0, upscaler="tiny-compact-4x")
    assert result.mode == "upscale"
    assert result.images[0].size == (192, 160)
    expected = run_model(compact(4), image)
    assert np.array_equal(np.asarray(result.images[0]), expected)


def test_tiles_give_the_same_picture_as_one_pass(upscale_engine: Engine) -> None:
    image = photo(TILE + 40, TILE + 8)  # four tiles
    result = upscale(upscale_engine, image, scale=2.0, upscaler="tiny-compact-2x")
    expected = run_model(compact(2, seed=1), image)
    got = np.asarray(result.images[0]).astype(np.int16)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1  # float rounding at most


def test_esrgan_model_and_a_target_between_model_passes(upscale_engine: Engine) -> None:
    image = photo(32, 32)
    result = upscale(upscale_engine, image, scale=3.0, upscaler="tiny-esrgan-4x")
    assert result.images[0].size == (96, 96)  # one 4x pass, then Lanczos to 3x
    expected = Image.fromarray(run_model(esrgan(), image)).resize((96, 96),
                                                                  Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(expected))


def test_extras_box_with_crop_and_a_blended_second_upscaler(upscale_engine: Engine) -> None:
    image = photo(48, 40)
    result = upscale(upscale_engine, image, width=96, height=96, crop=True,
                     upscaler="Lanczos", upscaler_2="Nearest", upscaler_2_visibility=0.5)
    assert result.images[0].size == (96, 96)
    only = upscale(upscale_engine, image, width=96, height=96, crop=True, upscaler="Lanczos")
    assert not np.array_equal(np.asarray(result.images[0]), np.asarray(only.images[0]))


def test_hires_fix_with_an_upscaler_model(upscale_engine: Engine) -> None:
    result = upscale_engine.generate(GenerationRequest(
        prompt="a harbour", model=DEMO_NAME["sd"], num_inference_steps=2, width=64, height=64,
        seed=1, hires=HiresFix(scale=2.0, upscaler="tiny-compact-4x", denoising_strength=0.5),
    ))
    assert result.images[0].size == (128, 128)


def test_cancel_stops_between_tiles(upscale_engine: Engine) -> None:
    tiles: list[int] = []
    with pytest.raises(JobCancelled):
        upscale_engine.generate(
            GenerationRequest(prompt="", image=photo(TILE * 2, TILE * 2),
                              upscale=Upscale(scale=2.0, upscaler="tiny-compact-2x")),
            on_step=lambda step, total, preview: tiles.append(step),
            should_stop=lambda: bool(tiles),
        )
    assert tiles == [1]


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"scale": 9.0}, "upscale_scale_out_of_range"),
        ({"scale": float("inf")}, "upscale_scale_out_of_range"),
        ({"width": 10**6, "height": 64}, "upscale_size_out_of_range"),
        ({"upscaler_2": "Lanczos", "upscaler_2_visibility": 2.0},
         "upscale_visibility_out_of_range"),
        ({"upscaler": "Latent"}, "upscale_latent_mode"),
        ({"upscaler": "no-such-model"}, "unknown_upscaler"),
        ({"upscaler": "pickled-4x"}, None),  # refused unopened: a sentence, never loaded
    ],
)
def test_extras_bounds_are_one_sentence(upscale_engine: Engine, fields: dict[str, object],
                                        code: str | None) -> None:
    with pytest.raises(InputError) as caught:
        upscale(upscale_engine, photo(), **fields)
    if code is not None:
        assert caught.value.code == code
    assert "no-such-model" not in str(caught.value) and "pickled" not in str(caught.value)


def test_an_upscale_too_large_is_refused_before_any_work(upscale_engine: Engine) -> None:
    with pytest.raises(InputError) as caught:
        upscale_engine.validate(GenerationRequest(
            prompt="", image=photo(3000, 2000), upscale=Upscale(scale=4.0)))
    assert caught.value.code == "upscale_too_large"


def test_damaged_and_non_upscaler_models_are_one_sentence(upscale_engine: Engine) -> None:
    codes = set()
    for name in ("damaged-4x", "tiny-compact-1x"):
        with pytest.raises(InputError) as caught:
            upscale(upscale_engine, photo(), scale=2.0, upscaler=name)
        codes.add(caught.value.code)
        assert name not in str(caught.value)
    assert codes <= {"upscaler_load_failed", "upscaler_not_upscaler", "upscaler_refused",
                     "unknown_upscaler"}
    assert "upscaler_not_upscaler" in codes or "upscaler_refused" in codes


def test_without_spandrel_a_model_upscaler_is_one_sentence(
    upscale_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("core.engine.spandrel_available", lambda: False)
    with pytest.raises(InputError) as caught:
        upscale(upscale_engine, photo(), scale=2.0, upscaler="tiny-compact-4x")
    assert caught.value.code == "upscaler_unavailable"
    # The built-in upscalers need no spandrel.
    assert upscale(upscale_engine, photo(), scale=2.0, upscaler="Lanczos").images[0].size == (
        96, 80)


# Tiny transformer and attention upscalers (spandrel's own classes, random weights): they load
# without torchvision and run on tiles (each padded to the model's size rules by spandrel).
TINY = {
    "SwinIR": dict(embed_dim=12, depths=[1], num_heads=[1], window_size=4, upscale=4,
                   upsampler="pixelshuffle"),
    "DAT": dict(embed_dim=16, depth=[2], num_heads=[2], upscale=2),  # 12 leaves a 0-wide layer
    "HAT": dict(embed_dim=12, depths=(1,), num_heads=(1,), window_size=4, upscale=4,
                squeeze_factor=2, compress_ratio=2),
    "SPAN": dict(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=4),
}


@pytest.mark.parametrize("arch", sorted(TINY))
def test_transformer_upscalers_run_on_tiles(tmp_path: Path, arch: str) -> None:
    import importlib

    from core.upscale import UpscalerModels

    load_spandrel()
    module = importlib.import_module(f"spandrel.architectures.{arch}")
    torch.manual_seed(0)
    network = getattr(module, arch)(**TINY[arch]).eval()
    path = save(network, tmp_path / f"tiny-{arch}.safetensors")
    scale = int(TINY[arch]["upscale"])
    image = photo(TILE + 13, 21)  # two tiles, sides that are no multiple of the window
    out = UpscalerModels("cpu").upscale(path, image, image.width * scale, image.height * scale)
    assert out.size == (image.width * scale, image.height * scale)
    lanczos = image.resize(out.size, Image.Resampling.LANCZOS)
    assert not np.array_equal(np.asarray(out), np.asarray(lanczos))
