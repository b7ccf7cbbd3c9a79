"""The engine: one device, one loaded model at a time, and ``generate`` for all three modes.

``generate`` reads like a diffusers call: the request's names are diffusers' own
(``num_inference_steps``, ``guidance_scale``, ``strength``), checked up front with one clear
sentence per mistake. Progress, live previews and cancellation go through diffusers'
``callback_on_step_end``: a cancelled job raises :class:`JobCancelled` at the end of the current
step, which stops the pipeline and frees the device at once.
"""

from __future__ import annotations

import gc
import logging
import secrets
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from PIL import Image

from core import conditioning, control, flow, networks, pipelines, planner
from core.control import ControlUnit, IPAdapterUnit
from core.devices import DevicePlan, resolve_device, resolve_dtype
from core.errors import InputError, JobCancelled, ModelError
from core.families import is_flow
from core.hires import (
    HiresTarget,
    check_hires,
    hires_target,
    second_pass_schedule,
    second_pass_steps,
)
from core.preview import latents_to_preview
from core.registry import ARCH_SPECS, ModelInfo, ModelRegistry
from core.samplers import find_sampler, make_scheduler
from core.upscale import (
    LATENT_MODES,
    MAX_EXTRAS_SCALE,
    MAX_OUTPUT_SIDE,
    PIXEL_UPSCALERS,
    UpscalerModels,
    check_output_size,
    latent_upscale,
    resize_pixels,
    spandrel_available,
)

log = logging.getLogger("obscura.core")

MAX_PROMPT_CHARS = 4000
MAX_BATCH = 8
MAX_STEPS = 150
MAX_GUIDANCE = 30.0
MAX_SEED = 2**32 - 1
# The smallest and largest side any architecture takes (each model's own range is checked too).
MIN_SIZE = min(spec.min_size for spec in ARCH_SPECS.values())
MAX_SIZE = max(spec.max_size for spec in ARCH_SPECS.values())

StepCallback = Callable[[int, int, Image.Image | None], None]


def denoising_strength(steps: int, strength: float) -> float:
    """The strength handed to diffusers: at least one step always runs.

    diffusers runs ``int(steps * strength)`` steps and fails on 0 (steps 1, strength 0.3).
    AUTOMATIC1111 then runs one step, the last of the requested schedule (all of it at steps 1);
    so does this: any strength in ``[1/steps, 2/steps)`` makes diffusers start at that step.
    """
    if int(steps * strength) >= 1:
        return strength
    return min(1.0, 1.5 / steps)


@dataclass
class HiresFix:
    """AUTOMATIC1111's hires fix: paint at the request's size, upscale, then repaint the
    upscaled picture with ``denoising_strength`` (``enable_hr`` and the ``hr_*`` fields)."""

    scale: float = 2.0  # hr_scale, used when resize_x/resize_y are 0
    resize_x: int = 0  # hr_resize_x
    resize_y: int = 0  # hr_resize_y
    upscaler: str = "Latent"  # hr_upscaler: a latent mode or an upscaler model's name
    second_pass_steps: int = 0  # hr_second_pass_steps; 0 = the first pass's steps
    denoising_strength: float = 0.7
    sampler: str | None = None  # hr_sampler_name; None = the first pass's
    prompt: str | None = None  # hr_prompt; None = the first pass's
    negative_prompt: str | None = None  # hr_negative_prompt


@dataclass
class Upscale:
    """AUTOMATIC1111's extras upscale (``/sdapi/v1/extra-single-image``): the photo upscaled by
    ``scale`` (``resize_mode`` 0) or to ``width`` x ``height`` (``resize_mode`` 1), with
    ``upscaler`` and optionally a second upscaler blended in at ``upscaler_2_visibility``."""

    scale: float = 2.0  # upscaling_resize
    width: int = 0  # upscaling_resize_w (with height: resize_mode 1)
    height: int = 0  # upscaling_resize_h
    crop: bool = True  # upscaling_crop: fill the box exactly, cropping the overflow
    upscaler: str = "Lanczos"  # upscaler_1
    upscaler_2: str = "None"  # upscaler_2
    upscaler_2_visibility: float = 0.0  # extras_upscaler_2_visibility


