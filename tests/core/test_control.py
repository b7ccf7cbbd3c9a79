"""ControlNet and IP-Adapter units per job (core/control.py), on the demo models with tiny
ControlNet / IP-Adapter / CLIP vision files made in code (tests/portrait_files.py).

Every picture test paints 64 px in 2 steps. "Plain" pixels come from the same engine without
units; weight 0 must give exactly those (``torch.equal``), and after any job (failed ones too)
the model carries nothing of it.
"""

from __future__ import annotations

import gc
import logging
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from portrait_files import tiny_clip_vision, tiny_controlnet, tiny_ip_adapter

from core import control
from core.control import ControlUnit, IPAdapterUnit, fit_map
from core.demo import DEMO_NAME, save_demo_model
from core.engine import Engine, GenerationRequest, HiresFix
from core.errors import InputError, JobCancelled
from core.library import LibraryItem
from core.registry import ModelRegistry

SD, XL = DEMO_NAME["sd"], DEMO_NAME["sdxl"]
SIZE = 64
ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT / "data" / "astronaut-256.png"


class _Library:
    """The models folder's library, plus the portrait kinds from a table (until the scan of
    core/library.py lists them, the same LibraryItems it would make)."""

    def __init__(self, inner: Any, items: dict[str, list[LibraryItem]]) -> None:
        self.inner = inner
        self.extra = items

    def items(self, kind: str) -> list[LibraryItem]:
        if kind in self.extra:
            return list(self.extra[kind])
        return self.inner.items(kind)

    def find(self, kind: str, name: str) -> LibraryItem:
        if kind in self.extra:
            for item in self.extra[kind]:
                if item.name == name:
                    return item
            raise InputError(f"unknown_{kind}", "not in the models folder")
        return self.inner.find(kind, name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("portrait-library")
    save_demo_model(folder / SD, arch="sd")
    save_demo_model(folder / XL, arch="sdxl")
    parts = folder.parent / (folder.name + "-parts")
    parts.mkdir()
    tiny_controlnet(parts / "edges-sd", arch="sd1", seed=11)
    tiny_controlnet(parts / "lines-sd", arch="sd1", seed=12)
    tiny_controlnet(parts / "edges-xl", arch="sdxl", seed=13)
    tiny_controlnet(parts / "union-xl", arch="sdxl", union=True, seed=14)
    tiny_clip_vision(parts / "clip-tiny")
    tiny_ip_adapter(parts / "ip-sd.safetensors", variant="plain", arch="sd1", seed=9)
    tiny_ip_adapter(parts / "ip-plus-sd.safetensors", variant="plus", arch="sd1", seed=10)
    tiny_ip_adapter(parts / "ip-xl.safetensors", variant="plain", arch="sdxl", seed=8)
    return folder


def _items(lib: Path) -> dict[str, list[LibraryItem]]:
    """The LibraryItems the scan makes of the portrait files (core/control_files.py's details)."""
    from core.control_files import clip_vision_detail, controlnet_detail, ipadapter_detail
    from core.registry import read_safetensors_header

    parts = lib.parent / (lib.name + "-parts")
    items: dict[str, list[LibraryItem]] = {"controlnet": [], "ipadapter": [], "clip_vision": []}
    # The tiny files' widths (32, 64) are no real architecture's: the arch is the demo model's.
    for name in ("edges-sd", "lines-sd", "edges-xl", "union-xl"):
        path = parts / name / "diffusion_pytorch_model.safetensors"
        detail = controlnet_detail(read_safetensors_header(path))[1]
        arch = "sdxl" if name.endswith("xl") else "sd1"
        items["controlnet"].append(LibraryItem("controlnet", name, path, arch, detail))
    for name in ("ip-sd", "ip-plus-sd", "ip-xl"):
        path = parts / f"{name}.safetensors"
        detail = ipadapter_detail(read_safetensors_header(path), name)[1]
        arch = "sdxl" if name.endswith("xl") else "sd1"
        items["ipadapter"].append(LibraryItem("ipadapter", name, path, arch, detail))
    path = parts / "clip-tiny" / "model.safetensors"
    detail = clip_vision_detail(read_safetensors_header(path))
    items["clip_vision"].append(LibraryItem("clip_vision", "clip-tiny", path, None, detail))
    return items


def _engine(lib: Path) -> Engine:
    engine = Engine(ModelRegistry(lib), device="cpu")
    library = engine.registry.library
    if not hasattr(library, "_items") or not library.items("controlnet"):
        engine.registry.library = _Library(library, _items(lib))  # type: ignore[assignment]
    return engine


@pytest.fixture(scope="module")
def engine(lib: Path) -> Engine:
    return _engine(lib)


def photo(seed: int = 3, size: int = SIZE) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


def square_map(size: int = SIZE) -> Image.Image:
    """A white square on black: a control map with strong structure."""
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    pixels[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    return Image.fromarray(pixels, "RGB")


def paint(engine: Engine, model: str = SD, **kw: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    request = GenerationRequest(
        "a portrait", width=SIZE, height=SIZE, num_inference_steps=2, seed=7, model=model, **kw
    )
    result = engine.generate(request)
    pixels = torch.from_numpy(np.stack([np.asarray(image) for image in result.images]))
    return pixels, result.extras


def plain(engine: Engine, model: str = SD, **kw: Any) -> torch.Tensor:
    return paint(engine, model, **kw)[0]


def error(engine: Engine, model: str = SD, **kw: Any) -> InputError:
    with pytest.raises(InputError) as caught:
        paint(engine, model, **kw)
    return caught.value


def unit(**kw: Any) -> ControlUnit:
    kw.setdefault("model", "edges-sd")
    kw.setdefault("image", square_map())
    return ControlUnit(**kw)


def ip(**kw: Any) -> IPAdapterUnit:
    kw.setdefault("model", "ip-sd")
    kw.setdefault("images", [photo(5)])
    return IPAdapterUnit(**kw)


def model_is_clean(engine: Engine) -> None:
    """The loaded model carries nothing of a ControlNet/IP-Adapter job."""
    from diffusers.models.attention_processor import (
        IPAdapterAttnProcessor,
        IPAdapterAttnProcessor2_0,
    )

    assert engine._networks is not None and not engine._networks.broken  # tear-down worked
    for pipe in engine._pipes.values():
        assert getattr(pipe, "image_encoder", None) is None
        assert getattr(pipe, "controlnet", None) is None
        unet = pipe.unet
        assert unet.encoder_hid_proj is None
        assert unet.config.encoder_hid_dim_type is None
        kinds = {type(p) for p in unet.attn_processors.values()}
        assert not kinds & {IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0}


# -- checks -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"weight": 2.5}, "control_weight_out_of_range"),
        ({"weight": float("nan")}, "control_weight_out_of_range"),
        ({"weight": True}, "control_weight_out_of_range"),
        ({"weight": "1"}, "control_weight_out_of_range"),
        ({"guidance_start": 0.8, "guidance_end": 0.2}, "control_guidance_out_of_range"),
        ({"guidance_end": 1.5}, "control_guidance_out_of_range"),
        ({"guidance_start": -0.1}, "control_guidance_out_of_range"),
        ({"processor_res": 63}, "control_res_out_of_range"),
        ({"processor_res": 10**9}, "control_res_out_of_range"),
        ({"processor_res": 512.5}, "control_res_out_of_range"),
        ({"threshold_a": 1e30}, "control_threshold_out_of_range"),
        ({"module": "canny", "threshold_a": 0}, "control_threshold_out_of_range"),
        ({"module": "openpose_full"}, "unknown_control_module"),
        ({"control_mode": "Loud"}, "unknown_control_mode"),
        ({"resize_mode": "Stretch"}, "unknown_control_resize_mode"),
        ({"union_type": "x-ray"}, "unknown_union_type"),
        ({"image": b"\x89PNG"}, "control_not_an_image"),
        ({"image": None}, "control_image_missing"),
        ({"model": ""}, "control_bad_model"),
        ({"model": 7}, "control_bad_model"),
        ({"model": "edges-xl"}, "controlnet_wrong_arch"),
    ],
)
def test_bad_controlnet_units_are_one_sentence(engine: Engine, kw: dict[str, Any], code: str) -> None:
    err = error(engine, controlnets=[unit(**kw)])
    assert err.code == code
    assert str(err).endswith(".") and "\n" not in str(err)


def test_wrong_arch_names_both_architectures(engine: Engine) -> None:
    err = error(engine, controlnets=[unit(model="edges-xl")])
    assert "SDXL" in str(err) and "Stable Diffusion 1.x" in str(err)
    err = error(engine, XL, ip_adapters=[ip(model="ip-sd")])
    assert err.code == "ipadapter_wrong_arch"


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"weight": -0.5}, "control_weight_out_of_range"),
        ({"style_weight": 3.0}, "control_weight_out_of_range"),
        ({"guidance_start": 1.0, "guidance_end": 0.5}, "control_guidance_out_of_range"),
        ({"images": [photo()] * (control.MAX_REFERENCES + 1)}, "too_many_ip_references"),
        ({"images": ["not a picture"]}, "control_not_an_image"),
        ({"images": []}, "reference_image_missing"),
        ({"crop_face": "yes"}, "control_bad_flag"),
        ({"model": "nope"}, "unknown_ipadapter"),
    ],
)
def test_bad_ip_adapter_units_are_one_sentence(engine: Engine, kw: dict[str, Any], code: str) -> None:
    assert error(engine, ip_adapters=[ip(**kw)]).code == code


