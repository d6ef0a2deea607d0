"""The ``--from`` rows of perturb and interpolate jobs: checked against the bundle, streamed or held."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from augment.batch.plan import Shard
from augment.errors import ClassNameError, InputError, SchemaError

__all__ = ["Source", "open_source", "table_source", "check_schema", "label_indices"]



@dataclass
class Source:
    """The ``--from`` data: checked against the bundle's schema, streamed or held (for random draws)."""

    path: str
    schema: pa.Schema  # the bundle's real schema (what rows are cast to)
    num_rows: int
    labels: np.ndarray  # (num_rows,) class index of every source row
    table: pa.Table | None = None  # loaded only where rows are drawn at random

    def class_rows(self) -> list[np.ndarray]:
        k = int(self.labels.max(initial=-1)) + 1
        order = np.argsort(self.labels, kind="stable")
        bounds = np.searchsorted(self.labels[order], np.arange(k + 1))
        return [order[bounds[c]:bounds[c + 1]] for c in range(k)]

    def iter_slices(self, shards: list[Shard]) -> Iterator[pa.Table]:
        """The source rows of each shard, in order, streamed (``shard.offset``, ``shard.units`` rows each)."""
        batches = _dataset(self.path).to_batches(columns=self.schema.names, batch_size=65_536)
        buf: list[pa.RecordBatch] = []
        have = 0
        for shard in shards:
            while have < shard.units:
                batch = next(batches, None)
                if batch is None:
                    raise InputError(f"--from {self.path!r} holds fewer rows than when the job was planned: "
                                     f"it changed while the job ran")
                buf.append(batch)
                have += batch.num_rows
            table = pa.Table.from_batches(buf)
            yield _cast(table.slice(0, shard.units), self.schema)
            rest = table.slice(shard.units)
            buf, have = rest.to_batches(), rest.num_rows


def _dataset(path: str):
    import pyarrow.dataset as ds

    fmt = "csv" if str(path).lower().endswith(".csv") else "parquet"
    return ds.dataset(path, format=fmt, ignore_prefixes=[".", "_"])


def _compatible(have: pa.DataType, want: pa.DataType) -> bool:
    if have.equals(want):
        return True
    num = lambda t: pa.types.is_integer(t) or pa.types.is_floating(t)  # noqa: E731
    text = lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)  # noqa: E731
    return (num(have) and num(want)) or (text(have) and text(want))


def _cast(table: pa.Table, schema: pa.Schema) -> pa.Table:
    table = table.select(schema.names)
    if table.schema.equals(schema, check_metadata=False):
        return table
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise SchemaError(f"--from rows do not fit the bundle's types: {str(err).splitlines()[0]}") from None


def check_schema(have: pa.Schema, real_schema: pa.Schema, label: str | None, what: str) -> None:
    """Rows to perturb must hold the bundle's columns (label included) in compatible types: every problem at once."""
    if label is None:
        raise SchemaError("this bundle was trained without a label column; perturb and interpolate need one")
    if label not in have.names:
        raise SchemaError(f"{what} has no label column {label!r}: perturbed rows keep their source label")
    missing = [f.name for f in real_schema if f.name not in have.names]
    wrong = [f"{f.name!r} is {have.field(f.name).type} (the bundle has {f.type})" for f in real_schema
             if f.name in have.names and not _compatible(have.field(f.name).type, f.type)]
    problems = ([f"no column {', '.join(map(repr, missing))}"] if missing else []) + wrong
    if problems:
        raise SchemaError(f"{what} does not fit the bundle: {'; '.join(problems)}; the bundle needs "
                          f"{', '.join(real_schema.names)}")


def label_indices(label_col: pa.ChunkedArray | pa.Array, classes: list, what: str) -> np.ndarray:
    """The class index of every row's label; labels the bundle does not know are an error naming them."""
    lookup = {str(c): i for i, c in enumerate(classes)}
    values = label_col.to_pylist()
    unknown = sorted({str(v) for v in values if str(v) not in lookup})
    if unknown:
        raise ClassNameError(f"{what} holds labels {unknown[:5]} that the bundle does not know; its classes are "
                             + ", ".join(repr(str(c)) for c in classes))
    return np.fromiter((lookup[str(v)] for v in values), dtype=np.int64, count=len(values))


def table_source(table: pa.Table, real_schema: pa.Schema, label: str | None, classes: list,
                 what: str = "the rows") -> pa.Table:
    """Rows held in memory (the Python API's perturb) checked like ``--from`` and cast to the bundle's types."""
    check_schema(table.schema, real_schema, label, what)
    if table.num_rows == 0:
        raise InputError(f"{what} hold no rows")
    table = _cast(table, real_schema)
    label_indices(table.column(label), classes, what)
    return table


def open_source(path: str, real_schema: pa.Schema, label: str | None, classes: list, *, load: bool) -> Source:
    """Check ``--from`` against the bundle (columns, types, labels) before anything is written."""
    if not Path(path).exists():
        raise InputError(f"--from {path!r}: no such file or folder")
    try:
        dataset = _dataset(path)
        have = dataset.schema
    except (pa.ArrowException, OSError, ValueError) as err:
        raise InputError(f"cannot read --from {path!r}: {str(err).splitlines()[0]}") from None
    check_schema(have, real_schema, label, f"--from {path!r}")
    if load:
        table = _cast(dataset.to_table(columns=real_schema.names), real_schema)
        label_col = table.column(label)
    else:
        table = None
        label_col = _cast(dataset.to_table(columns=real_schema.names[:0] + [label]),
                          pa.schema([real_schema.field(label)])).column(label)
    labels = label_indices(label_col, classes, "--from")
    if len(labels) == 0:
        raise InputError(f"--from {path!r} holds no rows")
    return Source(str(path), real_schema, len(labels), labels, table)
