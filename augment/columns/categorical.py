"""The categorical codec: one-hot over the categories (null one more, last), with rare values protected.

A value held by fewer than ``rare_min_rows`` training rows identifies the few people who hold it, so it is
never written verbatim (unless the user opts in with ``--keep-rare``). What stands in for it:

- text (strings, dictionaries of strings): one pooled category, written as ``RARE_TOKEN`` (``"<rare>"``),
  drawn at the pooled values' training rate;
- numbers: the nearest common value (a zip code or a count stays a plausible zip code or count);
- booleans: nothing (two values identify no one).

The rare values themselves are not stored in the bundle; ``rare`` records how many there were and what
stands in for them (``augment info`` and the report show it). Random draws: n uniforms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from augment import arrays
from augment.columns.types import decode, family, sample_categories, type_from_str, type_to_str, value_type
from augment.errors import InputError, SchemaError

__all__ = ["CategoricalColumn", "RARE_TOKEN", "RARE_MIN_ROWS", "MAX_CATEGORIES", "TooManyCategories"]

RARE_TOKEN = "<rare>"
RARE_MIN_ROWS = 5
MAX_CATEGORIES = 1000


class TooManyCategories(SchemaError):
    """A categorical column has more (common) values than ``max_categories``."""

    def __init__(self, name: str, count: int, limit: int):
        super().__init__(f"column {name!r} has {count} distinct values, more than --max-categories {limit}")
        self.count = count


def _is_text(t: pa.DataType) -> bool:
    v = value_type(t)
    return pa.types.is_string(v) or pa.types.is_large_string(v)


@dataclass
class CategoricalColumn:
    """One-hot over the categories (null is one more, last); out = K logits sampled with a temperature."""

    name: str
    type_str: str
    categories: list = field(default_factory=list)  # sorted non-null values, JSON-native (RARE_TOKEN last)
    has_nulls: bool = False
    rare: dict | None = None  # {"values": n, "rows": n, "min_rows": k, "stand_in": "<rare>" | "nearest"}
    kind = "categorical"

    def __post_init__(self) -> None:
        self._dictionary = arrays.from_list(self.categories, value_type(self.arrow_type))

    @property
    def arrow_type(self) -> pa.DataType:
        return type_from_str(self.type_str)

    @property
    def in_dim(self) -> int:
        return len(self.categories) + self.has_nulls

    out_dim = in_dim

    def parts(self) -> list[tuple]:
        return [("", "categorical", self.in_dim, self.out_dim, self.has_nulls, 0)]

    @classmethod
    def fit(cls, name: str, arr: pa.Array, *, max_categories: int = MAX_CATEGORIES,
            rare_min_rows: int = RARE_MIN_ROWS, keep_rare: bool = False) -> "CategoricalColumn":
        values = decode(arr)
        vc = pc.value_counts(values.drop_null())
        uniq, counts = vc.field("values"), vc.field("counts").to_numpy(zero_copy_only=False)
        rare_mask = counts < rare_min_rows
        protect = (not keep_rare and rare_mask.any() and not pa.types.is_boolean(value_type(arr.type)))
        rare = None
        if protect:
            common = uniq.filter(pa.array(~rare_mask))
            stand_in = RARE_TOKEN if _is_text(arr.type) else "nearest"
            if stand_in == "nearest" and len(common) == 0:
                common = uniq  # every value is rare: nothing common to stand in; keep them (numbers only)
                protect = False
            rare = {"values": int(rare_mask.sum()), "rows": int(counts[rare_mask].sum()), "min_rows": int(rare_min_rows),
                    "stand_in": stand_in} if protect else None
            uniq = common
        uniq = uniq.take(pc.sort_indices(uniq)).to_pylist()
        if rare is not None and rare["stand_in"] == RARE_TOKEN and RARE_TOKEN not in uniq:
            uniq.append(RARE_TOKEN)
        if len(uniq) > max_categories:
            raise TooManyCategories(name, len(uniq), max_categories)
        return cls(name, type_to_str(arr.type), uniq, values.null_count > 0, rare)

    def _stand_in(self, values: pa.Array, unseen: np.ndarray) -> np.ndarray:
        """Category indices standing in for the unseen (rare) values at ``unseen``."""
        if self.rare["stand_in"] == RARE_TOKEN:
            return np.full(int(unseen.sum()), self.categories.index(RARE_TOKEN), np.int64)
        common = np.asarray(self.categories, dtype=np.float64)
        x = np.asarray(values.filter(pa.array(unseen)).cast(pa.float64()).to_numpy(zero_copy_only=False))
        right = np.clip(np.searchsorted(common, x), 1, common.size - 1) if common.size > 1 else np.zeros(x.size, np.int64)
        left = np.maximum(right - 1, 0)
        return np.where(np.abs(x - common[left]) <= np.abs(common[right] - x), left, right).astype(np.int64)

    def codes(self, arr: pa.Array) -> np.ndarray:
        """(n,) int64 category indices; null -> the last index; unseen values -> their stand-in or InputError."""
        expected = self.arrow_type
        if family(arr.type) != family(expected):
            raise SchemaError(f"column {self.name!r} should be categorical ({expected}) but has type {arr.type}")
        values = decode(arr)
        if values.type != self._dictionary.type:
            values = values.cast(self._dictionary.type)
        idx = pc.index_in(values, value_set=self._dictionary).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        isnull = values.is_null().to_numpy(zero_copy_only=False)
        unseen = (idx < 0) & ~isnull
        if unseen.any():
            if self.rare is None:
                bad = values[int(np.argmax(unseen))].as_py()
                raise InputError(f"column {self.name!r} holds {bad!r}, a value not seen in training; allowed: {self.categories[:10]}" + (" ..." if len(self.categories) > 10 else ""))
            idx[unseen] = self._stand_in(values, unseen)
        if isnull.any():
            if not self.has_nulls:
                raise InputError(f"column {self.name!r} holds nulls but had none in training; allowed: {self.categories[:10]}")
            idx[isnull] = len(self.categories)
        return idx

    def transform(self, arr: pa.Array, rng: np.random.Generator | None = None) -> np.ndarray:
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
        out = {"kind": self.kind, "name": self.name, "type": self.type_str, "categories": list(self.categories),
               "has_nulls": self.has_nulls}
        if self.rare is not None:
            out["rare"] = dict(self.rare)
        return out

    @classmethod
    def from_json(cls, d: dict) -> "CategoricalColumn":
        return cls(d["name"], d["type"], list(d["categories"]), bool(d["has_nulls"]), d.get("rare"))
