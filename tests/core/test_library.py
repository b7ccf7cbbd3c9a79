"""The model library finds every kind of file in Obscura's, A1111's and ComfyUI's folders.

Every file here is built in code with the tensor names the real tools write (Kohya's sd-scripts,
A1111's textual inversion, diffusers, BasicSR/spandrel upscalers); the shapes are tiny except the
one dimension that tells the architectures apart (768 / 1024 / 2048 wide cross-attention).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from library_files import (
    _save,
    compact,
    dat,
    embedding,
    esrgan_old,
    kohya_lora,
    ldm_vae,
    lycoris,
    peft_lora,
    pickle_trap,
    rrdbnet,
    sd_checkpoint,
    swinir,
)

import core.library as library_module
from core.errors import InputError
from core.library import ModelLibrary, detect_kind
from core.registry import ModelRegistry, ensure_demo_model


def _names(lib: ModelLibrary, kind: str) -> dict[str, object]:
    return {item.name: item for item in lib.items(kind)}


# -- layouts ---------------------------------------------------------------------------------
@pytest.fixture
def a1111(tmp_path: Path) -> Path:
    """stable-diffusion-webui/: models/ with A1111's folder names, embeddings/ beside it."""
    webui = tmp_path / "stable-diffusion-webui"
    models = webui / "models"
    sd_checkpoint(models / "Stable-diffusion" / "anime" / "counterfeit.safetensors")
    sd_checkpoint(models / "Stable-diffusion" / "sdxl" / "juggernaut.safetensors", "sdxl")
    kohya_lora(models / "Lora" / "styles" / "watercolour" / "aquarelle.safetensors")
    kohya_lora(models / "Lora" / "pony-style.safetensors", "sdxl")
    (models / "Lora" / "pony-style.preview.png").write_bytes(b"\x89PNG not a model")
    (models / "Lora" / "pony-style.civitai.info").write_text("{}")
    lycoris(models / "LyCORIS" / "fluffy-loha.safetensors", "loha")
    ldm_vae(models / "VAE" / "vae-ft-mse-840000-ema-pruned.safetensors")
    esrgan_old(models / "ESRGAN" / "4x-UltraSharp.safetensors")
    rrdbnet(models / "RealESRGAN" / "RealESRGAN_x4plus.safetensors")
    swinir(models / "SwinIR" / "SwinIR_4x.safetensors")
    dat(models / "DAT" / "DAT_x2.safetensors")
    embedding(webui / "embeddings" / "easynegative.safetensors")
    embedding(webui / "embeddings" / "sd2" / "negative-hands.safetensors", "sd2")
    (models / "hypernetworks").mkdir()  # another tool's folder: not searched
    return models


def test_an_a1111_models_folder_is_found_with_every_kind(a1111: Path, tmp_path: Path):
    marker = tmp_path / "unpickled"
    pickle_trap(a1111 / "ESRGAN" / "4x_foolhardy_Remacri.pth", marker)
    pickle_trap(a1111 / "Lora" / "old-style.pt", marker)
    lib = ModelLibrary(a1111)

    checkpoints = _names(lib, "checkpoint")
    assert set(checkpoints) == {"counterfeit", "juggernaut"}
    assert checkpoints["juggernaut"].arch == "sdxl"
    assert checkpoints["counterfeit"].detail["relative"] == "anime/counterfeit.safetensors"

    loras = _names(lib, "lora")
    assert set(loras) == {"aquarelle", "pony-style"}  # nested three folders deep, and flat
    assert loras["aquarelle"].arch == "sd1" and loras["pony-style"].arch == "sdxl"
    assert loras["aquarelle"].detail["relative"] == "styles/watercolour/aquarelle.safetensors"

    assert {i.name: i.arch for i in lib.items("embedding")} == {
        "easynegative": "sd1",
        "negative-hands": "sd2",
    }  # from ../embeddings, A1111's place for them
    assert [i.name for i in lib.items("vae")] == ["vae-ft-mse-840000-ema-pruned"]
    assert lib.items("vae")[0].detail["file_name"] == "vae-ft-mse-840000-ema-pruned.safetensors"
    upscalers = {i.name: (i.detail["family"], i.detail["scale"]) for i in lib.items("upscaler")}
    assert upscalers == {
        "4x-UltraSharp": ("ESRGAN", 4),
        "RealESRGAN_x4plus": ("ESRGAN", 4),
        "SwinIR_4x": ("SwinIR", 4),
        "DAT_x2": ("DAT", 2),
    }

    refused = {(r.kind, r.name): r.reason for r in lib.refused}
    assert "LoHa/LoKr LyCORIS files cannot be loaded by diffusers" in refused[("lora", "fluffy-loha")]
    assert "run code" in refused[("upscaler", "4x_foolhardy_Remacri")]
    assert "obscura models convert" in refused[("lora", "old-style")]
    assert len(lib.refused) == 3  # the preview picture and the .civitai.info are not model files
    assert not marker.exists()  # the pickles were never opened


