"""Request bodies of the AUTOMATIC1111 API, with its field names and types.

Unknown fields are ignored, as AUTOMATIC1111 does (clients send many extension fields). A known
field with a value of the wrong type gets a 422 that names the field (see
:func:`webui.api.problems.validation_problem`). Where AUTOMATIC1111's default would be wrong
for the loaded model (steps, size, CFG scale, sampler) a missing value means "the model's
default" instead; every other default is AUTOMATIC1111's.

Every number a client can send is bounded here, when the body is parsed, before any picture is
decoded or any work is done: ``true``/``false`` are not numbers, and a value past its range is
a 422 naming the field and the range. The engine's bounds are the engine's own constants
(:mod:`core.engine`, shared with the UI and the CLI); the API's own numbers are the named
constants below, with AUTOMATIC1111's slider ranges. :data:`BOUNDS` lists them all (docs/api.md).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
)
from pydantic_core import PydanticCustomError

from core.engine import (
    MAX_BATCH,
    MAX_GUIDANCE,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SIZE,
    MAX_STEPS,
    MIN_SIZE,
)
from core.upscale import MAX_EXTRAS_SCALE, MAX_OUTPUT_SIDE

MAX_ITERATIONS = 16  # n_iter: batches of one call
MAX_STYLES = 32  # entries of styles
MAX_MASK_BLUR = 64  # AUTOMATIC1111's "Mask blur" slider
MAX_PADDING = 256  # AUTOMATIC1111's "Only masked padding, pixels" slider
MAX_RESIZE_MODE = 3  # just resize, crop and resize, resize and fill, latent upscale
MAX_INPAINTING_FILL = 3  # fill, original, latent noise, latent nothing
MAX_HR_SCALE = 4.0
MAX_NAME_CHARS = 256  # an upscaler's or sampler's name
MAX_IMAGE_CFG = 3.0  # instruct-pix2pix image CFG
MAX_NOISE_MULTIPLIER = 1.5
MAX_S_CHURN = 100.0
MAX_S_TMAX = 999.0
MAX_S_TMIN = 10.0
MAX_S_NOISE = 1.1
MAX_S_MIN_UNCOND = 15.0

# The override_settings Obscura follows for one call (webui.api.generation); others are ignored
# and named in obscura_ignored.
OVERRIDES = frozenset({"sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"})

# field → (lowest, highest): every bounded number of the bodies below, for docs and errors.
BOUNDS: dict[str, tuple[float, float]] = {}


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "must be a number, not true or false")
    return value


def _range(names: tuple[str, ...], low: float, high: float) -> AfterValidator:
    for name in names:
        BOUNDS[name] = (low, high)

    def check(value: Any) -> Any:
        # NaN and infinities fail the comparison too.
        if value is not None and not low <= value <= high:
            raise PydanticCustomError(
                "out_of_range", "must be between {low} and {high}",
                {"low": _shown(low), "high": _shown(high)},
            )
        return value

    return AfterValidator(check)


def _shown(number: float) -> str:
    return f"{number:g}" if isinstance(number, float) else str(number)


# A bounded field is ``Annotated[int | float, NOT_BOOL, _range(names, low, high)]``: ``true``
# refused, NaN/infinity refused (they fail the comparison), the range checked.
NOT_BOOL = BeforeValidator(_not_bool)


Seed = Annotated[int, NOT_BOOL, _range(("seed", "subseed"), -1, MAX_SEED)]  # -1 = random, as in AUTOMATIC1111
Fraction = Annotated[float, NOT_BOOL, _range(("subseed_strength", "denoising_strength", "eta", "refiner_switch_at"), 0.0, 1.0)]
Side = Annotated[int, NOT_BOOL, _range(("width", "height"), MIN_SIZE, MAX_SIZE)]
SeedResize = Annotated[int, NOT_BOOL, _range(("seed_resize_from_w", "seed_resize_from_h"), -1, MAX_SIZE)]
HiresSide = Annotated[int, NOT_BOOL, _range(("hr_resize_x", "hr_resize_y", "firstphase_width", "firstphase_height"), 0, MAX_SIZE)]
Blur = Annotated[int, NOT_BOOL, _range(("mask_blur", "mask_blur_x", "mask_blur_y"), 0, MAX_MASK_BLUR)]
Prompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]
BatchSize = Annotated[int, NOT_BOOL, _range(("batch_size",), 1, MAX_BATCH)]
Iterations = Annotated[int, NOT_BOOL, _range(("n_iter",), 1, MAX_ITERATIONS)]
Steps = Annotated[int, NOT_BOOL, _range(("steps",), 1, MAX_STEPS)]
CfgScale = Annotated[float, NOT_BOOL, _range(("cfg_scale",), 0.0, MAX_GUIDANCE)]
SMinUncond = Annotated[float, NOT_BOOL, _range(("s_min_uncond",), 0.0, MAX_S_MIN_UNCOND)]
SChurn = Annotated[float, NOT_BOOL, _range(("s_churn",), 0.0, MAX_S_CHURN)]
STmax = Annotated[float, NOT_BOOL, _range(("s_tmax",), 0.0, MAX_S_TMAX)]
STmin = Annotated[float, NOT_BOOL, _range(("s_tmin",), 0.0, MAX_S_TMIN)]
SNoise = Annotated[float, NOT_BOOL, _range(("s_noise",), 0.0, MAX_S_NOISE)]
HiresScale = Annotated[float, NOT_BOOL, _range(("hr_scale",), 1.0, MAX_HR_SCALE)]
HiresSteps = Annotated[int, NOT_BOOL, _range(("hr_second_pass_steps",), 0, MAX_STEPS)]
HiresCfg = Annotated[float, NOT_BOOL, _range(("hr_cfg",), 0.0, MAX_GUIDANCE)]
ResizeMode = Annotated[int, NOT_BOOL, _range(("resize_mode",), 0, MAX_RESIZE_MODE)]
ImageCfg = Annotated[float, NOT_BOOL, _range(("image_cfg_scale",), 0.0, MAX_IMAGE_CFG)]
InpaintingFill = Annotated[int, NOT_BOOL, _range(("inpainting_fill",), 0, MAX_INPAINTING_FILL)]
Padding = Annotated[int, NOT_BOOL, _range(("inpaint_full_res_padding",), 0, MAX_PADDING)]
MaskInvert = Annotated[int, NOT_BOOL, _range(("inpainting_mask_invert",), 0, 1)]
NoiseMultiplier = Annotated[float, NOT_BOOL, _range(("initial_noise_multiplier",), 0.0, MAX_NOISE_MULTIPLIER)]


class GenerationFields(BaseModel):
    """What txt2img and img2img share."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    prompt: Prompt = ""
    negative_prompt: Prompt = ""
    styles: list[str] = Field(default_factory=list, max_length=MAX_STYLES)
    seed: Seed = -1
    subseed: Seed = -1
    subseed_strength: Fraction = 0.0
    seed_resize_from_h: SeedResize = -1
    seed_resize_from_w: SeedResize = -1
    sampler_name: str | None = None
    sampler_index: str | None = None  # deprecated in AUTOMATIC1111; used when sampler_name is not
    scheduler: str | None = None
    batch_size: BatchSize = 1
    n_iter: Iterations = 1
    steps: Steps | None = None
    cfg_scale: CfgScale | None = None
    width: Side | None = None
    height: Side | None = None
    eta: Fraction | None = None
    s_min_uncond: SMinUncond = 0.0
    s_churn: SChurn = 0.0
    s_tmax: STmax | None = None
    s_tmin: STmin = 0.0
    s_noise: SNoise = 1.0
    refiner_checkpoint: str | None = None
    refiner_switch_at: Fraction | None = None
    restore_faces: bool | None = None
    tiling: bool | None = None
    override_settings: dict[str, Any] = Field(default_factory=dict)
    override_settings_restore_afterwards: bool = True
    script_name: str | None = None
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    send_images: bool = True
    save_images: bool = False
    # Obscura's own: paint without a LoRA/embedding of the prompt that cannot be used (each one
    # is then named in info's obscura_skipped_networks) instead of refusing the call.
    obscura_allow_missing_networks: StrictBool = False

    def ignored(self) -> list[str]:
        """Fields set to something Obscura cannot do; the picture is made without them."""
        names = []
        if self.subseed_strength:
            names.append("subseed_strength")
        for name in ("seed_resize_from_w", "seed_resize_from_h"):
            if getattr(self, name) > 0:
                names.append(name)
        if self.refiner_checkpoint:
            names.append("refiner_checkpoint")
        if self.restore_faces:
            names.append("restore_faces")
        if self.tiling:
            names.append("tiling")
        if any(key.strip().lower() != "controlnet" for key in self.alwayson_scripts):
            names.append("alwayson_scripts")  # scripts Obscura lacks (ControlNet it has)
        unknown = sorted(set(self.override_settings) - OVERRIDES)
        names.extend(f"override_settings.{name}" for name in unknown)
        if not self.override_settings_restore_afterwards and self.override_settings:
            # AUTOMATIC1111 would keep them for everyone; here they are for this call only
            # (POST options makes a choice the caller's own).
            names.append("override_settings_restore_afterwards")
        return names


