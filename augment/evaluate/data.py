"""Reading real and synthetic data for evaluation, and turning it into what the metrics need.

Everything here is plain pyarrow / numpy / pandas. A column is one of three kinds:

- ``numeric``: integer, floating or decimal Arrow types (nulls become NaN);
- ``categorical``: strings, booleans, dictionaries and anything else (compared as strings, null is a category);
- ``image``: ``fixed_size_list`` / ``list`` of integers (pixels) or ``binary`` (PNG/JPEG bytes).

A table is of modality ``image`` when its only feature column is an image column, else ``table``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from augment.errors import InputError, SchemaError
from augment.io import image_encoding

__all__ = [
    "PROVENANCE_PREFIX",
    "NULL_CATEGORY",
    "EvalSchema",
    "read_real",
    "read_synthetic",
    "infer_schema",
    "check_synthetic_columns",
    "feature_frame",
    "image_matrix",
    "label_indices",
    "skip",
    "is_skipped",
    "limit_threads",
]

PROVENANCE_PREFIX = "augment_"  # columns added by `augment generate`; never evaluated
NULL_CATEGORY = "<null>"  # how a null categorical value is counted


def skip(reason: str) -> dict:
    """A metric that was not computed, and why (metrics.json never holds a silent NaN)."""
    return {"skipped": reason}


def is_skipped(value) -> bool:
    return isinstance(value, dict) and "skipped" in value


def limit_threads(threads: int):
    """A context that caps scikit-learn's OpenMP and BLAS threads.

    On a small or shared machine, OpenMP threads that wait on each other make HistGradientBoosting tens of
    times slower; one thread is fast and predictable. The OpenMP runtime is loaded first, because
    threadpoolctl only limits libraries already loaded.
    """
    import sklearn.ensemble  # noqa: F401
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)


@dataclass(frozen=True)
class EvalSchema:
    """Which column is the label, which are numeric / categorical / image, and the label's classes."""

    label: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    image: str | None = None
    image_shape: tuple[int, int, int] | None = None  # (C, H, W)
    classes: tuple = field(default_factory=tuple)  # label values, in class-index order
    columns: tuple[str, ...] = ()  # every column of the real data, label included, in order

    @property
    def modality(self) -> str:
        return "image" if self.image is not None else "table"

    @property
    def features(self) -> tuple[str, ...]:
        if self.image is not None:
            return (self.image,)
        return tuple(c for c in self.columns if c != self.label)

    def kind(self, column: str) -> str:
        if column == self.image:
            return "image"
        return "numeric" if column in self.numeric else "categorical"


# ----------------------------------------------------------------------------------------------- reading
def _read_file(path) -> pa.Table:
    from augment.io import read_table

    return read_table(path)


def read_real(path: str | Path) -> pa.Table:
    """A Parquet file, a folder of Parquet files, or a CSV file, by path or URI (``augment.io.read_table``)."""
    return _read_file(path)


