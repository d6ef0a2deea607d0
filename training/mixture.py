"""Fit the per-class latent mixture that ``augment generate`` samples from by default.

For each class, draw z ~ q(z | x, y) for its training rows (the aggregated posterior of that class) and fit
a diagonal-covariance Gaussian mixture (scikit-learn) with up to ``max_components`` components, one per 25 rows
at most. The result is plain JSON: weights, means and standard deviations, read by
``augment.sampler.MixtureSampler`` with numpy alone.

Why diagonal and many: the aggregated posterior has dimensions far narrower than the prior (posterior standard
deviations of 0.02 next to 1.0 on bank marketing), and a few full-covariance components smear across them. On
the bank split, 50 diagonal components per class gave TSTR ROC AUC 0.979 of TRTR and a detection AUC of 0.60-0.62,
against 0.976 and 0.63 for 10 full ones; sampling is a gather rather than a matrix product per component.
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
        gm = GaussianMixture(n_components=k, covariance_type="diag", reg_covar=1e-4, random_state=seed, max_iter=200)
        gm.fit(z)
        classes.append({"weights": gm.weights_.tolist(), "means": gm.means_.tolist(),
                        "scales": np.sqrt(gm.covariances_).tolist()})
    return {"kind": "gaussian_mixture", "covariance": "diag", "classes": classes}