class Txt2ImgRequest(GenerationFields):
    # The hires fix (core/hires.py): AUTOMATIC1111's fields and defaults.
    enable_hr: bool = False
    denoising_strength: Fraction | None = None  # the second pass's; None = 0.75 (A1111's)
    hr_scale: HiresScale = 2.0
    hr_upscaler: Annotated[str, Field(max_length=MAX_NAME_CHARS)] | None = None  # None = Latent
    hr_second_pass_steps: HiresSteps = 0
    hr_resize_x: HiresSide = 0
    hr_resize_y: HiresSide = 0
    hr_sampler_name: Annotated[str, Field(max_length=MAX_NAME_CHARS)] | None = None
    hr_scheduler: str | None = None
    hr_checkpoint_name: str | None = None
    hr_prompt: Prompt = ""  # "" = the prompt
    hr_negative_prompt: Prompt = ""  # "" = the negative prompt
    hr_cfg: HiresCfg = 1.0
    firstphase_width: HiresSide = 0
    firstphase_height: HiresSide = 0

    def ignored(self) -> list[str]:
        names = super().ignored()
        if self.enable_hr:
            if self.hr_checkpoint_name and self.hr_checkpoint_name != "Use same checkpoint":
                names.append("hr_checkpoint_name")
            if self.hr_scheduler and self.hr_scheduler.strip().lower() not in (
                "", "use same scheduler", "automatic"
            ):
                names.append("hr_scheduler")
            if self.hr_cfg != 1.0:
                names.append("hr_cfg")  # Forge's; AUTOMATIC1111 uses cfg_scale in both passes
        for name in ("firstphase_width", "firstphase_height"):
            if getattr(self, name):
                names.append(name)  # AUTOMATIC1111's old hires fix, removed there too
        return names


