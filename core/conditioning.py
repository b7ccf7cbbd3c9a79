"""Prompts to text embeddings, the way AUTOMATIC1111 builds them, with the pipeline's own encoders.

diffusers' ``encode_prompt`` cuts a prompt at 77 tokens and knows no weights. AUTOMATIC1111
(``modules/sd_hijack_clip.py``) instead:

- splits the weighted pieces of :func:`core.prompts.parse_prompt_attention` into chunks of 75
  tokens; each chunk becomes ``<start> + 75 tokens + <end>`` = 77, short ones padded with
  ``<end>`` (and, where the tokenizer pads with another token, such as SDXL's second encoder,
  everything after the first ``<end>`` becomes that pad token);
- when a chunk fills up, moves the words after its last comma (if that comma is at most
  :data:`COMMA_BACKTRACK` tokens back) into the next chunk, and starts a new chunk at ``BREAK``;
- encodes each chunk alone, multiplies every token's row by its weight and rescales the chunk so
  that its mean is what it was before the weights (A1111's default emphasis, "Original");
- concatenates the chunks along the sequence axis (231 tokens for three chunks).

CLIP skip (A1111's ``CLIP_stop_at_last_layers``): 1 = the last layer, 2 = the one before, and
so on, each followed by the encoder's final layer norm, for SD 1.x. SD 2.x and SDXL ignore it, as
A1111 does by default (SD 2.x models already stop at the penultimate layer; SDXL uses the
penultimate hidden states of both encoders, without the final layer norm, and the pooled output of
the second encoder from the first chunk).

For a plain prompt of up to 75 tokens this is exactly diffusers' ``encode_prompt`` (same tokens,
same calls), so the engine always passes embeddings (tests/core/test_conditioning.py checks it
bit for bit).

Prompt editing and alternation (``[a:b:0.5]``, ``[a|b]``) give one prompt per stretch of steps:
:func:`encode_for_steps` encodes each distinct one and :class:`Conditioning` hands the engine the
embeddings for every sampling step. Work is bounded: at most :data:`MAX_ENCODED_CHUNKS` chunks
per prompt are sent through the encoders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from core.errors import InputError
from core.prompts import (
    ExtraNetwork,
    extract_extra_networks,
    is_break,
    parse_prompt_attention,
    prompt_at_step,
    prompt_schedule,
)

CHUNK_TOKENS = 75  # prompt tokens per chunk; with <start> and <end> one CLIP window of 77
COMMA_BACKTRACK = 20  # A1111's comma_padding_backtrack default
MAX_CLIP_SKIP = 12  # CLIP ViT-L has 12 layers: skipping all of them leaves nothing
# Chunks one prompt may send through the encoders, over all its edited variants: a 4,000-character
# prompt is at most ~55 chunks; prompt editing multiplies that by the number of distinct variants.
MAX_ENCODED_CHUNKS = 256


def check_clip_skip(value: Any) -> int:
    """A request's CLIP skip as an int from 1 to :data:`MAX_CLIP_SKIP`, or one sentence."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        value = None
    try:
        number = float(value) if value is not None else float("nan")
    except (ValueError, OverflowError):  # 10**400 does not fit a float
        number = float("nan")
    if not (number.is_integer() and 1 <= number <= MAX_CLIP_SKIP):
        raise InputError(
            "clip_skip_out_of_range",
            "CLIP skip must be a whole number between 1 and {max}.",
            max=MAX_CLIP_SKIP,
        )
    return int(number)


@dataclass
class Chunk:
    tokens: list[int]
    multipliers: list[float]


@dataclass
class _Encoder:
    tokenizer: Any
    text_encoder: Any
    layer: str  # "last" (SD 1.x/2.x, with CLIP skip) or "penultimate" (SDXL)
    comma: int | None
    start: int
    end: int
    pad: int

    @classmethod
    def of(cls, tokenizer: Any, text_encoder: Any, layer: str) -> _Encoder:
        start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
        comma = tokenizer.get_vocab().get(",</w>")
        return cls(tokenizer, text_encoder, layer, comma, start, end, pad)

    def empty_chunk(self) -> Chunk:
        return Chunk(
            [self.start] + [self.end] * (CHUNK_TOKENS + 1), [1.0] * (CHUNK_TOKENS + 2)
        )


