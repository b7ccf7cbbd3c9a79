"""The transformer (flow-matching) model families: one table, read by the engine, UI, API and planner.

Per architecture (``ModelInfo.arch``): the diffusers pipeline class for each mode, which of the
A1111 controls the pipeline honours (negative prompt, CFG), defaults, the size multiple, the
latent space (channels, VAE scale factor, how the pipeline packs latents) and the samplers.
Per variant (``ModelInfo.variant``) only what differs: guidance-distilled variants ignore the
negative prompt and CFG, edit variants have their own pipelines.

How each family takes guidance (read from each pipeline's ``__call__`` in diffusers 0.42):

- ``"cfg"``: true classifier-free guidance; the request's ``cfg_scale`` goes to ``cfg_param``
  (``guidance_scale`` for SD3 / Z-Image base / FLUX.2 klein base, ``true_cfg_scale`` for
  Qwen-Image) and the negative prompt applies where ``negative_prompt`` is True.
- ``"embedded"``: guidance-distilled with a guidance embedding (FLUX.1 dev/fill/kontext, FLUX.2
  dev): ``cfg_scale`` goes to ``guidance_scale`` as the embedded value (no second pass); there is
  no negative prompt.
- ``"none"``: step-distilled (FLUX.1 schnell, FLUX.2 klein, Z-Image-Turbo, SD 3.5 Large Turbo):
  the pipeline is run with ``fixed_guidance`` and both the negative prompt and ``cfg_scale`` are
  ignored (reported in ``GenerationResult.extras["ignored"]``).

The SD families (sd1, sd2, sdxl) are not in this table: they keep their own path (core/engine.py).
Nothing here imports diffusers or torch; class names are strings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

SD_ARCHS = ("sd1", "sd2", "sdxl")
MODES = ("txt2img", "img2img", "inpaint", "edit")

# Samplers a flow family can use (names as in AUTOMATIC1111; core/samplers.py builds them).
# Each family lists those its pipelines can run (tests/core/test_families.py runs every one):
# DPMSolverMultistepScheduler takes no ``sigmas``, which the FLUX.1 / Z-Image / Qwen-Image
# pipelines pass; UniPC fails on Z-Image's list of sigmas.
FLOW_SAMPLERS = ("Euler", "Euler a", "Heun", "DPM++ 2M", "UniPC")
_NO_DPM = ("Euler", "Euler a", "Heun", "UniPC")
_EULER_HEUN = ("Euler", "Euler a", "Heun")

# Roughly one megapixel at the usual aspect ratios, each side a multiple of 16.
_MEGAPIXEL_RATIOS: tuple[tuple[str, int, int], ...] = (
    ("1:1", 1024, 1024),
    ("4:3", 1152, 864),
    ("3:4", 864, 1152),
    ("3:2", 1216, 832),
    ("2:3", 832, 1216),
    ("16:9", 1344, 768),
    ("9:16", 768, 1344),
)
# Qwen-Image's own list (its model card), each side a multiple of 16.
_QWEN_RATIOS: tuple[tuple[str, int, int], ...] = (
    ("1:1", 1328, 1328),
    ("4:3", 1472, 1104),
    ("3:4", 1104, 1472),
    ("3:2", 1584, 1056),
    ("2:3", 1056, 1584),
    ("16:9", 1664, 928),
    ("9:16", 928, 1664),
)


@dataclass(frozen=True)
class Family:
    """One architecture's (or one variant's) pipelines, controls and latent space."""

    arch: str
    title: str
    # mode -> diffusers pipeline class name; a mode not here is not offered for the family.
    # "edit" is prompt + reference pictures (GenerationRequest.references).
    pipelines: dict[str, str]
    guidance: str  # "cfg" | "embedded" | "none" (see the module docstring)
    cfg_param: str  # the __call__ keyword that takes cfg_scale ("guidance_scale", "true_cfg_scale")
    negative_prompt: bool  # the pipeline takes a negative prompt and it changes the picture
    fixed_guidance: float | None  # guidance "none": the value passed instead of cfg_scale
    default_steps: int
    default_guidance: float
    default_size: int
    min_size: int
    max_size: int
    aspect_ratios: tuple[tuple[str, int, int], ...]
    latent_space: str  # core/preview.py's key: "sd3" | "flux1" | "flux2" | "qwenimage"
    latent_channels: int  # channels of the VAE latent (before any 2x2 packing)
    vae_scale_factor: int
    packed: bool  # the pipeline's latents are (B, seq, channels*4) patches, not (B, C, h, w)
    size_multiple: int = 16
    samplers: tuple[str, ...] = FLOW_SAMPLERS
    default_sampler: str = "Euler"
    max_references: int = 0  # edit mode: how many reference pictures the pipeline takes
    # The class the model's own folder holds (its model_index), when not the txt2img one.
    base: str = ""
    # Every mode runs as inpainting (FLUX.1 Fill): txt2img = a blank canvas, all masked.
    inpaint_only: bool = False
    # An edit model that cannot paint from text alone (Qwen-Image-Edit): a picture is needed.
    needs_image: bool = False

    @property
    def base_pipeline(self) -> str:
        return self.base or self.pipelines["txt2img"]

    @property
    def ignored_controls(self) -> tuple[str, ...]:
        """Controls of the request that do not change this family's picture."""
        out: list[str] = []
        if not self.negative_prompt:
            out.append("negative_prompt")
        if self.guidance == "none":
            out.append("cfg_scale")
        return tuple(out)

    def pipeline(self, mode: str) -> str | None:
        return self.pipelines.get(mode)


