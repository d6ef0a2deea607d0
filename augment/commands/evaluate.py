"""``augment split`` (stratified, seeded train/test split) and ``augment evaluate`` (the quality report).

    augment split --data real.parquet --label y --test-size 0.2 --seed 0 --out data/bank
    augment evaluate --model models/bank --train data/bank/train.parquet --test data/bank/test.parquet \\
                     --synthetic synth/bank --report reports/bank
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from augment.cli import SEED, run_command
from augment.errors import InputError, OutputExistsError

__all__ = ["split", "evaluate", "split_table"]


def _label_from(table, label: str | None, model_label: str | None = None) -> str:
    """--label, else the bundle's label, else the Parquet metadata key ``label_column``."""
    if label:
        return label
    if model_label:
        return model_label
    meta = table.schema.metadata or {}
    if b"label_column" in meta:
        return meta[b"label_column"].decode()
    raise InputError("no label column: pass --label NAME (or --model, whose bundle names it)")


def split_table(table, label: str, *, test_size: float, seed: int, per_class: int | None = None):
    """(train, test) row-index arrays, stratified by ``label``, seeded; each keeps the source row order.

    ``test_size`` < 1 is a fraction of the rows, >= 1 a row count. ``per_class`` instead puts exactly that
    many rows of each class into train (for "N real per class" experiments) and the rest into test.
    """
    import numpy as np

    if label not in table.column_names:
        raise InputError(f"label column {label!r} not in the data; columns are {', '.join(table.column_names)}")
    values = table[label].to_pylist()
    if any(v is None for v in values):
        raise InputError(f"label column {label!r} has null values; stratified splitting needs a label on every row")
    _, y = np.unique(np.asarray([str(v) for v in values]), return_inverse=True)
    rng = np.random.default_rng(seed)
    if per_class is not None:
        train = []
        for c in range(y.max() + 1):
            idx = np.flatnonzero(y == c)
            if len(idx) < per_class:
                raise InputError(f"--per-class {per_class}: class {values[idx[0]]!r} has only {len(idx)} rows")
            train.append(rng.choice(idx, per_class, replace=False))
        train = np.sort(np.concatenate(train))
        return train, np.setdiff1d(np.arange(len(y)), train)
    from sklearn.model_selection import train_test_split

    size = int(test_size) if test_size >= 1 else float(test_size)
    try:
        tr, te = train_test_split(np.arange(len(y)), test_size=size, random_state=seed, stratify=y)
    except ValueError as exc:
        raise InputError(f"cannot split {len(y)} rows stratified by {label!r} with --test-size {test_size}: {exc}") from None
    return np.sort(tr), np.sort(te)


@click.command()
@click.option("--data", "data_path", required=True, type=click.Path(), help="Parquet file or folder, or CSV.")
@click.option("--label", default=None, help="Label column to stratify by (default: the file's label_column metadata).")
@click.option("--test-size", default=0.2, show_default=True, type=float, help="Fraction (< 1) or number of test rows.")
@click.option("--per-class", default=None, type=click.IntRange(min=1), help="Instead: exactly N training rows per class, the rest test.")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--out", required=True, type=click.Path(), help="Folder for train.parquet and test.parquet.")
@click.option("--overwrite", is_flag=True, help="Replace train.parquet / test.parquet if they exist.")
@run_command
def split(data_path, label, test_size, per_class, seed, out, overwrite):
    """Stratified, seeded train/test split of a dataset into OUT/train.parquet and OUT/test.parquet."""
    import pyarrow.parquet as pq

    from augment.evaluate.data import read_real

    if not test_size > 0:
        raise click.BadParameter(f"must be > 0, got {test_size}", param_hint="--test-size")
    out = Path(out)
    targets = [out / "train.parquet", out / "test.parquet"]
    if not overwrite and any(t.exists() for t in targets):
        raise OutputExistsError(f"{out} already holds train.parquet or test.parquet; pass --overwrite to replace them")
    table = read_real(data_path)
    label = _label_from(table, label)
    tr, te = split_table(table, label, test_size=test_size, seed=seed, per_class=per_class)
    out.mkdir(parents=True, exist_ok=True)
    for path, idx in zip(targets, (tr, te)):
        pq.write_table(table.take(idx), path)
    click.echo(f"wrote {targets[0]} ({len(tr):,} rows) and {targets[1]} ({len(te):,} rows), stratified by {label!r}, seed {seed}")


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None


