"""``train``: a labeled table in, a verified bundle folder out.

    from training.api import train
    bundle = train(table, label="y", out="models/bank")

Steps: fit the codec, encode the rows, train the CVAE, fit the per-class latent mixture, export both halves
to ONNX with a parity check, write bundle.json beside them (atomically, no pickle).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time

import numpy as np
import pyarrow as pa
import torch

from augment.bundle import Bundle, schema_to_b64, write_bundle
from augment.codec import Codec
from augment.columns.types import to_physical
from augment.conditions import summarize
from augment.errors import InputError, OutputExistsError
from augment.fs import Location, resolve
from augment.io import _as_array
from training.calibrate import fit_intensity_calibration
from training.config import TrainConfig
from training.export import OPSET, export_onnx
from training.jitter import jittered_copies, mixture_copies
from training.mixture import INFLATE_MIN_ROWS, NATIVE_BINS, fit_class_mixtures, fit_value_mixtures
from training.model import build_model
from training.trainer import fit, pick_device

__all__ = ["train"]

PARITY_ROWS = 256


def _encode_all(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    mus, logvars = [], []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            mu, logvar = model.encode(torch.from_numpy(x[i:i + batch]), torch.from_numpy(y[i:i + batch]))
            mus.append(mu.numpy())
            logvars.append(logvar.numpy())
    return np.concatenate(mus), np.concatenate(logvars)


def train(table: pa.Table, *, label: str | None, out: str | os.PathLike, config: TrainConfig | None = None,
          image_shape: tuple[int, int, int] | None = None, overwrite: bool = False, progress: bool = True,
          source: str | None = None) -> Bundle:
    """Train a CVAE on ``table`` and write its bundle to ``out``; returns the loaded, verified bundle."""
    config = config or TrainConfig()
    out = resolve(out)
    out.check_reachable()
    if out.exists() and not overwrite:  # refuse before spending minutes on training
        raise OutputExistsError(f"output folder {out.uri!r} exists (pass --overwrite to replace it)")
    pick_device(config.device)  # --device cuda without CUDA: the one-line error before any work
    threads_before = torch.get_num_threads()
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    try:  # a library call leaves the process as it found it
        return _train(table, label=label, out=out, config=config, image_shape=image_shape, overwrite=overwrite,
                      progress=progress, source=source)
    finally:
        torch.set_num_threads(threads_before)


def _conditionable(col) -> bool:
    """Categories, numbers, decimals, dates, timestamps, times and durations (not identifiers or images)."""
    return col.kind in ("categorical", "numeric", "temporal")


def _check_condition_on(codec: Codec, names) -> None:
    """--condition-on names categorical, number or date columns of the model: every other name in one error,
    before training."""
    allowed = [c.name for c in codec.columns if _conditionable(c)]
    bad = [n for n in names if n not in allowed]
    if bad:
        raise InputError(f"--condition-on {', '.join(map(repr, bad))}: not a categorical, number or date column of "
                         f"the model; allowed: {', '.join(allowed) or 'none'}")


def native_codes(col, arr: pa.Array) -> tuple[np.ndarray, int, dict]:
    """(per-row value index, how many, the column's entry in bundle.json) for ``--condition-on``: a categorical
    column's category indices (null last); a number, date or time column's NATIVE_BINS quantile bins of its finite
    physical values (``augment.columns.types.to_physical``: days, ticks, local wall time), bin
    i holding [edges[i], edges[i + 1]) (the last one closed), and one index more for nulls and non-finite values."""
    if col.kind == "categorical":
        return col.codes(arr), col.out_dim, {"kind": "categories"}
    values, null = to_physical(arr)
    finite = ~null & np.isfinite(values)
    edges = np.unique(np.quantile(values[finite], np.linspace(0.0, 1.0, NATIVE_BINS + 1))) if finite.any() \
        else np.zeros(1)
    if edges.size == 1:
        edges = np.repeat(edges, 2)
    bins = edges.size - 1
    codes = np.where(finite, np.searchsorted(edges[1:-1], np.where(finite, values, 0.0), side="right"), bins)
    entry = {"kind": "bins", "edges": edges.tolist(), "non_finite": bool((~null & ~np.isfinite(values)).any())}
    return codes.astype(np.int64), bins + 1, entry


def _train(table: pa.Table, *, label: str | None, out: Location, config: TrainConfig,
           image_shape: tuple[int, int, int] | None, overwrite: bool, progress: bool, source: str | None) -> Bundle:
    started = time.perf_counter()

    codec = Codec.fit(table, label=label, image_shape=image_shape, **config.codec_options())
    _check_condition_on(codec, config.condition_on)
    table = table.drop_columns(codec.dropped)  # --drop: gone from the model, the schema and the output
    x = codec.transform(table, rng=np.random.default_rng(config.seed))  # (N, input_dim), ties dequantized
    y_index = codec.encode_labels(table)  # (N,)
    n_classes = len(codec.label.classes)
    y = np.eye(n_classes, dtype=np.float32)[y_index]  # (N, K)

    config = dataclasses.replace(config, beta=config.resolved_beta(codec.modality))  # recorded as trained
    latent = config.resolved_latent_dim(codec.modality)
    jitter = config.resolved_image_jitter(codec.modality, len(x), n_classes, codec.image_shape)
    epochs = config.resolved_epochs(len(x), codec.modality, pixels=int(np.prod(codec.image_shape or (0,))), jitter=jitter)
    logvar_index = tuple(s.out_start + 1 for s in codec.segments if s.kind == "numeric")
    torch.manual_seed(config.seed)
    model = build_model(codec.modality, codec.input_dim, codec.output_dim, n_classes, latent, config.hidden,
                        image_shape=codec.image_shape, logvar_index=logvar_index, image_channels=config.image_channels)
    result = fit(model, codec.segments, x, y, y_index, config, epochs, jitter=jitter, progress=progress)
    model.cpu()

    mu, logvar = _encode_all(model, x, y)
    y_fit = y_index
    if jitter:  # the mixture also sees jittered copies of every image, encoded one copy at a time
        copies = mixture_copies(y_index)
        encoded = [_encode_all(model, xj, y) for xj in jittered_copies(x, codec.image_shape, jitter, config.seed, copies)]
        mu = np.concatenate([mu, *(m for m, _ in encoded)])
        logvar = np.concatenate([logvar, *(lv for _, lv in encoded)])
        y_fit = np.tile(y_index, copies + 1)
    components, covariance, fit_on, inflate = config.resolved_mixture(codec.modality)
    mixture = fit_class_mixtures(mu, logvar, y_fit, n_classes, components, config.seed, covariance, fit_on,
                                 inflate=inflate, inflate_min_rows=INFLATE_MIN_ROWS)
    sampler = {"default": "mixture", "prior": {"kind": "normal"}, "mixture": mixture}
    if codec.modality == "image":  # generated pixels carried to the training pixels' histogram (training/calibrate.py)
        codec.columns[0].calibration = fit_intensity_calibration(model, mixture, list(codec.label.counts), x,
                                                                 codec.image_shape[0], config.seed)
    if config.condition_on:
        sampler["native"] = {"columns": {}}
        for name in config.condition_on:
            codes, n_values, entry = native_codes(codec.column(name), _as_array(table.column(name)))
            entry["classes"] = fit_value_mixtures(mu[:len(x)], logvar[:len(x)], y_index, codes, n_classes, n_values,
                                                  components, config.seed, inflate)
            sampler["native"]["columns"][name] = entry
    pick = np.random.default_rng(config.seed).permutation(len(x))[:PARITY_ROWS]
    enc, dec, parity = export_onnx(model, x[pick], y[pick])

    meta = {
        "modality": codec.modality,
        "arrow_schema": schema_to_b64(table.schema),
        "label": {"column": codec.label.column, "classes": list(codec.label.classes), "counts": list(map(int, codec.label.counts))},
        "codec": codec.to_json(),
        # per class min/max, value sets and null counts: --where refuses a condition no training row meets
        "summary": summarize(table, codec.label.column, list(codec.label.classes),
                             {c.name for c in codec.columns if hasattr(c, "categories")}),
        "latent_dim": latent,
        "sampler": sampler,
        "onnx": {"opset": OPSET, "encoder": {"inputs": ["x", "y"], "outputs": ["mu", "logvar"]},
                 "decoder": {"inputs": ["z", "y"], "outputs": ["params"]}, "parity": parity},
        "training": {
            "config": {**config.to_json(), "epochs": epochs, "latent_dim": latent, "image_jitter": jitter,
                       "mixture_components": components, "mixture_inflate": inflate},
            "metrics": {
                "rows": int(len(x)), "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                "stopped": result.stopped, "train_loss": result.train_loss, "val_loss": result.val_loss,
                "val_recon": result.val_recon, "val_kl": result.val_kl, "train_wall_s": round(result.wall_s, 3),
                "rows_per_s": round(result.rows_per_s, 1), "total_wall_s": round(time.perf_counter() - started, 3),
                "device": result.device, "mixed_precision": result.mixed_precision,
            },
            "source": source,
            "torch_version": torch.__version__,
            "platform": platform.platform(),
        },
    }
    return write_bundle(out.uri, meta, {"encoder.onnx": enc, "decoder.onnx": dec}, overwrite=overwrite)
