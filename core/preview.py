"""Cheap live previews: latents projected straight to RGB with a fixed 4x3 matrix.

No VAE decode and no extra weights: the factors are the published linear approximations of the
SD 1.x/2.x and SDXL latent spaces (the ones AUTOMATIC1111 and ComfyUI use for "approx NN-free"
previews). For the random demo model the picture is noise, as it should be.
"""

from __future__ import annotations

import torch
from PIL import Image

_SD_FACTORS = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
]
_SDXL_FACTORS = [
    [0.3651, 0.4232, 0.4341],
    [-0.2533, -0.0042, 0.1068],
    [0.1076, 0.1111, -0.0362],
    [-0.3165, -0.2492, -0.2188],
]
_SDXL_BIAS = [0.1084, -0.0175, -0.0011]


def latents_to_preview(latents: torch.Tensor, arch: str, max_side: int = 256) -> Image.Image:
    """First image of a latent batch (B, 4, h, w) as a small RGB picture."""
    latent = latents[0].detach().float().cpu()
    if latent.shape[0] != 4:
        latent = latent[:4]
    if arch == "sdxl":
        factors = torch.tensor(_SDXL_FACTORS)
        bias = torch.tensor(_SDXL_BIAS)
    else:
        factors = torch.tensor(_SD_FACTORS)
        bias = torch.zeros(3)
    rgb = torch.einsum("chw,cr->hwr", latent, factors) + bias
    pixels = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(pixels, mode="RGB")
    # 8x smaller than the output: scale up to a readable thumbnail, never past max_side.
    scale = max(1, min(8, max_side // max(image.size)))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    return image
