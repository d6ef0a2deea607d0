"""Utility: does a classifier trained on synthetic rows (or on real + synthetic) do well on real test rows?

The classifiers are fixed so numbers compare across runs and models:

- tables: scikit-learn ``HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, max_leaf_nodes=31,
  early_stopping=False)``, categorical columns as native categorical features (codes fitted on the real
  training data; a category it never saw is treated as missing);
- images: scikit-learn ``MLPClassifier(hidden_layer_sizes=(256,))`` on pixels / 255, trained with Adam
  (lr 1e-3) for a fixed ``IMAGE_STEPS`` mini-batches of ``IMAGE_BATCH`` rows drawn with replacement, so
  every training set, small or large, gets the same number of steps (no torch in ``augment/``).

Scores on the real test set: accuracy, macro F1, ROC AUC (binary: the second class in label order is
positive; more classes: macro one-vs-rest) and recall per class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from augment.evaluate.data import EvalSchema, limit_threads, skip
from augment.evaluate.metrics import UTILITY_ROUNDS, boosted_trees

__all__ = [
    "IMAGE_STEPS",
    "IMAGE_BATCH",
    "TableEncoder",
    "fit_classifier",
    "score_classifier",
    "tstr_trtr",
    "augmentation_sweep",
    "parse_real_sizes",
]

IMAGE_STEPS = 2000
IMAGE_BATCH = 128
MAX_CATEGORIES = 250  # more categories than this: the codes are used as a plain number


class TableEncoder:
    """Numeric columns as float (NaN for null) and categorical columns as integer codes of the real data."""

    def __init__(self, real: pd.DataFrame, schema: EvalSchema):
        self.schema = schema
        self.categories = {c: {v: i for i, v in enumerate(pd.unique(real[c]))} for c in schema.categorical}

    @property
    def categorical_mask(self) -> np.ndarray:
        return np.array(
            [name in self.categories and len(self.categories[name]) <= MAX_CATEGORIES for name in self.schema.features]
        )

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        cols = []
        for name in self.schema.features:
            if name in self.categories:
                cols.append(frame[name].map(self.categories[name]).to_numpy(dtype=np.float64, na_value=np.nan))
            else:
                cols.append(frame[name].to_numpy(dtype=np.float64))
        return np.column_stack(cols) if cols else np.zeros((len(frame), 0))


def _table_model(seed: int, categorical_mask):
    return boosted_trees(seed, UTILITY_ROUNDS, categorical_mask)


def _fit_image_mlp(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int, steps: int):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier(hidden_layer_sizes=(256,), batch_size=IMAGE_BATCH, learning_rate_init=1e-3, random_state=seed)
    rng = np.random.default_rng(seed)
    classes = np.arange(n_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(steps):
            idx = rng.integers(0, len(x), IMAGE_BATCH)
            model.partial_fit(x[idx], y[idx], classes=classes)
    return model


def fit_classifier(x: np.ndarray, y: np.ndarray, *, modality: str, n_classes: int, seed: int, categorical_mask=None,
                   image_steps: int = IMAGE_STEPS, threads: int = 1):
    """Train the fixed classifier of this modality (see the module docstring)."""
    with limit_threads(threads):
        if modality == "image":
            return _fit_image_mlp(x, y, n_classes, seed, image_steps)
        return _table_model(seed, categorical_mask).fit(x, y)


def _full_proba(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    # A model that never saw some class (a tiny subset) gives it probability 0.
    proba = np.zeros((len(x), n_classes))
    proba[:, np.asarray(model.classes_, dtype=np.int64)] = model.predict_proba(x)
    return proba


def score_classifier(model, x: np.ndarray, y: np.ndarray, classes: tuple) -> dict:
    """Accuracy, macro F1, ROC AUC and per-class recall on (x, y); undefined parts are skipped with a reason."""
    from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score

    k = len(classes)
    proba = _full_proba(model, x, k)
    pred = proba.argmax(axis=1)
    present = np.unique(y)
    out = {
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
    }
    if len(present) < 2:
        out["roc_auc"] = skip("the test set holds a single class")
    elif k == 2:
        out["roc_auc"] = float(roc_auc_score(y, proba[:, 1]))
    elif len(present) < k:
        out["roc_auc"] = skip("macro one-vs-rest ROC AUC needs every class in the test set; missing: "
                              + ", ".join(str(classes[i]) for i in range(k) if i not in present))
    else:
        out["roc_auc"] = float(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    recalls = recall_score(y, pred, labels=np.arange(k), average=None, zero_division=0)
    out["per_class_recall"] = {
        str(c): (float(recalls[i]) if i in present else skip("class absent from the test set"))
        for i, c in enumerate(classes)
    }
    return out


def _ratios(tstr: dict, trtr: dict) -> dict:
    out = {}
    for key in ("accuracy", "macro_f1", "roc_auc"):
        a, b = tstr.get(key), trtr.get(key)
        if isinstance(a, float) and isinstance(b, float) and b > 0:
            out[key] = a / b
        else:
            out[key] = skip(f"{key} missing or zero on one side")
    return out


def _cap(x, y, cap: int, rng) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= cap:
        return x, y
    idx = np.sort(rng.choice(len(x), cap, replace=False))
    return x[idx], y[idx]


def tstr_trtr(train, synthetic, test, *, schema: EvalSchema, seed: int, cap: int, categorical_mask=None,
              image_steps: int = IMAGE_STEPS, threads: int = 1) -> dict:
    """Train on real (TRTR) and on synthetic (TSTR), each capped at ``cap`` rows, both scored on real test.

    ``train`` / ``synthetic`` / ``test`` are (x, y) pairs of model matrices and class indices.
    """
    rng = np.random.default_rng(seed)
    k = len(schema.classes)
    fit = lambda x, y: fit_classifier(x, y, modality=schema.modality, n_classes=k, seed=seed, categorical_mask=categorical_mask,
                                      image_steps=image_steps, threads=threads)
    x_test, y_test = test
    if len(x_test) == 0:
        return skip("the real test set is empty")
    out = {}
    for name, (x, y) in (("trtr", train), ("tstr", synthetic)):
        if len(np.unique(y)) < 2:
            out[name] = skip(f"the {'real training' if name == 'trtr' else 'synthetic'} data holds fewer than two classes")
            continue
        x, y = _cap(x, y, cap, rng)
        out[name] = {**score_classifier(fit(x, y), x_test, y_test, schema.classes), "train_rows": int(len(x))}
    if isinstance(out.get("tstr"), dict) and "accuracy" in out["tstr"] and "accuracy" in out.get("trtr", {}):
        out["ratio"] = _ratios(out["tstr"], out["trtr"])
    else:
        out["ratio"] = skip("TSTR or TRTR was skipped")
    return out


# ----------------------------------------------------------------------------------------------- sweep
def parse_real_sizes(spec: str) -> list[str]:
    """"1%,10%,100%" (fractions of the training set) or "20/class" (rows per class), comma separated; "none": no sweep."""
    if spec.strip().lower() == "none":
        return []
    items = [s.strip() for s in spec.split(",") if s.strip()]
    for s in items:
        # explicit checks, not `assert`: python -O strips asserts, and "0%" or "-3/class" would then pass
        try:
            if s.endswith("%"):
                ok = 0 < float(s[:-1]) <= 100
            elif s.endswith("/class"):
                ok = int(s[: -len("/class")]) >= 1
            else:
                ok = False
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"real subset size {s!r}: use a percentage like 10% (0 < p <= 100), N/class like 20/class, "
                             "or none") from None
    if not items:
        raise ValueError("no real subset sizes given")
    return items


def _subset(y: np.ndarray, size: str, k: int, rng) -> np.ndarray:
    """Stratified subset indices: a percentage of each class (at least 2 rows of each) or N rows per class."""
    chosen = []
    for c in range(k):
        idx = np.flatnonzero(y == c)
        if size.endswith("%"):
            n = max(min(2, len(idx)), int(round(len(idx) * float(size[:-1]) / 100)))
        else:
            n = min(len(idx), int(size[: -len("/class")]))
        chosen.append(rng.choice(idx, n, replace=False))
    return np.sort(np.concatenate(chosen))


def _synthetic_like(y_real: np.ndarray, y_syn: np.ndarray, multiplier: int, rng) -> np.ndarray | str:
    """Synthetic indices with ``multiplier`` times the real subset's count of each class, or why not."""
    chosen = []
    for c, n_real in zip(*np.unique(y_real, return_counts=True)):
        pool = np.flatnonzero(y_syn == c)
        need = int(n_real) * multiplier
        if need > len(pool):
            return f"needs {need} synthetic rows of class index {c}, have {len(pool)}"
        chosen.append(rng.choice(pool, need, replace=False))
    return np.concatenate(chosen) if chosen else np.array([], np.int64)


