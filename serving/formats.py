"""Wire formats: Arrow tables to JSON, Parquet and Arrow IPC bytes, and request bodies back to tables.

JSON is the slow path the issue measured (per-row Python objects); here each column becomes one Python list in
one vectorized call (numpy ``tolist`` for numbers, one pyarrow call for strings), rows are zipped from those
lists, and orjson writes the bytes. Arrow IPC and Parquet skip all of that and are the fast path.

Binary columns (e.g. PNG-encoded images) travel as base64 strings in JSON, both ways. Dates, timestamps and
times travel as ISO 8601 strings (``2020-01-31``, ``2020-01-31T14:05:00.250000+01:00``, ``14:05:00``),
durations as ISO 8601 seconds (``PT90.5S``), decimals as strings (``"12.30"``: a JSON number would round).
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "JSON",
    "PARQUET",
    "ARROW_STREAM",
    "MEDIA_TYPES",
    "choose_media_type",
    "table_to_rows",
    "encode_json",
    "encode_table",
    "rows_to_table",
    "cast_to_schema",
    "check_names",
    "ColumnError",
]

JSON = "application/json"
PARQUET = "application/vnd.apache.parquet"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
MEDIA_TYPES = (JSON, PARQUET, ARROW_STREAM)


class ColumnError(ValueError):
    """A request column is missing, unexpected, or holds values of the wrong type (``column`` names it)."""

    def __init__(self, column: str | None, message: str) -> None:
        super().__init__(message)
        self.column = column


def choose_media_type(accept: str | None) -> str | None:
    """The response type for an ``Accept`` header: JSON by default, None when nothing we send is acceptable."""
    if not accept:
        return JSON
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept.split(",")):
        fields = [f.strip() for f in part.split(";")]
        media, q = fields[0].lower(), 1.0
        for param in fields[1:]:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if q > 0:
            ranked.append((-q, position, media))
    for _, _, media in sorted(ranked):
        if media in MEDIA_TYPES:
            return media
        if media in ("*/*", "application/*"):
            return JSON
    return None


# --- tables out ------------------------------------------------------------------------------------------


def _column_values(array: pa.Array) -> list:
    """One column as a list of JSON-ready Python values, vectorized where the type allows."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    t = array.type
    if pa.types.is_null(t):
        return [None] * len(array)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        if array.null_count == 0:
            return array.to_numpy(zero_copy_only=False).tolist()
        values = array.fill_null(False if pa.types.is_boolean(t) else 0).to_numpy(zero_copy_only=False).tolist()
        for i in np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False)).tolist():
            values[i] = None
        return values
    if pa.types.is_fixed_size_list(t) and array.null_count == 0 and _is_plain_number(t.value_type):
        flat = array.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(array), t.list_size).tolist()
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return [None if b is None else base64.b64encode(b).decode("ascii") for b in array.to_pylist()]
    for is_type, to_text in _TEXT_OUT:
        if is_type(t):
            return to_text(array).to_pylist()
    return array.to_pylist()  # strings, lists: one C-level pass in pyarrow


def _timestamp_text(array: pa.Array) -> pa.Array:
    import pyarrow.compute as pc

    if not array.type.tz:
        return pc.strftime(array, format="%Y-%m-%dT%H:%M:%S")
    text = pc.strftime(array, format="%Y-%m-%dT%H:%M:%S%z")  # +0100 -> +01:00 (ISO 8601 extended)
    return pc.replace_substring_regex(text, pattern=r"([+-]\d\d)(\d\d)$", replacement=r"\1:\2")


_UNIT_SECONDS = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


def _duration_text(array: pa.Array) -> pa.Array:
    per = _UNIT_SECONDS[array.type.unit]
    ticks = array.cast(pa.int64()).to_pylist()
    def text(v: int) -> str:
        sign, v = ("-" if v < 0 else ""), abs(v)
        frac = "" if v % per == 0 else "." + str(v % per).rjust(len(str(per)) - 1, "0").rstrip("0")
        return f"PT{sign}{v // per}{frac}S"

    return pa.array([None if v is None else text(v) for v in ticks], pa.string())


_TEXT_OUT = [
    (pa.types.is_timestamp, _timestamp_text),
    (lambda t: pa.types.is_date(t) or pa.types.is_time(t) or pa.types.is_decimal(t), lambda a: a.cast(pa.string())),
    (pa.types.is_duration, _duration_text),
]


def _ticks(text: str, per: int) -> int:
    """``12.5`` seconds as ``per``-per-second ticks, exactly (no float rounding)."""
    sign = -1 if text.startswith("-") else 1
    whole, _, frac = text.lstrip("+-").partition(".")
    frac = (frac + "0" * 9)[:len(str(per)) - 1]
    return sign * (int(whole or "0") * per + (int(frac) if frac else 0))


