"""One codec per column kind (numeric, categorical, image), used by ``augment.codec.Codec``.

Each has ``fit``, ``in_dim``/``out_dim``, ``transform(arr) -> (n, in_dim) float32``,
``inverse(params (n, out_dim), rng, temperature) -> pa.Array`` and a JSON round trip. All numpy, vectorized.
Random draws: numeric takes n normals, then n uniforms if nullable, then n uniforms if it has spikes;
categorical takes n uniforms; image none.
"""

from __future__ import annotations

import base64
import functools
import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from augment import arrays
from augment import io as aio
from augment.errors import InputError, SchemaError

__all__ = ["NumericColumn", "CategoricalColumn", "ImageColumn", "COLUMN_KINDS", "type_to_str", "type_from_str"]

_U_EPS = 1e-7  # quantile levels clipped to [eps, 1-eps]: the normal scores stay within about +-5.2
_LOGVAR_RANGE = (-30.0, 20.0)
_Z_MAX = 5.3  # normal scores beyond this map to the first / last quantile (as their level is within eps of 0 / 1)
SPIKE_SHARE = 0.05  # a numeric value held by at least this share of the rows gets its own category
MAX_SPIKES = 4
_Z_TABLE = 8192  # intervals of the z -> value lookup table of a numeric column (steps of 0.0013)


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


def _is_numeric_type(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)


