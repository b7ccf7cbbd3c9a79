"""The generate path of the transformer (flow-matching) families: SD 3.5, FLUX.1, FLUX.2,
Z-Image, Qwen-Image (core/families.py has their table).

``Engine.generate`` hands a job to :func:`generate` when ``is_flow(info)``; the Stable Diffusion
path (A1111 prompt conditioning, LoRAs, embeddings, VAE choice, hires fix, ControlNet) stays as it
is and is not used here. What each A1111 control does for these families, decided once:

- **Prompt**: the text goes to the pipeline as text (T5 / Qwen encoders have no use for CLIP's
  emphasis). ``(word:1.2)`` / ``[word]`` weights and ``BREAK`` are reduced to the plain words
  (core/prompts.py's own parser, so ``\\(`` escapes stay literal) and ``"emphasis"`` is listed in
  ``extras["ignored"]`` when the prompt had any; prompt editing ``[a:b:0.5]`` / alternation
  ``[a|b]`` use the prompt of the last step and list ``"prompt_editing"``.
- **Negative prompt / CFG**: by the family's guidance (core/families.py): applied, embedded
  (FLUX.1 dev: ``cfg_scale`` is the distilled guidance) or not at all (distilled: schnell,
  klein, Z-Image-Turbo, SD 3.5 Large Turbo); whatever the model does not use and the request
  set is listed in ``extras["ignored"]`` (``"negative_prompt"``, ``"cfg_scale"``).
- **CLIP skip**: not applied (listed as ``"clip_skip"`` when it is not 1): A1111 clients send it
  in every request's override_settings, so refusing would break them.
- **LoRA / embedding tags**: refused with one sentence (``lora_flow_model``); with
  ``allow_missing_networks`` the tag is dropped and named in ``extras["skipped_networks"]``.
- **VAE choice, hires fix, ControlNet / IP-Adapter units**: refused with one sentence each
  (``vae_flow_model``, ``hires_flow_model``, ``control_flow_model``).
- **References** (``GenerationRequest.references``): pictures for an edit model (FLUX.2, FLUX.1
  Kontext, Qwen-Image-Edit), at most the family's ``max_references``.
- **Sizes**: multiples of 16 within the model's bounds; **samplers**: the family's list
  (core/samplers.py ``FLOW_SAMPLERS``).

Seeds, batches, progress, live previews and cancellation (within one step) work as on the SD
path: one CPU generator per picture, ``callback_on_step_end``.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from core import prompts as prompt_syntax
from core.errors import InputError, JobCancelled
from core.families import Family, family_of
from core.preview import fit_projection, grid_to_preview, preview_cells, unpack_latents
from core.samplers import find_flow_sampler, make_flow_scheduler

if TYPE_CHECKING:
    from core.engine import Engine, GenerationRequest, GenerationResult
    from core.registry import ModelInfo

log = logging.getLogger("obscura.core")

MAX_REFERENCES = 4
REFERENCE_AREA = 1024 * 1024
MIN_REFERENCE_SIDE = 64  # pixels; the edit pipelines' image processors need at least this
SD_ONLY = "Stable Diffusion 1.x, 2.x and SDXL models"


# -- checks -----------------------------------------------------------------------------------
def effective_mode(request: GenerationRequest, fam: Family) -> str:
    """The family's pipeline mode for a request: reference pictures without a photo are an edit."""
    mode = request.mode
    if mode == "txt2img" and request.references and "edit" in fam.pipelines:
        return "edit"
    return mode


