"""Request bodies of the AUTOMATIC1111 API, with its field names and types.

Unknown fields are ignored, as AUTOMATIC1111 does (clients send many extension fields). A known
field with a value of the wrong type gets a 422 that names the field (see
:func:`webui.api.problems.validation_problem`). Where AUTOMATIC1111's default would be wrong
for the loaded model (steps, size, CFG scale, sampler) a missing value means "the model's
default" instead; every other default is AUTOMATIC1111's.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr


class GenerationFields(BaseModel):
    """What txt2img and img2img share."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = Field(default_factory=list)
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    sampler_name: str | None = None
    sampler_index: str | None = None  # deprecated in AUTOMATIC1111; used when sampler_name is not
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    restore_faces: bool | None = None
    tiling: bool | None = None
    override_settings: dict[str, Any] = Field(default_factory=dict)
    override_settings_restore_afterwards: bool = True
    script_name: str | None = None
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    send_images: bool = True
    save_images: bool = False

    def ignored(self) -> list[str]:
        """Fields set to something Obscura cannot do; the picture is made without them."""
        names = []
        if self.subseed_strength:
            names.append("subseed_strength")
        if self.restore_faces:
            names.append("restore_faces")
        if self.tiling:
            names.append("tiling")
        if self.alwayson_scripts:
            names.append("alwayson_scripts")
        unknown = sorted(set(self.override_settings) - {"sd_model_checkpoint"})
        names.extend(f"override_settings.{name}" for name in unknown)
        return names


class Txt2ImgRequest(GenerationFields):
    enable_hr: bool = False
    denoising_strength: float | None = None

    def ignored(self) -> list[str]:
        names = super().ignored()
        if self.enable_hr:
            names.append("enable_hr")
        return names


class Img2ImgRequest(GenerationFields):
    init_images: list[str] | None = None
    mask: str | None = None
    denoising_strength: float = 0.75
    resize_mode: int = 0
    mask_blur: int | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    include_init_images: bool = False
    _photos_sent: int = PrivateAttr(default=0)

    def take_pictures(self) -> tuple[str, str | None]:
        """The first init image and the mask, dropped from the body (only they are used)."""
        assert self.init_images
        photo, mask = self.init_images[0], self.mask
        self._photos_sent = len(self.init_images)
        self.init_images = self.mask = None
        return photo, mask

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
