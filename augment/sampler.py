"""Latent samplers (numpy only): choose z for the decoder.

- ``prior``: z ~ N(0, T^2 I), the VAE's prior.
- ``mixture``: a per-class Gaussian mixture fitted to the encoded training set (stored in bundle.json). It
  follows where each class really lives in latent space, so it does not fall into the prior's "gaps" that
  the lecture pictures; with beta < 1 it matters most.
- ``perturb``: z = mu + noise * sigma * eps around an encoded real example (noise in posterior-spread units).
- ``interpolate``: straight lines between two encoded examples.

Every function takes a numpy ``Generator``; nothing here holds global state.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = ["SAMPLERS", "sample_prior", "GaussianMixture", "NativeValues", "MixtureSampler", "perturb_latent", "interpolate_latent"]

from augment.constants import SAMPLERS  # noqa: E402  (re-exported)
from augment.draws import standard_normal  # noqa: E402

# rows per (rows, d) @ (d, d) product: a larger one can start BLAS threads that cost more than they give (7x
# slower than the decoder at 1,024 rows where numpy's BLAS was not held to one thread)
MATMUL_ROWS = 256


def sample_prior(n: int, latent_dim: int, rng: np.random.Generator, temperature: float = 1.0) -> np.ndarray:
    return standard_normal(rng, (n, latent_dim), temperature)


def _stable_order(comp: np.ndarray) -> np.ndarray:
    """``np.argsort(comp, kind="stable")`` for small non-negative ints, a third of its time here: the keys
    ``comp * n + row`` are distinct, so a plain sort of them orders by component, then row."""
    n = len(comp)
    keys = np.asarray(comp, dtype=np.int64) * n
    keys += np.arange(n)
    keys.sort()
    keys %= n
    return keys


@dataclass(frozen=True)
class GaussianMixture:
    """One class's mixture: weights (k,), means (k, d), and either lower Cholesky factors (k, d, d) of full
    covariances (``cholesky``, what ``augment train`` writes by default) or standard deviations (k, d) of
    diagonal ones (``scales``, ``TrainConfig(mixture_covariance="diag")``)."""

    weights: np.ndarray
    means: np.ndarray
    scales: np.ndarray | None = None
    cholesky: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.scales is None) == (self.cholesky is None):
            raise ValueError("a mixture needs either scales (diagonal) or cholesky (full covariances)")

    @functools.cached_property
    def _float32(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cumulative weights, means, scales or transposed Cholesky factors) as sampling uses them, made once."""
        factors = self.scales if self.scales is not None else self.cholesky.transpose(0, 2, 1)
        return np.cumsum(self.weights), self.means.astype(np.float32), factors.astype(np.float32)

    @classmethod
    def from_json(cls, d: dict) -> "GaussianMixture":
        w = np.asarray(d["weights"], dtype=np.float64)
        means = np.asarray(d["means"], dtype=np.float64)
        if "scales" in d:
            return cls(w / w.sum(), means, scales=np.asarray(d["scales"], dtype=np.float64))
        if "cholesky_tril" in d:  # the lower triangles row by row (numpy.tril_indices order): half the numbers
            k, dim = means.shape
            chol = np.zeros((k, dim, dim))
            chol[:, *np.tril_indices(dim)] = np.asarray(d["cholesky_tril"], dtype=np.float64).reshape(k, -1)
            return cls(w / w.sum(), means, cholesky=chol)
        return cls(w / w.sum(), means, cholesky=np.asarray(d["cholesky"], dtype=np.float64))

    def to_json(self) -> dict:
        out = {"weights": self.weights.tolist(), "means": self.means.tolist()}
        if self.scales is not None:
            out["scales"] = self.scales.tolist()
        else:
            out["cholesky"] = self.cholesky.tolist()
        return out

    def with_weights(self, weights: np.ndarray) -> "GaussianMixture":
        """The same components under other weights (a conditional proposal: ``augment.batch.where``)."""
        w = np.asarray(weights, dtype=np.float64)
        return GaussianMixture(w / w.sum(), self.means, scales=self.scales, cholesky=self.cholesky)

    def sample(self, n: int, rng: np.random.Generator, temperature: float = 1.0) -> np.ndarray:
        k = self.means.shape[0]
        comp = np.searchsorted(self._float32[0], rng.random(n), side="right").clip(0, k - 1)
        return self.draw(comp, rng, temperature)

    def draw(self, comp: np.ndarray, rng: np.random.Generator, temperature: float = 1.0) -> np.ndarray:
        """One draw from each component index in ``comp`` (n,), (n, d)."""
        return self.transform(comp, standard_normal(rng, (len(comp), self.means.shape[1]), temperature))

    def transform(self, comp: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """z = m_j + L_j eps (n, d) for whitened draws ``eps`` (n, d, temperature applied) of components ``comp``.

        Full covariances: one matrix product per component on the rows of that component (no per-component
        mask over all rows, no gathered (n, d, d) einsum), at most ``MATMUL_ROWS`` rows a product.
        """
        n, (k, d) = len(comp), self.means.shape
        _, means, factors = self._float32
        if self.scales is not None:  # a gather, whatever the number of components
            return eps * factors[comp] + means[comp]
        order = _stable_order(comp)  # the rows of component 0 first, then 1, ... each in row order
        bounds = np.concatenate([[0], np.cumsum(np.bincount(comp, minlength=k))])  # component j: bounds[j]..[j+1]
        # rows grouped by component once (np.take: a quarter of a fancy index's time here), products on
        # contiguous row ranges, then back to row order with one more take; the same products on the same
        # operands as one product per component's rows, so the same bits
        grouped = np.take(np.asarray(eps, np.float32), order, axis=0)
        for j in np.flatnonzero(np.diff(bounds)):
            for start in range(bounds[j], bounds[j + 1], MATMUL_ROWS):
                rows = slice(start, min(start + MATMUL_ROWS, bounds[j + 1]))
                grouped[rows] = grouped[rows] @ factors[j] + means[j]
        inverse = np.empty(n, np.intp)
        inverse[order] = np.arange(n)
        return np.take(grouped, inverse, axis=0)

    def log_prob(self, z: np.ndarray) -> np.ndarray:
        """log p(z) under the mixture, (n,)."""
        z = np.asarray(z, dtype=np.float64)
        k, d = self.means.shape
        out = np.empty((z.shape[0], k))
        for j in range(k):
            if self.scales is not None:
                sol = ((z - self.means[j]) / self.scales[j]).T
                logdet = 2.0 * np.log(self.scales[j]).sum()
            else:
                sol = np.linalg.solve(self.cholesky[j], (z - self.means[j]).T)  # L^{-1} (z - m)
                logdet = 2.0 * np.log(np.abs(np.diag(self.cholesky[j]))).sum()
            out[:, j] = np.log(self.weights[j] + 1e-300) - 0.5 * ((sol**2).sum(0) + logdet + d * np.log(2 * np.pi))
        m = out.max(1, keepdims=True)
        return (m + np.log(np.exp(out - m).sum(1, keepdims=True)))[:, 0]


@dataclass(frozen=True)
class NativeValues:
    """``--condition-on`` mixtures of one column for one class: ``kind`` "categories" (value i is category i, null
    last) or "bins" (value i holds [edges[i], edges[i + 1]), the last bin closed, and value len(edges) - 1 nulls
    and non-finite numbers); ``rows``: training rows per value; ``mixtures``: value -> its mixture (a value held
    by too few rows has none)."""

    kind: str
    rows: np.ndarray
    mixtures: dict
    edges: np.ndarray | None = None
    non_finite: bool = False  # bins: whether the last value holds NaN or infinities besides nulls

    @classmethod
    def from_json(cls, entry: dict, class_index: int) -> "NativeValues":
        per_class = entry["classes"][class_index]
        edges = np.asarray(entry["edges"], dtype=np.float64) if entry.get("kind") == "bins" else None
        return cls(entry.get("kind", "categories"), np.asarray(per_class["rows"], dtype=np.int64),
                   {int(v): GaussianMixture.from_json(m) for v, m in per_class["values"].items()}, edges,
                   bool(entry.get("non_finite", False)))


class MixtureSampler:
    """Per-class mixtures from bundle.json's ``sampler.mixture``."""

    def __init__(self, mixtures: list[GaussianMixture], class_counts: list[int]):
        self.mixtures = mixtures
        counts = np.asarray(class_counts, dtype=np.float64)
        self.log_class_prior = np.log(counts / counts.sum())

    @classmethod
    def from_json(cls, d: dict, class_counts: list[int]) -> "MixtureSampler":
        return cls([GaussianMixture.from_json(m) for m in d["classes"]], class_counts)

    def sample(self, class_index: int, n: int, rng: np.random.Generator, temperature: float = 1.0) -> np.ndarray:
        return self.mixtures[class_index].sample(n, rng, temperature)

    def classify(self, z: np.ndarray) -> np.ndarray:
        """The most probable class of each z (class prior times that class's mixture density)."""
        scores = np.stack([m.log_prob(z) for m in self.mixtures], axis=1) + self.log_class_prior
        return scores.argmax(1)


def perturb_latent(mu: np.ndarray, logvar: np.ndarray, per_example: int, noise: float,
                   rng: np.random.Generator) -> np.ndarray:
    """``per_example`` draws around each row: z = mu + noise * sigma * eps, rows grouped by source, (n*k, d)."""
    mu_r = np.repeat(mu, per_example, axis=0)
    sigma_r = np.repeat(np.exp(0.5 * logvar), per_example, axis=0)
    eps = standard_normal(rng, mu_r.shape)
    return (mu_r + noise * sigma_r * eps).astype(np.float32)


def interpolate_latent(mu_a: np.ndarray, mu_b: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` evenly spaced points from each a to its b (both ends included): z (n*steps, d), alpha (n*steps,)."""
    alpha = np.linspace(0.0, 1.0, steps, dtype=np.float32)
    z = mu_a[:, None, :] * (1 - alpha)[None, :, None] + mu_b[:, None, :] * alpha[None, :, None]
    return z.reshape(-1, mu_a.shape[1]).astype(np.float32), np.tile(alpha, mu_a.shape[0])