def check_request(request: GenerationRequest, info: ModelInfo) -> Family:
    """Everything a flow model cannot do with this request, one sentence each (called from
    ``Engine.validate`` after the checks every model shares)."""
    from core.networks import lora_uses, vae_name

    fam = family_of(info)
    if request.sampler is not None:
        find_flow_sampler(request.sampler, fam.samplers)
    if request.hires is not None:
        raise InputError(
            "hires_flow_model",
            f"The hires fix works with {SD_ONLY} only for now; turn it off for this model.",
        )
    if request.controlnets or request.ip_adapters:
        raise InputError(
            "control_flow_model",
            f"ControlNet and IP-Adapter units work with {SD_ONLY} only for now; remove them "
            "or choose one of those models.",
        )
    if vae_name(request.vae) is not None:
        raise InputError(
            "vae_flow_model",
            f"Choosing a VAE works with {SD_ONLY} only; set the VAE to Automatic for this model.",
        )
    if not isinstance(request.allow_missing_networks, bool):
        raise InputError(
            "bad_allow_missing_networks", "allow_missing_networks must be true or false."
        )
    if not request.allow_missing_networks and any(
        not use.is_noop for use in lora_uses(request.prompt)
    ):
        raise InputError(
            "lora_flow_model",
            f"LoRAs work with {SD_ONLY} only for now; remove the <lora:...> tag or choose one "
            "of those models.",
        )
    references = request.references
    if not isinstance(references, list) or len(references) > MAX_REFERENCES:
        raise InputError(
            "too_many_references",
            "Add at most {max} reference pictures.",
            max=MAX_REFERENCES,
        )
    if any(not isinstance(picture, Image.Image) for picture in references):
        raise InputError(
            "not_an_image",
            "The {what} is not an image; use a PNG, JPEG or WebP file.",
            what="reference",
        )
    if any(min(picture.size) < MIN_REFERENCE_SIDE for picture in references):
        # FLUX.2's image processor refuses them inside the job (a 500 otherwise).
        raise InputError(
            "reference_too_small",
            "Each reference picture must be at least {min} pixels wide and high.",
            min=MIN_REFERENCE_SIDE,
        )
    if references and len(references) > fam.max_references:
        if fam.max_references == 0:
            raise InputError(
                "references_not_for_model",
                "This model does not take reference pictures; remove them or choose an edit "
                "model (FLUX.2, FLUX.1 Kontext, Qwen-Image-Edit).",
            )
        raise InputError(
            "too_many_references",
            "Add at most {max} reference pictures.",
            max=fam.max_references,
        )
    mode = effective_mode(request, fam)
    if mode != "upscale" and fam.pipeline(mode) is None:
        raise InputError(
            "mode_not_for_model",
            "This model cannot paint that way (no {mode} pipeline for it); choose another model.",
            mode=mode,
        )
    if fam.needs_image and request.image is None and not references:
        raise InputError(
            "edit_needs_picture",
            "This edit model needs a picture to edit; add a photo or a reference picture.",
        )
    spec = info.spec
    for side in ("width", "height"):
        value = getattr(request, side)
        if value is None:
            continue
        from core.engine import _number

        value = _number(value, int, "size_out_of_range", side.capitalize())
        if value % fam.size_multiple or not spec.min_size <= value <= spec.max_size:
            raise InputError(
                "flow_size_out_of_range",
                "Width and height must be multiples of {multiple} between {min} and {max} "
                "for this model.",
                multiple=fam.size_multiple,
                min=spec.min_size,
                max=spec.max_size,
            )
    return fam


# -- prompts ----------------------------------------------------------------------------------
def plain_prompt(text: str, steps: int) -> tuple[str, list[str]]:
    """The words of an A1111 prompt for a T5 / Qwen text encoder, and what was dropped
    (``"emphasis"``, ``"prompt_editing"``); extra-network tags are taken out."""
    dropped: list[str] = []
    text, _ = prompt_syntax.extract_extra_networks(text)
    schedule = prompt_syntax.prompt_schedule(text, steps)
    if len(schedule) > 1:
        dropped.append("prompt_editing")
        text = schedule[-1][1]
    words: list[str] = []
    emphasis = False
    for piece in prompt_syntax.parse_prompt_attention(text):
        if prompt_syntax.is_break(piece):
            emphasis = True
            words.append(" ")
            continue
        words.append(piece[0])
        emphasis = emphasis or piece[1] != 1.0
    if emphasis:
        dropped.append("emphasis")
    return "".join(words), dropped


