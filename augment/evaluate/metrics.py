"""Fidelity: how close the synthetic rows are to the real ones, column by column, pair by pair, and as a whole.

- column shapes: per column 1 - KS statistic (numeric, on non-null values) or 1 - total variation distance
  (categorical, null counted as a category); the score is their mean. 1 = identical marginals.
- column pair trends: per pair of columns 1 - |r_real - r_syn| / 2 for two numeric columns (Pearson r on rows
  where both are present) and 1 - |V_real - V_syn| otherwise (Cramér's V, without bias correction; a numeric
  column in a mixed pair is cut into ``PAIR_BINS`` quantile bins of the real data, null its own bin). The
  score is their mean. A pair whose real association is undefined (a constant column) is skipped and listed.
- detection AUC: a cross-validated HistGradientBoosting classifier tells real rows from synthetic ones on a
  balanced, seeded subsample; 0.5 = indistinguishable, 1.0 = trivially told apart.

Utility (train on synthetic, test on real) lives in ``utility.py`` and privacy in ``privacy.py``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from augment.evaluate.data import EvalSchema, limit_threads, skip

__all__ = [
    "PAIR_BINS",
    "DETECTION_MIN_ROWS",
    "ks_statistic",
    "tvd",
    "cramers_v",
    "contingency",
    "column_shapes",
    "column_pair_trends",
    "association_matrix",
    "detection_auc",
    "detection_model",
]

PAIR_BINS = 10  # quantile bins for the numeric side of a numeric-categorical pair
DETECTION_MIN_ROWS = 20  # per side; fewer and the 5-fold detection AUC is skipped


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs (NaN dropped)."""
    a = np.sort(np.asarray(a, dtype=np.float64)[~np.isnan(a)])
    b = np.sort(np.asarray(b, dtype=np.float64)[~np.isnan(b)])
    if a.size == 0 or b.size == 0:
        raise ValueError("KS needs at least one non-null value on each side")
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / a.size
    cdf_b = np.searchsorted(b, grid, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


def tvd(a, b) -> float:
    """Total variation distance between the category frequencies of two sequences: 0.5 * sum |p - q|."""
    p = pd.Series(a).value_counts(normalize=True)
    q = pd.Series(b).value_counts(normalize=True)
    if p.empty or q.empty:
        raise ValueError("TVD needs at least one value on each side")
    p, q = p.align(q, fill_value=0.0)
    return float(0.5 * np.abs(p - q).sum())


def contingency(x, y) -> np.ndarray:
    """Counts of each (x, y) category pair; rows and columns are the categories that occur."""
    cx, _ = pd.factorize(pd.Series(x), use_na_sentinel=False)
    cy, _ = pd.factorize(pd.Series(y), use_na_sentinel=False)
    kx, ky = int(cx.max()) + 1 if cx.size else 0, int(cy.max()) + 1 if cy.size else 0
    return np.bincount(cx * ky + cy, minlength=kx * ky).reshape(kx, ky)


def cramers_v(table: np.ndarray) -> float:
    """Cramér's V of a contingency table: sqrt(chi2 / (n * (min(r, c) - 1))), no bias correction.

    Empty rows and columns are dropped first; a table with a single row or column has V = 0.
    """
    t = np.asarray(table, dtype=np.float64)
    t = t[t.sum(axis=1) > 0][:, t.sum(axis=0) > 0]
    n = t.sum()
    k = min(t.shape) if t.size else 0
    if n == 0 or k < 2:
        return 0.0
    expected = np.outer(t.sum(axis=1), t.sum(axis=0)) / n
    chi2 = float(((t - expected) ** 2 / expected).sum())
    return float(np.sqrt(min(1.0, chi2 / (n * (k - 1)))))


# ----------------------------------------------------------------------------------------------- shapes
def column_shapes(real: pd.DataFrame, synthetic: pd.DataFrame, schema: EvalSchema) -> dict:
    """Per-column similarity of the marginals and their mean (see the module docstring)."""
    columns: dict[str, dict] = {}
    for name in schema.features:
        kind = schema.kind(name)
        if kind == "numeric":
            r, s = real[name].to_numpy(), synthetic[name].to_numpy()
            entry = {
                "kind": kind,
                "metric": "KS",
                "null_share_real": float(np.isnan(r).mean()) if r.size else None,
                "null_share_synthetic": float(np.isnan(s).mean()) if s.size else None,
            }
            r_ok, s_ok = (~np.isnan(r)).sum(), (~np.isnan(s)).sum()
            if r_ok == 0 and s_ok == 0:
                columns[name] = {**entry, **skip("no non-null values on either side")}
                continue
            # One side all null while the other is not: as far apart as marginals get.
            stat = 1.0 if (r_ok == 0 or s_ok == 0) else ks_statistic(r, s)
        else:
            entry = {"kind": kind, "metric": "TVD"}
            if len(real) == 0 or len(synthetic) == 0:
                columns[name] = {**entry, **skip("no rows on one side")}
                continue
            stat = tvd(real[name], synthetic[name])
        columns[name] = {**entry, "statistic": stat, "score": 1.0 - stat}
    scores = [c["score"] for c in columns.values() if "score" in c]
    if not scores:
        return {"score": skip("no column could be compared"), "columns": columns}
    return {"score": float(np.mean(scores)), "columns": columns}


# ----------------------------------------------------------------------------------------------- pairs
def _binned(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    codes = np.searchsorted(edges, values, side="right").astype(np.int64)
    codes[np.isnan(values)] = -1  # null is its own bin
    return codes


def _pair_codes(frame: pd.DataFrame, name: str, kind: str, edges: dict) -> np.ndarray:
    if kind == "numeric":
        return _binned(frame[name].to_numpy(), edges[name])
    return frame[name].to_numpy()


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    ok = ~(np.isnan(x) | np.isnan(y))
    if ok.sum() < 3:
        return None
    x, y = x[ok], y[ok]
    if np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def association_matrix(frame: pd.DataFrame, schema: EvalSchema, edges: dict) -> dict[tuple[str, str], float | None]:
    """Association of every feature pair: Pearson r (numeric pairs) or Cramér's V; None when undefined."""
    out: dict[tuple[str, str], float | None] = {}
    for a, b in itertools.combinations(schema.features, 2):
        ka, kb = schema.kind(a), schema.kind(b)
        if ka == kb == "numeric":
            out[(a, b)] = _pearson(frame[a].to_numpy(), frame[b].to_numpy())
        else:
            if len(frame) == 0:
                out[(a, b)] = None
                continue
            t = contingency(_pair_codes(frame, a, ka, edges), _pair_codes(frame, b, kb, edges))
            out[(a, b)] = cramers_v(t)
    return out


def quantile_edges(real: pd.DataFrame, schema: EvalSchema, bins: int = PAIR_BINS) -> dict[str, np.ndarray]:
    """Inner bin edges of each numeric column at the real data's quantiles (duplicates merged)."""
    edges = {}
    for name in schema.numeric:
        v = real[name].to_numpy()
        v = v[~np.isnan(v)]
        edges[name] = np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1])) if v.size else np.array([])
    return edges