def test_unit_counts_hires_and_families_are_checked(engine: Engine) -> None:
    many = [unit() for _ in range(control.MAX_UNITS + 1)]
    assert error(engine, controlnets=many).code == "too_many_control_units"
    assert error(engine, ip_adapters=[ip()] * 5).code == "too_many_control_units"
    assert error(engine, controlnets=unit()).code == "control_units_invalid"
    assert error(engine, controlnets=[ip()]).code == "control_units_invalid"
    err = error(engine, controlnets=[unit()], hires=HiresFix())
    assert err.code == "control_with_hires"
    info = engine.model_for(SD)
    request = GenerationRequest("x", controlnets=[unit()])
    with pytest.raises(InputError) as caught:
        control.check_request(request, engine.registry.library, replace(info, arch="flux1"))
    assert caught.value.code == "control_wrong_family"
    assert str(caught.value) == (
        "ControlNet and IP-Adapter work with SD 1.x and SDXL models; choose one of those or "
        "remove the units."
    )


def test_an_ip_adapter_needs_a_clip_vision_encoder(engine: Engine, lib: Path) -> None:
    other = _engine(lib)
    items = _items(lib)
    items["clip_vision"] = []
    other.registry.library = _Library(other.registry.library.inner, items)  # type: ignore[attr-defined]
    assert error(other, ip_adapters=[ip()]).code == "clip_vision_missing"


