"""Fit the per-class latent mixture that ``augment generate`` samples from by default.

For each class, draw z ~ q(z | x, y) for its training rows (the aggregated posterior of that class) and fit
a full-covariance Gaussian mixture (scikit-learn). The result is plain JSON: weights, means and the lower
Cholesky factors of the covariances, read by ``augment.sampler.MixtureSampler`` with numpy alone.
"""

from __future__ import annotations

import numpy as np
from sklearn.mixture import GaussianMixture

__all__ = ["fit_class_mixtures"]

MAX_ROWS_PER_CLASS = 20_000
MIN_ROWS_PER_COMPONENT = 25


def fit_class_mixtures(mu: np.ndarray, logvar: np.ndarray, y_index: np.ndarray, n_classes: int,
                       max_components: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    classes = []
    for c in range(n_classes):
        rows = np.flatnonzero(y_index == c)
        if len(rows) > MAX_ROWS_PER_CLASS:
            rows = np.sort(rng.choice(rows, MAX_ROWS_PER_CLASS, replace=False))
        # Small classes: several posterior draws per row so the covariance is well determined.
        reps = max(1, int(np.ceil(200 / max(1, len(rows)))))
        m = np.repeat(mu[rows], reps, axis=0).astype(np.float64)
        s = np.repeat(np.exp(0.5 * logvar[rows]), reps, axis=0).astype(np.float64)
        z = m + s * rng.standard_normal(m.shape)
        k = int(max(1, min(max_components, len(rows) // MIN_ROWS_PER_COMPONENT)))
        gm = GaussianMixture(n_components=k, covariance_type="full", reg_covar=1e-4, random_state=seed, max_iter=200)
        gm.fit(z)
        chol = np.linalg.cholesky(gm.covariances_)
        classes.append({"weights": gm.weights_.tolist(), "means": gm.means_.tolist(), "cholesky": chol.tolist()})
    return {"kind": "gaussian_mixture", "covariance": "full", "classes": classes}