class Img2ImgRequest(GenerationFields):
    init_images: list[str] | None = None
    mask: str | None = None
    denoising_strength: Fraction = 0.75
    resize_mode: ResizeMode = 0
    image_cfg_scale: ImageCfg | None = None
    mask_blur: Blur | None = None
    mask_blur_x: Blur = 4
    mask_blur_y: Blur = 4
    mask_round: bool = True
    inpainting_fill: InpaintingFill = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: Padding = 0
    inpainting_mask_invert: MaskInvert = 0
    initial_noise_multiplier: NoiseMultiplier | None = None
    include_init_images: bool = False
    _photos_sent: int = PrivateAttr(default=0)

    def take_pictures(self) -> tuple[str, str | None]:
        """The first init image and the mask, dropped from the body (only they are used)."""
        assert self.init_images
        photo, mask = self.init_images[0], self.mask
        self._photos_sent = len(self.init_images)
        self.init_images = self.mask = None
        return photo, mask

    def references_used(self) -> None:
        """``init_images[1:]`` went to an edit model as its reference pictures: not ignored."""
        self._photos_sent = min(self._photos_sent, 1)

    def ignored(self) -> list[str]:
        names = super().ignored()
        if self._photos_sent > 1:
            names.append("init_images[1:]")
        if self.resize_mode:
            names.append("resize_mode")
        if self.mask is not None:
            if self.inpainting_fill != 1:
                names.append("inpainting_fill")
            if self.inpaint_full_res:
                names.append("inpaint_full_res")
        if self.initial_noise_multiplier not in (None, 1, 1.0):
            names.append("initial_noise_multiplier")
        if self.include_init_images:
            names.append("include_init_images")
        return names

    @property
    def blur(self) -> int:
        """The mask blur radius in pixels (``mask_blur`` wins over ``mask_blur_x``/``_y``)."""
        if self.mask_blur is not None:
            return self.mask_blur
        return max(self.mask_blur_x, self.mask_blur_y)