# -- control maps -------------------------------------------------------------------------------
def test_resize_modes_fit_the_map_as_a1111_does() -> None:
    wide = Image.new("RGB", (200, 100), (10, 20, 30))
    wide.paste((250, 250, 250), (0, 0, 20, 100))  # a white band on the left edge
    stretched = fit_map(wide, 64, 64, "Just Resize")
    assert stretched.size == (64, 64)
    assert stretched.getpixel((0, 32))[0] > 200  # the band is still there, squeezed
    cropped = fit_map(wide, 64, 64, "Crop and Resize")
    assert cropped.size == (64, 64)
    assert cropped.getpixel((0, 32)) == (10, 20, 30)  # the band was on the cut-off part
    filled = fit_map(wide, 64, 64, "Resize and Fill")
    assert filled.size == (64, 64)
    # 200x100 fits as 64x32 in the middle; the border takes the edges' median colour
    assert filled.getpixel((32, 2)) == (10, 20, 30)
    assert filled.getpixel((1, 32))[0] > 200


# -- ControlNet ---------------------------------------------------------------------------------
def test_a_controlnet_changes_the_picture_and_weight_0_does_not(engine: Engine) -> None:
    base = plain(engine)
    with_unit, extras = paint(engine, controlnets=[unit()])
    assert not torch.equal(with_unit, base)
    assert extras["controlnet"][0]["model"] == "edges-sd"
    assert extras["controlnet"][0]["control_mode"] == "Balanced"
    assert torch.equal(plain(engine, controlnets=[unit(weight=0.0)]), base)
    # an empty start..end window: the ControlNet acts on no step
    assert torch.equal(plain(engine, controlnets=[unit(guidance_start=1.0)]), base)
    # a window of half the steps acts, but not as the whole schedule does
    half = plain(engine, controlnets=[unit(guidance_end=0.5)])
    assert not torch.equal(half, base) and not torch.equal(half, with_unit)
    model_is_clean(engine)
    assert torch.equal(plain(engine), base)  # the next job paints as before