def test_the_registry_paints_with_checkpoints_from_a1111_and_comfyui_folders(tmp_path: Path):
    for folder in ("Stable-diffusion", "checkpoints"):
        models = tmp_path / folder.lower() / "models"
        sd_checkpoint(models / folder / "sub" / "mine.safetensors")
        registry = ModelRegistry(models)
        info = registry.get("mine")
        assert info.format == "single-file" and info.arch == "sd1"
        assert registry.library.find("checkpoint", "mine").path == info.path


def test_a_comfyui_models_folder_is_found_with_every_kind(tmp_path: Path):
    models = tmp_path / "ComfyUI" / "models"
    sd_checkpoint(models / "checkpoints" / "sd_xl_base_1.0.safetensors", "sdxl")
    kohya_lora(models / "loras" / "SDXL" / "detail-tweaker-xl.safetensors", "sdxl")
    peft_lora(models / "loras" / "pytorch_lora_weights.safetensors")
    embedding(models / "embeddings" / "unaestheticXL.safetensors", "sdxl")
    ldm_vae(models / "vae" / "sdxl_vae.sft")  # ComfyUI's short extension
    compact(models / "upscale_models" / "realesr-general-x4v3.safetensors", scale=4)
    (models / "controlnet").mkdir()
    (models / "clip_vision").mkdir()
    lib = ModelLibrary(models)
    assert {i.name: i.arch for i in lib.items("checkpoint")} == {"sd_xl_base_1.0": "sdxl"}
    loras = _names(lib, "lora")
    assert loras["detail-tweaker-xl"].arch == "sdxl" and loras["detail-tweaker-xl"].detail["layout"] == "kohya"
    assert loras["pytorch_lora_weights"].arch == "sd1" and loras["pytorch_lora_weights"].detail["layout"] == "peft"
    [emb] = lib.items("embedding")
    assert (emb.name, emb.arch, emb.detail["vectors"]) == ("unaestheticXL", "sdxl", 2)
    assert [i.name for i in lib.items("vae")] == ["sdxl_vae"]
    [up] = lib.items("upscaler")
    assert (up.detail["family"], up.detail["scale"]) == ("RealESRGAN Compact", 4)
    assert lib.refused == []


def test_obscuras_flat_folder_keeps_working_and_finds_other_kinds_by_their_header(
    tmp_path: Path, models_dir: Path
):
    shutil.copytree(models_dir / "demo-tiny-sd", tmp_path / "demo-tiny-sd")
    kohya_lora(tmp_path / "my-lora.safetensors")
    embedding(tmp_path / "my-embedding.safetensors")
    # diffusers' own VAE folder (config.json + weights), as downloaded: named after the folder.
    shutil.copytree(models_dir / "demo-tiny-sd" / "vae", tmp_path / "vae" / "tiny-vae")
    registry = ModelRegistry(tmp_path)
    assert [m.name for m in registry.models] == ["demo-tiny-sd"] and registry.models[0].is_demo
    lib = registry.library
    assert [i.name for i in lib.items("lora")] == ["my-lora"]
    assert [i.name for i in lib.items("embedding")] == ["my-embedding"]
    [vae] = lib.items("vae")  # real diffusers AutoencoderKL tensor names
    assert vae.name == "tiny-vae" and vae.detail["layout"] == "diffusers"
    assert registry.refused == [] and lib.refused == []


