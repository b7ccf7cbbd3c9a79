"""Cheap live previews: latents projected straight to RGB with a fixed 4x3 matrix.

No VAE decode and no extra weights: the factors are the published linear approximations of the
SD 1.x/2.x and SDXL latent spaces (the ones AUTOMATIC1111 and ComfyUI use for "approx NN-free"
previews). For the random demo model the picture is noise, as it should be.
"""

from __future__ import annotations

from typing import Any

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


# -- the transformer families (core/families.py) ---------------------------------------------
# Their latent spaces (16 channels for SD3 / FLUX.1 / Z-Image / Qwen-Image, 32 for FLUX.2) have
# no projection here: each model's own is measured once, when its first preview is drawn
# (:func:`fit_projection`): a few random latents of the pipeline's own latent space are decoded
# with the model's VAE, the pictures averaged over each latent cell, and the linear map
# latent -> RGB (with a bias) fitted by least squares. That costs one VAE decode of a 2 x 64 px
# (128 px for the packed families) batch per loaded model and needs no published factors.
FIT_CELLS = 8


def unpack_latents(latents: torch.Tensor, packed: bool, width: int, height: int,
                   vae_scale_factor: int) -> torch.Tensor:
    """The pipeline's latents as a picture-shaped (B, C, h, w) grid: packed families keep
    (B, seq, C*4) patches of 2x2 latent cells, one row of patches after the other."""
    latents = latents.detach()
    if latents.dim() == 5:  # Qwen-Image's video-shaped VAE latents: (B, C, 1, h, w)
        latents = latents[:, :, 0]
    if not packed:
        return latents
    rows, cols = height // (vae_scale_factor * 2), width // (vae_scale_factor * 2)
    batch, seq, channels = latents.shape
    if seq < rows * cols:  # a shape this code does not know: no preview rather than a wrong one
        raise ValueError("unexpected latent shape")
    grid = latents[:, : rows * cols].permute(0, 2, 1)
    return grid.reshape(batch, channels, rows, cols)


def _unpatchify(grid: torch.Tensor) -> torch.Tensor:
    """(B, C*4, h, w) 2x2 patches (channel = c*4 + dy*2 + dx) -> (B, C, 2h, 2w)."""
    batch, channels, rows, cols = grid.shape
    out = grid.reshape(batch, channels // 4, 2, 2, rows, cols).permute(0, 1, 4, 2, 5, 3)
    return out.reshape(batch, channels // 4, rows * 2, cols * 2)


def decode_grid(pipe: Any, latent_space: str, grid: torch.Tensor, packed: bool) -> torch.Tensor:
    """A latent grid of the pipeline's own space (as :func:`unpack_latents` gives it) decoded
    with the pipeline's VAE, as the pipeline decodes it: (B, 3, H, W) in [-1, 1]."""
    vae = pipe.vae
    config = vae.config
    z = grid.to(vae.device, vae.dtype)
    if latent_space == "flux2":
        bn = vae.bn
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + config.batch_norm_eps)
        z = _unpatchify(z * std.to(z) + bn.running_mean.view(1, -1, 1, 1).to(z))
        return vae.decode(z, return_dict=False)[0]
    if latent_space == "qwenimage":
        z = _unpatchify(z)
        mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1).to(z)
        std = torch.tensor(config.latents_std).view(1, -1, 1, 1).to(z)
        return vae.decode((z * std + mean).unsqueeze(2), return_dict=False)[0][:, :, 0]
    if packed:  # FLUX.1: 2x2 patches of the 16-channel VAE latent
        z = _unpatchify(z)
    shift = getattr(config, "shift_factor", None) or 0.0
    return vae.decode(z / config.scaling_factor + shift, return_dict=False)[0]


def fit_projection(
    pipe: Any, latent_space: str, channels: int, packed: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(factors (C, 3), bias (3,)) of the least-squares latent -> RGB map of ``pipe``'s VAE
    (C: the VAE latent's channels; a packed grid is unpatchified first, see :func:`preview_cells`)."""
    generator = torch.Generator("cpu").manual_seed(0)
    grid = torch.randn((2, channels, FIT_CELLS, FIT_CELLS), generator=generator)
    with torch.inference_mode():
        pictures = decode_grid(pipe, latent_space, grid, packed).float().cpu()
    # A packed family's 2x2 patches are fitted per latent cell (C channels, not C*4): four
    # times the samples for a quarter of the unknowns, so the map generalizes.
    cells = _unpatchify(grid) if packed else grid
    means = torch.nn.functional.avg_pool2d(pictures, pictures.shape[-1] // cells.shape[-1])
    x = cells.permute(0, 2, 3, 1).reshape(-1, cells.shape[1])
    x = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1)
    y = means.permute(0, 2, 3, 1).reshape(-1, 3)
    solution = torch.linalg.lstsq(x, y).solution  # (C + 1, 3)
    return solution[:-1], solution[-1]


def preview_cells(grid: torch.Tensor, packed: bool) -> torch.Tensor:
    """The latent cells a fitted projection reads: a packed grid's 2x2 patches unpatchified."""
    return _unpatchify(grid) if packed else grid


def grid_to_preview(grid: torch.Tensor, factors: torch.Tensor, bias: torch.Tensor,
                    cell: int, max_side: int = 256) -> Image.Image:
    """The first latent grid of a batch through a fitted projection, as a small RGB picture."""
    latent = grid[0].float().cpu()
    rgb = torch.einsum("chw,cr->hwr", latent, factors) + bias
    pixels = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(pixels, mode="RGB")
    scale = max(1, min(cell, max_side // max(image.size)))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    return image
