"""Codec: real rows <-> the model's float32 space, fitted on the training split, saved as plain JSON.

    codec = Codec.fit(table, label="y")
    x = codec.transform(table)                  # (n, input_dim) float32, encoder input
    y = codec.encode_labels(table)              # (n,) int64 class indices
    t = codec.inverse(params, rng, temperature=1.0)   # decoder output (n, output_dim) -> pa.Table
    Codec.from_json(json.loads(json.dumps(codec.to_json())))

Per-column codecs live in ``augment.columns``; see docs/architecture.md for the layout of each segment.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from augment import arrays
from augment import io as aio
from augment.columns import (COLUMN_KINDS, MAX_CATEGORIES, RARE_MIN_ROWS, CategoricalColumn, IdentifierColumn,
                             ImageColumn, NumericColumn, TemporalColumn, TooManyCategories, type_from_str, type_to_str)
from augment.columns.detect import plan_column
from augment.errors import ClassNameError, InputError, SchemaError

__all__ = ["Codec", "Segment", "LabelSpec", "CODEC_FORMAT", "MAX_INT_CATEGORIES"]

CODEC_FORMAT = 2  # 2: temporal and identifier columns, non-finite states, rare values, dropped columns
MAX_INT_CATEGORIES = 32  # an integer column with at most this many distinct values is categorical


@dataclass(frozen=True)
class Segment:
    """Where one column lives in the encoder input (``in``) and the decoder output (``out``)."""

    name: str
    kind: str  # "numeric" | "categorical" | "image": how the loss treats it (a temporal column has several)
    in_start: int
    in_stop: int
    out_start: int
    out_stop: int
    has_nulls: bool
    spikes: int = 0  # numeric: width of the point-mass categorical part (spikes + "other"), last in and out


@dataclass(frozen=True)
class LabelSpec:
    """The label column, its classes (JSON values, class-index order) and their training counts."""

    column: str | None
    classes: list
    counts: list
    type_str: str | None

    @property
    def arrow_type(self) -> pa.DataType | None:
        return None if self.type_str is None else type_from_str(self.type_str)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @functools.cached_property
    def values(self) -> pa.Array | None:
        """The classes as one Arrow array of the label's value type (a dictionary label's values), built once:
        ``label_array`` runs for every generated batch."""
        t = self.arrow_type
        if t is None:
            return None
        return arrays.from_list(self.classes, t.value_type if pa.types.is_dictionary(t) else t)


_as_array = aio._as_array  # one Arrow array from a (chunked) column


def _is_label_type(t: pa.DataType) -> bool:
    v = t.value_type if pa.types.is_dictionary(t) else t
    return pa.types.is_integer(v) or pa.types.is_string(v) or pa.types.is_large_string(v) or pa.types.is_boolean(v)


def _fit_label(table: pa.Table, label: str | None) -> LabelSpec:
    if label is None:
        return LabelSpec(None, [None], [table.num_rows], None)
    if label not in table.column_names:
        raise SchemaError(f"label column {label!r} not found; available columns: {table.column_names}")
    arr = _as_array(table.column(label))
    if not _is_label_type(arr.type):
        raise SchemaError(f"label column {label!r} has type {arr.type}; allowed: integers, strings or booleans")
    if pa.types.is_null(arr.type) or arr.null_count == len(arr):
        raise SchemaError(f"label column {label!r} holds no values (every row is null); choose another --label")
    if arr.null_count:
        raise InputError(f"label column {label!r} has {arr.null_count} null values; every row needs a label "
                         f"(--drop-null-labels drops those rows)")
    values = arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr
    vc = pc.value_counts(values)
    classes, counts = vc.field("values"), vc.field("counts")
    order = pc.sort_indices(classes)
    classes, counts = classes.take(order).to_pylist(), counts.take(order).to_pylist()
    for c, k in zip(classes, counts):
        if k < 2:
            raise InputError(f"class {c!r} of label {label!r} has {k} row; every class needs at least 2 rows")
    return LabelSpec(label, classes, [int(k) for k in counts], type_to_str(arr.type))


class Codec:
    """Fitted per-column codecs plus the label; see the module docstring."""

    def __init__(self, *, modality: str, columns: list, label: LabelSpec, image_shape: tuple[int, int, int] | None = None,
                 dropped: list[str] | None = None):
        self.modality = modality
        self.columns = list(columns)
        self.label = label
        self.image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
        self.dropped = list(dropped or [])  # columns left out of the model and the output (--drop)
        segments, spans, i, o = [], [], 0, 0
        for col in self.columns:  # a column is one or more segments (a timestamp: day, time, weekday), or none
            spans.append((i, i + col.in_dim, o, o + col.out_dim))
            for suffix, kind, n_in, n_out, nulls, spikes in col.parts():
                segments.append(Segment(col.name + suffix, kind, i, i + n_in, o, o + n_out, bool(nulls), int(spikes)))
                i, o = i + n_in, o + n_out
        self.segments: list[Segment] = segments
        self._spans = spans
        self._index = {col.name: i for i, col in enumerate(self.columns)}
        self.input_dim, self.output_dim = i, o

    # ---- fitting -------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, table: pa.Table, *, label: str | None, image_shape: tuple[int, int, int] | None = None,
            n_quantiles: int = 1000, max_categories: int = MAX_CATEGORIES, categorical: list[str] | None = None,
            numeric: list[str] | None = None, max_int_categories: int = MAX_INT_CATEGORIES,
            ids: list[str] | None = None, drop: list[str] | None = None, rare_min_rows: int = RARE_MIN_ROWS,
            keep_rare: bool = False) -> "Codec":
        """Fit on the training split (``augment.columns.detect`` says which codec each column gets).

        Strings, booleans and dictionaries are categorical; so is an integer column with at most
        ``max_int_categories`` distinct values (a day of the month, a count of children): its values are often
        lumpy in ways a smooth numeric model misses (calls cluster on some dates), which a real-vs-synthetic
        classifier spots at once. ``categorical`` / ``numeric`` / ``ids`` force the named columns; ``drop``
        leaves columns out of the model and the output. Every unusable column is reported in one error.
        """
        spec = _fit_label(table, label)
        dropped = list(dict.fromkeys(drop or ()))
        features = [c for c in table.column_names if c != label and c not in dropped]
        forcing = {"categorical": set(categorical or ()), "numeric": set(numeric or ()), "identifier": set(ids or ())}
        known = [c for c in table.column_names if c != label]
        unknown = {what: sorted(names - set(known)) for what, names in [("drop", set(dropped)), *forcing.items()]}
        bad = "; ".join(f"{what} columns {names} not found" for what, names in unknown.items() if names)
        if bad:
            raise SchemaError(f"{bad}; feature columns: {known}")
        names = [n for w, ns in forcing.items() for n in ns]
        twice = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(dropped)))
        if twice:
            raise SchemaError(f"columns {twice} are given more than one of --categorical, --numeric, --id, --drop")
        if not features:
            raise SchemaError(f"no feature columns besides the label {label!r}; columns: {table.column_names}")
        if table.num_rows < 2:
            raise InputError(f"the table has {table.num_rows} rows; at least 2 are needed")
        images = [c for c in aio.detect_image_columns(table) if c != label and c not in dropped]
        if images:
            others = [c for c in features if c not in images[:1]]
            if others:
                raise SchemaError(f"an image table holds one image column ({images[0]!r}) and the label; remove {others}")
            name = images[0]
            shape = aio.image_shape_of(table, name, image_shape)
            col = ImageColumn.fit(name, _as_array(table.column(name)), shape)
            return cls(modality="image", columns=[col], label=spec, image_shape=shape, dropped=dropped)
        forced_of = {n: w for w, ns in forcing.items() for n in ns}
        columns, problems = [], []
        for name in features:
            arr = _as_array(table.column(name))
            plan = plan_column(name, arr, forced=forced_of.get(name), max_categories=max_categories,
                               max_int_categories=max_int_categories)
            if plan.problem is not None:
                problems.append(f"{name!r} {plan.problem}")
                continue
            try:
                columns.append(_FITTERS[plan.kind](name, arr, n_quantiles=n_quantiles, max_categories=max_categories,
                                                   rare_min_rows=rare_min_rows, keep_rare=keep_rare))
            except TooManyCategories as err:
                problems.append(f"{name!r} has {err.count:,} distinct values, more than --max-categories "
                                f"{max_categories}: --max-categories {err.count}, --drop {name} or --id {name}")
            except SchemaError as err:
                problems.append(str(err))
        if problems:
            raise SchemaError(f"{len(problems)} column(s) cannot be modelled: " + "; ".join(problems))
        return cls(modality="table", columns=columns, label=spec, dropped=dropped)

    # ---- forward (training, perturb) -----------------------------------------------------------------------
    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def feature_schema(self) -> pa.Schema:
        """The feature columns' names and Arrow types, in training order (label excluded)."""
        return pa.schema([pa.field(c.name, c.arrow_type) for c in self.columns])

    def _check_columns(self, table: pa.Table) -> None:
        missing = [c.name for c in self.columns if c.in_dim and c.name not in table.column_names]
        if missing:
            raise SchemaError(f"columns {missing} missing from the table; it has {table.column_names}")

    def transform(self, table: pa.Table, rng: np.random.Generator | None = None) -> np.ndarray:
        """Real rows -> (n, input_dim) float32 (the encoder input).

        With ``rng`` (training), a numeric value that many rows share (a point mass: 0 balances, ``pdays = -1``,
        integers) is spread uniformly over its slice of the normal scale instead of sitting on one point, so the
        learned variance cannot collapse onto it; the inverse maps the whole slice back to that value.
        Without ``rng`` (encoding for perturbation) a tied value takes the middle of its slice.
        """
        self._check_columns(table)
        out = np.empty((table.num_rows, self.input_dim), np.float32)
        for col, (i0, i1, _, _) in zip(self.columns, self._spans):
            if i1 > i0:
                out[:, i0:i1] = col.transform(_as_array(table.column(col.name)), rng)
        return out

    def encode_labels(self, table: pa.Table) -> np.ndarray:
        """(n,) int64 class indices; all zeros for an unconditional codec."""
        column = self.label.column
        if column is None:
            return np.zeros(table.num_rows, np.int64)
        if column not in table.column_names:
            raise SchemaError(f"label column {column!r} not found; available columns: {table.column_names}")
        arr = _as_array(table.column(column))
        if arr.null_count:
            raise InputError(f"label column {column!r} has {arr.null_count} null values; every row needs a label")
        values = arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr
        known = self.label.values
        try:
            if values.type != known.type:
                values = values.cast(known.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise ClassNameError(f"label column {column!r} has type {arr.type}; known classes: {self.label.classes}") from err
        idx = pc.index_in(values, value_set=known)
        if idx.null_count:
            bad = values.filter(idx.is_null())[0].as_py()
            raise ClassNameError(f"unknown class {bad!r} in label column {column!r}; known classes: {self.label.classes}")
        return idx.to_numpy(zero_copy_only=False).astype(np.int64)

    # ---- inverse (generation) ------------------------------------------------------------------------------
    def inverse(self, params: np.ndarray, rng: np.random.Generator | int, temperature: float = 1.0) -> pa.Table:
        """Decoder output (n, output_dim) -> the feature columns (real names, order and types; no label).

        ``rng`` is consumed column by column in training order; ``temperature`` 0 gives the modes.
        """
        params = np.asarray(params)
        if params.ndim != 2 or params.shape[1] != self.output_dim:
            raise ValueError(f"params must have shape (n, {self.output_dim}), got {params.shape}")
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        n = params.shape[0]
        arrays = [col.generate(np.arange(n), 0) if col.kind == "identifier"
                  else col.inverse(params[:, o0:o1], rng, float(temperature))
                  for col, (_, _, o0, o1) in zip(self.columns, self._spans)]
        return pa.Table.from_arrays(arrays, schema=self.feature_schema)

    def column(self, name: str):
        """The named column's codec."""
        return self.columns[self._index[name]]

    def output_slice(self, name: str) -> slice:
        """The decoder outputs of the named column (its parameters)."""
        _, _, o0, o1 = self._spans[self._index[name]]
        return slice(o0, o1)

    @property
    def identifiers(self) -> list:
        return [c for c in self.columns if c.kind == "identifier"]

    def fill_identifiers(self, table: pa.Table, first_row: int, seed: int) -> pa.Table:
        """``table`` with fresh identifiers for job rows ``first_row ..``: unique within the job (the row number
        is the shard's place in the plan plus the row's place in the shard), never a training value."""
        for col in self.identifiers:
            if col.name in table.column_names:
                i = table.schema.get_field_index(col.name)
                values = col.generate(np.arange(first_row, first_row + table.num_rows), seed)
                table = table.set_column(i, table.schema.field(i), values)
        return table

    def inverse_columns(self, params: np.ndarray, rng: np.random.Generator, temperature: float,
                        names) -> dict[str, pa.Array]:
        """``inverse`` of the named columns only (in training order, drawing from ``rng`` as ``inverse`` does for
        them): ``--where`` decodes the columns it tests first and the others only for the rows it keeps."""
        wanted, n = set(names), params.shape[0]
        return {col.name: col.generate(np.arange(n), 0) if col.kind == "identifier"
                else col.inverse(params[:, o0:o1], rng, float(temperature))
                for col, (_, _, o0, o1) in zip(self.columns, self._spans) if col.name in wanted}

    def label_array(self, indices: np.ndarray) -> pa.Array:
        """Class indices -> label values in the label's original Arrow type (all null when unconditional)."""
        indices = np.asarray(indices, dtype=np.int64)
        t = self.label.arrow_type
        if t is None:
            return pa.nulls(len(indices))
        if indices.size and (indices.min() < 0 or indices.max() >= self.label.num_classes):
            raise ClassNameError(f"class index out of range 0..{self.label.num_classes - 1}; classes: {self.label.classes}")
        if pa.types.is_dictionary(t):
            return pa.DictionaryArray.from_arrays(arrays.from_numpy(indices).cast(t.index_type), self.label.values,
                                                  ordered=t.ordered)
        return self.label.values.take(arrays.from_numpy(indices))

    # ---- JSON ----------------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        """Plain JSON (dicts, lists, numbers, strings, bools, None): ``json.dumps`` works on it."""
        return {
            "format": CODEC_FORMAT,
            "modality": self.modality,
            "image_shape": None if self.image_shape is None else list(self.image_shape),
            "label": {"column": self.label.column, "classes": list(self.label.classes),
                      "counts": list(self.label.counts), "type": self.label.type_str},
            "columns": [c.to_json() for c in self.columns],
            "dropped": list(self.dropped),
        }

    @classmethod
    def from_json(cls, d: dict) -> "Codec":
        if int(d.get("format", 0)) > CODEC_FORMAT:
            raise SchemaError(f"codec format {d.get('format')} is newer than this augment reads ({CODEC_FORMAT}); upgrade augment")
        lab = d["label"]
        spec = LabelSpec(lab["column"], list(lab["classes"]), [int(k) for k in lab["counts"]], lab["type"])
        columns = []
        for c in d["columns"]:
            if c["kind"] not in COLUMN_KINDS:
                raise SchemaError(f"unknown column kind {c['kind']!r} in codec; known: {sorted(COLUMN_KINDS)}")
            columns.append(COLUMN_KINDS[c["kind"]].from_json(c))
        return cls(modality=d["modality"], columns=columns, label=spec, image_shape=d.get("image_shape"),
                   dropped=d.get("dropped", []))

    def __repr__(self) -> str:
        kinds = ", ".join(f"{s.name}:{s.kind}" for s in self.segments)
        return f"Codec(modality={self.modality!r}, input_dim={self.input_dim}, output_dim={self.output_dim}, label={self.label.column!r}, columns=[{kinds}])"


def _fit_numeric(name, arr, *, n_quantiles, **_):
    return NumericColumn.fit(name, arr, n_quantiles=n_quantiles)


def _fit_temporal(name, arr, *, n_quantiles, **_):
    return TemporalColumn.fit(name, arr, n_quantiles=n_quantiles)


def _fit_categorical(name, arr, *, max_categories, rare_min_rows, keep_rare, **_):
    return CategoricalColumn.fit(name, arr, max_categories=max_categories, rare_min_rows=rare_min_rows,
                                 keep_rare=keep_rare)


def _fit_identifier(name, arr, **_):
    return IdentifierColumn.fit(name, arr)


_FITTERS = {"numeric": _fit_numeric, "temporal": _fit_temporal, "categorical": _fit_categorical,
            "identifier": _fit_identifier}