# -- architecture from the header ----------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda p: kohya_lora(p, "sd1"), "sd1"),
        (lambda p: kohya_lora(p, "sd2"), "sd2"),
        (lambda p: kohya_lora(p, "sdxl"), "sdxl"),
        (lambda p: kohya_lora(p, "sd1", unet=False), "sd1"),  # text encoder only: 768 wide
        (lambda p: kohya_lora(p, "sd2", unet=False), "sd2"),  # 1024 wide
        (lambda p: kohya_lora(p, "sdxl", unet=False), "sdxl"),  # lora_te2_
        (lambda p: peft_lora(p, 2048), "sdxl"),
        (
            lambda p: _save(
                p,
                {"lora_unet_output_blocks_0_1_proj_in.lora_down.weight": torch.zeros(1, 8)},
            ),
            "sdxl",  # kohya names SDXL's blocks input_/output_blocks (LDM style)
        ),
        (
            lambda p: _save(
                p,
                {"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": torch.zeros(1, 8)},
                {"ss_base_model_version": "sd_v1"},
            ),
            "sd1",  # only the training metadata says
        ),
        (
            lambda p: _save(
                p, {"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": torch.zeros(1, 8)}
            ),
            None,
        ),
    ],
)
def test_lora_architecture_is_read_from_key_names_and_widths(tmp_path: Path, build, expected):
    build(tmp_path / "Lora" / "x.safetensors")
    [item] = ModelLibrary(tmp_path).items("lora")
    assert item.arch == expected


@pytest.mark.parametrize(
    ("arch", "vectors"), [("sd1", 1), ("sd1", 8), ("sd2", 3), ("sdxl", 4)]
)
def test_embedding_architecture_is_read_from_the_vector_width(tmp_path: Path, arch, vectors):
    embedding(tmp_path / "embeddings" / "e.safetensors", arch, vectors)
    [item] = ModelLibrary(tmp_path).items("embedding")
    assert (item.arch, item.detail["vectors"]) == (arch, vectors)


def test_a_diffusers_style_single_tensor_embedding_is_found(tmp_path: Path):
    _save(tmp_path / "embeddings" / "cat-toy.safetensors", {"<cat-toy>": torch.zeros(1, 768)})
    _save(tmp_path / "embeddings" / "odd.safetensors", {"whatever": torch.zeros(2, 512)})
    lib = ModelLibrary(tmp_path)
    assert {i.name: i.arch for i in lib.items("embedding")} == {"cat-toy": "sd1", "odd": None}


def test_the_header_decides_the_kind_and_the_folder_only_breaks_ties(tmp_path: Path):
    kohya_lora(tmp_path / "Stable-diffusion" / "misfiled-lora.safetensors")
    sd_checkpoint(tmp_path / "Lora" / "misfiled-checkpoint.safetensors")
    lib = ModelLibrary(tmp_path)
    assert [i.name for i in lib.items("lora")] == ["misfiled-lora"]
    assert [i.name for i in lib.items("checkpoint")] == ["misfiled-checkpoint"]
    ambiguous = {"vector": torch.zeros(2, 640)}  # fits no pattern on its own
    assert detect_kind({k: {"shape": list(v.shape)} for k, v in ambiguous.items()}) is None
    assert detect_kind({k: {"shape": list(v.shape)} for k, v in ambiguous.items()}, "embedding") == "embedding"