def _family(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return _family(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "floating"
    return str(t)


def _value_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def _decode(arr: pa.Array) -> pa.Array:
    return arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def sample_categories(logits: np.ndarray, u: np.ndarray, temperature: float) -> np.ndarray:
    """(n,) draws from softmax(logits / T) by inverse CDF, one uniform ``u`` per row; T = 0 gives the argmax."""
    k = logits.shape[1]
    if temperature == 0:
        return np.argmax(logits, axis=1)
    # one uniform per row is cheaper than Gumbel-max; work on (K, n): reductions along a short strided axis are
    # several times slower in numpy
    cum = np.ascontiguousarray(logits.T, dtype=np.float32) * np.float32(1.0 / temperature)
    cum -= cum.max(axis=0)
    np.exp(cum, out=cum)
    np.cumsum(cum, axis=0, out=cum)
    return np.minimum((cum < u.astype(np.float32) * cum[-1]).sum(axis=0), k - 1)


@dataclass
class NumericColumn:
    """Quantile transform to a standard normal, plus point masses ("spikes").

    A value that at least ``SPIKE_SHARE`` of the rows hold (``pdays = -1``, zero balances, ``campaign = 1``)
    is a spike: the column then also carries a categorical part over [spike 1, ..., spike S, "other"], and the
    quantile transform covers only the "other" values. Without it a point mass is a wide slice of the normal
    scale that a Gaussian cannot fill without leaking out of it, and two columns that are point masses together
    (``pdays = -1`` exactly when ``previous = 0``) came out inconsistent in 12% of generated rows.

    in = [score, null_flag?, one-hot over spikes + other?]; out = [mean, logvar, null_logit?, spike logits?].
    """

    name: str
    type_str: str
    quantiles: np.ndarray  # (m,) float64, of the non-spike values; empty for an all-null column
    lo: float | int | None
    hi: float | int | None
    has_nulls: bool
    spikes: list = field(default_factory=list)  # sorted values (JSON numbers) with their own category
    kind = "numeric"

    @property
    def spike_dim(self) -> int:
        """Width of the categorical part: the spikes and "other", or 0 without spikes."""
        return len(self.spikes) + 1 if self.spikes else 0

    @property
    def in_dim(self) -> int:
        return 1 + self.has_nulls + self.spike_dim

    @property
    def out_dim(self) -> int:
        return 2 + self.has_nulls + self.spike_dim

    @staticmethod
    def _values(name: str, arr: pa.Array, expected: str) -> tuple[np.ndarray, np.ndarray]:
        """(values float64, valid bool); NaN and +-inf count as null."""
        if not _is_numeric_type(arr.type):
            raise SchemaError(f"column {name!r} should be numeric ({expected}) but has type {arr.type}")
        if pa.types.is_null(arr.type):
            return np.zeros(len(arr)), np.zeros(len(arr), bool)
        values = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)
        return values, np.isfinite(values)

    @classmethod
    def fit(cls, name: str, arr: pa.Array, *, n_quantiles: int = 1000, spike_share: float = SPIKE_SHARE,
            max_spikes: int = MAX_SPIKES) -> "NumericColumn":
        values, valid = cls._values(name, arr, "int or float")
        v = values[valid]
        spikes: list = []
        if v.size:
            uniq, counts = np.unique(v, return_counts=True)
            order = np.argsort(-counts, kind="stable")[:max_spikes]
            top = np.sort(uniq[order][counts[order] >= spike_share * v.size])
            if top.size:
                rest = v[~np.isin(v, top)]
                spikes = [int(x) for x in top] if pa.types.is_integer(arr.type) else [float(x) for x in top]
                v_cont = rest if rest.size else v  # all spikes: "other" never occurs; keep a valid transform
            else:
                v_cont = v
            q = np.quantile(v_cont, np.linspace(0.0, 1.0, max(2, min(n_quantiles, v_cont.size))))
            lo, hi = v.min(), v.max()
            if pa.types.is_integer(arr.type):
                lo, hi = int(lo), int(hi)
            else:
                lo, hi = float(lo), float(hi)
        else:
            q, lo, hi = np.zeros(0), None, None
        return cls(name, type_to_str(arr.type), q, lo, hi, bool((~valid).any()), spikes)

    @property
    def arrow_type(self) -> pa.DataType:
        return type_from_str(self.type_str)

    @functools.cached_property
    def _spike_values(self) -> np.ndarray:
        return np.asarray(self.spikes, dtype=np.float64)

    def _levels(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, self.quantiles.size)

    def transform(self, arr: pa.Array, rng: np.random.Generator | None = None) -> np.ndarray:
        x, valid = self._values(self.name, arr, self.type_str)
        out = np.zeros((len(x), self.in_dim), np.float32)
        cont = valid
        if self.spikes:
            sv, first = self._spike_values, 1 + self.has_nulls
            k = np.minimum(np.searchsorted(sv, x), sv.size - 1)
            spike = valid & (sv[k] == x)
            cont = valid & ~spike
            out[spike, first + k[spike]] = 1.0
            out[cont, first + sv.size] = 1.0  # "other"
        q = self.quantiles
        if q.size and q[0] != q[-1]:  # a constant column maps to 0
            lv, xv = self._levels(), x[cont]
            # The forward and backward interpolations bound the slice of [0, 1] a value occupies: equal for a
            # value between distinct quantiles, apart for a tied one. Mid-way (as sklearn) or, given an rng,
            # uniform over the slice (dequantization).
            hi = np.interp(xv, q, lv)
            lo = -np.interp(-xv, -q[::-1], -lv[::-1])
            u = 0.5 * (hi + lo) if rng is None else lo + (hi - lo) * rng.random(xv.size)
            from scipy.special import ndtri  # encoding only: the sampling path stays free of scipy's import

            out[cont, 0] = ndtri(np.clip(u, _U_EPS, 1.0 - _U_EPS))
        if self.has_nulls:
            out[:, 1] = ~valid
        return out

    def _from_uniform(self, u: np.ndarray) -> np.ndarray:
        """Interpolate u in [0, 1] through the quantiles; the levels are evenly spaced, so no search is needed."""
        q = self.quantiles
        pos = np.clip(u, 0.0, 1.0) * (q.size - 1)
        i = np.minimum(pos.astype(np.intp), q.size - 2)
        return q[i] + (pos - i) * (q[i + 1] - q[i])

    @functools.cached_property
    def _z_table(self) -> np.ndarray:
        """The value at evenly spaced normal scores in [-Z_MAX, Z_MAX]: quantiles at Phi(z), built once.

        Generation then looks z up with index arithmetic (as ``_from_uniform`` does u), which is several times
        faster than Phi (an erfc) per value plus a search, and needs no scipy (whose import alone costs 0.1 s).
        """
        z = np.linspace(-_Z_MAX, _Z_MAX, _Z_TABLE + 1)
        u = np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in z])
        u[0], u[-1] = 0.0, 1.0  # the ends are the observed minimum and maximum exactly
        return self._from_uniform(u)

    def _from_normal(self, z: np.ndarray) -> np.ndarray:
        table = self._z_table
        pos = (np.clip(z, -_Z_MAX, _Z_MAX) + _Z_MAX) * (_Z_TABLE / (2 * _Z_MAX))
        i = np.minimum(pos.astype(np.intp), _Z_TABLE - 1)
        return table[i] + (pos - i) * (table[i + 1] - table[i])

    def inverse(self, params: np.ndarray, rng: np.random.Generator, temperature: float) -> pa.Array:
        n, t = params.shape[0], self.arrow_type
        eps = rng.standard_normal(n)
        u_null = rng.random(n) if self.has_nulls else None
        u_spike = rng.random(n) if self.spikes else None
        if self.quantiles.size == 0:
            return pa.nulls(n, type=t)
        logvar = np.clip(params[:, 1].astype(np.float64), *_LOGVAR_RANGE)
        z = params[:, 0].astype(np.float64) + np.exp(0.5 * logvar) * (temperature * eps)
        x = np.clip(self._from_normal(z), self.lo, self.hi)
        if pa.types.is_integer(t):
            x = np.rint(x)
        if self.spikes:
            first = 2 + self.has_nulls
            k = sample_categories(params[:, first:first + self.spike_dim], u_spike, temperature)
            spike = k < len(self.spikes)
            x[spike] = self._spike_values[k[spike]]
        mask = None
        if self.has_nulls:
            logit = params[:, 2]
            mask = logit > 0 if temperature == 0 else u_null < _sigmoid(logit.astype(np.float64))
        return arrays.from_numpy(x.astype(t.to_pandas_dtype()), t, mask=mask)

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "type": self.type_str, "quantiles": self.quantiles.tolist(),
                "min": self.lo, "max": self.hi, "has_nulls": self.has_nulls, "spikes": list(self.spikes)}

    @classmethod
    def from_json(cls, d: dict) -> "NumericColumn":
        return cls(d["name"], d["type"], np.asarray(d["quantiles"], dtype=np.float64), d["min"], d["max"],
                   bool(d["has_nulls"]), list(d.get("spikes", [])))


