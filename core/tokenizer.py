"""The real CLIP tokenizer, built from the BPE table shipped in ``core/configs`` (no download).

Stable Diffusion 1.x/2.x and both SDXL text encoders use OpenAI's CLIP BPE: 256 byte characters,
the same with an end-of-word mark, 48,894 merges, then the two special tokens (49,408 ids). This is
the construction CLIP's own ``SimpleTokenizer`` uses, so the ids match the published
``vocab.json`` files. SD 2.x and SDXL's second encoder pad with ``!`` instead of ``<|endoftext|>``.
"""

from __future__ import annotations

import gzip
from functools import cache
from importlib import resources
from typing import Any

BPE_FILE = "clip_bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408


def bytes_to_unicode() -> list[str]:
    """CLIP's table: each of the 256 bytes as one printable character."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


@cache
def clip_vocabulary() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """(vocab, merges) exactly as CLIP builds them."""
    raw = resources.files("core.configs").joinpath(BPE_FILE).read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1])
    symbols = bytes_to_unicode()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise RuntimeError("the shipped CLIP BPE table is damaged; reinstall Obscura")
    return vocab, merges  # type: ignore[return-value]


def clip_tokenizer(pad_token: str = "<|endoftext|>"):  # noqa: S107  (a token, not a password)
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocabulary()
    pairs: list[Any] = list(merges)  # transformers takes (a, b) pairs; its hint says strings
    return CLIPTokenizer(
        vocab=dict(vocab), merges=pairs, pad_token=pad_token, model_max_length=77
    )