# -- refusals --------------------------------------------------------------------------------
def test_refused_files_say_why(tmp_path: Path):
    lycoris(tmp_path / "Lora" / "loha.safetensors", "loha")
    lycoris(tmp_path / "Lora" / "lokr.safetensors", "lokr")
    ldm_vae(tmp_path / "VAE" / "odd-ae.safetensors", latent_channels=8)  # no family has 8
    _save(tmp_path / "Lora" / "mystery.safetensors", {"a.b": torch.zeros(3, 3)})
    good = kohya_lora(tmp_path / "Lora" / "good.safetensors")
    (tmp_path / "Lora" / "cut.safetensors").write_bytes(good.read_bytes()[:-10])
    kohya_lora(tmp_path / "Lora" / "again" / "good.safetensors")  # the same name twice
    lib = ModelLibrary(tmp_path)
    reasons = {r.name: r.reason for r in lib.refused}
    assert "LoHa/LoKr LyCORIS files cannot be loaded by diffusers" in reasons["loha"]
    assert "LoHa/LoKr LyCORIS files cannot be loaded by diffusers" in reasons["lokr"]
    assert "latent channels" in reasons["odd-ae"]
    assert "not a LoRA file Obscura recognises" in reasons["mystery"]
    assert "truncated" in reasons["cut"]
    assert "same name" in reasons["good"]
    assert [i.path for i in lib.items("lora")] == [good]  # the first one found stays usable
    assert all(r.path is not None and r.path.exists() for r in lib.refused)


def test_find_names_nothing_it_was_asked_for(tmp_path: Path):
    lycoris(tmp_path / "Lora" / "secret-style.safetensors", "loha")
    kohya_lora(tmp_path / "Lora" / "public.safetensors")
    lib = ModelLibrary(tmp_path)
    assert lib.find("lora", "public").name == "public"
    for kind, code in [
        ("lora", "unknown_lora"),
        ("embedding", "unknown_embedding"),
        ("vae", "unknown_vae"),
        ("upscaler", "unknown_upscaler"),
    ]:
        with pytest.raises(InputError) as info:
            lib.find(kind, "my-private-thing")
        assert info.value.code == code and "my-private-thing" not in str(info.value)
    with pytest.raises(InputError) as info:
        lib.find("lora", "secret-style")
    assert info.value.code == "lora_refused"
    assert "secret-style" not in str(info.value) and "LoHa" in str(info.value)


def test_a_scan_logs_no_file_or_folder_name(tmp_path: Path, caplog):
    lycoris(tmp_path / "Lora" / "private-name.safetensors", "loha")
    kohya_lora(tmp_path / "Lora" / "other-private-name.safetensors")
    pickle_trap(tmp_path / "Lora" / "third-private-name.pt", tmp_path / "marker")
    with caplog.at_level(logging.DEBUG, logger="obscura"):
        ModelLibrary(tmp_path)
    assert "private-name" not in caplog.text and str(tmp_path) not in caplog.text


# -- read only, and bounded --------------------------------------------------------------------
def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(root.rglob("*"))
    }


def _chmod_tree(root: Path, mode_dirs: int, mode_files: int) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(mode_dirs if path.is_dir() else mode_files)


_WRITES: list[str] = []
_WATCHED: list[str] = []


def _write_audit(event: str, args: tuple) -> None:
    """Records every write-like operation on a watched folder (works even as root)."""
    if not _WATCHED:
        return
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        )
    elif event in {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.symlink", "os.chmod",
                   "os.truncate", "os.utime", "os.link"}:
        path, writing = args[0], True
    else:
        return
    if writing and isinstance(path, (str, os.PathLike)) and str(path).startswith(_WATCHED[0]):
        _WRITES.append(f"{event} {path}")


sys.addaudithook(_write_audit)


def test_nothing_is_written_into_a_read_only_models_folder(a1111: Path):
    webui = a1111.parent
    before = _snapshot(webui)
    _chmod_tree(webui, 0o555, 0o444)  # mounted read-only, as a shared A1111 install may be
    _WATCHED.append(str(webui))
    try:
        registry = ModelRegistry(a1111)
        assert {m.name for m in registry.models} == {"counterfeit", "juggernaut"}
        assert len(registry.library.items("lora")) == 2 and registry.library.items("embedding")
        registry.scan()
        assert ensure_demo_model(a1111) is None
    finally:
        _WATCHED.clear()
        _chmod_tree(webui, 0o755, 0o644)
    assert _WRITES == []
    assert _snapshot(webui) == before