@dataclass
class GenerationRequest:
    prompt: str
    negative_prompt: str = ""
    image: Image.Image | None = None
    mask: Image.Image | None = None
    strength: float = 0.75
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    width: int | None = None
    height: int | None = None
    batch_size: int = 1
    seed: int | None = None
    sampler: str | None = None
    model: str | None = None
    # AUTOMATIC1111's CLIP_stop_at_last_layers: 1 = the text encoder's last layer.
    clip_skip: int = 1
    # A VAE of the model library by name; None = the model's own ("Automatic").
    vae: str | None = None
    # Run without a LoRA/embedding the prompt names that cannot be used (only when asked).
    allow_missing_networks: bool = False
    # AUTOMATIC1111's hires fix (txt2img only); None = off.
    hires: HiresFix | None = None
    # AUTOMATIC1111's extras: upscale ``image`` (no painting); None = a painting job.
    upscale: Upscale | None = None
    # ControlNet and IP-Adapter units (core/control.py), at most control.MAX_UNITS each.
    controlnets: list[ControlUnit] = field(default_factory=list)
    ip_adapters: list[IPAdapterUnit] = field(default_factory=list)
    # Reference pictures of an edit model (FLUX.2, FLUX.1 Kontext, Qwen-Image-Edit), at most
    # core.flow.MAX_REFERENCES; the run path's "edit:<j>" pictures.
    references: list[Image.Image] = field(default_factory=list)

    @property
    def mode(self) -> str:
        if self.upscale is not None:
            return "upscale"
        if self.mask is not None:
            return "inpaint"
        if self.image is not None:
            return "img2img"
        return "txt2img"

    def without_pictures(self) -> GenerationRequest:
        """This request with no picture left in it (photo, mask, every ControlNet unit's
        picture, every IP-Adapter unit's references, an edit model's references): what waits
        in a queue, and what an ended job keeps. A unit keeps every other setting."""
        return replace(
            self,
            image=None,
            mask=None,
            controlnets=[replace(unit, image=None) for unit in self.controlnets],
            ip_adapters=[replace(unit, images=[]) for unit in self.ip_adapters],
            references=[],
        )


@dataclass
class GenerationResult:
    images: list[Image.Image]
    seeds: list[int]
    seed: int
    model: str
    is_demo: bool
    sampler: str
    num_inference_steps: int
    guidance_scale: float
    width: int
    height: int
    mode: str
    strength: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def batch_seeds(asked: int | None, batch: int) -> tuple[int, list[int]]:
    """The job's seed (random when none or -1 is asked) and each picture's: seed + index, as
    AUTOMATIC1111 numbers a batch. Every family's path takes them from here."""
    seed = int(asked) if asked is not None and int(asked) >= 0 else secrets.randbits(32)
    return seed, [(seed + i) % (MAX_SEED + 1) for i in range(batch)]


def _number(value: Any, kind: type, code: str, what: str) -> Any:
    if isinstance(value, bool):
        raise InputError(code, "{what} must be a number.", what=what)
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(code, "{what} must be a number.", what=what) from None
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise InputError(code, "{what} must be a whole number.", what=what)
    if isinstance(number, float) and number != number:  # NaN
        raise InputError(code, "{what} must be a number.", what=what)
    return number