def read_synthetic(path: str | Path) -> pa.Table:
    """Output of ``augment generate`` (a folder with ``_manifest.json``) or a plain Parquet file, by path or URI.

    A folder without its manifest is an unfinished job and is refused. Provenance columns are dropped.
    """
    from augment.fs import resolve

    p = resolve(path)
    if not p.exists():
        raise InputError(f"synthetic data not found: {p}")
    if p.is_dir():
        manifest = p.join("_manifest.json")
        if not manifest.exists():
            raise InputError(
                f"{p} has no _manifest.json: an unfinished `augment generate` job (rerun it with --resume), "
                "or pass a Parquet file"
            )
        try:
            meta = json.loads(manifest.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {manifest}: {exc}") from None
        files = _manifest_files(meta, p)
        if not files:
            raise InputError(f"{p} holds no .parquet files")
        table = _concat([_read_file(f) for f in files], p)
    else:
        table = _read_file(p)
    keep = [c for c in table.column_names if not c.startswith(PROVENANCE_PREFIX)]
    return table.select(keep)


def _manifest_files(meta: dict, folder) -> list:
    # The manifest lists its files (as names, or as dicts with a "path"/"file"/"name" key); else every
    # .parquet file beneath the folder.
    listed = meta.get("files") if isinstance(meta, dict) else None
    names: list[str] = []
    if isinstance(listed, list):
        for item in listed:
            if isinstance(item, str):
                names.append(item)
            elif isinstance(item, dict):
                name = item.get("path") or item.get("file") or item.get("name")
                if isinstance(name, str):
                    names.append(name)
    if names:
        missing = [n for n in names if not folder.join(n).exists()]
        if missing:
            raise InputError(f"{folder}/_manifest.json lists files that are missing: {', '.join(missing[:5])}")
        return [folder.join(n) for n in names]
    return [folder.join(n) for n in folder.files() if n.endswith(".parquet")]


def _concat(tables: list[pa.Table], where: Path) -> pa.Table:
    try:
        return pa.concat_tables(tables, promote_options="default")
    except pa.ArrowException as exc:
        raise InputError(f"the Parquet files in {where} do not share one schema: {exc}") from None


# ----------------------------------------------------------------------------------------------- schema
def _is_image_type(t: pa.DataType) -> bool:
    return image_encoding(t) is not None  # the codec's notion of an image column


def _is_numeric_type(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def infer_schema(
    table: pa.Table,
    label: str,
    *,
    image_shape: tuple[int, int, int] | None = None,
    classes: list | None = None,
) -> EvalSchema:
    """Column kinds from the (real training) table's Arrow types; classes from ``classes`` or the data."""
    if label not in table.column_names:
        raise SchemaError(f"label column {label!r} not in the data; columns are {', '.join(table.column_names)}")
    numeric, categorical, images = [], [], []
    for name in table.column_names:
        if name == label:
            continue
        t = table.schema.field(name).type
        if _is_image_type(t):
            images.append(name)
        elif _is_numeric_type(t):
            numeric.append(name)
        else:
            categorical.append(name)
    if images and (numeric or categorical or len(images) > 1):
        raise SchemaError(
            f"image columns {images} next to other feature columns: evaluate takes one image column alone, "
            "or tabular columns"
        )
    if classes is None:
        values = [v for v in pc.unique(table[label]).to_pylist() if v is not None]
        classes = sorted(values, key=lambda v: (str(type(v)), v))
    if len(classes) < 2:
        raise InputError(f"label column {label!r} has {len(classes)} class(es); evaluation needs at least 2")
    image = images[0] if images else None
    if image is not None and image_shape is None:
        image_shape = _guess_image_shape(table, image)
    return EvalSchema(
        label, tuple(numeric), tuple(categorical), image, image_shape, tuple(classes), tuple(table.column_names)
    )


def _guess_image_shape(table: pa.Table, column: str) -> tuple[int, int, int]:
    from augment.io import image_shape_of

    return image_shape_of(table, column)


def check_synthetic_columns(schema: EvalSchema, table: pa.Table, real_types: pa.Schema, what: str = "synthetic") -> None:
    """Refuse data whose columns differ from the real data's, naming each missing, extra or mistyped column."""
    have, want = set(table.column_names), set(schema.columns)
    missing = [c for c in schema.columns if c not in have]
    extra = [c for c in table.column_names if c not in want]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(map(repr, missing))}")
    if extra:
        problems.append(f"unexpected {', '.join(map(repr, extra))}")
    for name in schema.columns:
        if name in have and name != schema.label:
            real_kind = schema.kind(name)
            t = table.schema.field(name).type
            kind = "image" if _is_image_type(t) else "numeric" if _is_numeric_type(t) else "categorical"
            if kind != real_kind:
                problems.append(f"{name!r} is {kind} ({t}) but {real_kind} ({real_types.field(name).type}) in the real data")
    if problems:
        raise SchemaError(f"{what} columns do not match the real data: " + "; ".join(problems))


# ----------------------------------------------------------------------------------------------- views
def feature_frame(table: pa.Table, schema: EvalSchema) -> pd.DataFrame:
    """Tabular features as a DataFrame: numeric as float64 (NaN for null), categorical as str (null -> <null>)."""
    data = {}
    for name in schema.numeric:
        col = pc.cast(table[name], pa.float64())
        data[name] = col.to_numpy(zero_copy_only=False).astype(np.float64)
    for name in schema.categorical:
        col = table[name]
        if pa.types.is_dictionary(col.type):
            col = pc.cast(col, col.type.value_type)
        col = pc.fill_null(pc.cast(col, pa.string()), NULL_CATEGORY)
        data[name] = np.asarray(col.to_pylist(), dtype=object)
    frame = pd.DataFrame(data, columns=[c for c in schema.features])
    return frame


def image_matrix(table: pa.Table, schema: EvalSchema) -> np.ndarray:
    """Images as (n, C*H*W) float32 in [0, 1] (pixels / 255), channel-first, flattened."""
    from augment.io import image_to_array

    pixels = image_to_array(table[schema.image], schema.image_shape, name=schema.image)
    return pixels.astype(np.float32) / 255.0


def label_indices(table: pa.Table, schema: EvalSchema, what: str) -> np.ndarray:
    """Class index of each row; a value the real training data never had is a SchemaError naming it."""
    lookup = {v: i for i, v in enumerate(schema.classes)}
    values = table[schema.label].to_pylist()
    out = np.empty(len(values), dtype=np.int64)
    unknown = set()
    for i, v in enumerate(values):
        j = lookup.get(v)
        if j is None:
            unknown.add(v)
            j = -1
        out[i] = j
    if unknown:
        shown = ", ".join(repr(v) for v in sorted(unknown, key=str)[:5])
        raise SchemaError(
            f"{what} data has label values the real training data does not: {shown}; known: "
            + ", ".join(repr(c) for c in schema.classes[:20])
        )
    return out