@dataclass
class CategoricalColumn:
    """One-hot over the categories (null is one more, last); out = K logits sampled with a temperature."""

    name: str
    type_str: str
    categories: list = field(default_factory=list)  # sorted non-null values, JSON-native
    has_nulls: bool = False
    kind = "categorical"

    def __post_init__(self) -> None:
        self._dictionary = arrays.from_list(self.categories, _value_type(self.arrow_type))

    @property
    def arrow_type(self) -> pa.DataType:
        return type_from_str(self.type_str)

    @property
    def in_dim(self) -> int:
        return len(self.categories) + self.has_nulls

    out_dim = in_dim

    @classmethod
    def fit(cls, name: str, arr: pa.Array, *, max_categories: int = 1000) -> "CategoricalColumn":
        values = _decode(arr)
        uniq = pc.unique(values).drop_null()
        uniq = uniq.take(pc.sort_indices(uniq))
        if len(uniq) > max_categories:
            raise SchemaError(f"column {name!r} has {len(uniq)} distinct values, more than max_categories={max_categories}: drop the column or raise max_categories")
        return cls(name, type_to_str(arr.type), uniq.to_pylist(), values.null_count > 0)

    def codes(self, arr: pa.Array) -> np.ndarray:
        """(n,) int64 category indices; null -> the last index; unseen values -> InputError."""
        expected = self.arrow_type
        if _family(arr.type) != _family(expected):
            raise SchemaError(f"column {self.name!r} should be categorical ({expected}) but has type {arr.type}")
        values = _decode(arr)
        if values.type != self._dictionary.type:
            values = values.cast(self._dictionary.type)
        idx = pc.index_in(values, value_set=self._dictionary).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        isnull = values.is_null().to_numpy(zero_copy_only=False)
        unseen = (idx < 0) & ~isnull
        if unseen.any():
            bad = values[int(np.argmax(unseen))].as_py()
            raise InputError(f"column {self.name!r} holds {bad!r}, a value not seen in training; allowed: {self.categories[:10]}" + (" ..." if len(self.categories) > 10 else ""))
        if isnull.any():
            if not self.has_nulls:
                raise InputError(f"column {self.name!r} holds nulls but had none in training; allowed: {self.categories[:10]}")
            idx[isnull] = len(self.categories)
        return idx

    def transform(self, arr: pa.Array) -> np.ndarray:
        idx = self.codes(arr)
        out = np.zeros((len(idx), self.in_dim), np.float32)
        out[np.arange(len(idx)), idx] = 1.0
        return out

    def inverse(self, params: np.ndarray, rng: np.random.Generator, temperature: float) -> pa.Array:
        return self.build(sample_categories(params, rng.random(params.shape[0]), temperature))

    def build(self, idx: np.ndarray) -> pa.Array:
        """Category indices -> an Arrow array of the column's original type."""
        t = self.arrow_type
        mask = (idx == len(self.categories)) if self.has_nulls else None
        indices = arrays.from_numpy(np.where(mask, 0, idx) if mask is not None else idx, pa.int32(), mask=mask)
        if pa.types.is_dictionary(t):
            return pa.DictionaryArray.from_arrays(indices.cast(t.index_type), self._dictionary, ordered=t.ordered)
        return self._dictionary.take(indices)

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "type": self.type_str, "categories": list(self.categories), "has_nulls": self.has_nulls}

    @classmethod
    def from_json(cls, d: dict) -> "CategoricalColumn":
        return cls(d["name"], d["type"], list(d["categories"]), bool(d["has_nulls"]))


