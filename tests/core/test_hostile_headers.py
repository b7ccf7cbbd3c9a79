"""Hostile model headers never crash or hang the model scan: each bad file is refused with one
sentence within a second and the good files beside it are still listed.

GGUF files are written byte by byte here (the GGUF v3 layout: magic, version, tensor count,
field count, then key/value fields and the tensor table), the safetensors files with the real
tensor names of each family's original layout. Each test holds a hang or a crash of the scan
before the fix (a 10**12-long metadata array, a block index of 999999999999, a zero width)."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from family_files import save_gguf, write_header_file

from core.library import ModelLibrary

pytestmark = pytest.mark.timeout(30)  # a hang is a failure, not a stuck run

P = "model.diffusion_model."
UINT8, UINT32, STRING, ARRAY = 0, 4, 8, 9


# -- GGUF bytes -------------------------------------------------------------------------------
def gstr(text: str | bytes) -> bytes:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def gguf_bytes(tensors: int, fields: list[bytes], body: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensors, len(fields)) + b"".join(fields) + body


def field(key: str, kind: int, value: bytes) -> bytes:
    return gstr(key) + struct.pack("<I", kind) + value


HOSTILE_GGUF = {
    # the reviewer's 60-byte file: an array of 10**12 UINT8 values
    "huge_array": (gguf_bytes(0, [field("general.junk", ARRAY, struct.pack("<IQ", UINT8, 10**12))]),
                   "more than a million"),
    # an array a little over the bound, whose values are all there (1 MB + 1)
    "long_array": (gguf_bytes(0, [field("general.junk", ARRAY, struct.pack("<IQ", UINT8, 1_000_001)
                                        + bytes(1_000_001))]), "more than a million"),
    "string_past_end": (gguf_bytes(0, [field("general.name", STRING, struct.pack("<Q", 10**12) + b"x")]),
                        "past the end"),
    "key_past_end": (gguf_bytes(0, [])[:16] + struct.pack("<QQ", 1, 1000) + b"general.name",
                     "past the end"),
    "key_too_long": (gguf_bytes(0, [])[:16] + struct.pack("<QQ", 1, 2**63) + b"k", "longer than"),
    "key_not_utf8": (gguf_bytes(0, [field("general.x", UINT8, b"\0")]).replace(b"general.x", b"general\xff\xfe"),
                     "not UTF-8"),
    "duplicate_tensor": (gguf_bytes(2, [], (gstr("img_in.weight") + struct.pack("<IQIQ", 1, 1, 0, 0)) * 2
                                    + bytes(64)), "same name"),
    "nested_array": (gguf_bytes(0, [field("general.junk", ARRAY, struct.pack("<IQ", ARRAY, 1)
                                          + struct.pack("<IQ", UINT8, 10**12))]), "array inside an array"),
    "unknown_type": (gguf_bytes(0, [field("general.junk", 77, bytes(8))]), "unknown value type"),
    "string_array_past_end": (gguf_bytes(0, [field("general.junk", ARRAY, struct.pack("<IQ", STRING, 3)
                                                   + gstr("a") + struct.pack("<Q", 10**9))]), "past the end"),
    "tensor_count": (b"GGUF" + struct.pack("<IQQ", 3, 10**12, 0) + bytes(64), "too many entries"),
    "field_count": (b"GGUF" + struct.pack("<IQQ", 3, 0, 10**12) + bytes(64), "too many entries"),
    # one tensor whose 4096 x 4096 F32 data the 100-byte file does not hold
    "tensor_past_end": (gguf_bytes(1, [], gstr("img_in.weight") + struct.pack("<IQQIQ", 2, 4096, 4096, 0, 0)),
                        "past the end"),
    "tensor_dims": (gguf_bytes(1, [], gstr("img_in.weight") + struct.pack("<I", 2**31)), "dimensions"),
    "tensor_type": (gguf_bytes(1, [], gstr("img_in.weight") + struct.pack("<IQQIQ", 2, 1, 1, 999, 0)),
                    "unknown tensor type"),
    "bad_alignment": (gguf_bytes(0, [field("general.alignment", UINT32, struct.pack("<I", 0))]), "alignment"),
    "old_version": (b"GGUF" + struct.pack("<IQQ", 1, 0, 0), "version"),
}

FLUX_NAMES = {"double_blocks.0.img_attn.norm.key_norm.scale": (128,), "img_in.weight": (8, 64),
              "txt_in.weight": (8, 4096), "vector_in.in_layer.weight": (8, 768),
              "final_layer.linear.weight": (64, 8), "guidance_in.in_layer.weight": (8, 256)}


def flux_parts(root: Path) -> None:
    """The CLIP-L, T5-XXL and FLUX.1 VAE a good FLUX.1 transformer pairs with."""
    write_header_file(root / "text_encoders" / "clip_l.safetensors", {
        "text_model.embeddings.token_embedding.weight": [10, 768],
        "text_model.embeddings.position_embedding.weight": [77, 768],
        "text_model.encoder.layers.0.self_attn.q_proj.weight": [4, 768],
        "text_projection.weight": [768, 4],
    })
    write_header_file(root / "text_encoders" / "t5xxl_fp16.safetensors", {
        "shared.weight": [10, 4096],
        "encoder.block.0.layer.0.SelfAttention.q.weight": [4, 4096],
        "encoder.final_layer_norm.weight": [4096],
    })
    write_header_file(root / "vae" / "ae.safetensors", {
        "encoder.conv_in.weight": [4, 3, 3, 3],
        "encoder.conv_out.weight": [32, 4, 3, 3],
        "decoder.conv_in.weight": [4, 16, 3, 3],
        "decoder.conv_out.weight": [3, 4, 3, 3],
    })


def _scan(root: Path) -> tuple[ModelLibrary, float]:
    start = time.monotonic()
    lib = ModelLibrary(root)
    return lib, time.monotonic() - start


def _reasons(lib: ModelLibrary, kind: str) -> dict[str, str]:
    return {r.name: r.reason for r in lib.refused if r.kind == kind}


@pytest.mark.parametrize("case", sorted(HOSTILE_GGUF))
def test_a_hostile_gguf_header_is_refused_at_once_beside_a_good_one(tmp_path: Path, case: str):
    data, words = HOSTILE_GGUF[case]
    folder = tmp_path / "diffusion_models"
    folder.mkdir()
    (folder / f"{case}.gguf").write_bytes(data)
    save_gguf({k: torch.from_numpy(np.zeros(s, np.float32)) for k, s in FLUX_NAMES.items()},
              folder / "flux1-dev-Q8_0.gguf", "flux")
    flux_parts(tmp_path)
    lib, took = _scan(tmp_path)
    assert took < 5
    reason = _reasons(lib, "diffusion_model")[case]
    assert reason.startswith("The file is not a valid GGUF file") and words in reason, reason
    assert reason.endswith("download it again.") and reason.count(".") <= 2  # one sentence
    assert [i.name for i in lib.items("diffusion_model")] == ["flux1-dev-Q8_0"]
    assert [i.name for i in lib.items("checkpoint")] == ["flux1-dev-Q8_0"]


def test_a_gguf_with_metadata_and_string_arrays_is_still_read(tmp_path: Path):
    """A real converter's file with many metadata kinds (strings, numbers, arrays of strings and
    numbers, a bool): read as before, only its tensor table and architecture kept."""
    import gguf

    path = tmp_path / "diffusion_models" / "flux1-dev-Q8_0.gguf"
    path.parent.mkdir()
    writer = gguf.GGUFWriter(str(path), "flux")
    writer.add_string("general.name", "x" * 5000)
    writer.add_array("tokenizer.ggml.tokens", ["a", "bc", ""] * 1000)
    writer.add_array("general.tags", [1, 2, 3])
    writer.add_bool("general.flag", True)
    writer.add_float64("general.f", 1.5)
    for name, shape in FLUX_NAMES.items():
        writer.add_tensor(name, np.zeros(shape, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    flux_parts(tmp_path)
    lib, took = _scan(tmp_path)
    assert took < 5
    [item] = lib.items("diffusion_model")
    assert item.detail["gguf_architecture"] == "flux" and item.detail["quantization"] == ["F32"]
    assert item.detail["needs"] == {"context": 4096, "pooled": 768}


# -- safetensors headers of each family's original layout -----------------------------------
def header_file(path: Path, shapes: dict[str, list[int]]) -> Path:
    """A safetensors header with these shapes (any sign) and no data: the scan reads no weight."""
    header = {k: {"dtype": "F16", "shape": v, "data_offsets": [0, 0]} for k, v in shapes.items()}
    raw = json.dumps(header).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


FAMILIES: dict[str, dict[str, list[int]]] = {
    "sd3.5_medium": {
        P + "joint_blocks.0.context_block.adaLN_modulation.1.bias": [16],
        P + "joint_blocks.1.context_block.adaLN_modulation.1.bias": [16],
        P + "joint_blocks.0.x_block.attn.ln_q.weight": [64],
        P + "x_embedder.proj.weight": [128, 16, 2, 2],
        P + "pos_embed": [1, 36864, 4],
        P + "context_embedder.weight": [4, 4096],
        P + "y_embedder.mlp.0.weight": [4, 2048],
        P + "final_layer.linear.weight": [64, 4],
    },
    "flux1-dev": {
        "double_blocks.0.img_attn.norm.key_norm.scale": [128],
        "double_blocks.0.img_attn.qkv.weight": [24, 8],
        "single_blocks.0.linear1.weight": [24, 8],
        "img_in.weight": [256, 64],
        "txt_in.weight": [8, 4096],
        "vector_in.in_layer.weight": [8, 768],
        "final_layer.linear.weight": [64, 8],
        "guidance_in.in_layer.weight": [8, 256],
    },
    "z_image_turbo": {
        "layers.0.adaLN_modulation.0.weight": [24, 8],
        "layers.0.attention.qkv.weight": [24, 8],
        "layers.0.attention.k_norm.weight": [4],
        "cap_embedder.0.weight": [2560],
        "cap_embedder.1.weight": [8, 2560],
        "x_embedder.weight": [8, 64],
        "noise_refiner.0.adaLN_modulation.0.weight": [24, 8],
    },
    "qwen_image": {
        "txt_norm.weight": [3584],
        "img_in.weight": [8, 64],
        "txt_in.weight": [8, 3584],
        "transformer_blocks.0.img_mod.1.weight": [48, 8],
        "transformer_blocks.0.attn.norm_k.weight": [4],
        "proj_out.weight": [64, 8],
    },
}
# per family: (the head width a division takes, the patch embedding, a numbered block)
KEYS = {
    "sd3.5_medium": (P + "joint_blocks.0.x_block.attn.ln_q.weight", P + "x_embedder.proj.weight",
                     P + "joint_blocks.{}.context_block.adaLN_modulation.1.bias"),
    "flux1-dev": ("double_blocks.0.img_attn.norm.key_norm.scale", "img_in.weight",
                  "double_blocks.{}.img_attn.qkv.weight"),
    "z_image_turbo": ("layers.0.attention.k_norm.weight", "x_embedder.weight",
                      "layers.{}.adaLN_modulation.0.weight"),
    "qwen_image": ("transformer_blocks.0.attn.norm_k.weight", "img_in.weight",
                   "transformer_blocks.{}.img_mod.1.weight"),
}


def _hostile(family: str, fault: str) -> dict[str, list[int]]:
    shapes = {k: list(v) for k, v in FAMILIES[family].items()}
    head, embed, block = KEYS[family]
    if fault == "zero":
        shapes[head] = [0]
    elif fault == "negative":
        shapes[embed] = [-shapes[embed][0]] + shapes[embed][1:]
    elif fault == "zero_width":
        shapes[embed] = [0] + shapes[embed][1:]
    elif fault == "huge_index":
        shapes[block.format(999999999999)] = shapes[block.format(0)]
    else:  # a gap: blocks 0 and 7 only
        shapes[block.format(7)] = shapes[block.format(0)]
    return shapes


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("fault", ["zero", "negative", "zero_width", "huge_index", "gap"])
def test_a_hostile_transformer_header_is_refused_beside_a_good_one(tmp_path: Path, family: str,
                                                                     fault: str):
    folder = tmp_path / "diffusion_models"
    header_file(folder / f"{family}.safetensors", _hostile(family, fault))
    header_file(folder / "flux1-good.safetensors", FAMILIES["flux1-dev"])
    flux_parts(tmp_path)
    lib, took = _scan(tmp_path)
    assert took < 5
    reason = _reasons(lib, "diffusion_model").get(family)
    assert reason is not None, [(i.name, i.detail.get("config")) for i in lib.items("diffusion_model")]
    words = {"zero": "size", "negative": "size", "zero_width": "size", "huge_index": "block",
             "gap": "block"}[fault]
    assert words in reason and reason.endswith("download it again."), reason
    assert [i.name for i in lib.items("checkpoint")] == ["flux1-good"]


def test_the_good_headers_of_each_family_are_read(tmp_path: Path):
    """The control: the same headers without a fault are transformers with a derived config."""
    for family, shapes in FAMILIES.items():
        header_file(tmp_path / "diffusion_models" / f"{family}.safetensors", shapes)
    lib = ModelLibrary(tmp_path)
    found = {i.name: i.detail["config"] for i in lib.items("diffusion_model")}
    assert set(found) == set(FAMILIES), [(r.name, r.reason) for r in lib.refused]
    assert found["sd3.5_medium"]["num_layers"] == 2 and found["sd3.5_medium"]["num_attention_heads"] == 2
    assert found["flux1-dev"]["num_layers"] == 1 and found["flux1-dev"]["num_attention_heads"] == 2
    assert found["qwen_image"]["num_layers"] == 1


def test_an_arithmetic_or_memory_fault_in_a_detector_refuses_only_that_file(tmp_path: Path,
                                                                            monkeypatch):
    """Fault injection: a detector that trips (ZeroDivisionError, MemoryError) on one file's
    header refuses that file as damaged; the scan lists the rest."""
    import core.library as library

    real = library.derive_transformer_config

    def tripping(header, arch, layout, prefix):
        if arch == "sd3":
            raise ZeroDivisionError("integer division or modulo by zero")
        if arch == "qwenimage":
            raise MemoryError
        return real(header, arch, layout, prefix)

    monkeypatch.setattr(library, "derive_transformer_config", tripping)
    folder = tmp_path / "diffusion_models"
    header_file(folder / "sd3.5_medium.safetensors", FAMILIES["sd3.5_medium"])
    header_file(folder / "qwen_image.safetensors", FAMILIES["qwen_image"])
    header_file(folder / "flux1-good.safetensors", FAMILIES["flux1-dev"])
    save_gguf({k: torch.from_numpy(np.zeros(s, np.float32)) for k, s in
               {"txt_norm.weight": (3584,), "img_in.weight": (8, 64), "txt_in.weight": (8, 3584),
                "transformer_blocks.0.img_mod.1.weight": (48, 8), "proj_out.weight": (64, 8)}.items()},
              folder / "qwen-image-Q8_0.gguf", "qwen_image")
    flux_parts(tmp_path)
    lib = ModelLibrary(tmp_path)
    reasons = _reasons(lib, "diffusion_model")
    for name in ("sd3.5_medium", "qwen_image", "qwen-image-Q8_0"):
        assert "download it again" in reasons[name], reasons
    assert [i.name for i in lib.items("checkpoint")] == ["flux1-good"]


def test_a_gguf_header_past_64_mib_is_refused_without_reading_it(tmp_path: Path):
    """A 70 MiB string value (a sparse file: no disk) runs past the header bound."""
    folder = tmp_path / "diffusion_models"
    folder.mkdir()
    path = folder / "big.gguf"
    with path.open("wb") as handle:
        handle.write(gguf_bytes(0, [field("general.name", STRING, struct.pack("<Q", 70 << 20))]))
        handle.truncate(80 << 20)
    lib, took = _scan(tmp_path)
    assert took < 5
    assert "larger than 64 MiB" in _reasons(lib, "diffusion_model")["big"]


def test_a_million_metadata_strings_are_walked_within_the_bound(tmp_path: Path):
    """The most work a header may ask: a million-value string array, read in well under 5 s."""
    from core.family_detect import read_gguf_header

    path = tmp_path / "tokens.gguf"
    path.write_bytes(gguf_bytes(0, [field("tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, 10**6)
                                          + gstr("ab") * 10**6)]))
    start = time.monotonic()
    assert read_gguf_header(path) == ({}, "")
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    ("arch", "variant", "key"),
    [("sd3", "medium", "num_layers"), ("flux1", "schnell", "num_single_layers"),
     ("flux2", "klein", "num_layers"), ("zimage", "turbo", "n_layers"),
     ("qwenimage", "base", "num_layers")],
)
def test_a_folder_whose_config_overstates_its_layers_is_refused_at_the_scan(
    tmp_path: Path, arch: str, variant: str, key: str
) -> None:
    """A diffusers folder whose transformer/config.json claims 100,000 layers passed the scan
    and the load then built them, holding the engine for everybody (second review): the config
    must say what the weights' headers say. The honest folder beside it is still listed."""
    import json
    import time

    from family_files import save_family

    from core.registry import ModelRegistry

    save_family(tmp_path / "honest", arch, variant, fmt="diffusers")
    save_family(tmp_path / "lying", arch, variant, fmt="diffusers")
    config_file = tmp_path / "lying" / "transformer" / "config.json"
    config = json.loads(config_file.read_text())
    config[key] = 100_000
    config_file.write_text(json.dumps(config))
    started = time.monotonic()
    registry = ModelRegistry(tmp_path)
    assert time.monotonic() - started < 5
    assert [m.name for m in registry.models] == ["honest"]
    [refused] = registry.refused
    assert refused.name == "lying" and "does not match its weights" in refused.reason


@pytest.mark.parametrize("arch", ["sd", "sdxl"])
def test_an_sd_folder_whose_unet_config_overstates_its_layers_is_refused_at_the_scan(
    tmp_path: Path, arch: str
) -> None:
    """The same for a Stable Diffusion folder's unet/config.json (layers_per_block)."""
    import json

    from core.demo import save_demo_model
    from core.registry import ModelRegistry

    save_demo_model(tmp_path / "honest", arch=arch)
    save_demo_model(tmp_path / "lying", arch=arch)
    config_file = tmp_path / "lying" / "unet" / "config.json"
    config = json.loads(config_file.read_text())
    config["layers_per_block"] = 100_000
    config_file.write_text(json.dumps(config))
    registry = ModelRegistry(tmp_path)
    assert [m.name for m in registry.models] == ["honest"]
    [refused] = registry.refused
    assert refused.name == "lying" and "does not match its weights" in refused.reason
