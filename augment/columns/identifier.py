"""Identifiers: never modelled, never copied; generated fresh in the training values' format.

The format: for integers, the observed count of digits (``[10**(d_min-1), 10**d_max - 1]``); for strings, the
most common length with a character class per position (a constant such as the ``-`` of ``7590-VHVEG``, digits,
upper or lower letters, or the observed characters). Its values form a space of ``size`` values, numbered by
a mixed-radix position.

A fresh value is a pure function of (job seed, column, row number within the job): row ``n`` maps through a
keyed bijection of the space (a few invertible add / multiply / xor-shift rounds on the next power of two,
cycle-walked into the space) to a position, so two rows of one job never share a value, whatever the shards,
workers or resumes. A position whose (salted, 32-bit) hash is in the training set is skipped for the same
row's next lane: lane ``j`` of row ``n`` is input ``n + j * rows_max``, distinct from every other row's lane,
so skipping keeps the values unique. The bundle holds only those 32-bit hashes, never the values (a space
small enough to enumerate is protected by nothing but the hash's truncation; ``augment info`` shows the size).
"""

from __future__ import annotations

import base64
import math
import string
import zlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from augment import arrays
from augment.columns.types import decode, type_from_str, type_to_str
from augment.errors import InputError, SchemaError

__all__ = ["IdentifierColumn", "LANES"]

LANES = 8  # candidate positions per row at least; more where training values fill much of the space
_MISS = 1e-12  # the chance that every lane of a row is a training value, at most
_MAX_SPACE = 1 << 62
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_CLASSES = [string.digits, string.ascii_uppercase, string.ascii_lowercase, string.digits + string.ascii_uppercase,
            string.digits + string.ascii_lowercase, string.ascii_letters, string.digits + string.ascii_letters]


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _alphabet(chars: set[str]) -> str:
    if len(chars) == 1:
        return next(iter(chars))
    for cls in _CLASSES:
        if chars <= set(cls):
            return cls
    return "".join(sorted(chars))