def _time_ticks(v: str, t: pa.DataType) -> int:
    h, m, sec = v.split(":")
    per = _UNIT_SECONDS[t.unit]
    return (int(h) * 3600 + int(m) * 60) * per + _ticks(sec, per)


def _duration_ticks(v, t: pa.DataType) -> int:
    per = _UNIT_SECONDS[t.unit]
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return _ticks(repr(v), per) if isinstance(v, float) else int(v) * per
    if not (isinstance(v, str) and v.upper().startswith("PT") and v.upper().endswith("S")):
        raise ValueError(f"{v!r} is not an ISO 8601 duration in seconds such as 'PT90.5S'")
    return _ticks(v[2:-1], per)


def _json_in(values: list, t: pa.DataType) -> pa.Array | None:
    """JSON values of a date, timestamp, time, duration or decimal column as an array of ``t`` (else None)."""
    if pa.types.is_decimal(t) or pa.types.is_date(t) or pa.types.is_timestamp(t):
        return pa.array([None if v is None else str(v) for v in values], pa.string()).cast(t)
    for is_type, parse in ((pa.types.is_time, _time_ticks), (pa.types.is_duration, _duration_ticks)):
        if is_type(t):
            storage = pa.int32() if t.bit_width == 32 else pa.int64()
            return pa.array([None if v is None else parse(v, t) for v in values], storage).cast(t)
    return None


def _is_plain_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def table_to_rows(table: pa.Table) -> list[dict[str, Any]]:
    """A table as a list of row objects (column name -> value), built column by column."""
    names = table.column_names
    columns = [_column_values(table.column(i).combine_chunks()) for i in range(table.num_columns)]
    return [dict(zip(names, values)) for values in zip(*columns)]


def _orjson_default(value: Any) -> Any:
    # Decimal and other rare types; everything common is handled natively by orjson.
    return str(value)


def encode_json(payload: dict[str, Any], table: pa.Table, key: str = "rows") -> bytes:
    """``payload`` plus ``{key: rows of table}`` as JSON bytes (NaN becomes null, as JSON has no NaN)."""
    return orjson.dumps({**payload, key: table_to_rows(table)}, default=_orjson_default, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_table(table: pa.Table, media_type: str, metadata: dict[str, str] | None = None) -> bytes:
    """A table as Parquet or Arrow IPC stream bytes; ``metadata`` goes into the schema's key-value metadata."""
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    sink = io.BytesIO()
    if media_type == PARQUET:
        pq.write_table(table, sink)
    elif media_type == ARROW_STREAM:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    else:
        raise ValueError(f"cannot encode a table as {media_type}; one of {PARQUET}, {ARROW_STREAM}")
    return sink.getvalue()


# --- tables in -------------------------------------------------------------------------------------------


def _check_names(got: list[str], schema: pa.Schema) -> None:
    expected = schema.names
    missing = [n for n in expected if n not in got]
    extra = [n for n in got if n not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if extra:
            parts.append(f"unexpected columns {extra}")
        raise ColumnError(
            (missing or extra)[0], "; ".join(parts) + f"; the bundle's columns are {expected}"
        )


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """JSON row objects as a table of ``schema``; names the first column that is missing, extra or mistyped."""
    if not rows:
        raise ColumnError(None, "rows is empty; send at least one row")
    seen: dict[str, None] = {}
    for row in rows:
        if not isinstance(row, dict):
            raise ColumnError(None, f"each row must be an object of column -> value, got {type(row).__name__}")
        seen.update(dict.fromkeys(row))
    _check_names(list(seen), schema)
    arrays = []
    for field in schema:
        values = [row.get(field.name) for row in rows]
        t = field.type
        if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
            try:
                values = [None if v is None else base64.b64decode(v, validate=True) for v in values]
            except (TypeError, ValueError) as exc:
                raise ColumnError(field.name, f"column {field.name!r} holds binary data: send base64 strings ({exc})") from None
        try:
            typed = _json_in(values, t)
            arrays.append(typed if typed is not None else pa.array(values, type=t))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise ColumnError(field.name, f"column {field.name!r} must hold values of type {t}: {exc}") from None
    return pa.Table.from_arrays(arrays, schema=schema)


def cast_to_schema(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A table read from a body as a table of ``schema`` (columns in schema order, types cast)."""
    _check_names(table.column_names, schema)
    table = table.select(schema.names)
    arrays = []
    for field, column in zip(schema, table.columns):
        if column.type == field.type:
            arrays.append(column)
            continue
        try:
            arrays.append(column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise ColumnError(field.name, f"column {field.name!r} has type {column.type}, expected {field.type}: {exc}") from None
    return pa.Table.from_arrays(arrays, schema=schema)


check_names = _check_names