def test_the_map_comes_from_the_unit_picture_or_the_photo(engine: Engine) -> None:
    own = plain(engine, image=photo(1), controlnets=[unit()])
    from_photo = plain(engine, image=photo(1), controlnets=[unit(image=None)])
    assert not torch.equal(own, from_photo)
    assert torch.equal(from_photo, plain(engine, image=photo(1), controlnets=[unit(image=photo(1))]))
    canny = plain(engine, controlnets=[unit(module="canny", image=photo(2))])
    none = plain(engine, controlnets=[unit(module="none", image=photo(2))])
    assert not torch.equal(canny, none)


def test_control_modes_differ(engine: Engine) -> None:
    results = [
        plain(engine, controlnets=[unit(control_mode=mode)], guidance_scale=7.0)
        for mode in control.CONTROL_MODES
    ]
    assert not torch.equal(results[0], results[1])
    assert not torch.equal(results[1], results[2])
    # without CFG there is no unconditional half: "ControlNet is more important" = soft injection
    no_cfg = [
        plain(engine, controlnets=[unit(control_mode=mode)], guidance_scale=1.0)
        for mode in control.CONTROL_MODES[1:]
    ]
    assert torch.equal(no_cfg[0], no_cfg[1])


def test_controlnet_in_img2img_and_inpaint(engine: Engine) -> None:
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    for kw in ({"image": photo(4)}, {"image": photo(4), "mask": mask}):
        base = plain(engine, strength=1.0, **kw)
        assert not torch.equal(plain(engine, strength=1.0, controlnets=[unit()], **kw), base)
        assert torch.equal(plain(engine, strength=1.0, controlnets=[unit(weight=0)], **kw), base)
    model_is_clean(engine)


def test_two_units_add_up(engine: Engine) -> None:
    one = plain(engine, controlnets=[unit()])
    two = plain(engine, controlnets=[unit(), unit(model="lines-sd", image=photo(6))])
    assert not torch.equal(one, two)
    # the second at weight 0 leaves the first alone
    assert torch.equal(one, plain(engine, controlnets=[unit(), unit(model="lines-sd", weight=0.0)]))


def test_sdxl_controlnet_and_union(engine: Engine) -> None:
    base = plain(engine, XL)
    assert not torch.equal(plain(engine, XL, controlnets=[unit(model="edges-xl")]), base)
    union = plain(engine, XL, controlnets=[unit(model="union-xl", union_type="canny")])
    assert not torch.equal(union, base)
    depth = plain(engine, XL, controlnets=[unit(model="union-xl", union_type="depth")])
    assert not torch.equal(union, depth)  # the control type reaches the model
    # canny's module picks the union type itself; "none" must say which
    plain(engine, XL, controlnets=[unit(model="union-xl", module="canny", image=photo(2))])
    assert error(engine, XL, controlnets=[unit(model="union-xl")]).code == "union_type_needed"
    err = error(engine, XL, controlnets=[unit(model="edges-xl", union_type="canny")])
    assert err.code == "union_type_not_union"
    err = error(engine, XL, controlnets=[unit(model="edges-xl"), unit(model="union-xl", union_type="canny")])
    assert err.code == "union_mixed"
    model_is_clean(engine)
    assert torch.equal(plain(engine, XL), base)


