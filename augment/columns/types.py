"""Arrow types as strings, and the physical (float64) view of every numeric-like type.

A numeric-like column (integers of any width and sign, floats, decimals, dates, timestamps, times of day,
durations) is modelled on one float64 number per row: its value, or its count of the type's unit (days for
date32, the unit's ticks for timestamps, times and durations). ``to_physical`` and ``from_physical`` move
between the two; ``from_physical`` rounds to the unit or the decimal scale, so a value always fits its type.
"""

from __future__ import annotations

import base64

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from augment import arrays

__all__ = ["type_to_str", "type_from_str", "is_numeric_like", "is_temporal", "to_physical", "from_physical",
           "ticks_per_day", "family", "value_type", "decode", "sigmoid", "sample_categories"]


def type_to_str(t: pa.DataType) -> str:
    """An Arrow type as a string: its alias when ``pa.type_for_alias`` reads it back, else ``ipc:<base64>``."""
    s = str(t)
    try:
        if pa.type_for_alias(s) == t:
            return s
    except (ValueError, KeyError):
        pass
    buf = pa.schema([pa.field("t", t)]).serialize()
    return "ipc:" + base64.b64encode(buf.to_pybytes()).decode("ascii")


def type_from_str(s: str) -> pa.DataType:
    if s.startswith("ipc:"):
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(s[4:]))).field("t").type
    return pa.type_for_alias(s)


def is_temporal(t: pa.DataType) -> bool:
    return pa.types.is_date(t) or pa.types.is_timestamp(t) or pa.types.is_time(t) or pa.types.is_duration(t)


def is_numeric_like(t: pa.DataType) -> bool:
    """Types the numeric codec models: numbers, decimals and every temporal type (and all-null columns)."""
    return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or is_temporal(t)
            or pa.types.is_null(t))


_UNIT_PER_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}


def ticks_per_day(t: pa.DataType) -> int | None:
    """Units of ``t`` per calendar day: 1 for date32, the unit's count for date64 and timestamps, else None."""
    if pa.types.is_date32(t):
        return 1
    if pa.types.is_date64(t):
        return _UNIT_PER_DAY["ms"]
    if pa.types.is_timestamp(t):
        return _UNIT_PER_DAY[t.unit]
    return None


def _local(arr: pa.Array) -> pa.Array:
    """A zoned timestamp as its local wall-clock time (what a calendar histogram counts), else unchanged."""
    if pa.types.is_timestamp(arr.type) and arr.type.tz:
        return pc.local_timestamp(arr)
    return arr


def to_physical(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values float64, null mask) of a numeric-like array; timestamps with a zone in local wall time."""
    t = arr.type
    null = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else np.zeros(len(arr), bool)
    if pa.types.is_null(t):
        return np.zeros(len(arr)), np.ones(len(arr), bool)
    if is_temporal(t):
        ints = _local(arr).cast(pa.int64() if t.bit_width == 64 else pa.int32()).cast(pa.int64())
        values = ints.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
    elif pa.types.is_decimal(t):
        values = arr.cast(pa.float64()).fill_null(0).to_numpy(zero_copy_only=False)
    else:
        values = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)
        values = np.where(null, 0.0, values) if arr.null_count else values
    return values, null


def from_physical(x: np.ndarray, t: pa.DataType, mask: np.ndarray | None) -> pa.Array:
    """float64 values (already within the observed range) -> an array of ``t``, rounded to its unit or scale."""
    if pa.types.is_floating(t):
        return arrays.from_numpy(x.astype(t.to_pandas_dtype()), t, mask=mask)
    if pa.types.is_integer(t):
        return arrays.from_numpy(np.rint(x).astype(t.to_pandas_dtype()), t, mask=mask)
    if pa.types.is_decimal(t):  # two's complement little-endian words: the unscaled value, sign-extended
        units = np.rint(x * 10.0 ** t.scale).astype(np.int64)
        words = np.empty((len(x), t.bit_width // 64), np.int64)
        words[:, 0] = units
        words[:, 1:] = (units >> 63)[:, None]
        validity = None if mask is None or not mask.any() else pa.py_buffer(np.packbits(~mask, bitorder="little"))
        return pa.Array.from_buffers(t, len(x), [validity, pa.py_buffer(words)],
                                     null_count=-1 if validity is not None else 0)
    storage = pa.int64() if t.bit_width == 64 else pa.int32()
    ints = arrays.from_numpy(np.rint(x).astype(storage.to_pandas_dtype()), storage, mask=mask)
    if pa.types.is_timestamp(t) and t.tz:  # generated in local wall time: back to UTC in the column's zone
        naive = ints.cast(pa.timestamp(t.unit))
        return pc.assume_timezone(naive, t.tz, ambiguous="earliest", nonexistent="earliest")
    return ints.cast(t)


def family(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return family(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "floating"
    return str(t)


def value_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def decode(arr: pa.Array) -> pa.Array:
    return arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def sample_categories(logits: np.ndarray, u: np.ndarray, temperature: float) -> np.ndarray:
    """(n,) draws from softmax(logits / T) by inverse CDF, one uniform ``u`` per row; T = 0 gives the argmax."""
    if temperature == 0:
        return np.argmax(logits, axis=1)
    if logits.shape[0] <= _CATEGORY_ROWS:
        return _sample_rows(logits, u, temperature)
    out = np.empty(logits.shape[0], np.int64)
    for start in range(0, logits.shape[0], _CATEGORY_ROWS):  # rows are independent: the same draws, in cache
        sl = slice(start, start + _CATEGORY_ROWS)
        out[sl] = _sample_rows(logits[sl], u[sl], temperature)
    return out


_CATEGORY_ROWS = 4096  # rows per pass: a 42-value column's (K, rows) float32 work array stays in L2


def _sample_rows(logits: np.ndarray, u: np.ndarray, temperature: float) -> np.ndarray:
    k = logits.shape[1]
    # one uniform per row is cheaper than Gumbel-max; work on (K, n): reductions along a short strided axis are
    # several times slower in numpy
    cum = np.ascontiguousarray(logits.T, dtype=np.float32)
    if temperature != 1:
        cum *= np.float32(1.0 / temperature)
    cum -= cum.max(axis=0)
    np.exp(cum, out=cum)
    # the running sum one category (one contiguous row) at a time: the same sums in the same order as
    # np.cumsum(axis=0), which walks the short strided axis element by element and was 20x slower
    for j in range(1, k):
        np.add(cum[j - 1], cum[j], out=cum[j])
    # the count of partial sums below u: summed as bytes into int32 (a bool sum widens every element to int64,
    # twice the time here), then int64 as callers index with it
    below = cum < u.astype(np.float32) * cum[-1]
    return np.minimum(below.view(np.uint8).sum(axis=0, dtype=np.int32), k - 1).astype(np.int64)