class Engine:
    """Runs generation on one device. Thread-safe: one job at a time."""

    def __init__(
        self,
        registry: ModelRegistry,
        device: str = "auto",
        dtype: str = "auto",
        memory_mode: str = "auto",
        default_model: str | None = None,
    ) -> None:
        self.registry = registry
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(self.device, dtype)
        self.memory_mode = memory_mode
        self.default_model = default_model
        self._lock = threading.RLock()
        self._model: ModelInfo | None = None
        self._pipes: dict[str, Any] = {}
        self._scheduler_config: dict[str, Any] = {}
        self.plan: DevicePlan | None = None
        # LoRAs and VAEs of the loaded model (core/networks.py), set per job.
        self._networks: networks.NetworkSet | None = None
        # Latent-preview projections of the loaded flow model's VAE (core/flow.py).
        self._flow_previews: dict[int, Any] = {}
        self.upscalers = UpscalerModels(self.device)

    # -- models ---------------------------------------------------------------------------
    @property
    def current_model(self) -> str | None:
        return self._model.name if self._model else None

    def model_for(self, name: str | None) -> ModelInfo:
        if name:
            return self.registry.get(name)
        if self._model is not None:
            return self._model
        if self.default_model:
            return self.registry.get(self.default_model)
        return self.registry.default()

    def load(self, name: str | None = None) -> ModelInfo:
        """Make ``name`` the loaded model (loads once; switching frees the previous one)."""
        with self._lock:
            info = self.model_for(name)
            broken = self._networks is not None and self._networks.broken
            if self._model is not None and self._model == info and not broken:
                return info
            # Refused up front (one sentence) when it fits in no memory mode (core/planner.py),
            # before the loaded model is let go: a model that cannot fit must not evict the one
            # everybody else is painting with.
            self.plan_for(info)
            self.unload()
            self.plan = planner.plan_here(info, self.device, self.dtype, self.memory_mode)
            try:
                base = pipelines.load_base_pipeline(info, self.dtype)
                pipelines.place(base, self.plan)
            except InputError:
                raise
            except (MemoryError, torch.OutOfMemoryError):
                self.unload()
                raise InputError(
                    "model_out_of_memory",
                    "The model does not fit in this device's free memory; choose a smaller model "
                    "or set memory_mode to model-offload or sequential-offload.",
                ) from None
            except Exception as exc:  # damaged weights surface in many shapes; all mean the same
                self.unload()
                log.warning("model load failed: %s", type(exc).__name__)
                raise ModelError("model_load_failed", pipelines.LOAD_FAILED) from exc
            self._model, self._pipes = info, {"txt2img": base}
            # LoRAs and VAE choice are for the SD families only (core/flow.py refuses them).
            self._networks = (
                None if is_flow(info)
                else networks.NetworkSet(info, base, self.registry.library, self.plan)
            )
            # Samplers are built from the model's own scheduler config, never from the last job's.
            self._scheduler_config = dict(base.scheduler.config)
            log.info("model loaded (%s, %s, %s)", info.arch, self.device, self.plan.memory_mode)
            return info

    def plan_for(self, info: ModelInfo) -> planner.Plan:
        """The memory plan ``info`` gets on this engine's device (the loaded model's own plan;
        for another model, counting what the loaded one would give back when it is switched)."""
        if self._model == info and isinstance(self.plan, planner.Plan):
            return self.plan
        held_vram = held_ram = 0
        if isinstance(self.plan, planner.Plan) and self._model is not None:
            if self.device.startswith("cuda"):
                held_vram = torch.cuda.memory_allocated(torch.device(self.device))
            if self.plan.placement != "full":
                held_ram = self.plan.peak_ram
        return planner.plan_here(
            info, self.device, self.dtype, self.memory_mode, held_vram=held_vram, held_ram=held_ram
        )

    def unload(self) -> None:
        with self._lock:
            self._pipes.clear()
            self._networks = None
            self._flow_previews.clear()
            self._model = None
            gc.collect()
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()

    def _pipeline(self, info: ModelInfo, mode: str) -> Any:
        if mode not in self._pipes:
            self._pipes[mode] = pipelines.derive_pipeline(self._pipes["txt2img"], info, mode)
            if self.plan is not None and self.plan.memory_mode != "none":
                pipelines.place(self._pipes[mode], self.plan)
        if self._networks is not None:  # a pipeline taken during a job gets the job's VAE
            self._networks.attach(self._pipes[mode])
        return self._pipes[mode]

    # -- checks ---------------------------------------------------------------------------
    def validate(self, request: GenerationRequest) -> ModelInfo:
        """Raise :class:`InputError` for any value the engine cannot run; return the model."""
        for name in ("prompt", "negative_prompt"):
            value = getattr(request, name)
            if not isinstance(value, str):
                raise InputError("bad_prompt", "The prompt must be text.")
            if len(value) > MAX_PROMPT_CHARS:
                raise InputError(
                    "prompt_too_long",
                    "The prompt is too long; keep it under {max} characters.",
                    max=MAX_PROMPT_CHARS,
                )
            if not value.isascii():
                try:
                    value.encode("utf-8")  # a lone surrogate (JSON's "\ud800") is not text
                except UnicodeEncodeError:
                    raise InputError(
                        "prompt_not_text",
                        "The prompt contains characters that are not valid text.",
                    ) from None
        info = self.model_for(request.model)
        spec = info.spec
        flow_model = is_flow(info)
        if not flow_model:  # a flow model's samplers are its family's (core/flow.py)
            find_sampler(request.sampler)
        if request.num_inference_steps is not None:
            steps = _number(request.num_inference_steps, int, "steps_out_of_range", "Steps")
            if not 1 <= steps <= MAX_STEPS:
                raise InputError(
                    "steps_out_of_range",
                    "Steps must be between 1 and {max}.",
                    max=MAX_STEPS,
                    value=steps,
                )
        if request.guidance_scale is not None:
            guidance = _number(
                request.guidance_scale, float, "guidance_out_of_range", "Guidance scale"
            )
            if not 0.0 <= guidance <= MAX_GUIDANCE:
                raise InputError(
                    "guidance_out_of_range",
                    "Guidance scale must be between 0 and {max}.",
                    max=MAX_GUIDANCE,
                )
        batch = _number(request.batch_size, int, "batch_out_of_range", "Batch size")
        if not 1 <= batch <= MAX_BATCH:
            raise InputError(
                "batch_out_of_range", "Batch size must be between 1 and {max}.", max=MAX_BATCH
            )
        if request.seed is not None:
            seed = _number(request.seed, int, "seed_out_of_range", "Seed")
            if not -1 <= seed <= MAX_SEED:
                raise InputError(
                    "seed_out_of_range",
                    "Seed must be between 0 and {max}, or -1 for random.",
                    max=MAX_SEED,
                )
        conditioning.check_clip_skip(request.clip_skip)
        if flow_model:
            flow.check_request(request, info)
        else:
            networks.check_request(request, self.registry.library, info)
            control.check_request(request, self.registry.library, info)
            if request.references:
                raise InputError(
                    "references_not_for_model",
                    "This model does not take reference pictures; remove them or choose an "
                    "edit model (FLUX.2, FLUX.1 Kontext, Qwen-Image-Edit).",
                )
        if request.mode != "txt2img":
            strength = _number(request.strength, float, "strength_out_of_range", "Strength")
            if not 0.0 < strength <= 1.0:
                raise InputError("strength_out_of_range", "Strength must be above 0 and at most 1.")
        for side in ("width", "height"):
            value = getattr(request, side)
            if value is None or flow_model:  # flow sizes: multiples of 16 (core/flow.py)
                continue
            value = _number(value, int, "size_out_of_range", side.capitalize())
            if value % 8 or not spec.min_size <= value <= spec.max_size:
                raise InputError(
                    "size_out_of_range",
                    "Width and height must be multiples of 8 between {min} and {max} for this model.",
                    min=spec.min_size,
                    max=spec.max_size,
                )
        if request.mask is not None and request.image is None:
            raise InputError(
                "mask_without_image", "A mask needs a photo to paint into; add the photo."
            )
        for name in ("image", "mask"):
            value = getattr(request, name)
            if value is not None and not isinstance(value, Image.Image):
                raise InputError(
                    "not_an_image",
                    "The {what} is not an image; use a PNG, JPEG or WebP file.",
                    what=name,
                )
        if (
            request.mask is not None
            and request.image is not None
            and request.mask.size != request.image.size
        ):
            raise InputError(
                "mask_size_mismatch",
                "The mask must be the same size as the photo ({width}x{height}); draw it on the same photo.",
                width=request.image.width,
                height=request.image.height,
            )
        if request.hires is not None:
            self._check_hires(request, info)
        if request.upscale is not None:
            self._check_upscale(request)
        elif info != self._model:
            # A model that fits in no memory mode is one sentence before the job waits in line
            # (core/planner.py; the loaded model's own plan is already known to fit).
            self.plan_for(info)
        return info

    # -- hires fix and upscalers ----------------------------------------------------------
    def upscaler_kind(self, name: Any) -> tuple[str, str, Any]:
        """``(kind, name, library item)`` for an upscaler name (A1111's names): ``latent``,
        ``pixel`` or ``model``; one sentence for a name that is not there or cannot run."""
        if not isinstance(name, str) or not name.strip():
            raise InputError("unknown_upscaler", "Choose an upscaler; /sdapi/v1/upscalers and "
                             "/sdapi/v1/latent-upscale-modes list them.")
        for table, kind in ((LATENT_MODES, "latent"), (PIXEL_UPSCALERS, "pixel")):
            for known in table:
                if known.lower() == name.strip().lower():
                    return kind, known, None
        library = getattr(self.registry, "library", None)
        if library is None:
            raise InputError("unknown_upscaler", "That upscaler is not in the models folder's "
                             "upscaler list.")
        item = library.find("upscaler", name.strip())
        if not spandrel_available():
            from core.upscale import SPANDREL_MISSING

            raise ModelError("upscaler_unavailable", SPANDREL_MISSING)
        return "model", item.name, item

    def _check_hires(self, request: GenerationRequest, info: ModelInfo) -> HiresTarget:
        hires = request.hires
        assert hires is not None
        if request.mode != "txt2img":
            raise InputError("hires_not_txt2img",
                             "The hires fix is for pictures painted from text only; turn it off.")
        if info.variant == "inpaint":
            raise InputError("hires_inpaint_model",
                             "The hires fix needs a model that is not an inpainting model; "
                             "choose another model or turn the hires fix off.")
        for text in (hires.prompt, hires.negative_prompt):
            if text is not None:
                self.validate(GenerationRequest(
                    prompt=text, model=request.model,
                    allow_missing_networks=request.allow_missing_networks,
                ))
        if hires.sampler is not None:
            find_sampler(hires.sampler)
        self.upscaler_kind(hires.upscaler)
        width, height = self._size(request, info)
        spec = info.spec
        return check_hires(hires, width, height, spec.min_size, spec.max_size, MAX_STEPS)

    def _check_upscale(self, request: GenerationRequest) -> tuple[int, int] | None:
        """The upscale's bounds; with the picture (None before it is there: a job in line
        holds none), the size it makes."""
        upscale = request.upscale
        assert upscale is not None
        scale = _number(upscale.scale, float, "upscale_scale_out_of_range", "Upscale by")
        if not 1.0 <= scale <= MAX_EXTRAS_SCALE:
            raise InputError("upscale_scale_out_of_range",
                             "Upscale by must be between 1 and {max}.", max=MAX_EXTRAS_SCALE)
        for side in (upscale.width, upscale.height):
            value = _number(side, int, "upscale_size_out_of_range", "Upscale width and height")
            if not 0 <= value <= MAX_OUTPUT_SIDE:
                raise InputError("upscale_size_out_of_range",
                                 "Upscale width and height must be between 0 and {max}.",
                                 max=MAX_OUTPUT_SIDE)
        visibility = _number(upscale.upscaler_2_visibility, float,
                             "upscale_visibility_out_of_range", "Upscaler 2 visibility")
        if not 0.0 <= visibility <= 1.0:
            raise InputError("upscale_visibility_out_of_range",
                             "Upscaler 2 visibility must be between 0 and 1.")
        for name in (upscale.upscaler, upscale.upscaler_2 if visibility > 0 else "None"):
            if self.upscaler_kind(name)[0] == "latent":
                raise InputError("upscale_latent_mode",
                                 "Latent upscalers work inside the hires fix only; choose "
                                 "Lanczos or an upscaler model.")
        if request.image is None:
            return None
        width, height = self._upscale_size(request.image.size, upscale)
        check_output_size(width, height)
        return width, height

    @staticmethod
    def _upscale_size(size: tuple[int, int], upscale: Upscale) -> tuple[int, int]:
        """A1111's extras: the box (resize_mode 1) or ``int(side * scale) // 8 * 8``."""
        width, height = size
        if int(upscale.width) > 0 and int(upscale.height) > 0:
            if upscale.crop:
                return int(upscale.width), int(upscale.height)
            scale = max(int(upscale.width) / width, int(upscale.height) / height)
        else:
            scale = float(upscale.scale)
        return max(8, int(width * scale) // 8 * 8), max(8, int(height * scale) // 8 * 8)

    def _upscale_one(
        self,
        name: str,
        image: Image.Image,
        width: int,
        height: int,
        should_stop: Callable[[], bool] | None,
        on_tile: Callable[[int, int], None] | None = None,
    ) -> Image.Image:
        kind, known, item = self.upscaler_kind(name)
        if kind == "model":
            return self.upscalers.upscale(item.path, image, width, height, should_stop, on_tile)
        return resize_pixels(image, width, height, known)

    def _run_upscale(
        self,
        request: GenerationRequest,
        on_step: StepCallback | None,
        should_stop: Callable[[], bool] | None,
    ) -> GenerationResult:
        """An extras job: the photo upscaled (A1111's postprocessing_upscale), no painting."""
        upscale = request.upscale
        assert upscale is not None
        size = self._check_upscale(request)
        if request.image is None or size is None:
            raise InputError("upscale_needs_photo", "Add the picture to upscale.", image="photo")
        width, height = size
        source = request.image.convert("RGB")
        box = int(upscale.width) > 0 and int(upscale.height) > 0
        if box and upscale.crop:
            # Cover the box, then crop the overflow around the centre (upscaling_crop).
            scale = max(width / source.width, height / source.height)
            cover = (max(width, round(source.width * scale)), max(height, round(source.height * scale)))
        else:
            cover = (width, height)
        check_output_size(*cover)

        def on_tile(done: int, total: int) -> None:
            if on_step is not None:
                on_step(done, total, None)

        picture = self._upscale_one(upscale.upscaler, source, *cover, should_stop, on_tile)
        if float(upscale.upscaler_2_visibility) > 0:
            second = self._upscale_one(upscale.upscaler_2, source, *cover, should_stop)
            picture = Image.blend(picture, second, float(upscale.upscaler_2_visibility))
        if picture.size != (width, height):
            left, top = (picture.width - width) // 2, (picture.height - height) // 2
            picture = picture.crop((left, top, left + width, top + height))
        if on_step is not None:
            on_step(1, 1, None)
        names = self.upscaler_kind(upscale.upscaler)[1]
        return GenerationResult(
            images=[picture],
            seeds=[0],
            seed=0,
            model="",
            is_demo=False,
            sampler="",
            num_inference_steps=0,
            guidance_scale=0.0,
            width=width,
            height=height,
            mode="upscale",
            extras={"parameters": {
                "Postprocess upscale to": f"{width}x{height}",
                "Postprocess upscaler": names,
            }},
        )

    def _hires_pass(
        self,
        request: GenerationRequest,
        info: ModelInfo,
        first: Any,
        sampler_name: str,
        steps: int,
        guidance: float,
        seeds: list[int],
        done_steps: int,
        prompts: Any,
        on_step: StepCallback | None,
        should_stop: Callable[[], bool] | None,
    ) -> tuple[list[Image.Image], int, int]:
        """A1111's hires fix after the first pass (``first``: latents for a latent mode, else
        pictures): upscale, then repaint with the img2img pipeline; returns the pictures."""
        hires = request.hires
        assert hires is not None
        width, height = self._size(request, info)
        target = check_hires(hires, width, height, info.spec.min_size, info.spec.max_size,
                             MAX_STEPS)
        kind, name, _ = self.upscaler_kind(hires.upscaler)
        pipe = self._pipeline(info, "img2img")
        if kind == "latent":
            latents = latent_upscale(first, target.upscale_width, target.upscale_height, name)
            top, left = target.truncate_y // 2, target.truncate_x // 2
            image: Any = latents[
                :, :, top : top + target.height // 8, left : left + target.width // 8
            ]
        else:
            image = [
                self._upscale_one(name, picture, target.upscale_width, target.upscale_height,
                                  should_stop).crop(target.crop_box())
                for picture in first
            ]
        if should_stop is not None and should_stop():
            raise JobCancelled()
        denoising = float(hires.denoising_strength)
        if denoising == 0:  # upscale only, no repaint
            if kind == "latent":
                return _decode_latents(pipe, image), target.width, target.height
            return image, target.width, target.height
        hr_steps = second_pass_steps(steps, hires)
        schedule, strength = second_pass_schedule(hr_steps, denoising)
        sampler = find_sampler(hires.sampler or sampler_name)
        pipe.scheduler = make_scheduler(sampler, self._scheduler_config)
        hr_prompt = request.prompt if hires.prompt is None else hires.prompt
        hr_negative = request.negative_prompt if hires.negative_prompt is None else (
            hires.negative_prompt)
        if hr_prompt != request.prompt and self._networks is not None:  # A1111: hr_prompt's LoRAs
            self._networks.use_prompt(hr_prompt, bool(request.allow_missing_networks))
        if (hr_prompt, hr_negative, hr_steps) != (request.prompt, request.negative_prompt, steps):
            with torch.inference_mode():
                text = self._networks.text if self._networks is not None else str
                prompts = conditioning.encode_for_steps(
                    pipe, text(hr_prompt), text(hr_negative), hr_steps,
                    clip_skip=int(request.clip_skip) if info.arch == "sd1" else 1,
                )

        on_step_end = _step_callback(prompts, info.arch, on_step, should_stop,
                                     done=done_steps, steps=hr_steps)

        with torch.inference_mode():
            output = pipe(
                **prompts.kwargs(),
                image=image,
                strength=strength,
                num_inference_steps=schedule,
                guidance_scale=guidance,
                num_images_per_prompt=len(seeds),
                generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
                output_type="pil",
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=["latents", *prompts.step_inputs(pipe)],
            )
        return list(output.images), target.width, target.height

    def _size(self, request: GenerationRequest, info: ModelInfo) -> tuple[int, int]:
        spec = info.spec
        if request.image is not None and (request.width is None or request.height is None):
            width, height = request.image.size
            scale = min(1.0, spec.max_size / max(width, height))
            width = max(spec.min_size, int(width * scale) // 8 * 8)
            height = max(spec.min_size, int(height * scale) // 8 * 8)
            return int(request.width or width), int(request.height or height)
        return int(request.width or spec.default_size), int(request.height or spec.default_size)

    # -- generation -----------------------------------------------------------------------
    def generate(
        self,
        request: GenerationRequest,
        on_step: StepCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> GenerationResult:
        with self._lock, ExitStack() as job:
            info = self.validate(request)
            if should_stop is not None and should_stop():
                raise JobCancelled()
            if request.upscale is not None:
                return self._run_upscale(request, on_step, should_stop)
            info = self.load(info.name)
            if is_flow(info):  # SD 3.5, FLUX, Z-Image, Qwen-Image: core/flow.py
                return flow.generate(self, request, info, on_step, should_stop)
            spec = info.spec
            mode = request.mode
            pipe = self._pipeline(info, mode)
            # The prompt's LoRAs and the request's VAE, for this job only: taken off again when
            # generate ends, however it ends (core/networks.py).
            assert self._networks is not None
            used = job.enter_context(self._networks.applied(self._pipes, request))
            # ControlNet / IP-Adapter units (core/control.py): the job's own pipeline, taken
            # apart again when generate ends, however it ends.
            units = job.enter_context(control.applied(self, request, info, pipe))
            pipe = units.pipe
            sampler = find_sampler(request.sampler or spec.default_sampler)
            pipe.scheduler = make_scheduler(sampler, self._scheduler_config)

            steps = int(request.num_inference_steps or spec.default_steps)
            guidance = float(
                spec.default_guidance if request.guidance_scale is None else request.guidance_scale
            )
            batch = int(request.batch_size)
            seed, seeds = batch_seeds(request.seed, batch)
            width, height = self._size(request, info)
            generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]

            # A1111's prompt syntax, long prompts and CLIP skip (core/conditioning.py); for a
            # plain prompt the embeddings are exactly what diffusers would make from the text.
            with torch.inference_mode():
                prompts = conditioning.encode_for_steps(
                    pipe,
                    # embedding names as the tokenizer holds them (core/networks.py)
                    self._networks.text(request.prompt),
                    self._networks.text(request.negative_prompt),
                    steps,
                    clip_skip=int(request.clip_skip) if info.arch == "sd1" else 1,
                )
            kwargs: dict[str, Any] = {
                **prompts.kwargs(),
                "num_inference_steps": steps,
                "guidance_scale": guidance,
                "num_images_per_prompt": batch,
                "generator": generators,
                "width": width,
                "height": height,
                "output_type": "pil",
            }
            strength = denoising_strength(steps, float(request.strength))
            kwargs.update(self._mode_inputs(request, info, width, height, strength))
            kwargs.update(units.kwargs)
            if mode == "img2img" and info.variant != "inpaint":
                # img2img pipelines take their size from the (already resized) image.
                del kwargs["width"], kwargs["height"]
            if request.hires is not None:
                target = hires_target(width, height, request.hires)
                if (target.upscale_width, target.upscale_height) == (width, height):
                    request = replace(request, hires=None)  # A1111: nothing to upscale
            # The hires fix: the second pass's steps count in the progress from the start.
            hires_steps = 0
            if request.hires is not None:
                hires_steps = second_pass_steps(steps, request.hires)
                if self.upscaler_kind(request.hires.upscaler)[0] == "latent":
                    kwargs["output_type"] = "latent"

            kwargs["callback_on_step_end"] = _step_callback(
                prompts, info.arch, on_step, should_stop, steps=steps, later=hires_steps
            )
            kwargs["callback_on_step_end_tensor_inputs"] = ["latents", *prompts.step_inputs(pipe)]
            with torch.inference_mode():
                output = pipe(**kwargs)
            images = list(output.images)
            extras: dict[str, Any] = {}
            if request.hires is not None:
                first_total = int(getattr(pipe, "_num_timesteps", None) or steps)
                images, width, height = self._hires_pass(
                    request, info, output.images, sampler.name, steps, guidance, seeds,
                    first_total, prompts, on_step, should_stop,
                )
                extras["hires"] = _hires_parameters(request, steps)
                extras["first_pass_size"] = self._size(request, info)
            extras.update(used.extras())  # LoRAs/embeddings run without, both passes
            extras.update(units.extras)  # ControlNet / IP-Adapter settings, face found yes/no
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
                width=width,
                height=height,
                mode=mode,
                strength=None if mode == "txt2img" else float(request.strength),
            )

    def _mode_inputs(
        self,
        request: GenerationRequest,
        info: ModelInfo,
        width: int,
        height: int,
        strength: float,
    ) -> dict[str, Any]:
        mode = request.mode
        image = (
            request.image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
            if request.image
            else None
        )
        mask = (
            request.mask.convert("L").resize((width, height), Image.Resampling.NEAREST)
            if request.mask
            else None
        )
        if info.variant == "inpaint":
            # An inpainting model runs every mode as inpainting: txt2img = repaint everything of
            # a blank canvas; img2img = repaint everything, starting from the photo.
            if image is None:
                image = Image.new("RGB", (width, height), (127, 127, 127))
            if mask is None:
                mask = Image.new("L", (width, height), 255)
            strength = 1.0 if mode == "txt2img" else strength
            return {"image": image, "mask_image": mask, "strength": strength}
        if mode == "img2img":
            return {"image": image, "strength": strength}
        if mode == "inpaint":
            return {"image": image, "mask_image": mask, "strength": strength}
        return {}


def _decode_latents(pipe: Any, latents: torch.Tensor) -> list[Image.Image]:
    """Latents → pictures with the pipeline's VAE (as the pipelines decode)."""
    vae = pipe.vae
    config = vae.config
    with torch.inference_mode():
        latents = latents.to(vae.device, vae.dtype)
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            shape = (1, latents.shape[1], 1, 1)
            mean_t = torch.tensor(mean).view(shape).to(latents.device, latents.dtype)
            std_t = torch.tensor(std).view(shape).to(latents.device, latents.dtype)
            latents = latents * std_t / config.scaling_factor + mean_t
        else:
            latents = latents / config.scaling_factor
        decoded = vae.decode(latents, return_dict=False)[0]
    return list(pipe.image_processor.postprocess(decoded, output_type="pil"))


def _hires_parameters(request: GenerationRequest, steps: int) -> dict[str, Any]:
    """A1111's hires fields of ``info`` and the parameters text (no prompt in here)."""
    hires = request.hires
    assert hires is not None
    # In the order AUTOMATIC1111 writes them.
    parameters: dict[str, Any] = {"Denoising strength": float(hires.denoising_strength)}
    if int(hires.resize_x) == 0 and int(hires.resize_y) == 0:
        parameters["Hires upscale"] = float(hires.scale)
    else:
        parameters["Hires resize"] = f"{int(hires.resize_x)}x{int(hires.resize_y)}"
    if int(hires.second_pass_steps):
        parameters["Hires steps"] = int(hires.second_pass_steps)
    parameters["Hires upscaler"] = hires.upscaler
    if hires.sampler is not None and hires.sampler != request.sampler:
        parameters["Hires sampler"] = find_sampler(hires.sampler).name
    return parameters


def _step_callback(
    prompts: Any,
    arch: str,
    on_step: Any,
    should_stop: Any,
    *,
    steps: int,
    done: int = 0,
    later: int = 0,
) -> Any:
    """diffusers' ``callback_on_step_end`` for one pass: cancel within one step, progress
    (``done`` steps of earlier passes and ``later`` ones of the hires pass counted in) with a
    latent preview, and prompt editing (the next step's embeddings when the prompt changes)."""

    def on_step_end(pipe_: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if should_stop is not None and should_stop():
            raise JobCancelled()
        if on_step is not None:
            total = int(getattr(pipe_, "_num_timesteps", None) or steps)
            preview = latents_to_preview(tensors["latents"], arch) if "latents" in tensors else None
            on_step(done + step + 1, done + total + later, preview)
        variant = prompts.at_step(step + 1)
        if variant is not None:  # prompt editing: the next step has another prompt
            tensors.update(conditioning.step_tensors(pipe_, prompts, variant, tensors))
        return tensors

    return on_step_end