def test_no_demo_model_is_written_into_an_a1111_folder_without_checkpoints(tmp_path: Path):
    kohya_lora(tmp_path / "Lora" / "only-a-lora.safetensors")
    before = _snapshot(tmp_path)
    assert ensure_demo_model(tmp_path) is None
    assert _snapshot(tmp_path) == before


def test_nesting_is_searched_to_a_bounded_depth(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(library_module, "MAX_DEPTH", 3)
    kohya_lora(tmp_path / "Lora" / "a" / "b" / "shallow.safetensors")  # level 3
    kohya_lora(tmp_path / "Lora" / "a" / "b" / "c" / "deep.safetensors")  # level 4
    lib = ModelLibrary(tmp_path)
    assert [i.name for i in lib.items("lora")] == ["shallow"]
    assert any("levels deep" in note for note in lib.notes)


def test_a_huge_folder_is_searched_to_a_bounded_number_of_entries(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(library_module, "MAX_ENTRIES", 20)
    for index in range(40):
        (tmp_path / "Lora" / f"note-{index:02}.txt").parent.mkdir(exist_ok=True)
        (tmp_path / "Lora" / f"note-{index:02}.txt").write_text("x")
    lib = ModelLibrary(tmp_path)
    assert any("more than 20" in note for note in lib.notes)


def test_a_folder_link_loop_ends(tmp_path: Path):
    kohya_lora(tmp_path / "Lora" / "x.safetensors")
    (tmp_path / "Lora" / "loop").symlink_to(tmp_path / "Lora", target_is_directory=True)
    (tmp_path / "Lora" / "up").symlink_to(tmp_path, target_is_directory=True)
    lib = ModelLibrary(tmp_path)
    assert [i.name for i in lib.items("lora")] == ["x"]


def test_only_headers_are_read(tmp_path: Path, monkeypatch):
    path = kohya_lora(tmp_path / "Lora" / "x.safetensors")
    header_length = int.from_bytes(path.read_bytes()[:8], "little")
    read_sizes: list[int] = []
    real_open = Path.open

    def counting_open(self, *args, **kwargs):
        handle = real_open(self, *args, **kwargs)
        if self == path:
            real_read = handle.read

            def read(n=-1):
                data = real_read(n)
                read_sizes.append(len(data))
                return data

            handle.read = read
        return handle

    monkeypatch.setattr(Path, "open", counting_open)
    assert [i.name for i in ModelLibrary(tmp_path).items("lora")] == ["x"]
    assert sum(read_sizes) == 8 + header_length < path.stat().st_size


# -- upscalers: the tensor names of real spandrel architectures ------------------------------
TINY_UPSCALERS = {
    "ESRGAN": dict(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4),
    "Compact": dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4),
    "SwinIR": dict(embed_dim=12, depths=[1], num_heads=[1], window_size=4, upscale=4,
                   upsampler="pixelshuffle"),
    "Swin2SR": dict(embed_dim=12, depths=[1], num_heads=[1], window_size=4, upscale=4,
                    upsampler="pixelshuffle"),
    "DAT": dict(embed_dim=12, depth=[2], num_heads=[2], upscale=2),
    "HAT": dict(embed_dim=12, depths=(1,), num_heads=(1,), window_size=4, upscale=4,
                squeeze_factor=2, compress_ratio=2),
    "SPAN": dict(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=4),
    "OmniSR": dict(num_feat=8, up_scale=4),
    "PLKSR": dict(dim=8, n_blocks=1, upscaling_factor=4, kernel_size=5),
    "SAFMN": dict(dim=8, n_blocks=1, upscaling_factor=4),  # known to spandrel only
}


@pytest.mark.parametrize("arch", sorted(TINY_UPSCALERS))
def test_upscalers_are_recognised_as_spandrel_recognises_them(tmp_path: Path, arch: str):
    import importlib

    from core.upscale import load_spandrel, spandrel_available

    if not spandrel_available():
        pytest.skip("spandrel is not installed")
    load_spandrel()  # spandrel without its torchvision-importing __init__ (core/upscale.py)

    module = importlib.import_module(f"spandrel.architectures.{arch}")
    state = getattr(module, arch)(**TINY_UPSCALERS[arch]).state_dict()
    _save(tmp_path / "upscale_models" / f"tiny-{arch}.safetensors", dict(state))
    [item] = ModelLibrary(tmp_path).items("upscaler")
    loaded = load_spandrel().load(state)
    assert item.detail["family"] == loaded.architecture.name


def test_a_rescan_reads_only_new_or_changed_files_and_forgets_removed_ones(tmp_path: Path, monkeypatch):
    kohya_lora(tmp_path / "Lora" / "a.safetensors")
    changing = kohya_lora(tmp_path / "Lora" / "b.safetensors")
    gone = kohya_lora(tmp_path / "Lora" / "c.safetensors")
    lib = ModelLibrary(tmp_path)
    reads: list[str] = []
    real = library_module.read_safetensors_header

    def counting(path: Path):
        reads.append(path.name)
        return real(path)

    monkeypatch.setattr(library_module, "read_safetensors_header", counting)
    lib.scan()
    assert reads == []  # nothing changed: no header read again
    lycoris(changing, "loha")  # replaced by a LoHa
    os.utime(changing, ns=(1, 1))
    gone.unlink()
    kohya_lora(tmp_path / "Lora" / "d.safetensors", "sdxl")
    lib.scan()
    assert sorted(reads) == ["b.safetensors", "d.safetensors"]
    assert {i.name: i.arch for i in lib.items("lora")} == {"a": "sd1", "d": "sdxl"}
    assert [r.name for r in lib.refused] == ["b"]


def test_pointing_at_the_install_folder_instead_of_models_says_what_to_do(a1111: Path):
    lib = ModelLibrary(a1111.parent)  # stable-diffusion-webui/, not stable-diffusion-webui/models
    assert any("point the models folder (--models-dir) at its models/" in n for n in lib.notes)
    assert ModelLibrary(a1111).notes == []


def _raw_safetensors(path: Path, header: dict) -> Path:
    import json
    import struct

    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 64)
    return path


