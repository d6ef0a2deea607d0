"""The conditional VAE: encoder q(z | x, y) -> (mu, logvar), reparameterization, decoder p(x | z, y).

MLP networks for tables; for images the lecture's ConvEncoder / ConvDecoder. The one-hot label y is fed to
both halves. Inputs are always flat (B, input_dim) so one ONNX interface serves both modalities: the image
networks reshape to (B, C, H, W) inside.

    python -c "from training.model import build_model; print(build_model('table', 10, 12, 2, 8, 32))"
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["TableCVAE", "ImageCVAE", "build_model", "reparameterize"]


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + sigma * eps: the sample stays differentiable in mu and logvar."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.SiLU()]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


LOGVAR_FLOOR = -7.0  # numeric outputs' log-variance floor (sigma >= 0.03 in the quantile-normal space)


class TableCVAE(nn.Module):
    def __init__(self, input_dim: int, output_dim: int, n_classes: int, latent_dim: int, hidden: int = 256,
                 logvar_index: list[int] | tuple[int, ...] = ()):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = _mlp([input_dim + n_classes, hidden, hidden, 2 * latent_dim])
        self.decoder = _mlp([latent_dim + n_classes, hidden, hidden, output_dim])
        # A soft floor on the numeric log-variances, inside the graph, so the exported decoder applies it too:
        # a column with repeated values would otherwise drive its variance (and the likelihood) to infinity.
        # Applied to those columns alone (gathered, floored, the change added back): a softplus and two selects
        # over the whole output were half the exported decoder's time on a wide categorical table.
        index = sorted(set(logvar_index))
        self.register_buffer("logvar_index", torch.tensor(index, dtype=torch.long), persistent=False)
        # (numeric columns, outputs) one-hot: the floor's change added back through a small product, which
        # exports as a MatMul and an Add, where index_copy exported as two transposes of the whole output
        # and a ScatterND (8% of the decoder's time on a 134-output table)
        self.register_buffer("logvar_place", nn.functional.one_hot(torch.tensor(index, dtype=torch.long),
                                                                   output_dim).float(), persistent=False)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(torch.cat([x, y], dim=1))  # (B, 2 * latent)
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.decoder(torch.cat([z, y], dim=1))  # (B, output_dim)
        if self.logvar_index.numel() == 0:
            return out
        logvar = out.index_select(1, self.logvar_index)  # (B, numeric columns)
        floored = LOGVAR_FLOOR + nn.functional.softplus(logvar - LOGVAR_FLOOR)
        return out + (floored - logvar) @ self.logvar_place  # out elsewhere: the product adds exact zeros

    def forward(self, x, y, generator=None):
        mu, logvar = self.encode(x, y)
        return self.decode(reparameterize(mu, logvar, generator), y), mu, logvar


class ImageCVAE(nn.Module):
    """Two stride-2 convolutions down, two transposed convolutions up, cropped back to (H, W)."""

    def __init__(self, shape: tuple[int, int, int], n_classes: int, latent_dim: int, hidden: int = 256,
                 channels: tuple[int, int] = (32, 64)):
        super().__init__()
        c, h, w = shape
        self.shape = shape
        self.latent_dim = latent_dim
        c1, c2 = channels
        self.h2, self.w2 = math.ceil(math.ceil(h / 2) / 2), math.ceil(math.ceil(w / 2) / 2)
        flat = c2 * self.h2 * self.w2
        self.conv = nn.Sequential(
            nn.Conv2d(c, c1, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.SiLU(),
            nn.Flatten(),
        )
        self.enc_head = nn.Sequential(nn.Linear(flat + n_classes, hidden), nn.SiLU(), nn.Linear(hidden, 2 * latent_dim))
        self.dec_head = nn.Sequential(nn.Linear(latent_dim + n_classes, hidden), nn.SiLU(), nn.Linear(hidden, flat), nn.SiLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(c1, c, 4, stride=2, padding=1),
        )
        self._c2 = c2

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, h, w = self.shape
        feats = self.conv(x.reshape(-1, c, h, w))  # (B, c2 * h2 * w2)
        mu, logvar = self.enc_head(torch.cat([feats, y], dim=1)).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c, h, w = self.shape
        feats = self.dec_head(torch.cat([z, y], dim=1)).reshape(-1, self._c2, self.h2, self.w2)
        logits = self.deconv(feats)[:, :, :h, :w]  # (B, C, H, W)
        return logits.reshape(-1, c * h * w)

    def forward(self, x, y, generator=None):
        mu, logvar = self.encode(x, y)
        return self.decode(reparameterize(mu, logvar, generator), y), mu, logvar


def build_model(modality: str, input_dim: int, output_dim: int, n_classes: int, latent_dim: int, hidden: int = 256,
                image_shape: tuple[int, int, int] | None = None, logvar_index: tuple[int, ...] = (),
                image_channels: tuple[int, int] = (32, 64)) -> nn.Module:
    if modality == "image":
        return ImageCVAE(tuple(image_shape), n_classes, latent_dim, hidden, tuple(image_channels))
    return TableCVAE(input_dim, output_dim, n_classes, latent_dim, hidden, logvar_index)


class EncoderExport(nn.Module):
    """(x, y) -> (mu, logvar), the graph saved as encoder.onnx."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, y):
        return self.model.encode(x, y)


class DecoderExport(nn.Module):
    """(z, y) -> params, the graph saved as decoder.onnx."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, z, y):
        return self.model.decode(z, y)
