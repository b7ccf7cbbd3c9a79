"""Prompts to embeddings as AUTOMATIC1111 makes them, and exactly diffusers' for plain prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.conditioning import (
    CHUNK_TOKENS,
    MAX_CLIP_SKIP,
    _Encoder,
    chunk_prompt,
    encode_for_steps,
    encode_texts,
)
from core.demo import build_demo_pipeline
from core.engine import GenerationRequest
from core.errors import InputError
from core.prompts import parse_prompt_attention
from core.tokenizer import clip_tokenizer

STEPS = 4


@pytest.fixture(scope="module")
def sd():
    pipe = build_demo_pipeline("sd")
    # A trained CLIP's final layer norm has a bias, so its output's mean is not ~0 as a freshly
    # initialised one's is (A1111's mean restoration divides by that mean).
    with torch.no_grad():
        norm = pipe.text_encoder.final_layer_norm
        norm.bias.copy_(torch.randn(norm.bias.shape, generator=torch.Generator().manual_seed(0)))
    return pipe


@pytest.fixture(scope="module")
def sdxl():
    return build_demo_pipeline("sdxl")


def _ids(pipe, text: str) -> torch.Tensor:
    tok = pipe.tokenizer
    return tok(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


# -- identity with diffusers -------------------------------------------------------------------
@pytest.mark.parametrize("negative", ["", "blurry, dark"])
def test_plain_prompt_is_bit_identical_to_diffusers_sd1(sd, negative):
    with torch.inference_mode():
        ours = encode_for_steps(sd, "a cat, on a mat", negative, STEPS).kwargs()
        embeds, negative_embeds = sd.encode_prompt(
            "a cat, on a mat", "cpu", 1, True, negative or None
        )
    assert torch.equal(ours["prompt_embeds"], embeds)
    assert torch.equal(ours["negative_prompt_embeds"], negative_embeds)


@pytest.mark.parametrize("negative", ["", "blurry, dark"])
def test_plain_prompt_is_bit_identical_to_diffusers_sdxl(sdxl, negative):
    with torch.inference_mode():
        ours = encode_for_steps(sdxl, "a cat, on a mat", negative, STEPS).kwargs()
        theirs = sdxl.encode_prompt(
            "a cat, on a mat",
            device="cpu",
            num_images_per_prompt=1,
            do_classifier_free_guidance=True,
            negative_prompt=negative or None,
        )
    names = [
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    ]
    for name, tensor in zip(names, theirs, strict=True):
        assert torch.equal(ours[name], tensor), name
    if not negative:  # force_zeros_for_empty_prompt, as in diffusers and A1111
        assert not ours["negative_prompt_embeds"].any()


@pytest.mark.parametrize("arch", ["sd", "sdxl"])
def test_pictures_from_embeddings_equal_pictures_from_the_text(arch, sd, sdxl):
    pipe = sd if arch == "sd" else sdxl
    common = {"num_inference_steps": 2, "width": 64, "height": 64, "output_type": "np"}
    with torch.inference_mode():
        from_text = pipe(
            prompt="a lighthouse", generator=torch.Generator().manual_seed(3), **common
        ).images
        embeds = encode_for_steps(pipe, "a lighthouse", "", 2).kwargs()
        from_embeds = pipe(**embeds, generator=torch.Generator().manual_seed(3), **common).images
    assert np.array_equal(from_text, from_embeds)


# -- weights -----------------------------------------------------------------------------------
def test_a_weight_scales_only_its_tokens_rows_then_the_mean_is_restored(sd):
    with torch.inference_mode():
        plain = encode_texts(sd, ["a cat"]).embeds
        weighted = encode_texts(sd, ["a (cat:1.5)"]).embeds
        ids = _ids(sd, "a cat")[0]
    # "a (cat:1.5)" has the same tokens as "a cat"; the demo tokenizer gives one per letter.
    cat = torch.zeros(77, dtype=torch.bool)
    cat[2:5] = True  # <start> a c a t </w>: rows 2..4 are c, a, t
    assert sd.tokenizer.convert_ids_to_tokens(ids[2:5].tolist()) == ["c", "a", "t</w>"]
    multipliers = torch.where(cat, 1.5, 1.0)
    expected = plain * multipliers[None, :, None]
    expected = expected * (plain.mean() / expected.mean())  # A1111's "Original" emphasis
    assert torch.equal(weighted, expected)
    ratio = weighted / plain
    factor = ratio[0, ~cat].mean()
    assert torch.allclose(ratio[0, ~cat], factor.expand_as(ratio[0, ~cat]), rtol=1e-5)
    assert torch.allclose(ratio[0, cat], (1.5 * factor).expand_as(ratio[0, cat]), rtol=1e-5)
    assert not torch.allclose(factor, torch.tensor(1.0))  # the mean restoration did something


def test_weights_apply_to_the_second_sdxl_encoder_too(sdxl):
    with torch.inference_mode():
        plain = encode_texts(sdxl, ["a cat"])
        weighted = encode_texts(sdxl, ["a (cat:1.5)"])
    assert not torch.equal(plain.embeds[..., 32:], weighted.embeds[..., 32:])
    assert torch.equal(plain.pooled, weighted.pooled)  # pooled: the encoder's own, unweighted


# -- chunks ------------------------------------------------------------------------------------
def test_a_200_token_prompt_is_three_chunks_of_77(sd):
    prompt = "a" * 200  # the demo tokenizer: 199 "a" + "a</w>"
    encoder = _Encoder.of(sd.tokenizer, sd.text_encoder, "last")
    chunks = chunk_prompt(parse_prompt_attention(prompt), encoder)
    assert [len(c.tokens) for c in chunks] == [77, 77, 77]
    start, end = sd.tokenizer.bos_token_id, sd.tokenizer.eos_token_id
    assert all(c.tokens[0] == start and c.tokens[76] == end for c in chunks)
    assert chunks[2].tokens[51:] == [end] * 26  # 50 tokens, then padding
    with torch.inference_mode():
        embeds = encode_for_steps(sd, prompt, "", STEPS).kwargs()
    assert embeds["prompt_embeds"].shape == (1, 231, 32)
    assert embeds["negative_prompt_embeds"].shape == (1, 231, 32)  # padded to the same length


@pytest.mark.parametrize("model", ["demo-tiny-sd", "demo-tiny-sdxl"])
def test_a_long_weighted_prompt_runs_end_to_end(engine, model):
    prompt = "(a" + "a" * 199 + ":1.2), [blue] BREAK sky " + "b" * 90
    result = engine.generate(
        GenerationRequest(
            prompt, "c" * 100, width=64, height=64, num_inference_steps=2, model=model, seed=4
        )
    )
    assert result.images[0].size == (64, 64)


def test_break_starts_a_new_chunk(sd):
    with torch.inference_mode():
        both = encode_texts(sd, ["a cat BREAK a dog"]).embeds
        cat = encode_texts(sd, ["a cat"]).embeds
        dog = encode_texts(sd, ["a dog"]).embeds
    assert both.shape[1] == 154
    assert torch.equal(both[:, :77], cat) and torch.equal(both[:, 77:], dog)


def test_words_after_a_near_comma_move_to_the_next_chunk():
    tok = clip_tokenizer()  # the real CLIP BPE: "cat", "dog" and "," are one token each
    encoder = _Encoder.of(tok, None, "last")
    cat, dog, comma = (tok.convert_tokens_to_ids(t) for t in ("cat</w>", "dog</w>", ",</w>"))
    near = chunk_prompt([("cat " * 70 + ", " + "dog " * 10, 1.0)], encoder)
    assert near[0].tokens[1:72] == [cat] * 70 + [comma]
    assert near[0].tokens[72:] == [tok.eos_token_id] * 5  # the 4 dogs that fitted moved on
    assert near[1].tokens[1:11] == [dog] * 10
    far = chunk_prompt([("cat " * 50 + ", " + "dog " * 30, 1.0)], encoder)  # comma 25 back
    assert far[0].tokens[1 : CHUNK_TOKENS + 1] == [cat] * 50 + [comma] + [dog] * 24
    assert far[1].tokens[1:7] == [dog] * 6


def test_sdxl_pooled_output_comes_from_the_first_chunk(sdxl):
    first, second = "a" * 75, "b" * 60  # exactly one chunk, then a second one
    with torch.inference_mode():
        long = encode_texts(sdxl, [first + " " + second])
        alone = encode_texts(sdxl, [first])
        other = encode_texts(sdxl, [second])
    assert long.embeds.shape == (1, 154, 64)
    assert torch.equal(long.pooled, alone.pooled)
    assert not torch.equal(long.pooled, other.pooled)


def test_a_longer_negative_pads_the_prompt_with_empty_chunks(sd):
    with torch.inference_mode():
        embeds = encode_for_steps(sd, "a cat", "b" * 100, STEPS).kwargs()
        empty = encode_texts(sd, [""]).embeds
        cat = encode_texts(sd, ["a cat"]).embeds
    assert embeds["prompt_embeds"].shape == embeds["negative_prompt_embeds"].shape == (1, 154, 32)
    assert torch.equal(embeds["prompt_embeds"][:, :77], cat)
    assert torch.equal(embeds["prompt_embeds"][:, 77:], empty)


def test_extra_network_tags_never_reach_the_encoder(sd):
    with torch.inference_mode():
        tagged = encode_for_steps(sd, "a cat <lora:my-style:0.8>", "<lora:bad:1>", STEPS)
        plain = encode_for_steps(sd, "a cat", "", STEPS)
    assert torch.equal(tagged.kwargs()["prompt_embeds"], plain.kwargs()["prompt_embeds"])
    assert [(n.kind, n.name) for n in tagged.extra_networks] == [
        ("lora", "my-style"), ("lora", "bad"),
    ]


def test_too_many_edited_variants_of_a_long_prompt_are_refused_before_encoding(sd):
    prompt = "[a|b|c|d|e] " + "x" * 3900  # 5 variants of ~53 chunks
    with pytest.raises(InputError) as err:
        encode_for_steps(sd, prompt, "", 10)
    assert err.value.code == "prompt_too_complex"


# -- CLIP skip ---------------------------------------------------------------------------------
def test_clip_skip_2_is_the_penultimate_layer_with_the_final_layer_norm(sd):
    with torch.inference_mode():
        skip1 = encode_texts(sd, ["a cat"], clip_skip=1).embeds
        skip2 = encode_texts(sd, ["a cat"], clip_skip=2).embeds
        out = sd.text_encoder(_ids(sd, "a cat"), output_hidden_states=True)
        expected = sd.text_encoder.final_layer_norm(out.hidden_states[-2])
    assert not torch.equal(skip1, skip2)
    assert torch.equal(skip1, out.last_hidden_state)
    assert torch.equal(skip2, expected)


def test_clip_skip_beyond_the_model_is_one_sentence(sd):
    layers = sd.text_encoder.config.num_hidden_layers  # 2 in the demo model
    with pytest.raises(InputError) as err:
        encode_texts(sd, ["a cat"], clip_skip=layers + 1)
    assert err.value.code == "clip_skip_out_of_range" and str(layers) in str(err.value)


def test_sdxl_ignores_clip_skip_like_a1111(sdxl):
    with torch.inference_mode():
        skip1 = encode_texts(sdxl, ["a cat"], clip_skip=1)
        skip2 = encode_texts(sdxl, ["a cat"], clip_skip=2)
    assert torch.equal(skip1.embeds, skip2.embeds)


@pytest.mark.parametrize("value", [0, MAX_CLIP_SKIP + 1, -1, 2.5, True, "2x", None, 10**100])
def test_engine_refuses_clip_skip_out_of_bounds(engine, value):
    with pytest.raises(InputError) as err:
        engine.validate(GenerationRequest("a cat", clip_skip=value))
    assert err.value.code == "clip_skip_out_of_range"


def test_engine_clip_skip_changes_the_picture(engine):
    def paint(skip: int) -> np.ndarray:
        request = GenerationRequest(
            "a cat", width=64, height=64, num_inference_steps=2, seed=5, clip_skip=skip,
            model="demo-tiny-sd",
        )
        return np.asarray(engine.generate(request).images[0])

    assert not np.array_equal(paint(1), paint(2))
    assert np.array_equal(paint(1), paint(1))


# -- prompt editing through the engine ---------------------------------------------------------
@pytest.mark.parametrize("model", ["demo-tiny-sd", "demo-tiny-sdxl"])
def test_prompt_editing_switches_the_embeddings_at_its_step(engine, model):
    info = engine.load(model)
    pipe = engine._pipeline(info, "txt2img")
    seen: list[torch.Tensor] = []
    pooled: list[torch.Tensor] = []

    def record(module, args, kwargs):
        seen.append(kwargs["encoder_hidden_states"].clone())
        added = kwargs.get("added_cond_kwargs") or {}
        if "text_embeds" in added:
            pooled.append(added["text_embeds"].clone())

    hook = pipe.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        engine.generate(
            GenerationRequest(
                "a [cat:dog:2]", width=64, height=64, num_inference_steps=STEPS, seed=2,
                model=model, batch_size=2,
            )
        )
    finally:
        hook.remove()
    with torch.inference_mode():
        both = encode_texts(pipe, ["a cat", "a dog"])
    assert len(seen) == STEPS
    # With guidance the UNet sees [negative x2, positive x2]; A1111 uses "a cat" for steps 0..2.
    for step, hidden in enumerate(seen):
        want = both.embeds[0 if step <= 2 else 1]
        assert torch.equal(hidden[2], want) and torch.equal(hidden[3], want), step
    if pooled:
        assert torch.equal(pooled[0][2], both.pooled[0]) and torch.equal(pooled[3][3], both.pooled[1])