@pytest.mark.parametrize(
    "shape", [[-1], ["x"], 5, None, [2**62, 2**62], [[1]], {"a": 1}]
)
def test_a_header_with_nonsense_shapes_is_refused_and_the_scan_goes_on(tmp_path: Path, shape):
    names = {
        "Lora": "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight",
        "Stable-diffusion": "model.diffusion_model.input_blocks.0.0.weight",
        "embeddings": "emb_params",
        "VAE": "decoder.conv_in.weight",
        "ESRGAN": "mystery.weight",
        ".": "model.diffusion_model.input_blocks.0.0.weight",
    }
    for folder, key in names.items():
        header = {key: {"dtype": "F32", "shape": shape, "data_offsets": [0, 4]}}
        if folder == "VAE":
            header["encoder.conv_in.weight"] = {"dtype": "F32", "shape": shape, "data_offsets": [0, 4]}
        _raw_safetensors(tmp_path / folder / "odd.safetensors", header)
    kohya_lora(tmp_path / "Lora" / "fine.safetensors")
    lib = ModelLibrary(tmp_path)  # must not raise
    assert "fine" in [i.name for i in lib.items("lora")]
    everything = [*lib.refused, *(i for k in library_module.KINDS for i in lib.items(k))]
    assert len([x for x in everything if x.name == "odd"]) == len(names)


def test_a_named_pipe_is_not_opened(tmp_path: Path):
    os.mkfifo(tmp_path / "blocking.safetensors")
    (tmp_path / "Lora").mkdir()
    os.mkfifo(tmp_path / "Lora" / "blocking.safetensors")
    kohya_lora(tmp_path / "Lora" / "fine.safetensors")
    lib = ModelLibrary(tmp_path)  # would hang for ever on open()
    assert [i.name for i in lib.items("lora")] == ["fine"] and lib.refused == []


def test_an_obscura_folder_with_a_vae_subfolder_still_gets_the_demo_model(tmp_path: Path):
    ldm_vae(tmp_path / "models" / "vae" / "my-vae.safetensors")
    created = ensure_demo_model(tmp_path / "models")
    assert created is not None and created.is_demo
    assert ModelLibrary(tmp_path / "models").layout() == "Obscura"