def _encoders(pipe: Any) -> list[_Encoder]:
    pairs = [
        (getattr(pipe, "tokenizer", None), getattr(pipe, "text_encoder", None)),
        (getattr(pipe, "tokenizer_2", None), getattr(pipe, "text_encoder_2", None)),
    ]
    layer = "penultimate" if hasattr(pipe, "text_encoder_2") else "last"
    return [_Encoder.of(tok, enc, layer) for tok, enc in pairs if tok is not None and enc is not None]


def chunk_prompt(
    pieces: Sequence[tuple[str, float]],
    encoder: _Encoder,
    convert: Callable[[str, Any], str] | None = None,
) -> list[Chunk]:
    """Weighted pieces to 77-token chunks, A1111's ``tokenize_line`` rules."""
    texts = [text for text, _ in pieces]
    if convert is not None:  # textual inversion: multi-vector tokens (a no-op when none is loaded)
        texts = [convert(text, encoder.tokenizer) if text else text for text in texts]
    ids = encoder.tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]

    chunks: list[Chunk] = []
    tokens: list[int] = []
    multipliers: list[float] = []
    last_comma = -1

    def close() -> None:
        nonlocal tokens, multipliers, last_comma
        pad = CHUNK_TOKENS - len(tokens)
        chunks.append(
            Chunk(
                [encoder.start, *tokens] + [encoder.end] * (pad + 1),
                [1.0, *multipliers] + [1.0] * (pad + 1),
            )
        )
        tokens, multipliers, last_comma = [], [], -1

    for piece, piece_ids in zip(pieces, ids, strict=True):
        if is_break(piece):
            close()
            continue
        weight = piece[1]
        for token in piece_ids:
            if token == encoder.comma:
                last_comma = len(tokens)
            elif (
                len(tokens) == CHUNK_TOKENS
                and last_comma != -1
                and len(tokens) - last_comma <= COMMA_BACKTRACK
            ):
                cut = last_comma + 1
                moved, moved_multipliers = tokens[cut:], multipliers[cut:]
                tokens, multipliers = tokens[:cut], multipliers[:cut]
                close()
                tokens, multipliers = moved, moved_multipliers
            if len(tokens) == CHUNK_TOKENS:
                close()
            tokens.append(token)
            multipliers.append(weight)
    if tokens or not chunks:
        close()
    return chunks


def _device(module: Any) -> torch.device:
    from diffusers.utils.torch_utils import get_module_execution_device

    return get_module_execution_device(module)


def _run_encoder(
    encoder: _Encoder, batch: list[Chunk], clip_skip: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One chunk position for a batch of prompts: weighted embeddings and the pooled output."""
    model = encoder.text_encoder
    device = _device(model)
    ids = torch.tensor([chunk.tokens for chunk in batch], dtype=torch.long)
    if encoder.pad != encoder.end:
        for row, chunk in enumerate(batch):
            ids[row, chunk.tokens.index(encoder.end) + 1 :] = encoder.pad
    ids = ids.to(device)
    pooled = None
    if encoder.layer == "penultimate":
        out = model(ids, output_hidden_states=True)
        if out[0].ndim == 2:
            pooled = out[0]
        z = out.hidden_states[-2]
    elif clip_skip == 1:
        z = model(ids)[0]
    else:
        z = model(ids, output_hidden_states=True).hidden_states[-clip_skip]
        # transformers 5 dropped CLIPTextModel.text_model (diffusers' own clip_skip path uses it)
        z = getattr(model, "text_model", model).final_layer_norm(z)

    multipliers = torch.asarray([chunk.multipliers for chunk in batch], device=z.device)
    if bool((multipliers != 1.0).any()):
        # A1111's "Original" emphasis: weight each token's row, then restore the mean.
        original_mean = z.mean()
        z = z * multipliers.reshape(multipliers.shape + (1,)).expand(z.shape)
        z = z * (original_mean / z.mean())
        if not bool(torch.isfinite(z).all()):
            raise InputError(
                "prompt_weights_unusable",
                "The weights in the prompt cancel each other out; use weights closer to 1.",
            )
    return z, pooled


@dataclass
class Encoded:
    """Embeddings of a batch of prompts: ``(batch, 77 * chunks, dim)`` and SDXL's pooled output."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None


def encode_texts(pipe: Any, texts: Sequence[str], clip_skip: int = 1) -> Encoded:
    """Encode prompts (extra-network tags already removed) as one A1111 batch.

    As in A1111, prompts with fewer chunks than the longest are padded with empty chunks, and the
    mean restored by the weights is that of the whole batch at each chunk position.
    """
    encoders = _encoders(pipe)
    if not encoders:
        raise InputError(
            "model_has_no_text_encoder",
            "This model has no text encoder, so it cannot read a prompt; choose another model.",
        )
    if encoders[0].layer == "penultimate":
        clip_skip = 1  # SDXL: A1111 ignores CLIP skip by default
    layers = int(getattr(encoders[0].text_encoder.config, "num_hidden_layers", MAX_CLIP_SKIP))
    if not 1 <= clip_skip <= layers:
        raise InputError(
            "clip_skip_out_of_range",
            "CLIP skip must be a whole number between 1 and {max}.",
            max=layers,
        )
    convert = getattr(pipe, "maybe_convert_prompt", None)
    per_encoder: list[list[list[Chunk]]] = [[] for _ in encoders]
    count = 0
    for text in texts:
        pieces = parse_prompt_attention(text)
        for lists, encoder in zip(per_encoder, encoders, strict=True):
            lists.append(chunk_prompt(pieces, encoder, convert))
            count = max(count, len(lists[-1]))
        # Every text is padded to the longest: refuse as soon as the total is known to be too big.
        if count * len(texts) > MAX_ENCODED_CHUNKS:
            raise InputError(
                "prompt_too_complex",
                "The prompt needs too much encoding; shorten it or use fewer [a:b:when] and [a|b] "
                "edits.",
            )

    columns: list[torch.Tensor] = []
    pooled: torch.Tensor | None = None
    for position in range(count):
        parts = []
        for encoder, lists in zip(encoders, per_encoder, strict=True):
            batch = [c[position] if position < len(c) else encoder.empty_chunk() for c in lists]
            z, chunk_pooled = _run_encoder(encoder, batch, clip_skip)
            if position == 0 and chunk_pooled is not None:
                pooled = chunk_pooled
            parts.append(z)
        columns.append(torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0])
    return Encoded(torch.cat(columns, dim=1), pooled)