@click.command()
@click.option("--train", "train_path", required=True, type=click.Path(), help="Real training data (what the model was trained on).")
@click.option("--test", "test_path", required=True, type=click.Path(), help="Held-out real data, never seen in training.")
@click.option("--synthetic", "synth_path", required=True, type=click.Path(), help="`augment generate` output folder or a Parquet file.")
@click.option("--report", "report_path", required=True, type=click.Path(), help="Folder for metrics.json, index.html, figures/.")
@click.option("--model", "model_path", default=None, type=click.Path(), help="Bundle: label, class order, latent map, interpolations.")
@click.option("--label", default=None, help="Label column (default: the bundle's, or the file's label_column metadata).")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--sweep-real", default="1%,10%,100%", show_default=True, help="Real subsets: percentages or N/class; none skips the sweep (its classifiers take most of an image "
              "evaluation's time).")
@click.option("--sweep-synth", default="0,1,2,5", show_default=True, help="Synthetic rows added, as multiples of the subset.")
@click.option("--sweep-seeds", default=1, show_default=True, type=click.IntRange(min=1), help="Repeats of the sweep, each with its own subsets.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1), help="CPU threads for scikit-learn.")
@click.option("--no-figures", is_flag=True, help="Numbers only (faster).")
@click.option("--overwrite", is_flag=True, help="Replace an existing report.")
@run_command
def evaluate(train_path, test_path, synth_path, report_path, model_path, label, seed, sweep_real, sweep_synth, sweep_seeds,
             threads, no_figures, overwrite):
    """Fidelity, utility and privacy of synthetic data: REPORT/metrics.json and REPORT/index.html."""
    from augment.evaluate import EvalConfig, read_real, read_synthetic, run_evaluation, summary_rows, write_report
    from augment.evaluate.utility import parse_real_sizes

    report = Path(report_path)
    if report.exists() and any(report.iterdir()) and not overwrite:
        raise OutputExistsError(f"report folder {report} exists and is not empty; pass --overwrite to replace it")
    try:
        sizes = tuple(parse_real_sizes(sweep_real))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--sweep-real") from None
    config = EvalConfig(seed=seed, sweep_sizes=sizes, sweep_multipliers=_ints(sweep_synth),
                        sweep_seeds=tuple(range(seed, seed + sweep_seeds)), figures=not no_figures, threads=threads)
    started = time.perf_counter()
    gen = None
    if model_path:
        from augment.generator import Generator

        gen = Generator.from_path(model_path)
    train = read_real(train_path)
    label = _label_from(train, label, gen.bundle.label_column if gen else None)
    evaluation = run_evaluation(
        train, read_real(test_path), read_synthetic(synth_path), label, config=config,
        image_shape=tuple(gen.codec.image_shape) if gen is not None and gen.codec.image_shape else None,
        classes=list(gen.classes) if gen is not None else None, model=gen,
    )
    evaluation.metrics["seconds"] = round(time.perf_counter() - started, 1)
    page = write_report(evaluation, report, overwrite=overwrite)
    rows = summary_rows(evaluation.metrics)
    width = max(len(name) for name, _ in rows)
    for w in evaluation.metrics["warnings"]:
        click.echo(f"warning: {w}", err=True)
    click.echo("\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    click.echo(f"report: {page} ({evaluation.metrics['seconds']} s)")