def column_pair_trends(real: pd.DataFrame, synthetic: pd.DataFrame, schema: EvalSchema, *, edges=None) -> dict:
    """Per-pair association similarity and their mean (see the module docstring)."""
    if len(schema.features) < 2:
        return {"score": skip("fewer than two feature columns"), "pairs": []}
    edges = edges if edges is not None else quantile_edges(real, schema)
    assoc_r = association_matrix(real, schema, edges)
    assoc_s = association_matrix(synthetic, schema, edges)
    pairs, skipped = [], []
    for (a, b), r in assoc_r.items():
        numeric = schema.kind(a) == schema.kind(b) == "numeric"
        if r is None:
            skipped.append({"columns": [a, b], "reason": "association undefined in the real data (a constant column or too few rows)"})
            continue
        s = assoc_s[(a, b)]
        s_val = 0.0 if s is None else s  # a collapsed synthetic column carries no association
        score = 1.0 - abs(r - s_val) / 2.0 if numeric else 1.0 - abs(r - s_val)
        pairs.append(
            {"columns": [a, b], "metric": "pearson" if numeric else "cramers_v", "real": r, "synthetic": s, "score": score}
        )
    result = {"pairs": pairs, "skipped_pairs": skipped}
    if not pairs:
        result["score"] = skip("no pair has a defined association in the real data")
    else:
        result["score"] = float(np.mean([p["score"] for p in pairs]))
    return result


# ----------------------------------------------------------------------------------------------- detection
# The gradient-boosted trees of the evaluation, defined once: the detection classifier (real vs synthetic) and
# the table utility classifier (TSTR, TRTR, the sweep) differ only in their rounds (docs/evaluate.md).
BOOSTED_TREES = {"learning_rate": 0.1, "max_leaf_nodes": 31, "early_stopping": False}
DETECTION_ROUNDS = 100
UTILITY_ROUNDS = 200


def boosted_trees(seed: int, rounds: int, categorical_mask=None):
    """The evaluation's fixed HistGradientBoostingClassifier; categorical columns by their mask, if any."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    mask = categorical_mask if categorical_mask is not None and categorical_mask.any() else None
    return HistGradientBoostingClassifier(max_iter=rounds, categorical_features=mask, random_state=seed, **BOOSTED_TREES)


def detection_model(seed: int, categorical_mask=None):
    """The fixed real-vs-synthetic classifier (documented in docs/evaluate.md)."""
    return boosted_trees(seed, DETECTION_ROUNDS, categorical_mask)


def detection_auc(real_x: np.ndarray, synth_x: np.ndarray, *, seed: int, cap: int, categorical_mask=None, folds: int = 5,
                  threads: int = 1) -> dict:
    """ROC AUC of a ``folds``-fold cross-validated classifier on a balanced subsample (``cap`` rows per side).

    ``real_x`` / ``synth_x`` are numeric matrices (categorical columns as integer codes flagged by
    ``categorical_mask``; NaN allowed). Identical rows share a fold: a synthetic copy of a real row in the
    training folds would otherwise teach the classifier the opposite label for that row and push the AUC
    below 0.5 (identical data would score about 0.04 instead of 0.5).
    """
    with limit_threads(threads):
        return _detection_auc(real_x, synth_x, seed, cap, categorical_mask, folds)


def _detection_auc(real_x, synth_x, seed, cap, categorical_mask, folds) -> dict:
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict

    m = min(len(real_x), len(synth_x), cap)
    if m < DETECTION_MIN_ROWS:
        return skip(f"needs at least {DETECTION_MIN_ROWS} real and {DETECTION_MIN_ROWS} synthetic rows, "
                    f"got {len(real_x)} and {len(synth_x)}")
    rng = np.random.default_rng(seed)
    ri = rng.choice(len(real_x), m, replace=False)
    si = rng.choice(len(synth_x), m, replace=False)
    x = np.concatenate([real_x[ri], synth_x[si]])
    y = np.concatenate([np.zeros(m, np.int64), np.ones(m, np.int64)])
    rows = np.ascontiguousarray(np.nan_to_num(x, nan=np.inf))
    _, groups = np.unique(rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel(), return_inverse=True)
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    proba = cross_val_predict(detection_model(seed, categorical_mask), x, y, groups=groups, cv=cv, method="predict_proba")[:, 1]
    return {"auc": float(roc_auc_score(y, proba)), "rows_per_side": int(m), "folds": folds}
