"""`obscura models convert`: a pickle becomes .safetensors in a network-less child process, and a
pickle that would run code is refused without running it."""

from __future__ import annotations

import json
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from core.convert import WORKER, convert_pickle
from core.errors import InputError, ModelError
from core.library import ModelLibrary


class _Trap:
    """Unpickling this creates a file: proof that the pickle's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _rrdbnet_state() -> dict[str, torch.Tensor]:
    """BasicSR's RRDBNet names (RealESRGAN_x4plus.pth), 4x: two conv_up layers."""
    return {
        "conv_first.weight": torch.randn(4, 3, 3, 3),
        "conv_first.bias": torch.randn(4),
        "body.0.rdb1.conv1.weight": torch.randn(4, 4, 3, 3),
        "conv_body.weight": torch.randn(4, 4, 3, 3),
        "conv_up1.weight": torch.randn(4, 4, 3, 3),
        "conv_up2.weight": torch.randn(4, 4, 3, 3),
        "conv_last.weight": torch.randn(3, 4, 3, 3),
    }


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("style", ["torch.save", "plain pickle"])
def test_a_pickle_that_would_create_a_file_is_refused_and_creates_nothing(tmp_path: Path, style):
    marker = tmp_path / "the-pickle-ran"
    source = tmp_path / "evil.pth"
    payload = {"conv_first.weight": torch.zeros(2, 2), "trap": _Trap(marker)}
    if style == "torch.save":
        torch.save(payload, source)
    else:
        source.write_bytes(pickle.dumps(payload))
    out = tmp_path / "out"
    with pytest.raises(ModelError) as info:
        convert_pickle(source, out / "evil.safetensors")
    assert info.value.code == "convert_failed"
    assert "cannot be converted safely" in str(info.value)
    assert not marker.exists()  # weights_only=True refused the trap before it could run
    assert _files(out) == []  # no output, no half-written temporary


def test_a_plain_state_dict_pickle_becomes_a_loadable_safetensors(tmp_path: Path):
    state = _rrdbnet_state()
    source = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params_ema": state}, source)  # how Real-ESRGAN publishes its weights
    target = tmp_path / "models" / "RealESRGAN_x4plus.safetensors"
    done = convert_pickle(source, target)
    assert done.output == target and done.kind == "upscaler" and done.unwrapped == "params_ema"
    loaded = load_file(str(target))
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    [item] = ModelLibrary(tmp_path / "models").items("upscaler")
    assert (item.name, item.detail["family"], item.detail["scale"]) == (
        "RealESRGAN_x4plus",
        "ESRGAN",
        4,
    )
    assert _files(tmp_path / "models") == ["RealESRGAN_x4plus.safetensors"]


def test_a_real_spandrel_upscaler_converts_and_loads_with_spandrel(tmp_path: Path):
    import importlib

    from core.upscale import load_spandrel, spandrel_available

    if not spandrel_available():
        pytest.skip("spandrel is not installed")
    registry = load_spandrel()
    esrgan = importlib.import_module("spandrel.architectures.ESRGAN")
    model = esrgan.ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
    torch.save({"params": model.state_dict()}, tmp_path / "4x-tiny.pth")
    done = convert_pickle(tmp_path / "4x-tiny.pth", tmp_path / "4x-tiny.safetensors")
    descriptor = registry.load(load_file(str(done.output)))
    assert descriptor.scale == 4
    picture = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert descriptor.model(picture).shape == (1, 3, 32, 32)


def test_pickled_embeddings_and_loras_convert_to_what_obscura_loads(tmp_path: Path):
    vectors = torch.randn(2, 768)
    # A1111's textual-inversion .pt: the vectors sit in string_to_param, beside step counters.
    torch.save(
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": vectors},
            "name": "easynegative",
            "step": 1000,
        },
        tmp_path / "easynegative.pt",
    )
    lora = {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": torch.randn(1, 768),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": torch.randn(8, 1),
    }
    torch.save(lora, tmp_path / "old-style.pt")
    models = tmp_path / "models"
    emb = convert_pickle(tmp_path / "easynegative.pt", models / "embeddings" / "easynegative.safetensors")
    assert emb.kind == "embedding" and torch.equal(load_file(str(emb.output))["emb_params"], vectors)
    lo = convert_pickle(tmp_path / "old-style.pt", models / "loras" / "old-style.safetensors")
    assert lo.kind == "lora"
    library = ModelLibrary(models)
    assert [(i.name, i.arch) for i in library.items("embedding")] == [("easynegative", "sd1")]
    assert [(i.name, i.arch) for i in library.items("lora")] == [("old-style", "sd1")]