@dataclass
class ImageColumn:
    """Pixels / scale in [0, 1]; out = C*H*W logits, inverse sigmoid * scale in the input dtype and encoding."""

    name: str
    type_str: str
    shape: tuple[int, int, int]
    scale: float  # 255 for uint8 (and PNG), else the largest training value
    has_nulls: bool = False
    kind = "image"

    @property
    def arrow_type(self) -> pa.DataType:
        return type_from_str(self.type_str)

    @property
    def in_dim(self) -> int:
        return int(np.prod(self.shape))

    out_dim = in_dim

    def _pixel_dtype(self) -> np.dtype:
        t = self.arrow_type
        return np.dtype(np.uint8) if aio.image_encoding(t) == "png" else np.dtype(t.value_type.to_pandas_dtype())

    @classmethod
    def fit(cls, name: str, arr: pa.Array, shape: tuple[int, int, int]) -> "ImageColumn":
        pixels = aio.image_to_array(arr, shape, name=name)
        if pixels.dtype == np.uint8:
            scale = 255.0
        else:
            top = float(pixels.max()) if pixels.size else 0.0
            scale = top if top > 0 else 1.0
        return cls(name, type_to_str(arr.type), tuple(int(s) for s in shape), scale)

    def transform(self, arr: pa.Array) -> np.ndarray:
        pixels = aio.image_to_array(arr, self.shape, name=self.name)
        return np.clip(pixels.astype(np.float32) / np.float32(self.scale), 0.0, 1.0)

    def inverse(self, params: np.ndarray, rng: np.random.Generator, temperature: float) -> pa.Array:
        x = _sigmoid(params.astype(np.float32)) * np.float32(self.scale)
        dtype = self._pixel_dtype()
        if np.issubdtype(dtype, np.integer):
            x = np.clip(np.rint(x), 0, np.iinfo(dtype).max)
        return aio.array_to_image_column(x.astype(dtype), self.arrow_type, self.shape)

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "type": self.type_str, "shape": list(self.shape), "scale": self.scale,
                "encoding": aio.image_encoding(self.arrow_type), "has_nulls": False}

    @classmethod
    def from_json(cls, d: dict) -> "ImageColumn":
        return cls(d["name"], d["type"], tuple(int(s) for s in d["shape"]), float(d["scale"]))


COLUMN_KINDS = {c.kind: c for c in (NumericColumn, CategoricalColumn, ImageColumn)}
