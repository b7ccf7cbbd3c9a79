"""AUTOMATIC1111's "parameters" text: the prompt and settings of one picture.

Written into a picture only when its owner opted in (accounts mode) or the CLI was given
``--embed-parameters``; shared by the CLI, the web UI and the API so all three write the same.

ControlNet and IP-Adapter units are written as the ControlNet extension writes them
(``ControlNet 0: "Module: canny, Model: name, Weight: 1.0, ..."``, ControlNets first, then
IP-Adapters), from the settings the engine reports in ``GenerationResult.extras``. Nothing
derived from a picture is ever written: not whether a face was found, no crop, box or embedding.
"""

from __future__ import annotations

import json

from core.engine import GenerationResult


def _shown(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# The extension's infotext fields of a unit, in its order (ControlNetUnit.infotext_fields).
UNIT_FIELDS = ("module", "model", "weight", "resize_mode", "processor_res", "threshold_a",
               "threshold_b", "guidance_start", "guidance_end", "pixel_perfect", "control_mode")
IP_ADAPTER_MODULE = "ip-adapter-auto"  # the encoder is chosen from the adapter's own weights


def _unit_text(settings: dict[str, object]) -> str | None:
    """One unit as the extension serialises it ("Module: canny, Model: x, ..."); ``None`` when
    a value holds a comma or colon (the extension leaves such a unit out, too)."""
    values = {" ".join(word.capitalize() for word in name.split("_")): str(settings[name])
              for name in UNIT_FIELDS if name in settings}
    if any("," in value or ":" in value for value in values.values()):
        return None
    return ", ".join(f"{key}: {value}" for key, value in values.items())


def unit_params(result: GenerationResult) -> dict[str, str]:
    """``{"ControlNet 0": "Module: canny, Model: ..."}`` for the units the job used."""
    units: list[dict[str, object]] = list(result.extras.get("controlnet", []))
    for adapter in result.extras.get("ip_adapter", []):
        units.append({"module": IP_ADAPTER_MODULE, "resize_mode": "Crop and Resize",
                      "processor_res": 512, "threshold_a": -1, "threshold_b": -1,
                      "pixel_perfect": False, "control_mode": "Balanced", **adapter})
    params = {}
    for index, settings in enumerate(units):
        text = _unit_text({"pixel_perfect": False, **settings})
        if text is not None:
            params[f"ControlNet {index}"] = text
    return params


def _quoted(text: str) -> str:
    """A1111's quote(): a value with a comma, colon or line break goes in as a JSON string."""
    if "," not in text and ":" not in text and "\n" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


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
    for key, text in unit_params(result).items():
        line += f", {key}: {_quoted(text)}"
    return f"{prompt}\nNegative prompt: {negative}\n{line}"
