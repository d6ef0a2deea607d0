"""Run every metric on (real train, real test, synthetic) and collect the figures: ``run_evaluation``.

Fidelity compares synthetic rows with the real *training* rows (what the model learned); utility and the
augmentation sweep score on the real *test* rows; privacy measures distances to the training rows and
compares with the test rows. Work is capped by ``EvalConfig`` (documented in docs/evaluate.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from augment.evaluate import figures as F
from augment.evaluate import metrics as M
from augment.evaluate.data import (
    EvalSchema,
    check_synthetic_columns,
    feature_frame,
    image_matrix,
    infer_schema,
    is_skipped,
    label_indices,
    limit_threads,
    skip,
)
from augment.evaluate.privacy import privacy_report
from augment.evaluate.utility import IMAGE_STEPS, TableEncoder, augmentation_sweep, parse_real_sizes, tstr_trtr

__all__ = ["EvalConfig", "Evaluation", "run_evaluation", "prepare"]


@dataclass(frozen=True)
class EvalConfig:
    seed: int = 0
    detection_cap: int = 10_000  # rows per side (tables); images use detection_cap_image
    detection_cap_image: int = 2_000
    detection_cap_per_class: int = 2_000  # rows per side within one class (images: a quarter of it)
    utility_cap: int = 250_000  # training rows of one utility classifier (and of each sweep cell)
    privacy_cap: int = 5_000  # synthetic and held-out rows whose DCR is measured
    privacy_reference_cap: int = 50_000  # training rows they are compared with
    sweep_sizes: tuple[str, ...] = ("1%", "10%", "100%")
    sweep_multipliers: tuple[int, ...] = (0, 1, 2, 5)
    sweep_seeds: tuple[int, ...] = (0,)
    per_class: bool = True
    figures: bool = True
    image_steps: int = IMAGE_STEPS  # mini-batch steps of the image classifier, whatever its training set size
    threads: int = 1  # OpenMP/BLAS threads for scikit-learn; 1 is fastest on small or shared machines

    def __post_init__(self):
        if self.sweep_sizes:  # empty: no sweep
            parse_real_sizes(",".join(self.sweep_sizes))
        if any(m < 0 for m in self.sweep_multipliers):
            raise ValueError(f"synthetic multipliers must be >= 0, got {self.sweep_multipliers}")
        for name in ("threads", "image_steps", "detection_cap", "detection_cap_image", "detection_cap_per_class", "utility_cap", "privacy_cap", "privacy_reference_cap"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class Evaluation:
    metrics: dict
    figures: dict = field(default_factory=dict)  # file name -> matplotlib Figure


def prepare(train: pa.Table, test: pa.Table, synthetic: pa.Table, label: str, *, image_shape=None, classes=None,
            identifiers=None, ignored=None) -> EvalSchema:
    """Infer the schema from the training data and check the test and synthetic data against it."""
    schema = infer_schema(train, label, image_shape=image_shape, classes=classes, identifiers=identifiers,
                          ignored=ignored)
    check_synthetic_columns(schema, synthetic, train.schema, "synthetic")
    check_synthetic_columns(schema, test, train.schema, "test")
    return schema


def _model_inputs(tables: dict, schema: EvalSchema):
    """Matrices for the classifiers (numeric + categorical codes, or pixels) and their class indices."""
    frames = {k: feature_frame(t, schema) for k, t in tables.items()} if schema.modality == "table" else None
    if schema.modality == "image":
        xs = {k: image_matrix(t, schema) for k, t in tables.items()}
        mask = None
    else:
        enc = TableEncoder(frames["train"], schema)
        xs = {k: enc.transform(f) for k, f in frames.items()}
        mask = enc.categorical_mask
    ys = {k: label_indices(t, schema, k) for k, t in tables.items()}
    return frames, xs, ys, mask


def run_evaluation(train: pa.Table, test: pa.Table, synthetic: pa.Table, label: str, *, config: EvalConfig = EvalConfig(),
                   image_shape=None, classes=None, model=None) -> Evaluation:
    """Fidelity, utility and privacy of ``synthetic`` against real ``train`` / ``test``; see the module docstring.

    ``model`` (optional) is an ``augment.generator.Generator`` (or anything with its ``encode(table) ->
    (mu, logvar, labels)`` and ``interpolate(a, b, steps, rng)``); for images it adds the latent map and
    interpolation strips.
    """
    codec = getattr(model, "codec", None)
    identifiers = [c.name for c in getattr(codec, "identifiers", ())] if codec is not None else None
    ignored = list(getattr(codec, "dropped", ()))
    if identifiers is None:  # no bundle: the codec's rules find the identifiers, and the free text it refuses
        identifiers, ignored = _detect(train, label, synthetic)
    rare = {c.name: c.rare["min_rows"] for c in getattr(codec, "columns", ()) if getattr(c, "rare", None)}
    schema = prepare(train, test, synthetic, label, image_shape=image_shape, classes=classes, identifiers=identifiers,
                     ignored=ignored)
    with limit_threads(config.threads):
        evaluation = _run(schema, train, test, synthetic, config, model)
    evaluation.metrics["identifiers"] = identifier_checks(train, synthetic, schema.identifiers)
    evaluation.metrics["privacy_rare_values"] = rare_value_share(train, synthetic, schema, rare)
    return evaluation


def _detect(train: pa.Table, label: str, synthetic: pa.Table) -> tuple[list[str], list[str]]:
    """(identifier columns, refused columns the synthetic data lacks: left out with --drop) by the codec's rules."""
    from augment.codec import MAX_INT_CATEGORIES
    from augment.columns.detect import plan_column
    from augment.io import _as_array

    ids, ignored = [], []
    for n in train.column_names:
        if n == label or _is_image(train.schema.field(n).type):
            continue
        plan = plan_column(n, _as_array(train.column(n)), forced=None, max_categories=1000,
                           max_int_categories=MAX_INT_CATEGORIES)
        if plan.kind == "identifier":
            ids.append(n)
        elif plan.problem is not None and n not in synthetic.column_names:
            ignored.append(n)
    return ids, ignored


