"""Mask preprocessing for region-based generation, on the device and batched over layers.

Per layer p (ordered bottom -> top) the painted coverage m_p in [0, 1]^(H x W) becomes, for every
slot t of the schedule, a latent-resolution weight M_{p,t}:

1. cover decay: m_p *= cover_alpha wherever a higher layer covers it (cover_alpha=1: no decay),
2. Gaussian blur with sigma_p in pixels (separable, replicate-padded so edges stay put; 0 = none),
3. x mask strength s_p,
4. quantisation against the slot's noise level lv_t (and the next slot's lv_{t+1}, 0 after the last):
   `discrete` m > lv_t; `continuous` clip((m - lv_{t+1}) / (lv_t - lv_{t+1}), 0, 1);
   `semi-continuous` discrete except the last slot, which is continuous.
   Blurred edges thus join only at the quieter steps.
5. nearest-neighbour downsampling to the latent h x w.

Steps 3-5 are per pixel, so `preprocess_masks` samples first and evaluates the blur only at the pixels it
keeps (`sampled_blur`): the same weights as the steps in order, up to float rounding.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..coverage import to_fraction

MASK_TYPES = ("discrete", "semi-continuous", "continuous")


def to_mask_tensor(
    mask: Any, height: int, width: int, device: torch.device | str = "cpu", *, boolean_images: bool = False,
    resize: bool = False,
) -> torch.Tensor:
    """One layer's coverage, as the engine's layer methods read it (the seed project's rules), as a float32
    (H, W) tensor in [0, 1] on `device`.

    Arrays and tensors follow the canvas's rules (`semdraw_widget.coverage`): bool, uint8 (0..255 coverage) or
    other integer / float (a fraction in [0, 1]), shaped (H, W), (1, H, W) or (1, 1, H, W). A PIL image is read
    as the seed's pipelines read one: an opaque image (or one without alpha) covers where it is dark,
    1 - grey (a black shape on white); an image with transparency covers where it is opaque (its alpha, as the
    canvas reads it). Images are resized to the canvas (bilinear), and with `boolean_images` (the one-shot
    pipeline's `use_boolean_mask`) cut at one half first. With `resize`, arrays and tensors of another size are
    resized too (the seed's one-shot pipeline does; its stream does not).
    """
    if hasattr(mask, "getbands") and not mask.mode.startswith(("F", "I")):  # a PIL image of 8-bit pixels
        if "A" in mask.getbands() and np.asarray(mask.getchannel("A")).min() < 255:
            fraction = np.asarray(mask.getchannel("A"), dtype=np.float32) / 255.0
        else:
            fraction = 1.0 - np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
        if boolean_images:
            fraction = (fraction > 0.5).astype(np.float32)
        return _resized(torch.from_numpy(fraction), height, width).to(device)
    while getattr(mask, "ndim", 0) > 2 and mask.shape[0] == 1:  # (1, H, W), (1, 1, H, W): one mask
        mask = mask[0]
    shape = tuple(getattr(mask, "shape", ()))
    if resize and len(shape) == 2 and shape != (height, width):
        return _resized(torch.from_numpy(to_fraction(mask, *shape)), height, width).to(device)
    return torch.from_numpy(to_fraction(mask, height, width)).to(device)


def _resized(fraction: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(H', W') float coverage resized to (height, width), bilinear (unchanged when it fits already)."""
    if tuple(fraction.shape) == (height, width):
        return fraction
    resized = F.interpolate(fraction[None, None], size=(height, width), mode="bilinear", align_corners=False)
    return resized[0, 0].clamp(0.0, 1.0)


def cover_decay(masks: torch.Tensor, cover_alpha: float) -> torch.Tensor:
    """masks (P, H, W), bottom -> top: each mask times cover_alpha where any higher layer is > 0."""
    return torch.where(covered_by_higher(masks), masks * cover_alpha, masks)


def gaussian_kernel(std: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Normalised 1-D Gaussian of radius ceil(3 sigma)."""
    radius = math.ceil(3.0 * std)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / std) ** 2)
    return (kernel / kernel.sum()).to(device=device, dtype=torch.float32)


def blur(planes: torch.Tensor, std: float) -> torch.Tensor:
    """Every (H, W) plane of `planes` (..., H, W) blurred with one sigma in pixels (separable, replicate padding)."""
    kernel = gaussian_kernel(std, planes.device)
    r = kernel.numel() // 2
    x = F.pad(planes.reshape(-1, 1, *planes.shape[-2:]), (r, r, r, r), mode="replicate")
    x = F.conv2d(F.conv2d(x, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))
    return x.reshape(planes.shape)


def gaussian_blur(masks: torch.Tensor, stds: Sequence[float]) -> torch.Tensor:
    """Blur each of masks (P, H, W) with its own sigma in pixels (separable, replicate padding; 0 = none).

    Layer by layer, so a layer's result never depends on which other layers are updated with it.
    """
    out = [blur(mask, std) if std > 0 else mask for mask, std in zip(masks, stds)]
    return torch.stack(out) if out else masks


def sampled_blur(masks: torch.Tensor, stds: Sequence[float], height: int, width: int) -> torch.Tensor:
    """`downsample(gaussian_blur(masks, stds), height, width)`, computing only the pixels kept: per layer, the
    replicate-padded mask times two band matrices (each column one kernel, centred on a kept pixel)."""
    out = []
    for mask, std in zip(masks, stds):
        if std > 0:
            kernel = gaussian_kernel(std, masks.device)
            r = kernel.numel() // 2
            padded = F.pad(mask[None, None], (r, r, r, r), mode="replicate")[0, 0]
            rows = _sampling_band(mask.shape[0], height, kernel)
            columns = _sampling_band(mask.shape[1], width, kernel)
            out.append(rows.T @ padded @ columns)
        else:
            out.append(downsample(mask, height, width))
    return torch.stack(out) if out else masks.new_zeros(0, height, width)


def _sampling_band(size: int, samples: int, kernel: torch.Tensor) -> torch.Tensor:
    """(size + 2r, samples): column j holds `kernel` at the padded rows around the pixel nearest-neighbour
    downsampling keeps for sample j, so `padded @ band` is the blur read at the kept pixels."""
    kept = downsample(torch.arange(size, dtype=torch.float32, device=kernel.device)[None], 1, samples)[0].long()
    band = kernel.new_zeros(size + kernel.numel() - 1, samples)
    taps = torch.arange(kernel.numel(), device=kernel.device)
    band[kept[None, :] + taps[:, None], torch.arange(samples, device=kernel.device)[None, :]] = kernel[:, None]
    return band


def quantize_masks(masks: torch.Tensor, noise_levels: Sequence[float], mask_type: str) -> torch.Tensor:
    """masks (P, H, W) in [0, 1] -> (P, T, H, W): one weight map per slot at its noise level."""
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type must be one of {MASK_TYPES} (got {mask_type!r})")
    levels = torch.tensor(noise_levels, dtype=masks.dtype, device=masks.device)
    following = torch.cat([levels[1:], levels.new_zeros(1)])
    lv, nxt = levels.view(1, -1, 1, 1), following.view(1, -1, 1, 1)
    m = masks[:, None]
    continuous = ((m - nxt) / (lv - nxt)).clamp(0.0, 1.0)
    if mask_type == "continuous":
        return continuous
    discrete = (m > lv).to(masks.dtype)
    if mask_type == "discrete":
        return discrete
    return torch.cat([discrete[:, :-1], continuous[:, -1:]], dim=1)


def downsample(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Nearest-neighbour resize of (..., H, W) to (..., height, width)."""
    lead = masks.shape[:-2]
    flat = masks.reshape(-1, 1, *masks.shape[-2:])
    return F.interpolate(flat, size=(height, width), mode="nearest").reshape(*lead, height, width)


def preprocess_masks(
    masks: torch.Tensor,
    stds: Sequence[float],
    strengths: Sequence[float],
    noise_levels: Sequence[float],
    mask_type: str,
    latent_size: tuple[int, int],
    cover_alpha: float,
    covered: torch.Tensor | None = None,
) -> torch.Tensor:
    """Raw coverage (P, H, W) -> per-slot latent weights (P, T, 1, h, w) (steps 1-5 above).

    `covered` (P, H, W bool), when given, says where higher layers cover each mask; callers that
    recompute only some layers pass the cover maps computed over the whole stack.
    """
    if covered is None:
        covered = covered_by_higher(masks)
    masks = torch.where(covered, masks * cover_alpha, masks)
    masks = sampled_blur(masks, stds, *latent_size)  # steps 2 and 5 (5 commutes with 3 and 4)
    masks = masks * torch.tensor(strengths, dtype=masks.dtype, device=masks.device).view(-1, 1, 1)
    return quantize_masks(masks, noise_levels, mask_type)[:, :, None]


def covered_by_higher(masks: torch.Tensor) -> torch.Tensor:
    """(P, H, W) bool: where some layer above p has coverage > 0."""
    present = (masks > 0).to(torch.int32)
    return (present.flip(0).cumsum(0).flip(0) - present) > 0
