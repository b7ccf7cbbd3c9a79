"""AUTOMATIC1111's "parameters" text: the prompt and settings of one picture.

Written into a picture only when its owner opted in (accounts mode) or the CLI was given
``--embed-parameters``; shared by the CLI, the web UI and the API so all three write the same.
"""

from __future__ import annotations

from core.engine import GenerationResult


def _shown(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def infotext(prompt: str, negative: str, result: GenerationResult, seed: int) -> str:
    if result.mode == "upscale":  # an extras job: no prompt, AUTOMATIC1111's postprocess line
        parameters = result.extras.get("parameters", {})
        return ", ".join(f"{key}: {_shown(value)}" for key, value in parameters.items())
    # With the hires fix, Size is the first pass's (AUTOMATIC1111's); the Hires fields follow.
    width, height = result.extras.get("first_pass_size", (result.width, result.height))
    line = (
        f"Steps: {result.num_inference_steps}, Sampler: {result.sampler}, "
        f"CFG scale: {result.guidance_scale:g}, Seed: {seed}, "
        f"Size: {width}x{height}, Model: {result.model}"
    )
    if result.strength is not None:
        line += f", Denoising strength: {result.strength:g}"
    for key, value in result.extras.get("hires", {}).items():
        line += f", {key}: {_shown(value)}"
    return f"{prompt}\nNegative prompt: {negative}\n{line}"