def test_bad_requests_get_one_sentence(tmp_path: Path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "a.pth")
    (tmp_path / "a.safetensors").write_bytes(b"x")
    (tmp_path / "garbage.ckpt").write_bytes(b"this is not a pickle at all")
    cases = [
        (tmp_path / "missing.pth", tmp_path / "o.safetensors", "convert_no_file"),
        (tmp_path / "a.safetensors", tmp_path / "o.safetensors", "convert_not_pickle"),
        (tmp_path / "a.pth", tmp_path / "o.bin", "convert_bad_output"),
        (tmp_path / "a.pth", tmp_path / "a.safetensors", "convert_output_exists"),
        (tmp_path / "garbage.ckpt", tmp_path / "g.safetensors", "convert_failed"),
    ]
    for source, target, code in cases:
        with pytest.raises(InputError) as info:
            convert_pickle(source, target)
        assert info.value.code == code
    assert not (tmp_path / "g.safetensors").exists()


# -- the worker's guards ------------------------------------------------------------------------
_PROBE = r"""
import importlib.util, json, os, socket, subprocess, sys
spec = importlib.util.spec_from_file_location("worker", sys.argv[1])
worker = importlib.util.module_from_spec(spec); spec.loader.exec_module(worker)
network = worker.leave_network()
worker.install_guards(sys.argv[3])
results = {"network": network}
def attempt(name, action):
    try:
        action(); results[name] = "allowed"
    except PermissionError as err:
        results[name] = "refused: " + str(err)
    except OSError as err:
        results[name] = "failed: " + type(err).__name__
attempt("connect", lambda: socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=2))
attempt("dns", lambda: socket.getaddrinfo("example.com", 80))
attempt("subprocess", lambda: subprocess.run(["true"]))
attempt("system", lambda: os.system("true"))
attempt("write elsewhere", lambda: open(sys.argv[3] + ".other", "w"))
attempt("write output", lambda: open(sys.argv[3], "wb").close())
print(json.dumps(results))
"""


def test_the_worker_has_no_network_no_programs_and_writes_only_its_output(tmp_path: Path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", _PROBE, str(WORKER), str(port), str(tmp_path / "out.tmp")],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        listener.close()
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("connect", "dns", "subprocess", "system", "write elsewhere"):
        assert results[name].startswith("refused"), (name, results[name])
    assert results["write output"] == "allowed"
    assert not (tmp_path / "out.tmp.other").exists()


# -- the command --------------------------------------------------------------------------------
def _run(*args: str, input: str | None = None):
    from webui.cli import main

    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def test_convert_warns_asks_and_writes_into_obscuras_own_folder(tmp_path: Path):
    a1111 = tmp_path / "webui" / "models"
    (a1111 / "ESRGAN").mkdir(parents=True)
    (a1111 / "Stable-diffusion").mkdir()
    source = a1111 / "ESRGAN" / "4x_Remacri.pth"
    torch.save(_rrdbnet_state(), source)
    data = tmp_path / "data"
    folders = ["--data-dir", str(data), "--models-dir", str(a1111)]

    declined = _run("models", "convert", str(source), *folders, input="n\n")
    assert "can run any code" in declined.output and "weights_only=True" in declined.output
    assert declined.exit_code != 0 and not (data / "models").exists()

    done = _run("models", "convert", str(source), *folders, input="y\n")
    assert done.exit_code == 0, done.output
    target = data / "models" / "4x_Remacri.safetensors"
    assert target.is_file() and "upscaler file" in done.output
    assert "move it into your models folder" in done.output  # Obscura does not write there
    assert sorted(p.name for p in (a1111 / "ESRGAN").iterdir()) == ["4x_Remacri.pth"]

    own = _run("models", "--data-dir", str(data), "--json")
    [item] = json.loads(own.output)["items"]["upscaler"]
    assert item["name"] == "4x_Remacri" and item["detail"]["family"] == "ESRGAN"

    again = _run("models", "convert", str(source), *folders, "--yes")
    assert again.exit_code != 0 and "already exists" in again.output


def test_listing_shows_the_pickle_refused_with_the_convert_command(tmp_path: Path):
    a1111 = tmp_path / "models"
    (a1111 / "ESRGAN").mkdir(parents=True)
    torch.save(_rrdbnet_state(), a1111 / "ESRGAN" / "4x_Remacri.pth")
    listing = _run("models", "--models-dir", str(a1111), "--data-dir", str(tmp_path / "d"))
    assert "refused: ESRGAN/4x_Remacri.pth (upscaler)" in listing.output
    assert "obscura models convert FILE" in listing.output