_SD3 = Family(
    arch="sd3",
    title="Stable Diffusion 3.5",
    pipelines={
        "txt2img": "StableDiffusion3Pipeline",
        "img2img": "StableDiffusion3Img2ImgPipeline",
        "inpaint": "StableDiffusion3InpaintPipeline",
    },
    guidance="cfg",
    cfg_param="guidance_scale",
    negative_prompt=True,
    fixed_guidance=None,
    default_steps=28,
    default_guidance=4.5,
    default_size=1024,
    min_size=64,
    max_size=2048,
    aspect_ratios=_MEGAPIXEL_RATIOS,
    latent_space="sd3",
    latent_channels=16,
    vae_scale_factor=8,
    packed=False,
)
_FLUX1 = Family(
    arch="flux1",
    samplers=_NO_DPM,
    title="FLUX.1",
    pipelines={
        "txt2img": "FluxPipeline",
        "img2img": "FluxImg2ImgPipeline",
        "inpaint": "FluxInpaintPipeline",
    },
    guidance="embedded",
    cfg_param="guidance_scale",
    negative_prompt=False,
    fixed_guidance=None,
    default_steps=28,
    default_guidance=3.5,
    default_size=1024,
    min_size=64,
    max_size=2048,
    aspect_ratios=_MEGAPIXEL_RATIOS,
    latent_space="flux1",
    latent_channels=16,
    vae_scale_factor=8,
    packed=True,
)
_FLUX2 = Family(
    arch="flux2",
    title="FLUX.2",
    pipelines={
        "txt2img": "Flux2KleinPipeline",
        # klein's image-to-image is its reference-picture edit: the photo is the reference.
        "img2img": "Flux2KleinPipeline",
        "inpaint": "Flux2KleinInpaintPipeline",
        "edit": "Flux2KleinPipeline",
    },
    guidance="none",
    cfg_param="guidance_scale",
    negative_prompt=False,
    fixed_guidance=1.0,
    default_steps=4,
    default_guidance=1.0,
    default_size=1024,
    min_size=64,
    max_size=2048,
    aspect_ratios=_MEGAPIXEL_RATIOS,
    latent_space="flux2",
    latent_channels=32,
    vae_scale_factor=8,
    packed=True,
    max_references=4,
)
_ZIMAGE = Family(
    arch="zimage",
    samplers=_EULER_HEUN,
    title="Z-Image",
    pipelines={
        "txt2img": "ZImagePipeline",
        "img2img": "ZImageImg2ImgPipeline",
        "inpaint": "ZImageInpaintPipeline",
    },
    guidance="cfg",
    cfg_param="guidance_scale",
    negative_prompt=True,
    fixed_guidance=None,
    default_steps=50,
    default_guidance=4.0,
    default_size=1024,
    min_size=64,
    max_size=2048,
    aspect_ratios=_MEGAPIXEL_RATIOS,
    latent_space="flux1",  # Z-Image uses the FLUX.1 VAE
    latent_channels=16,
    vae_scale_factor=8,
    packed=False,
)
_QWEN = Family(
    arch="qwenimage",
    samplers=_NO_DPM,
    title="Qwen-Image",
    pipelines={
        "txt2img": "QwenImagePipeline",
        "img2img": "QwenImageImg2ImgPipeline",
        "inpaint": "QwenImageInpaintPipeline",
    },
    guidance="cfg",
    cfg_param="true_cfg_scale",
    negative_prompt=True,
    fixed_guidance=None,
    default_steps=50,
    default_guidance=4.0,
    default_size=1328,
    min_size=64,
    max_size=2048,
    aspect_ratios=_QWEN_RATIOS,
    latent_space="qwenimage",
    latent_channels=16,
    vae_scale_factor=8,
    packed=True,
)