# -- extras (upscale): AUTOMATIC1111's ExtrasSingleImageRequest / ExtrasBatchImagesRequest ------
MAX_EXTRAS_BATCH = 8  # pictures of one extra-batch-images call (each one run, one at a time)
ExtrasScale = Annotated[float, NOT_BOOL, _range(("upscaling_resize",), 1.0, MAX_EXTRAS_SCALE)]
ExtrasSide = Annotated[int, NOT_BOOL, _range(("upscaling_resize_w", "upscaling_resize_h"), 1, MAX_OUTPUT_SIDE)]
ExtrasMode = Annotated[int, NOT_BOOL, _range(("resize_mode (extras)",), 0, 1)]  # 0 = scale by, 1 = scale to
Visibility = Annotated[float, NOT_BOOL, _range(("extras_upscaler_2_visibility", "gfpgan_visibility", "codeformer_visibility", "codeformer_weight"), 0.0, 1.0)]
UpscalerName = Annotated[str, Field(max_length=MAX_NAME_CHARS)]


class ExtrasFields(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    resize_mode: ExtrasMode = 0
    show_extras_results: bool = True
    gfpgan_visibility: Visibility = 0.0
    codeformer_visibility: Visibility = 0.0
    codeformer_weight: Visibility = 0.0
    upscaling_resize: ExtrasScale = 2.0
    upscaling_resize_w: ExtrasSide = 512
    upscaling_resize_h: ExtrasSide = 512
    upscaling_crop: bool = True
    upscaler_1: UpscalerName = "None"
    upscaler_2: UpscalerName = "None"
    extras_upscaler_2_visibility: Visibility = 0.0
    upscale_first: bool = False

    def ignored(self) -> list[str]:
        """Fields set to something Obscura cannot do (no face restorers)."""
        return [name for name in ("gfpgan_visibility", "codeformer_visibility")
                if getattr(self, name) > 0]


class ExtrasSingleImageRequest(ExtrasFields):
    image: str = ""  # base64


class ExtrasImage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    data: str
    name: str = ""  # a file name: never used, logged or echoed


class ExtrasBatchImagesRequest(ExtrasFields):
    imageList: list[ExtrasImage] = Field(default_factory=list, max_length=MAX_EXTRAS_BATCH)  # noqa: N815 (A1111's name)


# -- ControlNet / IP-Adapter units: alwayson_scripts.controlnet.args (sd-webui-controlnet) ------
# BOUNDS names a unit's field with this suffix (the same names as other bodies' fields); the API
# names it in an error as ``alwayson_scripts.controlnet.args.<i>.<field>``.
UNIT = " (controlnet)"
MAX_UNIT_ARGS = 16  # entries of args (A1111 clients pad with disabled units up to their count)
MAX_UNIT_THRESHOLD = 255  # Canny's thresholds; -1 = the module's default (A1111's)
# A1111's enums: the index clients send as a number → the name.
CONTROL_MODE_NAMES = ("Balanced", "My prompt is more important", "ControlNet is more important")
RESIZE_MODE_NAMES = ("Just Resize", "Crop and Resize", "Resize and Fill", "Just Resize")
RESIZE_MODE_ALIASES = {  # A1111's old names
    "Inner Fit (Scale to Fit)": "Crop and Resize",
    "Outer Fit (Shrink to Fit)": "Resize and Fill",
    "Scale to Fit (Inner Fit)": "Crop and Resize",
    "Envelope (Outer Fit)": "Resize and Fill",
    "Just Resize (Latent upscale)": "Just Resize",
}


def _choice(name: str, names: tuple[str, ...], aliases: dict[str, str]) -> BeforeValidator:
    """A1111's enum fields: an index (bounded as ``name``) or one of the names (or an alias)."""
    BOUNDS[f"{name}{UNIT}"] = (0, len(names) - 1)
    known = {n.lower(): n for n in names} | {a.lower(): n for a, n in aliases.items()}

    def check(value: Any) -> Any:
        if isinstance(value, bool):
            raise PydanticCustomError("bool_not_number", "must be a number, not true or false")
        if isinstance(value, int):
            if not 0 <= value < len(names):
                raise PydanticCustomError("out_of_range", "must be between {low} and {high}",
                                          {"low": "0", "high": str(len(names) - 1)})
            return names[value]
        if isinstance(value, str) and value.strip().lower() in known:
            return known[value.strip().lower()]
        raise PydanticCustomError(
            "unit_choice", "must be {choices} or the number of one",
            {"choices": ", ".join(f"'{n}'" for n in dict.fromkeys(names))},
        )

    return BeforeValidator(check)


UnitWeight = Annotated[float, NOT_BOOL, _range((f"weight{UNIT}", f"obscura_style_weight{UNIT}"), 0.0, 2.0)]
UnitGuidance = Annotated[float, NOT_BOOL, _range((f"guidance_start{UNIT}", f"guidance_end{UNIT}", f"guidance{UNIT}"), 0.0, 1.0)]
UnitResolution = Annotated[int, NOT_BOOL, _range((f"processor_res{UNIT}",), -1, 2048)]
UnitThreshold = Annotated[float, NOT_BOOL, _range((f"threshold_a{UNIT}", f"threshold_b{UNIT}"), -1, MAX_UNIT_THRESHOLD)]
UnitName = Annotated[str, Field(max_length=MAX_NAME_CHARS)]


class ControlNetUnitArgs(BaseModel):
    """One entry of ``alwayson_scripts.controlnet.args``: sd-webui-controlnet's ControlNetUnit
    fields, its defaults and old aliases (``input_image``, ``guidance``, ``lowvram``,
    ``mask_image``), plus Obscura's own ``obscura_*`` IP-Adapter fields. ``enabled`` is true
    when missing (as in Forge and the extension's first API); a disabled unit is skipped."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    enabled: StrictBool = True
    module: UnitName = "none"
    model: UnitName = "None"
    weight: UnitWeight = 1.0
    image: Any = None  # base64, {"image", "mask"}, [image, mask] or [{"image": ...}, ...]
    input_image: Any = None  # the old name of image
    mask: Any = None
    mask_image: Any = None  # Forge's name of mask
    resize_mode: Annotated[str, _choice("resize_mode", RESIZE_MODE_NAMES, RESIZE_MODE_ALIASES)] = "Crop and Resize"
    control_mode: Annotated[str, _choice("control_mode", CONTROL_MODE_NAMES, {})] = "Balanced"
    processor_res: UnitResolution = -1  # -1 = the module's default (512)
    threshold_a: UnitThreshold = -1  # -1 = the module's default (Canny: 100)
    threshold_b: UnitThreshold = -1  # -1 = the module's default (Canny: 200)
    guidance_start: UnitGuidance = 0.0
    guidance_end: UnitGuidance = 1.0
    guidance: UnitGuidance | None = None  # the old name of guidance_end
    pixel_perfect: StrictBool = False
    low_vram: StrictBool = False
    lowvram: StrictBool = False
    union_control_type: UnitName | None = None
    # Obscura's own, for an IP-Adapter unit (docs/api.md):
    obscura_crop_face: StrictBool = False  # crop the face from each reference first
    obscura_allow_no_face: StrictBool = False  # no face found: paint without this unit
    obscura_style_weight: UnitWeight | None = None  # InstantStyle's style blocks' weight


MAX_DETECT_IMAGES = 4  # pictures of one /controlnet/detect call
DetectResolution = Annotated[int, NOT_BOOL, _range(("controlnet_processor_res",), -1, 2048)]
DetectThreshold = Annotated[float, NOT_BOOL, _range(("controlnet_threshold_a", "controlnet_threshold_b"), -1, MAX_UNIT_THRESHOLD)]


class DetectRequest(BaseModel):
    """``POST /controlnet/detect``: the extension's fields (-1 = the module's default)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    controlnet_module: UnitName = "none"
    controlnet_input_images: list[str] = Field(default_factory=list, max_length=MAX_DETECT_IMAGES)
    controlnet_processor_res: DetectResolution = -1
    controlnet_threshold_a: DetectThreshold = -1
    controlnet_threshold_b: DetectThreshold = -1
    controlnet_masks: list[str] = Field(default_factory=list, max_length=MAX_DETECT_IMAGES)
    low_vram: bool = False