def _is_image(t: pa.DataType) -> bool:
    from augment.io import image_encoding

    return image_encoding(t) is not None


def identifier_checks(train: pa.Table, synthetic: pa.Table, columns) -> dict:
    """Per identifier column: the share of synthetic values that are unique, and the share copied from training."""
    import pyarrow.compute as pc

    out = {}
    for name in columns:
        syn = synthetic[name].drop_null()
        n = len(syn)
        if n == 0:
            out[name] = skip("no synthetic values")
            continue
        copied = pc.sum(pc.is_in(syn, value_set=pc.unique(train[name].drop_null()).cast(syn.type))).as_py() or 0
        out[name] = {"rows": n, "unique_share": pc.count_distinct(syn).as_py() / n, "copied": int(copied),
                     "copied_share": copied / n}
    return out


def rare_value_share(train: pa.Table, synthetic: pa.Table, schema: EvalSchema, min_rows: dict) -> dict:
    """Per categorical column: the share of synthetic values held by 1..k-1 training rows (k: the bundle's
    ``--rare-min-rows`` for the column, else 5). A rare value written verbatim can identify its few holders."""
    import pyarrow.compute as pc

    out = {}
    for name in schema.categorical:
        k = int(min_rows.get(name, 5))
        values = train[name].drop_null()
        vc = pc.value_counts(values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values)
        counts = vc.field("counts").to_numpy(zero_copy_only=False)
        rare = vc.field("values").filter(pa.array((counts < k) & (counts > 0)))
        syn = synthetic[name].drop_null()
        hit = 0
        if len(rare) and len(syn):
            hit = pc.sum(pc.is_in(syn, value_set=rare.cast(syn.type))).as_py() or 0
        out[name] = {"k": k, "rare_values": len(rare), "share": hit / max(1, len(syn))}
    return out




