"""``augment split``: a stratified, seeded train/test split of a dataset (hold data out before training).

    augment split --data real.parquet --label y --test-size 0.2 --seed 0 --out data/bank
    augment split --data real.parquet --label y --per-class 20 --seed 3 --out data/small
"""

from __future__ import annotations


import click

from augment.cli import SEED, run_command
from augment.errors import InputError, OutputExistsError

__all__ = ["split", "split_table", "label_from"]


def label_from(table, label: str | None, model_label: str | None = None) -> str:
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
    from augment.fs import commit, resolve

    out = resolve(out)
    out.check_reachable()
    targets = [out.join("train.parquet"), out.join("test.parquet")]
    if not overwrite and any(t.exists() for t in targets):
        raise OutputExistsError(f"{out} already holds train.parquet or test.parquet; pass --overwrite to replace them")
    table = read_real(data_path)
    label = label_from(table, label)
    tr, te = split_table(table, label, test_size=test_size, seed=seed, per_class=per_class)
    for path, idx in zip(targets, (tr, te)):
        with commit(path) as tmp:  # each file whole, or not at all
            pq.write_table(table.take(idx), tmp)
    click.echo(f"wrote {targets[0]} ({len(tr):,} rows) and {targets[1]} ({len(te):,} rows), stratified by {label!r}, seed {seed}")
