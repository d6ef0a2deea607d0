"""Fit the per-class latent mixture that ``augment generate`` samples from by default.

For each class, take its training rows' posterior means, or draws z ~ q(z | x, y) (the aggregated posterior of
that class), and fit a Gaussian mixture (scikit-learn) with up to ``max_components`` components, one per 25
rows at most. The result is plain JSON: weights, means and standard deviations (diagonal) or Cholesky factors
(full), read by ``augment.sampler.MixtureSampler`` with numpy alone.

Defaults by modality (``TrainConfig.resolved_mixture``), measured on the shared data:
- tables: 100 full components fitted to the posterior *means*, each inflated by half its rows' mean posterior
  variance in classes of at least INFLATE_MIN_ROWS rows (docs/benchmarks.md, "The quality benchmark": on bank
  the DCR median ratio synthetic / held-out 0.99 -> 1.06, detection AUC 0.610 -> 0.587 (the goal, 0.58, not
  quite met), column shapes 0.985 -> 0.991, TSTR unchanged; on airbnb DCR 1.07 -> 1.09, fidelity unchanged or
  better). Before that, 50 components without inflation: bank marketing's aggregated posterior has
  dimensions far narrower than the prior (posterior standard deviations of 0.02 next to 1.0); fitted to
  posterior draws, a mixture smears across them whatever its size (10 to 400 components, diagonal or full:
  TSTR ROC AUC 0.976-0.979 of TRTR in a quick script), while the means keep the structure the decoder reads:
  0.982-0.985 with 50 or 100 full components (0.976 with 10, 0.967 with 50 diagonal ones), detection AUC 0.58
  instead of 0.63; ``augment evaluate`` on the bank split: 0.983 and 0.613 (docs/benchmarks.md);
- images: 10 full components fitted to posterior draws. MNIST: TSTR accuracy 0.978 of TRTR and no privacy
  flag, against 0.970 and synthetic images flagged as too close to the training set with 50 diagonal ones.
"""

from __future__ import annotations

import numpy as np
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

__all__ = ["INFLATE_MIN_ROWS", "NATIVE_MIN_ROWS", "NATIVE_BINS", "fit_class_mixtures", "fit_value_mixtures"]

MAX_ROWS_PER_CLASS = 20_000
MIN_ROWS_PER_COMPONENT = 25
# Training inflates only classes of at least this many rows (50 components' worth): on airbnb inflating its
# 48-row class too (one component) cut that class's synthetic-trained ROC AUC from 0.80 to 0.74 on its 60 real rows.
INFLATE_MIN_ROWS = 1250
# --condition-on: a value of a class gets its own latent mixture from this many training rows (one component)
NATIVE_MIN_ROWS = MIN_ROWS_PER_COMPONENT
NATIVE_MAX_COMPONENTS = 10  # full components of one value's mixture (docs/generate.md: as good as 20-40)
NATIVE_BINS = 20  # a number column conditioned on is cut at its 5% quantiles (a bin per 5% of the rows)


