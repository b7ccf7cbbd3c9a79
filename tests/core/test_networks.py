"""LoRAs and VAEs per job (core/networks.py): applied for one job, never leaking into the next.

Tiny Kohya-format LoRAs and a tiny VAE are made in code for the demo models
(tests/network_files.py). "Fresh" pixels come from an engine that never saw a LoRA or a VAE.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from network_files import embedding, kohya_lora, loha, peft_format, save_lora, tiny_vae

from core.demo import DEMO_NAME, build_demo_pipeline, save_demo_model
from core.engine import Engine, GenerationRequest, HiresFix
from core.errors import InputError, JobCancelled
from core.networks import MAX_LORA_WEIGHT, MAX_LORAS, LoraUse, lora_uses, vae_name
from core.registry import ModelRegistry

SD, XL = DEMO_NAME["sd"], DEMO_NAME["sdxl"]
SIZE = 64


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat models folder: both demo models, LoRAs of every kind tested, and VAEs."""
    folder = tmp_path_factory.mktemp("library")
    save_demo_model(folder / SD, arch="sd")
    save_demo_model(folder / XL, arch="sdxl")
    sd, xl = build_demo_pipeline("sd"), build_demo_pipeline("sdxl")
    save_lora(folder / "style.safetensors", kohya_lora(sd, seed=1))
    # On a pipeline of its own: loading a LoRA wraps the layers the other files are made from.
    save_lora(
        folder / "style-peft.safetensors",
        peft_format(build_demo_pipeline("sd"), kohya_lora(sd, seed=1)),
    )
    save_lora(folder / "ink.safetensors", kohya_lora(sd, seed=2))
    save_lora(folder / "paper.safetensors", kohya_lora(sd, seed=3))
    save_lora(folder / "unet-only.safetensors", kohya_lora(sd, seed=4, text_encoder=False))
    save_lora(folder / "te-only.safetensors", kohya_lora(sd, seed=5, unet=False))
    save_lora(folder / "xl-style.safetensors", kohya_lora(xl, seed=6))
    save_lora(folder / "xl-sgm.safetensors", kohya_lora(xl, seed=12, sgm=True))
    save_lora(folder / "soft-loha.safetensors", loha(sd))
    save_lora(folder / "broken.safetensors", kohya_lora(sd, seed=8))
    save_lora(folder / "other-vae.safetensors", tiny_vae(sd, seed=7))
    emb = folder / "embeddings"
    emb.mkdir()
    save_lora(emb / "Otter-Token.safetensors", embedding(seed=3))
    first = {"emb_params": embedding(seed=3)["emb_params"][:1]}
    save_lora(emb / "otter-first.safetensors", first)
    save_lora(emb / "xl-token.safetensors", embedding(seed=4, sdxl=True))
    save_lora(folder / "tiny-sdxl-vae.safetensors", tiny_vae(sd, seed=9))
    save_lora(folder / "odd-vae.safetensors", tiny_vae(sd, seed=10, block_out_channels=[8, 16, 16, 16]))
    return folder


def _engine(lib: Path) -> Engine:
    return Engine(ModelRegistry(lib), device="cpu")


@pytest.fixture(scope="module")
def engine(lib: Path) -> Engine:
    return _engine(lib)


def pixels(engine: Engine, prompt: str = "a lighthouse", **kw) -> torch.Tensor:
    kw.setdefault("model", SD)
    request = GenerationRequest(
        prompt, width=SIZE, height=SIZE, num_inference_steps=3, seed=11, **kw
    )
    result = engine.generate(request)
    return torch.from_numpy(np.stack([np.asarray(image) for image in result.images]))


@pytest.fixture(scope="module")
def fresh(lib: Path) -> dict[str, torch.Tensor]:
    """What a server that never saw a LoRA or VAE paints (txt2img, both models; img2img)."""
    engine = _engine(lib)
    return {
        SD: pixels(engine),
        XL: pixels(engine, model=XL),
    }


