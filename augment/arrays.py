"""numpy <-> Arrow without ``pa.array`` or ``to_numpy``, on the generation path.

``pa.array`` checks its argument for pandas objects, and its first call in a process imports pandas: 0.2 s, a
tenth of the wall time of a million-row ``augment generate`` here. Arrays built from buffers skip that check
(and the copy: numeric values are wrapped, not converted). Types these helpers do not cover fall back to
``pa.array``. ``Array.to_numpy`` and a Python scalar handed to a compute function (``pc.fill_null(a, False)``)
take the same detour; ``to_bool`` reads a boolean mask back from its bits.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = ["from_numpy", "from_list", "constant_string", "to_bool"]


def _bits(mask: np.ndarray) -> pa.Buffer:
    return pa.py_buffer(np.packbits(np.asarray(mask, dtype=bool), bitorder="little"))


def from_numpy(values: np.ndarray, type: pa.DataType | None = None, mask: np.ndarray | None = None) -> pa.Array:
    """``values`` (1-D) as an Arrow array of ``type`` (default: from the dtype); ``mask`` True marks nulls."""
    values = np.asarray(values)
    t = type if type is not None else pa.from_numpy_dtype(values.dtype)
    n = len(values)
    simple = (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)) and values.ndim == 1
    if not simple:
        return pa.array(values, type=t, mask=mask)
    validity = None
    null_count = 0
    if mask is not None and np.any(mask):
        validity = _bits(~np.asarray(mask, dtype=bool))
        null_count = int(np.count_nonzero(mask))
    if pa.types.is_boolean(t):
        data = _bits(values.astype(bool, copy=False))
    else:
        data = pa.py_buffer(np.ascontiguousarray(values, dtype=t.to_pandas_dtype()))
    return pa.Array.from_buffers(t, n, [validity, data], null_count=null_count)


def from_list(items: list, type: pa.DataType) -> pa.Array:
    """A short list of JSON-native values (a codec's categories or classes) as an Arrow array of ``type``."""
    if pa.types.is_string(type) or pa.types.is_large_string(type):
        if any(v is None for v in items):
            return pa.array(items, type=type)
        encoded = [str(v).encode("utf-8") for v in items]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64 if pa.types.is_large_string(type) else np.int32)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        return pa.Array.from_buffers(type, len(encoded), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])
    if (pa.types.is_integer(type) or pa.types.is_floating(type) or pa.types.is_boolean(type)) and None not in items:
        return from_numpy(np.array(items, dtype=type.to_pandas_dtype()), type)
    return pa.array(items, type=type)


def constant_string(value: str, n: int) -> pa.Array:
    """``n`` copies of one string (the provenance ``augment_mode`` column)."""
    raw = value.encode("utf-8")
    offsets = np.arange(n + 1, dtype=np.int32) * len(raw)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(raw * n)])


def to_bool(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """(n,) numpy bools of an Arrow boolean array or chunked array; null counts as False."""
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    parts = []
    for chunk in chunks:
        n, offset = len(chunk), chunk.offset
        validity, data = chunk.buffers()[:2]
        bits = np.unpackbits(np.frombuffer(data, np.uint8), count=offset + n, bitorder="little")[offset:]
        if chunk.null_count and validity is not None:
            bits &= np.unpackbits(np.frombuffer(validity, np.uint8), count=offset + n, bitorder="little")[offset:]
        parts.append(bits.astype(bool))
    if not parts:
        return np.zeros(0, dtype=bool)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