def fit_class_mixtures(mu: np.ndarray, logvar: np.ndarray, y_index: np.ndarray, n_classes: int,
                       max_components: int, seed: int, covariance: str = "full", fit_on: str = "samples",
                       inflate: float = 0.0, inflate_min_var: float = 0.0, inflate_min_rows: int = 0) -> dict:
    """``fit_on``: "samples" (z ~ q(z | x, y) per row) or "means" (the posterior means alone).

    ``inflate`` > 0 adds that share of each component's mean posterior variance (its rows' exp(logvar),
    weighted by responsibility) to the component's covariance: fitted to means, the mixture otherwise leaves
    out the encoder's own spread around each row. Experiments (benchmarks/bench_mixture.py, not TrainConfig):
    ``inflate_min_var`` inflates only where that mean posterior variance is at least this (the dimensions the
    encoder leaves near the prior), ``inflate_min_rows`` only the classes with at least this many rows.
    """
    if covariance not in ("diag", "full"):
        raise ValueError(f"covariance must be diag or full, got {covariance!r}")
    if fit_on not in ("samples", "means"):
        raise ValueError(f"fit_on must be samples or means, got {fit_on!r}")
    rng = np.random.default_rng(seed)
    classes = []
    for c in range(n_classes):
        rows = np.flatnonzero(y_index == c)
        if len(rows) > MAX_ROWS_PER_CLASS:
            rows = np.sort(rng.choice(rows, MAX_ROWS_PER_CLASS, replace=False))
        var = np.exp(logvar[rows]).astype(np.float64)
        if fit_on == "means":
            z = mu[rows].astype(np.float64)
        else:  # small classes: several posterior draws per row so the covariance is well determined
            reps = max(1, int(np.ceil(200 / max(1, len(rows)))))
            m = np.repeat(mu[rows], reps, axis=0).astype(np.float64)
            s = np.repeat(np.exp(0.5 * logvar[rows]), reps, axis=0).astype(np.float64)
            z = m + s * rng.standard_normal(m.shape)
            var = np.repeat(var, reps, axis=0)
        k = int(max(1, min(max_components, len(rows) // MIN_ROWS_PER_COMPONENT)))
        # Fitted to the means, EM stops at a 1e-2 gain in mean log-likelihood: on bank 27 iterations and 7 s
        # for the 20,000-row class instead of 77 and 25 s at 1e-3, with the same TSTR and detection.
        tol = 1e-2 if fit_on == "means" else 1e-3
        gm = GaussianMixture(n_components=k, covariance_type=covariance, reg_covar=1e-4, random_state=seed,
                             max_iter=200, tol=tol)
        with threadpool_limits(limits=1, user_api="blas"):  # one BLAS thread ran 20% faster than two here
            gm.fit(z)
            resp = gm.predict_proba(z) if inflate > 0 and len(rows) >= inflate_min_rows else None  # (n, k)
        if resp is not None:
            spread = resp.T @ var / np.maximum(resp.sum(0), 1e-12)[:, None]  # (k, d)
            spread = np.where(spread >= inflate_min_var, spread, 0.0)
            if covariance == "diag":
                gm.covariances_ = gm.covariances_ + inflate * spread
            else:
                gm.covariances_ = gm.covariances_ + inflate * spread[:, :, None] * np.eye(z.shape[1])
        fitted = {"weights": gm.weights_.tolist(), "means": gm.means_.tolist()}
        if covariance == "diag":
            fitted["scales"] = np.sqrt(gm.covariances_).tolist()
        else:
            fitted["cholesky"] = np.linalg.cholesky(gm.covariances_).tolist()
        classes.append(fitted)
    return {"kind": "gaussian_mixture", "covariance": covariance, "classes": classes}


def fit_value_mixtures(mu: np.ndarray, logvar: np.ndarray, y_index: np.ndarray, codes: np.ndarray, n_classes: int,
                       n_values: int, max_components: int, seed: int, inflate: float) -> list[dict]:
    """``--condition-on``: per class, a mixture fitted to the posterior means of the class's rows holding each
    value of one column (``codes``: a category index, or a bin of a number column), by the class mixture's
    rules (one component per 25 rows at most, inflated in groups of at least INFLATE_MIN_ROWS rows) but with at
    most NATIVE_MAX_COMPONENTS full components, stored as packed lower triangles rounded to 7 digits; a value
    held by fewer than NATIVE_MIN_ROWS rows of a class gets none. Per class: {"rows": [rows per value],
    "values": {str(value): mixture}}. On bank's ``age >= 59`` (docs/generate.md) 10 full components scored
    column shapes 0.978 against 0.976 with 20, 0.975 with 40 and 0.955 with 100 diagonal ones (whose
    smearing across the latent dimensions put the ages off: 0.84 for that column)."""
    out = []
    for c in range(n_classes):
        mine = y_index == c
        rows = np.bincount(codes[mine], minlength=n_values)
        values = {}
        for v in np.flatnonzero(rows >= NATIVE_MIN_ROWS):
            pick = mine & (codes == v)
            fitted = fit_class_mixtures(mu[pick], logvar[pick], np.zeros(int(pick.sum()), np.int64), 1,
                                        min(max_components, NATIVE_MAX_COMPONENTS), seed, "full", "means",
                                        inflate=inflate, inflate_min_rows=INFLATE_MIN_ROWS)["classes"][0]
            chol = np.asarray(fitted.pop("cholesky"))
            tril = chol[:, *np.tril_indices(chol.shape[1])]
            values[str(int(v))] = {"weights": _round(fitted["weights"]), "means": _round(fitted["means"]),
                                   "cholesky_tril": _round(tril)}
        out.append({"rows": rows.tolist(), "values": values})
    return out


def _round(x) -> list:
    """Numbers at 7 significant digits (float32's precision, which sampling uses): bundle.json stays small."""
    return np.vectorize(lambda v: float(f"{v:.7g}"), otypes=[float])(np.asarray(x, dtype=np.float64)).tolist()