def augmentation_sweep(train, synthetic, test, *, schema: EvalSchema, sizes: list[str], multipliers: list[int],
                       seeds: list[int], cap: int, categorical_mask=None, image_steps: int = IMAGE_STEPS,
                       threads: int = 1) -> dict:
    """Real subsets plus synthetic at each multiplier, scored on the real test set; averaged over seeds.

    Each seed draws its own real subset and synthetic rows. A cell whose training set would exceed ``cap``
    rows, or needs more synthetic rows than there are, is skipped with the reason.
    """
    (xr, yr), (xs, ys), (xt, yt) = train, synthetic, test
    k = len(schema.classes)
    metric = "roc_auc" if k == 2 else "accuracy"
    cells = []
    for size in sizes:
        for mult in multipliers:
            runs, reason = [], None
            for seed in seeds:
                rng = np.random.default_rng([seed, 7])
                ri = _subset(yr, size, k, rng)
                si = _synthetic_like(yr[ri], ys, mult, rng) if mult else np.array([], np.int64)
                if isinstance(si, str):
                    reason = si
                    break
                if len(ri) + len(si) > cap:
                    reason = f"{len(ri) + len(si)} training rows exceed the cap of {cap}"
                    break
                x, y = np.concatenate([xr[ri], xs[si]]), np.concatenate([yr[ri], ys[si]])
                model = fit_classifier(x, y, modality=schema.modality, n_classes=k, seed=seed, categorical_mask=categorical_mask,
                                       image_steps=image_steps, threads=threads)
                runs.append({**score_classifier(model, xt, yt, schema.classes), "real_rows": int(len(ri)), "synthetic_rows": int(len(si))})
            cell = {"real": size, "synthetic_multiplier": mult}
            if reason:
                cells.append({**cell, **skip(reason)})
                continue
            for key in ("accuracy", "macro_f1", "roc_auc"):
                vals = [r[key] for r in runs]
                cell[key] = float(np.mean(vals)) if all(isinstance(v, float) for v in vals) else skip(f"{key} undefined for some seed")
            cell["real_rows"], cell["synthetic_rows"] = runs[0]["real_rows"], runs[0]["synthetic_rows"]
            cells.append(cell)
    return {"metric": metric, "seeds": list(seeds), "cells": cells, "best": _best(cells, sizes, metric)}


def _best(cells: list[dict], sizes: list[str], metric: str) -> dict:
    """Per real size: the multiplier with the highest score, and its gain over the real subset alone."""
    best = {}
    for size in sizes:
        row = [c for c in cells if c["real"] == size and isinstance(c.get(metric), float)]
        base = [c for c in row if c["synthetic_multiplier"] == 0]
        if not row or not base:
            best[size] = skip("the real-only cell or every cell was skipped")
            continue
        top = max(row, key=lambda c: c[metric])
        best[size] = {"multiplier": top["synthetic_multiplier"], metric: top[metric], "gain": top[metric] - base[0][metric]}
    return best
