"""Random affine jitter of image batches during training: small rotations, scalings, shears and shifts.

A CVAE trained on a few hundred images learns to re-draw them; jittering each batch shows it the same digits
at slightly different angles, sizes and positions, so its latent space (and the mixture fitted to it) spans
variations a classifier never saw in the real images. Runs on the training device with torch's
``affine_grid`` / ``grid_sample``; the generation path never sees it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["random_affine", "mixture_copies", "jittered_copies"]


def random_affine(x: torch.Tensor, shape: tuple[int, int, int], generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """``x`` (B, C*H*W) in [0, 1] -> the same images, each under its own random affine map.

    At strength 1: rotation up to +-12 degrees, scale 0.9-1.1, shear up to +-0.15, shift up to 2/28 of the side.
    """
    c, h, w = shape
    b = x.shape[0]
    u = torch.rand((b, 5), generator=generator, device=x.device, dtype=x.dtype) * 2 - 1  # (B, 5) in [-1, 1)
    angle = u[:, 0] * strength * math.radians(12)
    scale = 1 + u[:, 1] * strength * 0.1
    shear = u[:, 2] * strength * 0.15
    shift = u[:, 3:5] * strength * (2 * 2 / 28)  # affine_grid's coordinates span [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([
        torch.stack([cos, -sin + shear * cos, shift[:, 0]], dim=1),
        torch.stack([sin, cos + shear * sin, shift[:, 1]], dim=1),
    ], dim=1)  # (B, 2, 3): output -> input coordinates
    grid = F.affine_grid(theta, (b, c, h, w), align_corners=False)
    out = F.grid_sample(x.reshape(b, c, h, w), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(b, c * h * w)


MIXTURE_POINTS = 400  # jittered encodings per class the latent mixture is fitted to, at least
MAX_COPIES = 20


def mixture_copies(y_index: np.ndarray) -> int:
    """Jittered copies of each image that give the smallest class about ``MIXTURE_POINTS`` encodings (1 to 20).

    The latent mixture is fitted to the encodings of the images and these copies, so sampling covers the
    variations the model was trained on and not only the few real images.
    """
    smallest = max(1, int(np.bincount(y_index).min()))
    return min(MAX_COPIES, math.ceil(MIXTURE_POINTS / smallest))


def jittered_copies(x: np.ndarray, shape: tuple[int, int, int], strength: float, seed: int, copies: int,
                    batch: int = 4096) -> Iterator[np.ndarray]:
    """``copies`` jittered versions of all of ``x``, one (N, C*H*W) array at a time (not all held at once)."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(copies):
        yield np.concatenate([random_affine(torch.from_numpy(x[i:i + batch]), shape, gen, strength).numpy()
                              for i in range(0, len(x), batch)])
