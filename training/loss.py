"""The CVAE loss: a reconstruction term per column kind + beta * KL(q(z|x,y) || N(0, I)).

- numeric: Gaussian negative log-likelihood with a learned variance (the decoder outputs mean and log-variance;
  generation samples from them, because the mean alone over-smooths a column), masked on null rows and on
  rows holding one of the column's point masses; a Bernoulli term on the null indicator of columns that had
  nulls; a cross-entropy over [spikes, other] for columns with point masses;
- categorical: cross-entropy on the logits;
- image: Bernoulli likelihood of the pixels (binary cross-entropy with logits).

Each term is summed over a row's columns and averaged over the batch, so the parts are comparable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["LossParts", "ReconstructionLoss", "kl_divergence", "kl_weight"]


@dataclass
class LossParts:
    total: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per row, summed over the latent dimensions: (B,)."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)


def kl_weight(epoch: int, epochs: int, beta: float, warmup: float) -> float:
    """Linear KL warm-up from ~0 to beta over the first ``warmup`` share of the epochs."""
    ramp = max(1, math.ceil(warmup * epochs))
    return beta * min(1.0, (epoch + 1) / ramp)


def _idx(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


class ReconstructionLoss(torch.nn.Module):
    """Negative log-likelihood of x under the decoder's parameters, from the codec's segments."""

    def __init__(self, segments):
        super().__init__()
        num = [s for s in segments if s.kind == "numeric"]
        self.register_buffer("num_in", _idx([s.in_start for s in num]))
        self.register_buffer("num_mean", _idx([s.out_start for s in num]))
        self.register_buffer("num_logvar", _idx([s.out_start + 1 for s in num]))
        # Columns with nulls: where their null flag sits in x and its logit in the output; -1 = no nulls.
        self.register_buffer("null_in", _idx([s.in_start + 1 for s in num if s.has_nulls]))
        self.register_buffer("null_out", _idx([s.out_start + 2 for s in num if s.has_nulls]))
        self.register_buffer("null_pos", _idx([i for i, s in enumerate(num) if s.has_nulls]))
        # Columns with point masses: the value's likelihood counts only on "other" rows (the flag is last in x);
        # the spike category is one more categorical term.
        spiky = [(i, s) for i, s in enumerate(num) if s.spikes]
        self.register_buffer("other_in", _idx([s.in_stop - 1 for _, s in spiky]))
        self.register_buffer("other_pos", _idx([i for i, _ in spiky]))
        self.categorical = [(s.in_start, s.in_stop, s.out_start, s.out_stop) for s in segments if s.kind == "categorical"]
        self.categorical += [(s.in_stop - s.spikes, s.in_stop, s.out_stop - s.spikes, s.out_stop) for _, s in spiky]
        self.image = [(s.in_start, s.in_stop, s.out_start, s.out_stop) for s in segments if s.kind == "image"]

    def forward(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B,) negative log-likelihood per row."""
        total = params.new_zeros(params.shape[0])
        if self.num_in.numel():
            value = x[:, self.num_in]  # (B, n_numeric)
            mean, logvar = params[:, self.num_mean], params[:, self.num_logvar]
            nll = 0.5 * (logvar + (value - mean).pow(2) * torch.exp(-logvar) + math.log(2 * math.pi))
            if self.null_in.numel() or self.other_in.numel():
                mask = torch.ones_like(nll)
                if self.null_in.numel():
                    flag = x[:, self.null_in]
                    mask[:, self.null_pos] = 1.0 - flag
                    total = total + F.binary_cross_entropy_with_logits(params[:, self.null_out], flag, reduction="none").sum(1)
                if self.other_in.numel():  # a null row's spike one-hot is all zero: its flag is 0 here too
                    mask[:, self.other_pos] = mask[:, self.other_pos] * x[:, self.other_in]
                nll = nll * mask
            total = total + nll.sum(1)
        for i0, i1, o0, o1 in self.categorical:
            total = total - (x[:, i0:i1] * F.log_softmax(params[:, o0:o1], dim=1)).sum(1)
        for i0, i1, o0, o1 in self.image:
            total = total + F.binary_cross_entropy_with_logits(params[:, o0:o1], x[:, i0:i1], reduction="none").sum(1)
        return total