FAMILIES: dict[str, Family] = {f.arch: f for f in (_SD3, _FLUX1, _FLUX2, _ZIMAGE, _QWEN)}

# Per-variant differences from the family's row: (arch, variant) -> replaced fields.
VARIANTS: dict[tuple[str, str], dict[str, Any]] = {
    ("sd3", "medium"): {"default_steps": 40, "default_guidance": 4.5},
    ("sd3", "large"): {"default_steps": 28, "default_guidance": 3.5},
    ("sd3", "large-turbo"): {
        "guidance": "none", "negative_prompt": False, "fixed_guidance": 0.0,
        "default_steps": 4, "default_guidance": 0.0,
    },
    ("flux1", "schnell"): {
        "guidance": "none", "fixed_guidance": 0.0, "default_steps": 4, "default_guidance": 0.0,
    },
    ("flux1", "dev"): {},
    ("flux1", "fill"): {
        "title": "FLUX.1 Fill",
        "pipelines": {"txt2img": "FluxFillPipeline", "img2img": "FluxFillPipeline",
                      "inpaint": "FluxFillPipeline"},
        "inpaint_only": True,
        "default_steps": 50, "default_guidance": 30.0,
    },
    ("flux1", "kontext"): {
        "title": "FLUX.1 Kontext",
        "pipelines": {"txt2img": "FluxKontextPipeline", "img2img": "FluxKontextPipeline",
                      "edit": "FluxKontextPipeline", "inpaint": "FluxKontextInpaintPipeline"},
        "default_guidance": 2.5, "max_references": 1,
    },
    ("flux2", "klein"): {"title": "FLUX.2 [klein]"},
    ("flux2", "klein-base"): {
        "title": "FLUX.2 [klein] base",
        "guidance": "cfg", "fixed_guidance": None, "default_steps": 50, "default_guidance": 4.0,
    },
    ("flux2", "dev"): {
        "title": "FLUX.2 [dev]",
        "pipelines": {"txt2img": "Flux2Pipeline", "img2img": "Flux2Pipeline",
                      "edit": "Flux2Pipeline"},
        "guidance": "embedded", "fixed_guidance": None, "default_steps": 50,
        "default_guidance": 4.0, "max_references": 4,
    },
    ("zimage", "turbo"): {
        "title": "Z-Image-Turbo",
        "guidance": "none", "negative_prompt": False, "fixed_guidance": 0.0,
        "default_steps": 9, "default_guidance": 0.0,
    },
    ("zimage", "base"): {},
    ("qwenimage", "base"): {},
    ("qwenimage", "edit"): {
        "title": "Qwen-Image-Edit",
        "pipelines": {"txt2img": "QwenImageEditPipeline", "img2img": "QwenImageEditPipeline",
                      "edit": "QwenImageEditPipeline", "inpaint": "QwenImageEditInpaintPipeline"},
        "max_references": 1, "needs_image": True,
    },
    ("qwenimage", "edit-plus"): {
        "title": "Qwen-Image-Edit-Plus",
        "pipelines": {"txt2img": "QwenImageEditPlusPipeline",
                      "img2img": "QwenImageEditPlusPipeline",
                      "edit": "QwenImageEditPlusPipeline"},
        "max_references": 3, "needs_image": True,
    },
}


def is_flow_arch(arch: str) -> bool:
    return arch not in SD_ARCHS


def is_flow(info: Any) -> bool:
    """A model of one of the transformer families (anything but sd1/sd2/sdxl)."""
    return is_flow_arch(str(getattr(info, "arch", "")))


def family(arch: str, variant: str = "") -> Family:
    """The table row for ``arch`` with ``variant``'s differences applied.

    Raises KeyError for an SD or unknown arch (callers check :func:`is_flow` first)."""
    row = FAMILIES[arch]
    changes = dict(VARIANTS.get((arch, variant), {}))
    if "pipelines" in changes:
        changes["pipelines"] = {**row.pipelines, **changes["pipelines"]}
    return replace(row, **changes) if changes else row


def family_of(info: Any) -> Family:
    return family(str(info.arch), str(getattr(info, "variant", "")))


def samplers_for(arch: str, variant: str = "") -> list[str]:
    """Sampler names offered for a model of ``arch`` (the UI/API lists)."""
    if not is_flow_arch(arch):
        from core.samplers import sampler_names

        return sampler_names()
    return list(family(arch, variant).samplers)