def _pad(embeds: torch.Tensor, length: int, empty: torch.Tensor) -> torch.Tensor:
    """Append empty-prompt chunks until ``embeds`` is ``length`` tokens long (A1111's pad_cond)."""
    missing = (length - embeds.shape[1]) // empty.shape[1]
    if missing <= 0:
        return embeds
    filler = empty.to(embeds.dtype).repeat(embeds.shape[0], missing, 1)
    return torch.cat([embeds, filler], dim=1)


@dataclass
class Conditioning:
    """What a pipeline call needs about its prompts, for every sampling step.

    ``kwargs()`` gives diffusers' arguments for the first step; ``at_step(step)`` those for a later
    step where prompt editing changes them (None when nothing changes). ``extra_networks`` holds
    the ``<kind:name:args>`` tags found in the positive prompt, then the negative one: they are
    not applied here.
    """

    positive: list[tuple[int, int]]  # (last step, index into positive_embeds)
    negative: list[tuple[int, int]]
    positive_embeds: list[torch.Tensor]
    negative_embeds: list[torch.Tensor]
    positive_pooled: list[torch.Tensor | None]
    negative_pooled: list[torch.Tensor | None]
    extra_networks: list[ExtraNetwork] = field(default_factory=list)

    @property
    def is_scheduled(self) -> bool:
        return len(self.positive_embeds) > 1 or len(self.negative_embeds) > 1

    def _indexes(self, step: int) -> tuple[int, int]:
        pos = self.positive[prompt_at_step([(s, "") for s, _ in self.positive], step)][1]
        neg = self.negative[prompt_at_step([(s, "") for s, _ in self.negative], step)][1]
        return pos, neg

    def kwargs(self) -> dict[str, Any]:
        pos, neg = self._indexes(0)
        out: dict[str, Any] = {
            "prompt_embeds": self.positive_embeds[pos],
            "negative_prompt_embeds": self.negative_embeds[neg],
        }
        if self.positive_pooled[pos] is not None:
            out["pooled_prompt_embeds"] = self.positive_pooled[pos]
            out["negative_pooled_prompt_embeds"] = self.negative_pooled[neg]
        return out

    def step_inputs(self, pipe: Any) -> list[str]:
        """The loop tensors the step callback must see to switch prompts (none without editing)."""
        if not self.is_scheduled:
            return []
        available = getattr(pipe, "_callback_tensor_inputs", [])
        return [name for name in ("prompt_embeds", "add_text_embeds") if name in available]

    def at_step(self, step: int) -> tuple[int, int] | None:
        """The (positive, negative) variant for ``step`` if it differs from ``step - 1``'s."""
        if step == 0 or not self.is_scheduled:
            return None
        now, before = self._indexes(step), self._indexes(step - 1)
        return now if now != before else None


