"""The portrait recipe: photo + style preset + "likeness ↔ style" (+ "keep the pose") → one
:class:`core.engine.GenerationRequest` with its IP-Adapter and ControlNet units.

Painting knowledge only (no privacy or web code): which models of the library a portrait uses,
what numbers work for SD 1.x and SDXL, and one sentence for what is missing.

How it works (the same idea as Fooocus's FaceSwap and InvokeAI's IP-Adapter + ControlNet):

* the photo is the img2img **init image**; its img2img *strength* sets how far the style may move
  away from the photo's colours and lighting;
* the photo is also the **IP-Adapter Plus-Face** reference, cropped to the face
  (``crop_face=True``, core/faces.py), so that the face is carried by the adapter and not by the
  pixels; the adapter's weight sets how strongly the face is held;
* "keep the pose" adds a **ControlNet** unit (a Canny or ControlNet-Union model of the
  checkpoint's architecture) on the photo's edges, Fooocus's PyraCanny preprocessor.

The one slider, ``likeness`` in 0..1, moves both numbers in opposite directions, linearly:
the IP-Adapter weight rises from ``face_weight[0]`` (likeness 0) to ``face_weight[1]``
(likeness 1), while the img2img strength falls from ``strength_center + strength_spread`` to
``strength_center - strength_spread``. A style may move ``strength_center`` (its
``portrait_strength``: pixel art and ink wash must leave the photo further behind than a
watercolour).

Why these numbers (researched, not tuned on a GPU here):

* **Fooocus** (modules/flags.py ``default_parameters``, stop and weight): FaceSwap (IP-Adapter
  Plus-Face on a face crop) ``stop 0.9, weight 0.75``; ImagePrompt ``0.5, 0.6``; PyraCanny
  ``0.5, 1.0``. Fooocus multiplies its weight by ``channels / 1280`` per attention layer
  (extras/ip_adapter.py) and paints from text (no init image), so its 0.75 is a little softer
  than diffusers' ``set_ip_adapter_scale(0.75)``. We keep its **stop 0.9** for the face (the
  last tenth of the steps paints texture in the style, not the face) and its PyraCanny
  **stop 0.5** for the pose (the outline is fixed in the first half, the style redraws the
  details).
* **InvokeAI** (invokeai/app/invocations/ip_adapter.py, controlnet): weight 1.0, begin 0, end 1
  for both IP-Adapter and ControlNet. At 1.0 Plus-Face copies the photo's look along with the
  face and fights the style, so likeness 1 stops below it (0.95 SD 1.x, 0.9 SDXL) and the
  middle of the slider (0.65 / 0.6) sits near Fooocus's 0.75 after its channel factor.
* **img2img strength**: with the adapter holding the face, the photo only needs to lend its
  composition, so strength runs 0.95 (likeness 0: nearly text-to-image with the face) down to
  0.55 (likeness 1). Without an adapter ("go on without face-keeping") only the pixels keep the
  face, so the range drops by 0.2 (0.75 .. 0.35): the style shows less, as plain img2img does.
* **ControlNet weight**: SD 1.x Canny models (lllyasviel control_v11p_sd15_canny) at Fooocus's
  1.0; SDXL Canny/Union models are stronger at a given scale (the diffusers
  controlnet-canny-sdxl-1.0 card paints at 0.5), so 0.7.
* **size, steps, sampler, CFG**: the photo's proportions (clamped to 1:2 .. 2:1) at the
  architecture's native area (512² SD 1.x, 1024² SDXL), sides a multiple of 64; 30 steps of
  DPM++ 2M Karras; CFG 7 (SD 1.x) and 6 (SDXL, Obscura's SDXL default). Turbo models and the
  demo model keep their own steps, guidance and sampler.

The face crop itself happens in core/control.py (biometric data: memory only, for the job).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from core.control import ControlUnit, IPAdapterUnit
from core.control_files import image_encoder_fits
from core.engine import GenerationRequest
from core.errors import InputError

PORTRAIT_ARCHES = ("sd1", "sdxl")
DEFAULT_SUBJECT = "a portrait of a person, head and shoulders"  # the person's words follow it
# Added to the negative prompt for SD 1.x / SDXL (the transformer families take none).
PORTRAIT_NEGATIVE = "deformed face, distorted features, extra limbs, lowres"
MIN_ASPECT, MAX_ASPECT = 0.5, 2.0  # width / height of the result
MIN_STRENGTH, MAX_STRENGTH = 0.3, 1.0
NO_ADAPTER_STRENGTH_DROP = 0.2  # plain styled img2img: keep more of the photo's pixels


@dataclass(frozen=True)
class PortraitRecipe:
    """Defaults of one architecture (see the module docstring for where each number comes from)."""

    arch: str
    steps: int
    sampler: str
    guidance: float
    size_multiple: int
    strength_center: float  # img2img strength at likeness 0.5
    strength_spread: float  # +- at likeness 0 / 1
    face_weight: tuple[float, float]  # IP-Adapter weight at likeness 0 and at likeness 1
    face_end: float  # IP-Adapter guidance_end (Fooocus FaceSwap's stop)
    pose_weight: float  # ControlNet weight for "keep the pose"
    pose_end: float  # ControlNet guidance_end (Fooocus PyraCanny's stop)
    pose_module: str = "pyracanny"

    def face_scale(self, likeness: float) -> float:
        low, high = self.face_weight
        return round(low + (high - low) * likeness, 3)

    def strength(self, likeness: float, center: float | None = None,
                 with_adapter: bool = True) -> float:
        middle = self.strength_center if center is None else center
        if not with_adapter:
            middle -= NO_ADAPTER_STRENGTH_DROP
        value = middle + self.strength_spread * (1.0 - 2.0 * likeness)
        return round(min(MAX_STRENGTH, max(MIN_STRENGTH, value)), 3)


RECIPES: dict[str, PortraitRecipe] = {
    "sd1": PortraitRecipe(
        arch="sd1", steps=30, sampler="DPM++ 2M Karras", guidance=7.0, size_multiple=64,
        strength_center=0.75, strength_spread=0.2, face_weight=(0.35, 0.95), face_end=0.9,
        pose_weight=1.0, pose_end=0.5,
    ),
    "sdxl": PortraitRecipe(
        arch="sdxl", steps=30, sampler="DPM++ 2M Karras", guidance=6.0, size_multiple=64,
        strength_center=0.75, strength_spread=0.2, face_weight=(0.3, 0.9), face_end=0.9,
        pose_weight=0.7, pose_end=0.5,
    ),
}
# Any other architecture (SD 2.x, the transformer families) only gets styled img2img, when asked.
FALLBACK = RECIPES["sd1"]


class PortraitStyle(Protocol):
    """What the recipe needs of a style preset (webui/styles.py's Style has it)."""

    @property
    def portrait_strength(self) -> float | None: ...

    def apply(self, prompt: str, negative_prompt: str) -> tuple[str, str]: ...


def recipe_for(info: Any) -> PortraitRecipe:
    return RECIPES.get(info.arch, FALLBACK)


# -- the models a portrait uses ---------------------------------------------------------------
def _name(item: Any) -> str:
    return str(item.name).lower()


def _detail(item: Any, *keys: str) -> Any:
    detail = getattr(item, "detail", None) or {}
    for key in keys:
        if detail.get(key) is not None:
            return detail[key]
    return None


def _adapter_variant(item: Any) -> str:
    variant = _detail(item, "variant")  # core/control_files.py reads it from the header
    return variant if isinstance(variant, str) else "plain"


# Plus-Face first; then the other adapters, which hold a face less well but hold it.
ADAPTER_ORDER = {"plus-face": 0, "full-face": 1, "plus": 2, "plain": 3}


def _of_arch(info: Any, library: Any, kind: str) -> list[Any]:
    """The library's ``kind`` files made for the checkpoint's architecture, then those whose
    architecture the header could not tell (core/control.py takes those too)."""
    found = [item for item in library.items(kind) if item.arch in (info.arch, None)]
    return sorted(found, key=lambda item: item.arch is None)


def face_adapter(info: Any, library: Any) -> Any | None:
    """The IP-Adapter of the checkpoint's architecture a portrait uses (Plus-Face first, see
    :data:`ADAPTER_ORDER`), only one with a CLIP image encoder it fits."""
    adapters = _of_arch(info, library, "ipadapter")
    adapters.sort(key=lambda item: (item.arch is None,
                                    ADAPTER_ORDER.get(_adapter_variant(item), 9), _name(item)))
    for item in adapters:
        if image_encoder(item, library) is not None:
            return item
    return None


def image_encoder(adapter: Any, library: Any) -> Any | None:
    """A CLIP image encoder of the library that gives what ``adapter`` reads (its width)."""
    return next((item for item in library.items("clip_vision")
                 if image_encoder_fits(adapter, item)), None)


def pose_controlnet(info: Any, library: Any) -> tuple[Any, str | None] | None:
    """(ControlNet, union control type or None) for "keep the pose": a Canny model of the
    architecture, else a ControlNet-Union one (control type "canny"); None when there is none."""
    nets = sorted(_of_arch(info, library, "controlnet"),
                  key=lambda item: (item.arch is None, _name(item)))
    for item in nets:
        if _is_union(item):
            continue
        kind = _detail(item, "control_type", "type")
        if (isinstance(kind, str) and kind.lower() == "canny") or "canny" in _name(item):
            return item, None
    for item in nets:
        if _is_union(item):
            return item, "canny"
    return None


def _is_union(item: Any) -> bool:
    union = _detail(item, "union")
    return bool(union) if union is not None else "union" in _name(item)


# -- what is missing --------------------------------------------------------------------------
def missing_error(info: Any, library: Any) -> InputError | None:
    """Why the Portrait page cannot keep the face with this checkpoint, as one sentence (an
    :class:`InputError` with a translated code); ``None`` when everything is there."""
    if info.arch not in PORTRAIT_ARCHES:
        return InputError(
            "portrait_arch_unsupported",
            "The Portrait page keeps faces with SD 1.x and SDXL models only; pick one of those "
            "in the settings, or turn on going without face-keeping.",
        )
    if face_adapter(info, library) is not None:
        return None
    has_adapter = bool(_of_arch(info, library, "ipadapter"))
    if has_adapter:
        return InputError(
            "portrait_needs_image_encoder",
            "The Portrait page needs the CLIP image encoder of your IP-Adapter: put the "
            "image_encoder folder of h94/IP-Adapter (ViT-H) in models/clip_vision/ "
            "(see docs/models.md).",
        )
    if info.arch == "sdxl":
        return InputError(
            "portrait_needs_face_adapter_sdxl",
            "The Portrait page needs an IP-Adapter Plus-Face file and its CLIP image encoder "
            "for SDXL models: put ip-adapter-plus-face_sdxl_vit-h.safetensors in "
            "models/ipadapter/ and the image_encoder folder (ViT-H) in models/clip_vision/ "
            "(see docs/models.md).",
        )
    return InputError(
        "portrait_needs_face_adapter_sd1",
        "The Portrait page needs an IP-Adapter Plus-Face file and its CLIP image encoder for "
        "SD 1.x models: put ip-adapter-plus-face_sd15.safetensors in models/ipadapter/ and the "
        "image_encoder folder in models/clip_vision/ (see docs/models.md).",
    )


def missing(info: Any, library: Any) -> str | None:
    """:func:`missing_error` as its English sentence."""
    err = missing_error(info, library)
    return None if err is None else err.message


def pose_missing_error(info: Any, library: Any) -> InputError | None:
    """Why "keep the pose" would do nothing with this checkpoint; ``None`` when it works."""
    if info.arch in PORTRAIT_ARCHES and pose_controlnet(info, library) is not None:
        return None
    return InputError(
        "portrait_needs_pose_controlnet",
        "Keeping the pose needs a Canny or ControlNet-Union model for the chosen checkpoint's "
        "architecture in models/controlnet/ (see docs/models.md); without one the switch does "
        "nothing.",
    )


# -- the request ------------------------------------------------------------------------------
def check_likeness(likeness: Any) -> float:
    if isinstance(likeness, bool) or not isinstance(likeness, int | float):
        raise InputError("portrait_likeness_out_of_range", "Likeness must be between 0 and 1.")
    value = float(likeness)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise InputError("portrait_likeness_out_of_range", "Likeness must be between 0 and 1.")
    return value


def portrait_size(info: Any, photo_size: tuple[int, int] | None) -> tuple[int, int]:
    """The photo's proportions (clamped to 1:2 .. 2:1) at the model's native area."""
    spec = info.spec
    side = spec.default_size
    multiple = 64 if side >= 512 else 8
    if not photo_size or min(photo_size) <= 0:
        return side, side
    aspect = min(MAX_ASPECT, max(MIN_ASPECT, photo_size[0] / photo_size[1]))

    def fit(value: float) -> int:
        rounded = max(multiple, int(round(value / multiple)) * multiple)
        return min(spec.max_size, max(spec.min_size, rounded))

    return fit(side * math.sqrt(aspect)), fit(side / math.sqrt(aspect))


def portrait_request(
    prompt: str,
    style: PortraitStyle | None,
    likeness: float,
    keep_pose: bool,
    batch: int,
    seed: int | None,
    info: Any,
    library: Any,
    photo_size: tuple[int, int] | None,
    *,
    negative_prompt: str = "",
    without_face_keeping: bool = False,
) -> GenerationRequest:
    """The request for one portrait run (the photo itself is added by the run path: an
    IP-Adapter unit with no images and a ControlNet unit with no image both mean "the job's
    photo", so only the photo is uploaded).

    Missing face-keeping models raise the :func:`missing_error` sentence unless
    ``without_face_keeping`` (the page's checkbox): then it is styled img2img only. With an
    adapter, ``without_face_keeping`` also lets a photo with no face found go on without it."""
    value = check_likeness(likeness)
    recipe = recipe_for(info)
    problem = missing_error(info, library)
    if problem is not None and not without_face_keeping:
        raise problem
    adapter = face_adapter(info, library) if problem is None else None
    words = prompt.strip()
    subject = f"{DEFAULT_SUBJECT}, {words}" if words else DEFAULT_SUBJECT
    if info.arch in RECIPES:
        negative_prompt = ", ".join(p for p in (negative_prompt.strip(), PORTRAIT_NEGATIVE) if p)
    styled, negative = (style.apply(subject, negative_prompt) if style is not None
                        else (subject, negative_prompt.strip()))
    center = getattr(style, "portrait_strength", None) if style is not None else None
    ip_adapters: list[IPAdapterUnit] = []
    if adapter is not None:
        ip_adapters.append(IPAdapterUnit(
            model=adapter.name, weight=recipe.face_scale(value), crop_face=True,
            allow_no_face=without_face_keeping, guidance_start=0.0,
            guidance_end=recipe.face_end,
        ))
    controlnets: list[ControlUnit] = []
    pose = pose_controlnet(info, library) if keep_pose and info.arch in PORTRAIT_ARCHES else None
    if pose is not None:
        net, union_type = pose
        controlnets.append(ControlUnit(
            model=net.name, module=recipe.pose_module, weight=recipe.pose_weight,
            guidance_start=0.0, guidance_end=recipe.pose_end, union_type=union_type,
        ))
    width, height = portrait_size(info, photo_size)
    spec = info.spec
    # Turbo, the demo model and the architectures without a recipe keep their own numbers.
    own_defaults = (info.is_demo or getattr(info, "variant", "") == "turbo"
                    or info.arch not in RECIPES)
    return GenerationRequest(
        prompt=styled,
        negative_prompt=negative,
        strength=recipe.strength(value, center, with_adapter=adapter is not None),
        num_inference_steps=spec.default_steps if own_defaults else recipe.steps,
        guidance_scale=spec.default_guidance if own_defaults else recipe.guidance,
        sampler=spec.default_sampler if own_defaults else recipe.sampler,
        width=width,
        height=height,
        batch_size=batch,
        seed=seed,
        model=info.name,
        controlnets=controlnets,
        ip_adapters=ip_adapters,
    )
