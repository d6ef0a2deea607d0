"""The report's pictures: each function takes data and returns a matplotlib ``Figure``.

Figures are made with ``matplotlib.figure.Figure`` directly, never through pyplot: nothing is registered with
pyplot's global state and the process's backend is left as the user has it (a notebook keeps its inline
backend); ``Figure.savefig`` renders with Agg on its own.

Every figure carries a title, axis labels and a legend (or a colour bar) so it reads on its own.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = [
    "column_scores_figure",
    "worst_columns_figure",
    "association_difference_figure",
    "dcr_figure",
    "sweep_figure",
    "sample_grid_figure",
    "latent_map_figure",
    "interpolation_figure",
]

REAL, SYNTH = "#1f77b4", "#ff7f0e"


def column_scores_figure(shapes: dict) -> Figure:
    cols = [(n, c["score"], c["kind"]) for n, c in shapes["columns"].items() if "score" in c]
    cols.sort(key=lambda t: t[1])
    fig = Figure(figsize=(8, 0.35 * len(cols) + 1.5))
    ax = fig.subplots()
    colors = [REAL if k == "numeric" else SYNTH for _, _, k in cols]
    ax.barh([n for n, _, _ in cols], [s for _, s, _ in cols], color=colors)
    low = min([s for _, s, _ in cols] + [1.0])
    ax.set_xlim(max(0.0, np.floor((low - 0.02) * 20) / 20), 1.0)  # zoom on the range the scores span
    ax.set_xlabel("score (1 - KS for numeric, 1 - TVD for categorical; 1 = identical)")
    ax.set_ylabel("column")
    ax.set_title(f"Column shapes per column (mean {shapes['score']:.3f})" if isinstance(shapes["score"], float) else "Column shapes")
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=REAL, label="numeric (KS)"), Patch(color=SYNTH, label="categorical (TVD)")], loc="lower right")
    fig.tight_layout()
    return fig


def worst_columns_figure(real: pd.DataFrame, synth: pd.DataFrame, shapes: dict, kinds: dict, n: int = 6) -> Figure:
    cols = sorted(((c["score"], name) for name, c in shapes["columns"].items() if "score" in c))[:n]
    ncols = min(3, len(cols))
    nrows = int(np.ceil(len(cols) / ncols))
    fig = Figure(figsize=(5.2 * ncols, 3.8 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (score, name) in zip(axes.flat, cols):
        if kinds[name] == "numeric":
            r, s = real[name].dropna().to_numpy(), synth[name].dropna().to_numpy()
            both = np.concatenate([r, s])
            lo, hi = np.quantile(both, [0.01, 0.99]) if both.size else (0, 1)
            if lo == hi:
                lo, hi = lo - 0.5, hi + 0.5
            bins = np.linspace(lo, hi, 41)
            counts, _, _ = ax.hist(np.clip(r, lo, hi), bins=bins, density=True, alpha=0.55, color=REAL, label="real")
            ax.hist(np.clip(s, lo, hi), bins=bins, density=True, alpha=0.55, color=SYNTH, label="synthetic")
            ax.set_xlabel(f"{name} (1st-99th percentile, ends clipped)")
            peaked = counts.max() * (bins[1] - bins[0]) > 0.5  # one bin holds most rows (zero-inflated)
            if peaked:
                ax.set_yscale("log")  # else the rest of the distribution is invisible
            ax.set_ylabel("density (log scale)" if peaked else "density")
        else:
            p = real[name].value_counts(normalize=True)
            q = synth[name].value_counts(normalize=True)
            cats = list(p.index[:10]) + [c for c in q.index[:10] if c not in p.index[:10]][:2]
            x = np.arange(len(cats))
            ax.bar(x - 0.2, [p.get(c, 0) for c in cats], 0.4, color=REAL, label="real")
            ax.bar(x + 0.2, [q.get(c, 0) for c in cats], 0.4, color=SYNTH, label="synthetic")
            ax.set_xticks(x, [str(c)[:14] for c in cats], rotation=45, ha="right", fontsize=8)
            ax.set_xlabel(name)
            ax.set_ylabel("share of rows")
        ax.set_title(f"{name}: score {score:.3f}")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(cols):]:
        ax.axis("off")
    fig.suptitle("Worst columns: real vs synthetic marginals", fontsize=13)
    fig.tight_layout()
    return fig


def association_difference_figure(trends: dict, features: list[str]) -> Figure:
    idx = {c: i for i, c in enumerate(features)}
    m = np.full((len(features), len(features)), np.nan)
    for p in trends["pairs"]:
        a, b = (idx[c] for c in p["columns"])
        s = 0.0 if p["synthetic"] is None else p["synthetic"]
        d = abs(p["real"] - s) / (2.0 if p["metric"] == "pearson" else 1.0)
        m[a, b] = m[b, a] = d
    size = max(5.0, 0.45 * len(features) + 2)
    fig = Figure(figsize=(size + 2.5, size))
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Reds", vmin=0, vmax=max(0.1, float(np.nanmax(m)) if np.isfinite(m).any() else 0.1))
    ax.set_xticks(range(len(features)), features, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(features)), features, fontsize=8)
    ax.set_xlabel("column")
    ax.set_ylabel("column")
    ax.set_title("Association difference |real - synthetic|\n(Pearson r / 2 for numeric pairs, Cramér's V otherwise)")
    fig.colorbar(im, ax=ax, label="difference (1 - pair score)")
    fig.tight_layout()
    return fig


def dcr_figure(d_syn: np.ndarray, d_hold: np.ndarray) -> Figure:
    fig = Figure(figsize=(8, 4.2))
    ax = fig.subplots()
    hi = float(np.quantile(np.concatenate([d_syn, d_hold]), 0.99)) or 1.0
    bins = np.linspace(0, hi, 50)
    ax.hist(np.clip(d_hold, 0, hi), bins=bins, alpha=0.55, color=REAL, label=f"held-out real (median {np.median(d_hold):.3f})")
    ax.hist(np.clip(d_syn, 0, hi), bins=bins, alpha=0.55, color=SYNTH, label=f"synthetic (median {np.median(d_syn):.3f})")
    ax.axvline(np.quantile(d_hold, 0.05), color="k", ls="--", label="held-out 5th percentile")
    ax.set_xlabel("distance to the closest training row (normalised feature space)")
    ax.set_ylabel("rows")
    ax.set_title("Privacy: distance to closest training record")
    ax.legend()
    fig.tight_layout()
    return fig


def sweep_figure(sweep: dict) -> Figure:
    metric = sweep["metric"]
    fig = Figure(figsize=(8, 4.2))
    ax = fig.subplots()
    sizes = list(dict.fromkeys(c["real"] for c in sweep["cells"]))
    for size in sizes:
        pts = [(c["synthetic_multiplier"], c[metric]) for c in sweep["cells"] if c["real"] == size and isinstance(c.get(metric), float)]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=f"real subset {size}")
    ax.set_xticks(sorted({c["synthetic_multiplier"] for c in sweep["cells"]}))
    ax.set_xlabel("synthetic rows added (multiple of the real subset)")
    ax.set_ylabel(f"{metric.replace('_', ' ')} on the real test set")
    ax.set_title("Augmentation sweep: real subset + synthetic")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def _mosaic(images: list[np.ndarray], per_row: int, shape) -> np.ndarray:
    c, h, w = shape
    rows = int(np.ceil(len(images) / per_row))
    out = np.ones((rows * (h + 2), per_row * (w + 2), c), np.float32)
    for i, img in enumerate(images):
        r, k = divmod(i, per_row)
        out[r * (h + 2) + 1: r * (h + 2) + 1 + h, k * (w + 2) + 1: k * (w + 2) + 1 + w] = img.reshape(c, h, w).transpose(1, 2, 0)
    return out[..., 0] if c == 1 else out


def _show(ax, mosaic, title, shape, row_labels, per_row):
    ax.imshow(mosaic, cmap="gray" if mosaic.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    h = shape[1] + 2
    ax.set_yticks([h * i + h / 2 for i in range(len(row_labels))], row_labels)
    ax.set_xticks([])
    ax.set_xlabel(f"{per_row} examples per class")
    ax.set_ylabel("class")
    ax.set_title(title)


def sample_grid_figure(real: dict, synth: dict, shape, classes: list[str], per_class: int = 8) -> Figure:
    """``real`` / ``synth``: class name -> (n, C*H*W) array in [0, 1]."""
    fig = Figure(figsize=(12, 0.7 * len(classes) + 1.6))
    axes = fig.subplots(1, 2)
    for ax, data, title in ((axes[0], real, "Real"), (axes[1], synth, "Synthetic")):
        imgs = []
        for c in classes:
            arr = data.get(c, np.zeros((0, int(np.prod(shape)))))[:per_class]
            imgs += list(arr) + [np.ones(int(np.prod(shape)))] * (per_class - len(arr))
        _show(ax, _mosaic(imgs, per_class, shape), title, shape, classes, per_class)
    fig.suptitle("Per-class samples: real vs synthetic (blank = no rows)")
    fig.tight_layout()
    return fig


def latent_map_figure(points: np.ndarray, labels: np.ndarray, classes: list[str], explained: tuple[float, float]) -> Figure:
    fig = Figure(figsize=(8, 7))
    ax = fig.subplots()
    cmap = matplotlib.colormaps.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, c in enumerate(classes):
        sel = labels == i
        ax.scatter(points[sel, 0], points[sel, 1], s=6, alpha=0.6, color=cmap(i % cmap.N), label=str(c))
    ax.set_xlabel(f"PC 1 ({explained[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({explained[1]:.0%} of variance)")
    ax.set_title("Latent map: encoder means of the real test set, PCA to 2-D")
    ax.legend(title="class", markerscale=3, fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def interpolation_figure(strips: list[np.ndarray], shape, row_labels: list[str]) -> Figure:
    steps = len(strips[0])
    fig = Figure(figsize=(1.0 * steps + 2, 1.0 * len(strips) + 1.2))
    ax = fig.subplots()
    imgs = [img for strip in strips for img in strip]
    _show(ax, _mosaic(imgs, steps, shape), "Latent interpolation between two test images of one class", shape, row_labels, steps)
    ax.set_xlabel(f"{steps} steps from the first image (alpha 0) to the second (alpha 1)")
    ax.set_ylabel("pair of test images of one class")
    fig.tight_layout()
    return fig