def _encode_schedule(
    pipe: Any, prompt: str, steps: int, clip_skip: int
) -> tuple[list[tuple[int, int]], Encoded]:
    schedule = prompt_schedule(prompt, steps)
    distinct: list[str] = []
    entries: list[tuple[int, int]] = []
    for last, text in schedule:
        if text not in distinct:
            distinct.append(text)
        entries.append((last, distinct.index(text)))
    return entries, encode_texts(pipe, distinct, clip_skip)


def encode_for_steps(
    pipe: Any, prompt: str, negative_prompt: str, steps: int, clip_skip: int = 1
) -> Conditioning:
    """Everything :class:`Conditioning` says, for one prompt pair and ``steps`` sampling steps.

    Positive and negative embeddings come out with the same number of chunks (the shorter one
    padded with the empty prompt's chunk, as A1111 does when it must batch them), as diffusers
    requires. An empty negative prompt on a pipeline with ``force_zeros_for_empty_prompt``
    (SDXL) is all zeros, as in both diffusers and A1111.
    """
    prompt, networks = extract_extra_networks(prompt)
    negative_prompt, negative_networks = extract_extra_networks(negative_prompt)
    positive, pos = _encode_schedule(pipe, prompt, steps, clip_skip)
    zero_negative = negative_prompt == "" and bool(
        getattr(pipe.config, "force_zeros_for_empty_prompt", False)
    )
    if zero_negative:
        negative = [(steps, 0)]
        neg = Encoded(torch.zeros_like(pos.embeds[:1]), None)
        if pos.pooled is not None:
            neg.pooled = torch.zeros_like(pos.pooled[:1])
    else:
        negative, neg = _encode_schedule(pipe, negative_prompt, steps, clip_skip)

    length = max(pos.embeds.shape[1], neg.embeds.shape[1])
    if pos.embeds.shape[1] != neg.embeds.shape[1]:
        if zero_negative:
            neg.embeds = torch.zeros_like(pos.embeds[:1])
        else:
            empty = encode_texts(pipe, [""], clip_skip).embeds
            pos.embeds = _pad(pos.embeds, length, empty)
            neg.embeds = _pad(neg.embeds, length, empty)

    def rows(encoded: Encoded) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        embeds = [encoded.embeds[i : i + 1] for i in range(encoded.embeds.shape[0])]
        if encoded.pooled is None:
            return embeds, [None] * len(embeds)
        return embeds, [encoded.pooled[i : i + 1] for i in range(encoded.pooled.shape[0])]

    pos_embeds, pos_pooled = rows(pos)
    neg_embeds, neg_pooled = rows(neg)
    return Conditioning(
        positive, negative, pos_embeds, neg_embeds, pos_pooled, neg_pooled,
        networks + negative_networks,
    )


def step_tensors(
    pipe: Any, conditioning: Conditioning, variant: tuple[int, int], current: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """The tensors a step callback returns so that the next step uses prompt ``variant``.

    Inside its denoising loop diffusers holds ``prompt_embeds`` repeated once per picture and,
    with classifier-free guidance, as ``[negative, positive]``; SDXL holds its pooled embeddings
    the same way in ``add_text_embeds``. ``current`` is what the callback received; the new
    tensors keep its shapes, device and dtype.
    """
    pos, neg = variant
    guided = bool(getattr(pipe, "do_classifier_free_guidance", False))

    def stack(positive: torch.Tensor, negative: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        copies = like.shape[0] // (2 if guided else 1)
        out = positive.repeat_interleave(copies, dim=0)
        if guided and negative is not None:
            out = torch.cat([negative.repeat_interleave(copies, dim=0), out])
        return out.to(device=like.device, dtype=like.dtype)

    out = {
        "prompt_embeds": stack(
            conditioning.positive_embeds[pos],
            conditioning.negative_embeds[neg],
            current["prompt_embeds"],
        )
    }
    pooled = conditioning.positive_pooled[pos]
    if pooled is not None and "add_text_embeds" in current:
        out["add_text_embeds"] = stack(
            pooled, conditioning.negative_pooled[neg], current["add_text_embeds"]
        )
    return out