def _run(schema, train, test, synthetic, config, model) -> Evaluation:
    synthetic = synthetic.select(list(schema.compared))
    test = test.select(list(schema.compared))
    tables = {"train": train, "test": test, "synthetic": synthetic}
    frames, xs, ys, mask = _model_inputs(tables, schema)
    k = len(schema.classes)
    names = [str(c) for c in schema.classes]
    counts = {part: {names[i]: int((ys[part] == i).sum()) for i in range(k)} for part in tables}
    warnings = [f"class {names[i]!r} has no rows in the {part} data" for part in ("test", "synthetic") for i in range(k) if counts[part][names[i]] == 0]
    out: dict = {
        "modality": schema.modality,
        "label": schema.label,
        "classes": list(schema.classes),
        "rows": {part: t.num_rows for part, t in tables.items()},
        "class_counts": counts,
        "settings": asdict(config),
        "warnings": warnings,
    }
    figs: dict = {}
    out["fidelity"] = _fidelity(schema, frames, xs, ys, mask, config)
    out["utility"] = _utility(schema, xs, ys, mask, config)
    priv = privacy_report(train, test, synthetic, schema, seed=config.seed, cap=config.privacy_cap, reference_cap=config.privacy_reference_cap)
    dists = priv.pop("_distances", None) if isinstance(priv, dict) else None
    out["privacy"] = priv
    if config.figures:
        figs = _figures(schema, frames, xs, ys, out, dists, model, test, config)
    out["skipped"] = list(_skipped(out))
    return Evaluation(out, figs)


def _fidelity(schema, frames, xs, ys, mask, config) -> dict:
    out: dict = {}
    cap = config.detection_cap_image if schema.modality == "image" else config.detection_cap
    if schema.modality == "table":
        edges = M.quantile_edges(frames["train"], schema)
        out["column_shapes"] = M.column_shapes(frames["train"], frames["synthetic"], schema)
        out["column_pair_trends"] = M.column_pair_trends(frames["train"], frames["synthetic"], schema, edges=edges)
    else:
        reason = "not defined per pixel for images: see the detection AUC, utility and the sample grids"
        out["column_shapes"] = {"score": skip(reason)}
        out["column_pair_trends"] = {"score": skip(reason)}
    out["detection"] = M.detection_auc(xs["train"], xs["synthetic"], seed=config.seed, cap=cap, categorical_mask=mask, threads=config.threads)
    if not config.per_class:
        return out
    per_class = {}
    pc_cap = config.detection_cap_per_class // (4 if schema.modality == "image" else 1)
    for i, c in enumerate(schema.classes):
        r, s = ys["train"] == i, ys["synthetic"] == i
        entry = {}
        if schema.modality == "table":
            fr, fs = frames["train"][r], frames["synthetic"][s]
            if len(fr) == 0 or len(fs) == 0:
                entry["column_shapes"] = entry["column_pair_trends"] = skip("no rows of this class on one side")
            else:
                entry["column_shapes"] = M.column_shapes(fr, fs, schema)["score"]
                entry["column_pair_trends"] = M.column_pair_trends(fr, fs, schema, edges=edges)["score"]
        entry["detection"] = M.detection_auc(xs["train"][r], xs["synthetic"][s], seed=config.seed, cap=pc_cap, categorical_mask=mask,
                                            threads=config.threads)
        per_class[str(c)] = entry
    out["per_class"] = per_class
    return out


def _utility(schema, xs, ys, mask, config) -> dict:
    parts = {p: (xs[p], ys[p]) for p in xs}
    out = {"tstr_trtr": tstr_trtr(parts["train"], parts["synthetic"], parts["test"], schema=schema, seed=config.seed,
                                  cap=config.utility_cap, categorical_mask=mask, image_steps=config.image_steps, threads=config.threads)}
    if not config.sweep_sizes:
        out["sweep"] = {**skip("not run (--sweep-real none)"), "metric": None, "cells": [], "best": {}}
        return out
    out["sweep"] = augmentation_sweep(parts["train"], parts["synthetic"], parts["test"], schema=schema,
                                      sizes=list(config.sweep_sizes), multipliers=list(config.sweep_multipliers),
                                      seeds=list(config.sweep_seeds), cap=config.utility_cap, categorical_mask=mask,
                                      image_steps=config.image_steps, threads=config.threads)
    return out