# -- generation -------------------------------------------------------------------------------
def _size(request: GenerationRequest, info: ModelInfo, fam: Family) -> tuple[int, int]:
    spec = info.spec
    multiple = fam.size_multiple
    if request.image is not None and (request.width is None or request.height is None):
        width, height = request.image.size
        scale = min(1.0, spec.max_size / max(width, height))
        width = max(spec.min_size, int(width * scale) // multiple * multiple)
        height = max(spec.min_size, int(height * scale) // multiple * multiple)
        return int(request.width or width), int(request.height or height)
    return int(request.width or spec.default_size), int(request.height or spec.default_size)


def _mode_inputs(
    request: GenerationRequest, fam: Family, mode: str, width: int, height: int, strength: float,
    ignored: list[str],
) -> dict[str, Any]:
    """The pipeline's picture inputs for ``mode``."""
    import diffusers

    cls = getattr(diffusers, fam.pipelines[mode])
    accepted = inspect.signature(cls.__call__).parameters
    photo = (
        request.image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
        if request.image is not None
        else None
    )
    mask = (
        request.mask.convert("L").resize((width, height), Image.Resampling.NEAREST)
        if request.mask is not None
        else None
    )
    # A reference costs the transformer its pixels in tokens: none larger than the picture
    # painted (or 1 MP, the size the edit models are trained at, when that is smaller).
    area = max(width * height, REFERENCE_AREA)
    references = [_bounded(picture.convert("RGB"), area) for picture in request.references]
    out: dict[str, Any] = {}
    if fam.inpaint_only:  # FLUX.1 Fill: every mode is inpainting
        if photo is None:
            photo = Image.new("RGB", (width, height), (127, 127, 127))
        if mask is None:
            mask = Image.new("L", (width, height), 255)
        return {"image": photo, "mask_image": mask,
                "strength": 1.0 if mode == "txt2img" else strength}
    if mode == "inpaint":
        out = {"image": photo, "mask_image": mask, "strength": strength}
        if references and "image_reference" in accepted:
            out["image_reference"] = references
        return out
    if mode == "img2img":
        pictures = [photo, *references]
        if "strength" in accepted:
            return {"image": photo, "strength": strength}
        # an edit pipeline's img2img: the photo is the (first) picture it edits, whole
        ignored.append("strength")
        return {"image": pictures if fam.max_references > 1 else photo}
    if mode == "edit":
        return {"image": references if fam.max_references > 1 else references[0]}
    return {}


# The tokenizer of each family's long text encoder (T5 / Qwen), whose length the pipeline caps.
_LONG_TOKENIZER = {"sd3": "tokenizer_3", "flux1": "tokenizer_2"}


def _truncated(pipe: Any, arch: str, text: str) -> bool:
    """Whether the pipeline's long text encoder will cut ``text`` (its ``max_sequence_length``,
    counted with its own tokenizer; a family's prompt template is not counted)."""
    tokenizer = getattr(pipe, _LONG_TOKENIZER.get(arch, "tokenizer"), None)
    limit = inspect.signature(type(pipe).__call__).parameters.get("max_sequence_length")
    if tokenizer is None or limit is None or not isinstance(limit.default, int):
        return False
    return len(tokenizer(text).input_ids) > limit.default


def _bounded(picture: Image.Image, area: int) -> Image.Image:
    """``picture`` scaled down (aspect kept, sides multiples of 16) to at most ``area`` pixels."""
    if picture.width * picture.height <= area:
        return picture
    scale = (area / (picture.width * picture.height)) ** 0.5
    size = (max(16, int(picture.width * scale) // 16 * 16),
            max(16, int(picture.height * scale) // 16 * 16))
    return picture.resize(size, Image.Resampling.LANCZOS)


class _Preview:
    """Latent previews of one job: the projection of the loaded model's VAE, fitted once."""

    def __init__(self, engine: Engine, pipe: Any, fam: Family, width: int, height: int) -> None:
        self.engine, self.pipe, self.fam = engine, pipe, fam
        self.width, self.height = width, height

    def __call__(self, latents: torch.Tensor) -> Image.Image | None:
        fam = self.fam
        try:
            grid = unpack_latents(
                latents, fam.packed, self.width, self.height, fam.vae_scale_factor
            )
            key = id(self.pipe.vae)
            cache = self.engine._flow_previews
            if key not in cache:
                cache[key] = fit_projection(self.pipe, fam.latent_space, grid.shape[1],
                                            fam.packed)
            factors, bias = cache[key]
            cells = preview_cells(grid, fam.packed)
            return grid_to_preview(cells, factors, bias, fam.vae_scale_factor)
        except (RuntimeError, ValueError, AttributeError, TypeError) as exc:
            log.info("preview skipped: %s", type(exc).__name__)
            return None


def _step_callback(
    preview: _Preview, on_step: Any, should_stop: Any, steps: int
) -> Callable[..., dict[str, Any]]:
    def on_step_end(pipe_: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if should_stop is not None and should_stop():
            raise JobCancelled()
        if on_step is not None:
            total = int(getattr(pipe_, "_num_timesteps", None) or steps)
            image = preview(tensors["latents"]) if "latents" in tensors else None
            on_step(step + 1, total, image)
        return tensors

    return on_step_end


def generate(
    engine: Engine,
    request: GenerationRequest,
    info: ModelInfo,
    on_step: Callable[[int, int, Image.Image | None], None] | None,
    should_stop: Callable[[], bool] | None,
) -> GenerationResult:
    """One job of a flow model (``Engine.generate`` holds the engine's lock around this)."""
    from core.engine import GenerationResult, batch_seeds, denoising_strength

    fam = family_of(info)
    spec = info.spec
    mode = effective_mode(request, fam)
    pipe = engine._pipeline(info, mode)
    sampler = find_flow_sampler(request.sampler or spec.default_sampler, fam.samplers)
    pipe.scheduler = make_flow_scheduler(sampler, engine._scheduler_config)

    steps = int(request.num_inference_steps or spec.default_steps)
    asked = request.guidance_scale is not None
    guidance = (
        float(request.guidance_scale) if request.guidance_scale is not None
        else float(spec.default_guidance)
    )
    batch = int(request.batch_size)
    seed, seeds = batch_seeds(request.seed, batch)
    width, height = _size(request, info, fam)
    ignored: list[str] = []
    extras: dict[str, Any] = {}

    prompt, dropped = plain_prompt(request.prompt, steps)
    ignored += dropped
    if _truncated(pipe, info.arch, prompt):
        ignored.append("prompt_truncated")
    if request.allow_missing_networks:
        from core.networks import lora_uses

        skipped = [
            {"kind": "lora", "name": use.name, "code": "lora_flow_model",
             "message": f"LoRAs work with {SD_ONLY} only for now."}
            for use in lora_uses(request.prompt) if not use.is_noop
        ]
        if skipped:
            extras["skipped_networks"] = skipped
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    if sampler.options.get("stochastic_sampling"):
        # The pipelines call scheduler.step without a generator: the ancestral noise would come
        # from torch's global RNG (not the seed's). Each picture's own generator goes on from
        # its starting noise, as A1111's samplers do; the scheduler is this job's own.
        pipe.scheduler.step = functools.partial(pipe.scheduler.step, generator=generators)
    kwargs: dict[str, Any] = {
        "prompt": prompt,
        "num_inference_steps": steps,
        "num_images_per_prompt": batch,
        "generator": generators,
        "width": width,
        "height": height,
        "output_type": "pil",
    }
    negative = request.negative_prompt
    if fam.negative_prompt:
        text, dropped = plain_prompt(negative, steps)
        kwargs["negative_prompt"] = text
        ignored += [d for d in dropped if d not in ignored]
    elif negative.strip():
        ignored.append("negative_prompt")
    if fam.guidance == "none":
        if asked and guidance != fam.fixed_guidance:
            ignored.append("cfg_scale")
        guidance = float(fam.fixed_guidance or 0.0)
    kwargs[fam.cfg_param] = guidance
    if int(request.clip_skip) != 1:
        ignored.append("clip_skip")
    strength = denoising_strength(steps, float(request.strength))
    kwargs.update(_mode_inputs(request, fam, mode, width, height, strength, ignored))
    accepted = inspect.signature(type(pipe).__call__).parameters
    if "max_area" in accepted:  # FLUX.1 Kontext scales to 1 MP and its preferred ratios unless told
        kwargs.update(max_area=width * height, _auto_resize=False)

    preview = _Preview(engine, pipe, fam, width, height)
    kwargs["callback_on_step_end"] = _step_callback(preview, on_step, should_stop, steps)
    kwargs["callback_on_step_end_tensor_inputs"] = ["latents"]
    with torch.inference_mode():
        output = pipe(**kwargs)
    images = list(output.images)
    if ignored:
        extras["ignored"] = list(dict.fromkeys(ignored))
    if request.references:
        extras["references"] = len(request.references)
    return GenerationResult(
        images=images,
        extras=extras,
        seeds=seeds,
        seed=seed,
        model=info.name,
        is_demo=info.is_demo,
        sampler=sampler.name,
        num_inference_steps=steps,
        guidance_scale=guidance,
        width=images[0].width if images else width,
        height=images[0].height if images else height,
        mode=request.mode,
        strength=None if request.mode == "txt2img" else float(request.strength),
    )