def lora_active(engine: Engine) -> bool:
    """Whether any LoRA layer of the loaded model would still change its output."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    pipe = engine._pipes["txt2img"]
    for part in ("unet", "text_encoder", "text_encoder_2"):
        model = getattr(pipe, part, None)
        for module in model.modules() if model is not None else ():
            if isinstance(module, BaseTunerLayer) and module.active_adapters:
                if not module.disable_adapters:
                    return True
    return False


def _error(engine: Engine, prompt: str, **kw) -> InputError:
    with pytest.raises(InputError) as caught:
        pixels(engine, prompt, **kw)
    return caught.value


# -- the prompt's tags ------------------------------------------------------------------------
def test_lora_tags_are_read_as_a1111_reads_them() -> None:
    uses = lora_uses(
        "<lora:a>x <lora:b:0.8> <lora:c:0.5:1.5> <lora:d:unet=0.25:te=2> <lyco:e:-1> <hypernet:h:1>"
    )
    assert uses == [
        LoraUse("a", 1.0, 1.0),
        LoraUse("b", 0.8, 0.8),
        LoraUse("c", 0.5, 1.5),
        LoraUse("d", 2.0, 0.25),
        LoraUse("e", -1.0, -1.0),
    ]
    # The same LoRA twice: applied once, the weights added.
    assert lora_uses("<lora:a:0.5> and <lora:a:0.25>") == [LoraUse("a", 0.75, 0.75)]
    assert "secret-style" not in repr(LoraUse("secret-style", 1.0, 1.0))  # repr hides the name


@pytest.mark.parametrize(
    ("prompt", "code"),
    [
        ("<lora:a:heavy>", "lora_bad_weight"),
        ("<lora:a:nan>", "lora_weight_out_of_range"),
        ("<lora:a:inf>", "lora_weight_out_of_range"),
        (f"<lora:a:{MAX_LORA_WEIGHT + 1}>", "lora_weight_out_of_range"),
        ("<lora:a:0:-1e9>", "lora_weight_out_of_range"),
        ("<lora:a:6> <lora:a:6>", "lora_weight_out_of_range"),
        ("".join(f"<lora:n{i}>" for i in range(MAX_LORAS + 1)), "too_many_loras"),
        ("<lora::1>", "lora_bad_tag"),
    ],
)
def test_bad_lora_tags_are_one_sentence(prompt: str, code: str) -> None:
    with pytest.raises(InputError) as caught:
        lora_uses(prompt)
    assert caught.value.code == code
    assert "\n" not in str(caught.value)


def test_vae_names_a1111_style() -> None:
    assert vae_name(None) is None
    assert vae_name("Automatic") is None
    assert vae_name("None") is None
    assert vae_name("kl-f8.safetensors") == "kl-f8"
    with pytest.raises(InputError) as caught:
        vae_name(3)
    assert caught.value.code == "bad_vae"


# -- LoRAs applied, and gone after the job ---------------------------------------------------
def test_weight_zero_is_an_exact_no_op_and_weight_one_changes_pixels(
    engine: Engine, fresh: dict[str, torch.Tensor]
) -> None:
    assert torch.equal(pixels(engine, "<lora:style:0>a lighthouse"), fresh[SD])
    with_lora = pixels(engine, "<lora:style:1>a lighthouse")
    assert not torch.equal(with_lora, fresh[SD])
    # The tag is not text the encoder sees: where it stands does not matter.
    assert torch.equal(pixels(engine, "a lighthouse<lora:style:1>"), with_lora)
    assert torch.equal(pixels(engine, "a lighthouse"), fresh[SD])


def test_a_job_without_lora_after_lora_jobs_equals_a_fresh_server(
    lib: Path, fresh: dict[str, torch.Tensor]
) -> None:
    engine = _engine(lib)
    for prompt in (
        "<lora:style:0.8>a lighthouse",
        "<lora:style:1.5> <lora:ink:-0.7> <lora:paper:0.4>a lighthouse",
        "<lora:unet-only:1> <lora:te-only:2>a lighthouse",
    ):
        assert not torch.equal(pixels(engine, prompt), fresh[SD])
        assert not lora_active(engine)  # taken off when the job ended, not when the next began
        assert torch.equal(pixels(engine), fresh[SD])
    # And in another mode that shares the same weights.
    photo = engine.generate(GenerationRequest("x", width=SIZE, height=SIZE, seed=1, model=SD))
    img2img = dict(image=photo.images[0], strength=0.6)
    before = pixels(_engine(lib), **img2img)
    pixels(engine, "<lora:style:1>a lighthouse", **img2img)
    assert torch.equal(pixels(engine, **img2img), before)


def test_a_cancelled_or_failed_lora_job_leaves_nothing_behind(
    lib: Path, fresh: dict[str, torch.Tensor]
) -> None:
    engine = _engine(lib)
    calls = {"n": 0}

    def stop_at_second_step() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    request = GenerationRequest(
        "<lora:style:1>a lighthouse", width=SIZE, height=SIZE, num_inference_steps=3, seed=11,
        model=SD,
    )
    with pytest.raises(JobCancelled):
        engine.generate(request, should_stop=stop_at_second_step)
    assert calls["n"] > 2  # it was cancelled mid-run, with the LoRA on
    assert not lora_active(engine)
    assert torch.equal(pixels(engine), fresh[SD])

    # A LoRA damaged after the library was scanned: the first LoRA was already loaded when the
    # second one failed to read.
    path = lib / "broken.safetensors"
    data = path.read_bytes()
    try:
        path.write_bytes(data[: len(data) // 2])
        err = _error(engine, "<lora:paper:1> <lora:broken:1>a lighthouse")
        assert err.code == "lora_damaged"
        assert "“broken”" in str(err)
    finally:
        path.write_bytes(data)
    assert not lora_active(engine)
    assert torch.equal(pixels(engine), fresh[SD])


def test_loaded_loras_are_reused_and_the_cache_is_bounded(lib: Path) -> None:
    engine = _engine(lib)
    first = pixels(engine, "<lora:style:1>a lighthouse")
    networks = engine._networks
    assert networks is not None
    loads = networks.loads
    assert torch.equal(pixels(engine, "<lora:style:1>a lighthouse"), first)
    assert networks.loads == loads  # the file was read once
    networks.lora_cache = 1
    pixels(engine, "<lora:ink:1>a lighthouse")
    pixels(engine, "<lora:paper:1>a lighthouse")
    assert networks.cached_loras == 1
    adapters = engine._pipes["txt2img"].get_list_adapters()
    assert all(len(names) <= 1 for names in adapters.values())
    # Evicted and read again: the same pixels.
    assert torch.equal(pixels(engine, "<lora:style:1>a lighthouse"), first)
    # A job that needs more LoRAs than the cache holds keeps them all for the job.
    three = pixels(engine, "<lora:style:1> <lora:ink:1> <lora:paper:1>a lighthouse")
    assert torch.equal(pixels(_engine(lib), "<lora:style:1> <lora:ink:1> <lora:paper:1>a lighthouse"), three)


def test_text_encoder_and_unet_weights_apart(engine: Engine, fresh: dict[str, torch.Tensor]) -> None:
    te_only = pixels(engine, "<lora:style:1:0>a lighthouse")
    unet_only = pixels(engine, "<lora:style:0:1>a lighthouse")
    both = pixels(engine, "<lora:style:1>a lighthouse")
    named = pixels(engine, "<lora:style:unet=1:te=0>a lighthouse")
    assert torch.equal(named, unet_only)
    for picture in (te_only, unet_only):
        assert not torch.equal(picture, fresh[SD])
        assert not torch.equal(picture, both)
    assert not torch.equal(pixels(engine, "<lora:style:2>a lighthouse"), both)  # > 1 works
    assert not torch.equal(pixels(engine, "<lora:style:-1>a lighthouse"), both)  # < 0 works


def test_a_diffusers_format_lora_paints_as_its_kohya_original(engine: Engine) -> None:
    kohya = pixels(engine, "<lora:style:0.7>a lighthouse")
    assert torch.equal(pixels(engine, "<lora:style-peft:0.7>a lighthouse"), kohya)


def test_sdxl_lora_on_both_text_encoders(engine: Engine, fresh: dict[str, torch.Tensor]) -> None:
    assert not torch.equal(pixels(engine, "<lora:xl-style:1>a lighthouse", model=XL), fresh[XL])
    assert not torch.equal(
        pixels(engine, "<lora:xl-style:1:0>a lighthouse", model=XL), fresh[XL]
    )
    assert torch.equal(pixels(engine, model=XL), fresh[XL])


def test_sdxl_lora_with_kohyas_ldm_block_names(engine: Engine, fresh: dict[str, torch.Tensor]) -> None:
    # Real SDXL LoRAs from kohya's sd-scripts name the UNet's blocks input_blocks_4_1_...: every
    # one of its layers must land (a partial load would be refused as lora_mismatch).
    with_lora = pixels(engine, "<lora:xl-sgm:1>a lighthouse", model=XL)
    assert not torch.equal(with_lora, fresh[XL])
    unet_only = pixels(engine, "<lora:xl-sgm:0:1>a lighthouse", model=XL)
    assert not torch.equal(unet_only, fresh[XL])
    assert torch.equal(pixels(engine, model=XL), fresh[XL])


# -- LoRAs that cannot be used ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("prompt", "model", "code", "words"),
    [
        ("<lora:nowhere:1>", SD, "lora_not_found", "“nowhere”"),
        ("<lora:xl-style:1>", SD, "lora_wrong_arch", "SDXL"),
        ("<lora:soft-loha:1>", SD, "lora_unusable", "LoHa"),
    ],
)
def test_unusable_lora_is_one_sentence_naming_it_before_the_job_waits(
    engine: Engine, prompt: str, model: str, code: str, words: str
) -> None:
    request = GenerationRequest(prompt + "a lighthouse", model=model)
    with pytest.raises(InputError) as caught:
        engine.validate(request)  # what the queue calls on submit
    err = caught.value
    assert err.code == code
    assert words in str(err)
    assert prompt.split(":")[1] in err.params["name"]
    assert str(err).count(".") >= 1 and "\n" not in str(err)


def test_a_lora_for_another_model_that_only_its_shapes_tell(
    engine: Engine, fresh: dict[str, torch.Tensor]
) -> None:
    # The SD LoRA's text-encoder layers fit the tiny SDXL model, its UNet layers do not: refused
    # whole, not half applied.
    err = _error(engine, "<lora:style:1>a lighthouse", model=XL)
    assert err.code == "lora_mismatch"
    assert "“style”" in str(err)
    assert torch.equal(pixels(engine, model=XL), fresh[XL])


def test_allow_missing_networks_runs_without_and_says_which(
    engine: Engine, fresh: dict[str, torch.Tensor]
) -> None:
    prompt = "<lora:style:1> <lora:nowhere:1> <lora:soft-loha:1>a lighthouse"
    assert _error(engine, prompt).code == "lora_not_found"  # never silently
    request = GenerationRequest(
        prompt, width=SIZE, height=SIZE, num_inference_steps=3, seed=11, model=SD,
        allow_missing_networks=True,
    )
    result = engine.generate(request)
    skipped = result.extras["skipped_networks"]
    assert [(s["kind"], s["name"], s["code"]) for s in skipped] == [
        ("lora", "nowhere", "lora_not_found"),
        ("lora", "soft-loha", "lora_unusable"),
    ]
    assert all(s["message"] for s in skipped)
    got = torch.from_numpy(np.stack([np.asarray(i) for i in result.images]))
    assert torch.equal(got, pixels(engine, "<lora:style:1>a lighthouse"))
    assert "skipped_networks" not in engine.generate(
        GenerationRequest("a", width=SIZE, height=SIZE, num_inference_steps=1, model=SD)
    ).extras


def test_names_never_reach_a_log(
    lib: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    engine = _engine(lib)
    caplog.set_level(logging.DEBUG)
    for prompt, model in (
        ("<lora:style:1> <lora:nowhere:1>x", SD),
        ("<lora:style:1>x", XL),
        ("<lora:soft-loha:1>x", SD),
        ("<lora:xl-style:1>x", SD),
    ):
        with pytest.raises(InputError):
            pixels(engine, prompt, model=model)
    pixels(engine, "<lora:nowhere:1> <lora:ink:1>x", allow_missing_networks=True)
    pixels(engine, "x, Otter-Token", negative_prompt="xl-token")
    with pytest.raises(InputError):
        pixels(engine, "x", vae="odd-vae")
    out, errors = capfd.readouterr()
    for name in ("nowhere", "soft-loha", "xl-style", "odd-vae", "otter-token", "xl-token"):
        assert name not in caplog.text.lower()
        assert name not in (out + errors).lower()


# -- VAEs ---------------------------------------------------------------------------------------
def test_vae_per_job_and_the_models_own_afterwards(
    lib: Path, fresh: dict[str, torch.Tensor]
) -> None:
    engine = _engine(lib)
    with_vae = pixels(engine, vae="other-vae")
    assert not torch.equal(with_vae, fresh[SD])
    assert torch.equal(pixels(engine), fresh[SD])
    assert torch.equal(pixels(engine, vae="Automatic"), fresh[SD])
    assert torch.equal(pixels(engine, vae="other-vae.safetensors"), with_vae)
    networks = engine._networks
    assert networks is not None
    loads = networks.loads
    pixels(engine, vae="other-vae")
    assert networks.loads == loads  # built once
    own = networks.own_vae
    assert all(pipe.vae is own for pipe in engine._pipes.values())

    # Cancelled mid-run with the VAE on: the model's own is back.
    with pytest.raises(JobCancelled):
        engine.generate(
            GenerationRequest("a lighthouse", width=SIZE, height=SIZE, num_inference_steps=3,
                              seed=11, model=SD, vae="other-vae"),
            should_stop=iter([False, False, True, True, True, True]).__next__,
        )
    assert all(pipe.vae is own for pipe in engine._pipes.values())
    assert torch.equal(pixels(engine), fresh[SD])


def test_vae_and_lora_reach_the_hires_second_pass(lib: Path) -> None:
    engine = _engine(lib)
    hires = dict(hires=HiresFix(scale=2.0, upscaler="Latent", second_pass_steps=2,
                                denoising_strength=0.5))
    bare = pixels(engine, **hires)
    assert bare.shape[1:3] == (SIZE * 2, SIZE * 2)
    assert not torch.equal(pixels(engine, vae="other-vae", **hires), bare)
    # The VAE decodes the second pass too: the img2img pipeline had it during the job only.
    assert all(pipe.vae is engine._networks.own_vae for pipe in engine._pipes.values())
    assert not torch.equal(pixels(engine, "<lora:style:1>a lighthouse", **hires), bare)
    assert torch.equal(pixels(engine, **hires), bare)
    assert torch.equal(pixels(_engine(lib), **hires), bare)


@pytest.mark.parametrize(
    ("vae", "code", "words"),
    [
        ("missing-vae", "vae_not_found", "“missing-vae”"),
        ("tiny-sdxl-vae", "vae_wrong_arch", "SDXL"),
    ],
)
def test_unusable_vae_before_the_job(engine: Engine, vae: str, code: str, words: str) -> None:
    with pytest.raises(InputError) as caught:
        engine.validate(GenerationRequest("x", model=SD, vae=vae))
    assert caught.value.code == code
    assert words in str(caught.value)


def test_a_vae_of_another_shape_is_one_sentence_and_nothing_changes(
    engine: Engine, fresh: dict[str, torch.Tensor]
) -> None:
    err = _error(engine, "a lighthouse", vae="odd-vae")
    assert err.code == "vae_mismatch"
    assert "“odd-vae”" in str(err)
    assert torch.equal(pixels(engine), fresh[SD])


def test_nothing_is_written_into_the_models_folder(lib: Path, no_egress: list[str]) -> None:
    def snapshot() -> dict[str, tuple[int, int]]:
        out = {}
        for root, _dirs, files in os.walk(lib):
            for name in files:
                stat = (Path(root) / name).stat()
                out[str(Path(root) / name)] = (stat.st_size, stat.st_mtime_ns)
        return out

    before = snapshot()
    engine = _engine(lib)
    pixels(engine, "<lora:style:1> <lora:te-only:1>a lighthouse", vae="other-vae")
    pixels(engine, "<lora:xl-style:1>a lighthouse", model=XL)
    assert snapshot() == before


def test_a_tear_down_that_fails_reloads_the_model_before_the_next_job(
    lib: Path, fresh: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _engine(lib)
    pixels(engine, "<lora:style:1>a lighthouse")
    networks = engine._networks
    assert networks is not None

    def fails() -> None:
        raise RuntimeError("device lost")

    monkeypatch.setattr(networks.base, "disable_lora", fails)
    pixels(engine, "<lora:style:1>a lighthouse")  # its LoRA could not be switched off
    assert networks.broken
    assert torch.equal(pixels(engine), fresh[SD])  # a freshly loaded model, not the LoRA's
    assert engine._networks is not networks


# -- embeddings (textual inversion) -------------------------------------------------------------
def test_an_embedding_is_used_by_its_name_for_that_job_only(
    lib: Path, fresh: dict[str, torch.Tensor]
) -> None:
    engine = _engine(lib)
    blank = _engine(lib)
    pipe_before = pixels(engine)  # loads the model
    tokenizer = engine._pipes["txt2img"].tokenizer
    size, rows = len(tokenizer), engine._pipes["txt2img"].text_encoder.get_input_embeddings().weight.shape
    assert torch.equal(pipe_before, fresh[SD])

    named = pixels(engine, "a lighthouse, otter-token")
    assert not torch.equal(named, pixels(blank, "a lighthouse, otter-token-free"))
    assert torch.equal(pixels(engine, "a lighthouse, OTTER-TOKEN"), named)  # any case, as A1111
    # Both vectors are used (the file with only the first gives another picture).
    assert not torch.equal(pixels(engine, "a lighthouse, otter-first"), named)
    # In the negative prompt too.
    assert not torch.equal(
        pixels(engine, negative_prompt="otter-token"), pixels(blank, negative_prompt="otter-tokenx")
    )
    # Gone after the job: the tokenizer and the text encoder are as loaded, plain pixels as fresh.
    assert len(tokenizer) == size
    assert engine._pipes["txt2img"].text_encoder.get_input_embeddings().weight.shape == rows
    assert torch.equal(pixels(engine), fresh[SD])
    # Inside a longer word the name is plain text, exactly as on a server without embeddings.
    assert torch.equal(
        pixels(engine, "a lighthouse, otter-tokens"), pixels(blank, "a lighthouse, otter-tokens")
    )


def test_sdxl_embeddings_on_both_encoders_and_skipped_on_sd(
    engine: Engine, fresh: dict[str, torch.Tensor]
) -> None:
    xl = pixels(engine, "a lighthouse, xl-token", model=XL)
    assert not torch.equal(xl, pixels(engine, "a lighthouse, xl-tokenless", model=XL))
    result = engine.generate(
        GenerationRequest("a lighthouse, xl-token", width=SIZE, height=SIZE,
                          num_inference_steps=3, seed=11, model=SD)
    )
    skipped = result.extras["skipped_networks"]
    assert [(s["kind"], s["name"], s["code"]) for s in skipped] == [
        ("embedding", "xl-token", "embedding_wrong_arch")
    ]
    assert torch.equal(pixels(engine, model=XL), fresh[XL])


def test_a_hires_prompt_with_its_own_loras(lib: Path) -> None:
    engine = _engine(lib)
    hires = dict(scale=2.0, upscaler="Latent", second_pass_steps=2, denoising_strength=0.5)
    bare = pixels(engine, hires=HiresFix(**hires))
    own = pixels(engine, hires=HiresFix(prompt="<lora:ink:1>a lighthouse", **hires))
    assert not torch.equal(own, bare)  # the second pass ran with the hires prompt's LoRA
    request = GenerationRequest(
        "a lighthouse", width=SIZE, height=SIZE, num_inference_steps=3, seed=11, model=SD,
        allow_missing_networks=True,
        hires=HiresFix(prompt="<lora:nowhere:1>a lighthouse", **hires),
    )
    result = engine.generate(request)
    assert [s["name"] for s in result.extras["skipped_networks"]] == ["nowhere"]
    assert not lora_active(engine)
    assert torch.equal(pixels(engine, hires=HiresFix(**hires)), bare)