@dataclass
class IdentifierColumn:
    """Format (``ints`` or per-position ``alphabets``) and the training values' hashes; no model part."""

    name: str
    type_str: str
    base: int = 0  # integers: the smallest value of the space
    size: int = 0  # values in the space
    alphabets: list = field(default_factory=list)  # strings: per position (a one-character string = constant)
    salt: int = 0
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))  # sorted 32-bit hashes
    kind = "identifier"
    has_nulls = False
    in_dim = 0
    out_dim = 0

    def parts(self) -> list[tuple]:
        return []

    @property
    def arrow_type(self) -> pa.DataType:
        return type_from_str(self.type_str)

    @property
    def is_text(self) -> bool:
        return not pa.types.is_integer(self.arrow_type)

    @property
    def lanes(self) -> int:
        """Candidates per row: enough that all of them being training values has odds below ``_MISS``."""
        taken = min(0.999, self.hashes.size / max(1, self.size))
        return int(min(4096, max(LANES, math.ceil(math.log(_MISS) / math.log(taken))))) if taken > 0 else LANES

    @property
    def rows_max(self) -> int:
        """Rows one job can hold: the space split into ``lanes`` lanes."""
        return self.size // self.lanes

    @property
    def format(self) -> str:
        if not self.is_text:
            return f"integers {self.base}..{self.base + self.size - 1}"
        return "".join(a if len(a) == 1 else "[" + (_names(a)) + "]" for a in self.alphabets)

    @classmethod
    def fit(cls, name: str, arr: pa.Array) -> "IdentifierColumn":
        values = decode(arr).drop_null()
        t = arr.type
        if len(values) == 0:
            raise SchemaError(f"identifier column {name!r} holds no values to learn a format from")
        salt = int(zlib.crc32(name.encode("utf-8")))
        if pa.types.is_integer(t):
            v = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.int64)
            if v.min() < 0:
                base, size = int(v.min()), int(v.max()) - int(v.min()) + 1
            else:
                digits = [len(str(int(x))) for x in (v.min(), v.max())]
                base = 0 if digits[0] == 1 else 10 ** (digits[0] - 1)
                size = 10 ** digits[1] - base
            col = cls(name, type_to_str(t), base, min(size, _MAX_SPACE), [], salt)
            pos = (v - base).astype(np.uint64)
        elif pa.types.is_string(decode(arr).type) or pa.types.is_large_string(decode(arr).type):
            lengths = pc.utf8_length(values).to_numpy(zero_copy_only=False)
            length = int(np.bincount(lengths).argmax())
            same = [s for s in values.filter(pa.array(lengths == length)).to_pylist()]
            alphabets = [_alphabet({s[i] for s in same}) for i in range(length)]
            col = cls(name, type_to_str(t), 0, 0, alphabets, salt)
            col.size = col._space()
            pos = col._positions(same)
        else:
            raise SchemaError(f"column {name!r} of type {t} cannot be an identifier; allowed: integers, strings")
        col.hashes = np.unique(col._hash(pos))
        return col

    def _varied(self) -> list[int]:
        """Positions (from the right) that vary, as many as fit in the space limit."""
        out, size = [], 1
        for i in reversed(range(len(self.alphabets))):
            k = len(self.alphabets[i])
            if k > 1 and size * k <= _MAX_SPACE:
                out.append(i)
                size *= k
        return out

    def _space(self) -> int:
        size = 1
        for i in self._varied():
            size *= len(self.alphabets[i])
        return size

    def _positions(self, texts: list[str]) -> np.ndarray:
        pos = np.zeros(len(texts), np.uint64)
        scale = 1
        for i in self._varied():
            a = self.alphabets[i]
            lookup = {c: j for j, c in enumerate(a)}
            digit = np.array([lookup.get(s[i], 0) for s in texts], dtype=np.uint64)
            pos += digit * np.uint64(scale)
            scale *= len(a)
        return pos

    def _hash(self, pos: np.ndarray) -> np.ndarray:
        return (_splitmix(pos.astype(np.uint64) ^ np.uint64(self.salt)) >> np.uint64(32)).astype(np.uint32)

    def _permute(self, x: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """A keyed bijection of [0, size): invertible rounds on [0, 2**b), cycle-walked back into the space."""
        b = max(1, int(self.size - 1).bit_length())
        mask = np.uint64((1 << b) - 1)
        shift = np.uint64(max(1, b // 2))

        def rounds(y):
            with np.errstate(over="ignore"):
                for k in range(0, len(keys), 2):
                    y = (y + keys[k]) & mask
                    y = (y * (keys[k + 1] | np.uint64(1))) & mask
                    y = y ^ (y >> shift)
            return y

        y = rounds(x)
        out = y >= np.uint64(self.size)
        while out.any():
            y[out] = rounds(y[out])
            out = y >= np.uint64(self.size)
        return y

    def generate(self, rows: np.ndarray, seed: int) -> pa.Array:
        """Fresh values for job row numbers ``rows``: unique per row, none equal to a training value."""
        rows = np.asarray(rows, dtype=np.uint64)
        if rows.size and int(rows.max()) >= self.rows_max:
            raise InputError(f"identifier column {self.name!r} has {self.size:,} values in its format "
                             f"({self.format}): a job can hold at most {self.rows_max:,} rows of it; "
                             f"ask for fewer rows or --drop the column")
        keys = np.random.SeedSequence([int(seed), self.salt]).generate_state(8, np.uint64)
        pos = np.zeros(rows.size, np.uint64)
        todo = np.ones(rows.size, bool)
        for lane in range(self.lanes):
            cand = self._permute(rows[todo] + np.uint64(lane * self.rows_max), keys)
            h = self._hash(cand)
            i = np.minimum(np.searchsorted(self.hashes, h), max(0, self.hashes.size - 1))
            free = ~(self.hashes[i] == h) if self.hashes.size else np.ones(h.size, bool)
            where = np.flatnonzero(todo)
            pos[where[free]] = cand[free]
            todo[where[free]] = False
            if not todo.any():
                break
        if todo.any():
            raise InputError(f"identifier column {self.name!r}: its format ({self.format}) leaves too few values "
                             f"that are not training values; --drop the column")
        return self._render(pos)

    def _render(self, pos: np.ndarray) -> pa.Array:
        t = self.arrow_type
        if not self.is_text:
            return arrays.from_numpy(pos.astype(np.int64) + np.int64(self.base), t)
        n, length = pos.size, len(self.alphabets)
        chars = np.empty((n, length), dtype="<U1")
        for i, a in enumerate(self.alphabets):
            chars[:, i] = a[0] if len(a) == 1 else ""
        rest = pos.copy()
        for i in self._varied():
            a = np.array(list(self.alphabets[i]))
            chars[:, i] = a[(rest % np.uint64(len(a))).astype(np.int64)]
            rest //= np.uint64(len(a))
        texts = pa.array(["".join(r) for r in chars.tolist()], pa.string())
        return texts.cast(t) if t != pa.string() else texts

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "type": self.type_str, "base": self.base, "size": self.size,
                "alphabets": list(self.alphabets), "salt": self.salt, "has_nulls": False,
                "hashes": base64.b64encode(self.hashes.astype("<u4").tobytes()).decode("ascii")}

    @classmethod
    def from_json(cls, d: dict) -> "IdentifierColumn":
        hashes = np.frombuffer(base64.b64decode(d["hashes"]), dtype="<u4").astype(np.uint32)
        return cls(d["name"], d["type"], int(d["base"]), int(d["size"]), list(d["alphabets"]), int(d["salt"]), hashes)


def _names(a: str) -> str:
    known = {string.digits: "0-9", string.ascii_uppercase: "A-Z", string.ascii_lowercase: "a-z",
             string.digits + string.ascii_uppercase: "0-9A-Z", string.digits + string.ascii_lowercase: "0-9a-z",
             string.ascii_letters: "A-Za-z", string.digits + string.ascii_letters: "0-9A-Za-z"}
    return known.get(a, a)