def _skipped(node, path=""):
    """Every skipped metric in the result, as {"metric": dotted path, "reason": ...}."""
    if is_skipped(node):
        yield {"metric": path, "reason": node["skipped"]}
    elif isinstance(node, dict):
        for key, value in node.items():
            if key != "skipped_pairs":
                yield from _skipped(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            label = f"{value.get('real')} + {value.get('synthetic_multiplier')}x" if isinstance(value, dict) and "real" in value else str(i)
            yield from _skipped(value, f"{path}[{label}]")


def _figures(schema, frames, xs, ys, out, dists, model, test, config) -> dict:
    figs = {}
    fid = out["fidelity"]
    if schema.modality == "table":
        shapes = fid["column_shapes"]
        if isinstance(shapes["score"], float):
            figs["column_shapes.png"] = F.column_scores_figure(shapes)
            kinds = {c: schema.kind(c) for c in schema.features}
            figs["worst_columns.png"] = F.worst_columns_figure(frames["train"], frames["synthetic"], shapes, kinds,
                                                               dates=schema.temporal)
        if schema.temporal:
            figs["calendar.png"] = F.calendar_figure(frames["train"], frames["synthetic"], list(schema.temporal))
        if isinstance(fid["column_pair_trends"]["score"], float):
            figs["association_difference.png"] = F.association_difference_figure(fid["column_pair_trends"], list(schema.features))
    else:
        names = [str(c) for c in schema.classes]
        grid = {part: {names[i]: xs[part][ys[part] == i] for i in range(len(names))} for part in ("train", "synthetic")}
        figs["samples.png"] = F.sample_grid_figure(grid["train"], grid["synthetic"], schema.image_shape, names)
        if model is not None:
            figs.update(_model_figures(schema, model, test, ys["test"], config))
    if dists is not None:
        figs["dcr.png"] = F.dcr_figure(dists["synthetic"], dists["holdout"])
    sweep = out["utility"]["sweep"]
    if any(isinstance(c.get(sweep["metric"]), float) for c in sweep["cells"]):
        figs["sweep.png"] = F.sweep_figure(sweep)
    return figs


def _model_figures(schema, model, test, y_test, config) -> dict:
    """Latent map (PCA of the encoder means of the test set) and interpolation strips, via the bundle."""
    from sklearn.decomposition import PCA

    figs = {}
    rng = np.random.default_rng(config.seed)
    idx = np.sort(rng.choice(test.num_rows, min(test.num_rows, 3000), replace=False))
    mu = np.asarray(model.encode(test.take(idx))[0])
    if mu.shape[1] >= 2:
        pca = PCA(n_components=2, random_state=config.seed).fit(mu)
        figs["latent_map.png"] = F.latent_map_figure(pca.transform(mu), y_test[idx], [str(c) for c in schema.classes],
                                                     tuple(pca.explained_variance_ratio_[:2]))
    strips, labels = [], []
    k = len(schema.classes)
    for i in range(min(k, 6)):
        # Two images of one class: the decoder is conditioned on the class, so the path varies the style.
        rows = np.flatnonzero(y_test == i)
        if len(rows) < 2:
            continue
        a, b = rng.choice(rows, 2, replace=False)
        t = model.interpolate(test.take([int(a)]), test.take([int(b)]), 8, rng)
        strips.append(image_matrix(t, schema))
        labels.append(f"class {schema.classes[i]}")
    if strips:
        figs["interpolation.png"] = F.interpolation_figure(strips, schema.image_shape, labels)
    return figs