def test_a_controlnet_of_unknown_arch_that_does_not_fit_is_one_sentence(lib: Path) -> None:
    other = _engine(lib)
    items = _items(lib)
    # an SDXL ControlNet whose header told no architecture, on the SD 1.x model
    items["controlnet"] = [replace(items["controlnet"][2], name="mystery", arch=None)]
    other.registry.library = _Library(other.registry.library.inner, items)  # type: ignore[attr-defined]
    err = error(other, controlnets=[unit(model="mystery")])
    assert err.code == "controlnet_mismatch"
    model_is_clean(other)


def test_controlnets_are_loaded_once(engine: Engine) -> None:
    plain(engine, controlnets=[unit()])
    loads = control.cache_for(engine).loads
    plain(engine, controlnets=[unit(weight=0.5)])
    assert control.cache_for(engine).loads == loads


# -- IP-Adapter ---------------------------------------------------------------------------------
def test_ip_adapter_scale_0_is_bit_identical_and_above_0_changes(engine: Engine) -> None:
    base = plain(engine)
    assert torch.equal(plain(engine, ip_adapters=[ip(weight=0.0)]), base)
    changed, extras = paint(engine, ip_adapters=[ip(weight=1.0)])
    assert not torch.equal(changed, base)
    assert extras["ip_adapter"] == [
        {"model": "ip-sd", "weight": 1.0, "guidance_start": 0.0, "guidance_end": 1.0,
         "crop_face": False}
    ]
    assert "face_found" not in extras
    other = plain(engine, ip_adapters=[ip(images=[photo(6)])])
    assert not torch.equal(changed, other)  # the reference picture matters
    model_is_clean(engine)
    assert torch.equal(plain(engine), base)


def test_plus_adapters_several_adapters_and_references(engine: Engine) -> None:
    base = plain(engine)
    plus = plain(engine, ip_adapters=[ip(model="ip-plus-sd")])
    assert not torch.equal(plus, base)
    both = plain(engine, ip_adapters=[ip(), ip(model="ip-plus-sd")])
    assert not torch.equal(both, plus)
    assert torch.equal(plain(engine, ip_adapters=[ip(weight=0), ip(model="ip-plus-sd", weight=0)]), base)
    two_refs = plain(engine, ip_adapters=[ip(images=[photo(5), photo(6)])])
    assert not torch.equal(two_refs, plain(engine, ip_adapters=[ip()]))
    model_is_clean(engine)


def test_style_weight_and_window(engine: Engine) -> None:
    full = plain(engine, ip_adapters=[ip()])
    style_only = plain(engine, ip_adapters=[ip(weight=0.0, style_weight=1.0)])
    assert not torch.equal(style_only, full)
    assert not torch.equal(style_only, plain(engine))
    late = plain(engine, ip_adapters=[ip(guidance_start=0.5)])
    assert not torch.equal(late, full)
    assert torch.equal(plain(engine, ip_adapters=[ip(guidance_start=1.0)]), plain(engine))


def test_ip_adapter_with_controlnet_and_on_sdxl(engine: Engine) -> None:
    base = plain(engine, image=photo(4), strength=0.9)
    both = plain(engine, image=photo(4), strength=0.9, controlnets=[unit()], ip_adapters=[ip()])
    assert not torch.equal(both, base)
    xl = plain(engine, XL)
    assert not torch.equal(plain(engine, XL, ip_adapters=[ip(model="ip-xl")]), xl)
    model_is_clean(engine)


