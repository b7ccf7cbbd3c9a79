"""AUTOMATIC1111's "parameters" text: the prompt and settings of one picture.

Written into a picture only when its owner opted in (accounts mode) or the CLI was given
``--embed-parameters``; shared by the CLI, the web UI and the API so all three write the same.
"""

from __future__ import annotations

from core.engine import GenerationResult


def infotext(prompt: str, negative: str, result: GenerationResult, seed: int) -> str:
    line = (
        f"Steps: {result.num_inference_steps}, Sampler: {result.sampler}, "
        f"CFG scale: {result.guidance_scale:g}, Seed: {seed}, "
        f"Size: {result.width}x{result.height}, Model: {result.model}"
    )
    if result.strength is not None:
        line += f", Denoising strength: {result.strength:g}"
    return f"{prompt}\nNegative prompt: {negative}\n{line}"
