"""Dates and timestamps: the day, the time of day and the day of the week, each its own part.

A detection classifier tells synthetic dates from real ones first by their calendar: reviews cluster on some
weekdays, trips start at some hours. One smooth numeric model of the raw ticks spreads values evenly over the
week and the clock. So a date is modelled as [day number (numeric, with its point masses), weekday (7-way
categorical)], and a timestamp as [day, time of day (numeric, in the unit's ticks), weekday]. Generation
moves each drawn day by at most 3 days to the drawn weekday (not a point-mass day, which keeps its own), and
adds the drawn time of day. Zoned timestamps are modelled in their local wall time and written back in their
zone. Random draws: the day's, then the time's, then n uniforms for the weekday.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from augment.columns.numeric import NumericColumn
from augment.columns.types import from_physical, sample_categories, ticks_per_day, to_physical, type_from_str, type_to_str
from augment.errors import SchemaError

__all__ = ["TemporalColumn", "WEEKDAYS"]

WEEKDAYS = 7
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


def weekday(days: np.ndarray) -> np.ndarray:
    return ((days + _EPOCH_WEEKDAY) % WEEKDAYS).astype(np.int64)


@dataclass
class TemporalColumn:
    """A date or timestamp column: ``day`` (days since the epoch), ``time`` (ticks in the day; timestamps)."""

    name: str
    type_str: str
    day: NumericColumn
    time: NumericColumn | None
    lo: int | None  # observed range in the type's ticks (local wall time)
    hi: int | None
    kind = "temporal"

    @property
    def has_nulls(self) -> bool:
        return self.day.has_nulls

    @property
    def arrow_type(self) -> pa.DataType:
        return type_from_str(self.type_str)

    @property
    def _tpd(self) -> int:
        return ticks_per_day(self.arrow_type)

    def _subs(self) -> list[NumericColumn]:
        return [self.day] + ([self.time] if self.time is not None else [])

    @property
    def in_dim(self) -> int:
        return sum(c.in_dim for c in self._subs()) + WEEKDAYS

    @property
    def out_dim(self) -> int:
        return sum(c.out_dim for c in self._subs()) + WEEKDAYS

    @property
    def spike_dim(self) -> int:
        return self.day.spike_dim

    def parts(self) -> list[tuple]:
        """(suffix, kind, in_dim, out_dim, has_nulls, spike_dim) of each part, in layout order."""
        out = [("", "numeric", self.day.in_dim, self.day.out_dim, self.day.has_nulls, self.day.spike_dim)]
        if self.time is not None:
            t = self.time
            out.append((":time", "numeric", t.in_dim, t.out_dim, t.has_nulls, t.spike_dim))
        return out + [(":weekday", "categorical", WEEKDAYS, WEEKDAYS, False, 0)]

    @staticmethod
    def _split(arr: pa.Array, tpd: int, with_time: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ticks, null = to_physical(arr)
        days = np.floor_divide(ticks, tpd)
        return days, (ticks - days * tpd if with_time else np.zeros_like(ticks)), null

    @classmethod
    def fit(cls, name: str, arr: pa.Array, *, n_quantiles: int = 1000) -> "TemporalColumn":
        t = arr.type
        tpd = ticks_per_day(t)
        if tpd is None:
            raise SchemaError(f"column {name!r} of type {t} is not a date or timestamp")
        with_time = pa.types.is_timestamp(t)
        days, tod, null = cls._split(arr, tpd, with_time)
        day = NumericColumn.fit_values(name, "int64", days, null, integral=True, n_quantiles=n_quantiles)
        time = (NumericColumn.fit_values(name + ":time", "int64", tod, null, integral=True, n_quantiles=n_quantiles)
                if with_time else None)
        ticks = (days * tpd + tod)[~null]
        lo, hi = (int(ticks.min()), int(ticks.max())) if ticks.size else (None, None)
        return cls(name, type_to_str(t), day, time, lo, hi)

    def transform(self, arr: pa.Array, rng: np.random.Generator | None = None) -> np.ndarray:
        if ticks_per_day(arr.type) is None:
            raise SchemaError(f"column {self.name!r} should be a date or timestamp ({self.type_str}) but has type {arr.type}")
        days, tod, null = self._split(arr, self._tpd, self.time is not None)
        parts = [self.day.transform_values(days, null, rng)]
        if self.time is not None:
            parts.append(self.time.transform_values(tod, null, rng))
        wd = np.zeros((len(days), WEEKDAYS), np.float32)
        rows = np.flatnonzero(~null)
        wd[rows, weekday(days[rows])] = 1.0  # a null row has no weekday: all zeros, no loss
        return np.concatenate(parts + [wd], axis=1)

    def inverse(self, params: np.ndarray, rng: np.random.Generator, temperature: float) -> pa.Array:
        n, t, o = params.shape[0], self.arrow_type, self.day.out_dim
        days, mask, fixed = self.day.inverse_values(params[:, :o], rng, temperature)
        tod = np.zeros(n)
        if self.time is not None:
            tod, _, _ = self.time.inverse_values(params[:, o:o + self.time.out_dim], rng, temperature)
            o += self.time.out_dim
        u = rng.random(n)
        if self.lo is None:
            return pa.nulls(n, type=t)
        want = sample_categories(params[:, o:o + WEEKDAYS], u, temperature)
        days = np.rint(days)
        move = ~fixed
        delta = (want - weekday(days) + 3) % WEEKDAYS - 3  # the nearest day with the drawn weekday: -3..+3
        days[move] += delta[move]
        lo_day, hi_day = self.lo // self._tpd, self.hi // self._tpd
        days = np.where(days < lo_day, days + WEEKDAYS, np.where(days > hi_day, days - WEEKDAYS, days))
        ticks = np.clip(days * self._tpd + np.rint(tod), self.lo, self.hi)
        return from_physical(ticks, t, mask)

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "type": self.type_str, "day": self.day.to_json(),
                "time": None if self.time is None else self.time.to_json(), "min": self.lo, "max": self.hi,
                "has_nulls": self.has_nulls, "spikes": list(self.day.spikes)}

    @classmethod
    def from_json(cls, d: dict) -> "TemporalColumn":
        time = None if d.get("time") is None else NumericColumn.from_json(d["time"])
        return cls(d["name"], d["type"], NumericColumn.from_json(d["day"]), time, d["min"], d["max"])