def test_crop_face_finds_the_astronaut_and_a_blank_photo_is_one_sentence(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core import faces

    crops: list[Any] = []
    real = faces.crop_face

    def spy(image: Image.Image, **kw: Any) -> Any:
        crop = real(image, **kw)
        crops.append(None if crop is None else weakref.ref(crop))
        return crop

    monkeypatch.setattr(faces, "crop_face", spy)
    face = Image.open(FACE).convert("RGB")
    cropped, extras = paint(engine, ip_adapters=[ip(images=[face], crop_face=True)])
    assert extras["face_found"] is True
    assert crops and crops[0] is not None
    uncropped = plain(engine, ip_adapters=[ip(images=[face])])
    assert not torch.equal(cropped, uncropped)  # the crop, not the whole photo, was encoded
    gc.collect()
    assert all(ref is None or ref() is None for ref in crops)  # no crop outlives its job

    blank = Image.new("RGB", (128, 128), (200, 200, 200))
    err = error(engine, ip_adapters=[ip(images=[blank], crop_face=True)])
    assert err.code == "no_face_found"
    assert str(err) == (
        "No face was found in the reference photo; use a photo where the face is clearly "
        "visible, or turn off face cropping."
    )
    skipped, extras = paint(engine, ip_adapters=[ip(images=[blank], crop_face=True, allow_no_face=True)])
    assert extras["face_found"] is False and "ip_adapter" not in extras
    assert torch.equal(skipped, plain(engine))
    model_is_clean(engine)


def test_a_job_that_fails_midway_leaves_nothing_behind(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step raising (a cancel, a crash): adapters unloaded, and neither the reference
    pictures, the face crop nor the CLIP image embeddings outlive the job."""
    from core import faces

    refs: list[weakref.ref[Any]] = []
    real = faces.crop_face

    def spy(image: Image.Image, **kw: Any) -> Any:
        crop = real(image, **kw)
        if crop is not None:
            refs.append(weakref.ref(crop))
        return crop

    monkeypatch.setattr(faces, "crop_face", spy)
    base = plain(engine)
    unet = engine._pipes["txt2img"].unet

    def keep(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        # the CLIP image embeddings the pipeline made and hands the UNet every step
        for tensor in (kwargs.get("added_cond_kwargs") or {}).get("image_embeds") or ():
            refs.append(weakref.ref(tensor))

    handle = unet.register_forward_pre_hook(keep, with_kwargs=True)
    face = Image.open(FACE).convert("RGB")
    reference = photo(8)

    def boom(step: int, total: int, preview: Any) -> None:
        raise JobCancelled()

    request = GenerationRequest(
        "a portrait", width=SIZE, height=SIZE, num_inference_steps=2, seed=7, model=SD,
        controlnets=[unit()],
        ip_adapters=[ip(images=[face], crop_face=True), ip(model="ip-plus-sd", images=[reference])],
    )
    caught: list[BaseException] = []
    try:
        engine.generate(request, on_step=boom)
    except JobCancelled as exc:
        caught.append(exc)  # a caller that keeps the exception
    handle.remove()
    assert caught
    del request, reference, face
    gc.collect()
    assert len(refs) >= 3  # the crop, the embeddings of both adapters
    assert all(ref() is None for ref in refs)  # though the caller still holds the exception
    model_is_clean(engine)
    assert torch.equal(plain(engine), base)


def test_units_run_with_the_models_folder_scan(tmp_path: Path) -> None:
    """The same files found by core/library.py's scan (Obscura's own layout), not a table."""
    from core.library import KINDS

    if "controlnet" not in KINDS:
        pytest.skip("the library does not list ControlNets yet")
    save_demo_model(tmp_path / SD, arch="sd")
    tiny_controlnet(tmp_path / "controlnet" / "edges-sd", arch="sd1", seed=11)
    tiny_ip_adapter(tmp_path / "ipadapter" / "ip-sd.safetensors", variant="plain", arch="sd1")
    tiny_clip_vision(tmp_path / "clip_vision" / "clip-tiny")
    engine = Engine(ModelRegistry(tmp_path), device="cpu")
    library = engine.registry.library
    names = {kind: [item.name for item in library.items(kind)] for kind in ("controlnet", "ipadapter", "clip_vision")}
    assert names["controlnet"] == ["edges-sd"] and names["ipadapter"] == ["ip-sd"]
    assert len(names["clip_vision"]) == 1
    base = plain(engine)
    both, extras = paint(engine, controlnets=[unit()], ip_adapters=[ip()])
    assert not torch.equal(both, base)
    assert [u["model"] for u in extras["controlnet"]] == ["edges-sd"]
    assert [u["model"] for u in extras["ip_adapter"]] == ["ip-sd"]
    model_is_clean(engine)


def test_a_batch_gets_the_units_on_every_picture(engine: Engine) -> None:
    base = plain(engine, batch_size=2)
    both = plain(engine, batch_size=2, controlnets=[unit()], ip_adapters=[ip()])
    assert both.shape[0] == 2
    assert not torch.equal(both[0], base[0]) and not torch.equal(both[1], base[1])


def test_embeddings_do_not_outlive_a_finished_job(engine: Engine) -> None:
    refs: list[weakref.ref[Any]] = []
    plain(engine)
    unet = engine._pipes["txt2img"].unet

    def keep(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        for tensor in (kwargs.get("added_cond_kwargs") or {}).get("image_embeds") or ():
            refs.append(weakref.ref(tensor))

    handle = unet.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        result = engine.generate(GenerationRequest(
            "a portrait", width=SIZE, height=SIZE, num_inference_steps=2, seed=7, model=SD,
            ip_adapters=[ip(model="ip-plus-sd")],
        ))
    finally:
        handle.remove()
    gc.collect()
    assert refs and all(ref() is None for ref in refs)
    # nothing of the picture in the result but the settings
    assert set(result.extras) == {"ip_adapter"}


def test_running_out_of_memory_loading_a_controlnet_is_one_sentence(
    lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = _engine(lib)
    plain(other, ip_adapters=[ip()])  # an encoder and an adapter are kept
    assert control.cache_for(other).encoders

    def full(item: Any, dtype: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory")

    from core import control_files

    monkeypatch.setattr(control_files, "load_controlnet", full)
    err = error(other, controlnets=[unit()])
    assert err.code == "control_out_of_memory"
    cache = control.cache_for(other)
    assert not cache.encoders and not cache.adapters  # what was kept was given back
    model_is_clean(other)


def test_portrait_jobs_log_no_names_and_nothing_of_a_face(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    face = Image.open(FACE).convert("RGB")
    blank = Image.new("RGB", (128, 128), (200, 200, 200))
    with caplog.at_level(logging.DEBUG):
        paint(engine, controlnets=[unit()], ip_adapters=[ip(images=[face], crop_face=True)])
        error(engine, ip_adapters=[ip(images=[blank], crop_face=True)])
        error(engine, controlnets=[unit(model="edges-xl")])
    for record in caplog.records:
        text = record.getMessage().lower()
        assert not any(word in text for word in ("edges", "ip-sd", "face", "portrait")), text


@pytest.mark.parametrize(
    ("arch", "layout", "style"),
    [
        # InstantStyle's own layers for SDXL
        ("sdxl", "down_blocks.2.attentions.1.", "up_blocks.0.attentions.1."),
        # the same places on SD 1.5's UNet (its deepest up block has no attention)
        ("sd1", "down_blocks.2.attentions.1.", "up_blocks.1.attentions.1."),
    ],
)
def test_style_layers_are_instantstyles_on_the_real_unets(arch: str, layout: str, style: str) -> None:
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    folder = ROOT.parent / "core" / "configs" / f"{arch}-base" / "unet"
    with init_empty_weights():  # the real shapes, no memory
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(folder)))
    assert control.style_layers(unet) == (layout, style)
    names = [n for n in unet.attn_processors if n.endswith("attn2.processor")]
    assert any(n.startswith(layout) for n in names) and any(n.startswith(style) for n in names)
