"""Which codec each column of a training table gets, and every problem at once.

Rules (``--id``, ``--drop``, ``--categorical`` and ``--numeric`` override them):

- integers: an identifier when the name says so (``id``, ``*_id``, ``*Id``, ``uuid``, ``key``) and at least
  half the values are distinct; else categorical up to ``max_int_categories`` distinct values, else numeric;
- strings: an identifier when nearly every value is distinct (95%) and short (40 characters) without spaces;
  free text or personal names (refused) when longer than 50 characters on average, mostly distinct (half,
  above 50 values) or with more distinct values than ``max_categories``; else categorical;
- floats, decimals, times of day, durations: numeric; dates and timestamps: temporal;
- booleans and dictionaries: categorical; an all-null column: numeric (written back all null).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from augment.columns.types import is_numeric_like, ticks_per_day

__all__ = ["ColumnPlan", "plan_column", "ID_NAME"]

ID_NAME = re.compile(r"(^|_)(id|uuid|guid|key)$|^id_|[a-z]Id$|ID$", re.IGNORECASE)
ID_TEXT_SHARE = 0.95
ID_TEXT_MAX_LEN = 40
ID_INT_SHARE = 0.5
TEXT_SHARE = 0.5
TEXT_MEAN_LEN = 50
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


@dataclass(frozen=True)
class ColumnPlan:
    """``kind`` for a column, or ``problem`` (what is wrong and the options that fix it)."""

    name: str
    kind: str | None = None  # numeric | temporal | categorical | identifier
    problem: str | None = None


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _numeric_text(name: str, arr: pa.Array) -> str | None:
    """A text column whose values are nearly all numbers is a numeric column with a typo: say where."""
    if not _is_text(arr.type) or arr.null_count == len(arr):
        return None
    is_num = pc.fill_null(pc.match_substring_regex(arr, _NUMBER), True)
    bad = len(arr) - pc.sum(is_num).as_py()
    if 0 < bad <= 0.05 * (len(arr) - arr.null_count):
        row = int(pc.index(is_num, False).as_py())
        return (f"holds numbers but row {row} has the text {arr[row].as_py()!r}: fix or null that value "
                f"(a numeric column must hold only numbers)")
    return None


def _text_kind(name: str, arr: pa.Array, max_categories: int) -> ColumnPlan:
    values = arr.drop_null()
    n = len(values)
    if n == 0:
        return ColumnPlan(name, "categorical")
    distinct = pc.count_distinct(values).as_py()
    lengths = pc.utf8_length(values)
    mean_len, max_len = pc.mean(lengths).as_py(), pc.max(lengths).as_py()
    spaced = pc.any(pc.match_substring_regex(values, r"\s")).as_py()
    if n >= 20 and distinct >= ID_TEXT_SHARE * n and max_len <= ID_TEXT_MAX_LEN and not spaced:
        return ColumnPlan(name, "identifier")
    if mean_len > TEXT_MEAN_LEN or (distinct > 50 and distinct > TEXT_SHARE * n):
        return ColumnPlan(name, problem=(f"is free text or personal names ({distinct:,} distinct of {n:,} values, "
                                         f"{mean_len:.0f} characters on average): --drop {name}, --id {name} or "
                                         f"--categorical {name}"))
    if distinct > max_categories:  # names, zip codes: a category each would mostly copy rare values
        return ColumnPlan(name, problem=(f"has {distinct:,} distinct values, more than --max-categories "
                                         f"{max_categories} (names or codes?): --max-categories {distinct}, "
                                         f"--drop {name}, --id {name} or --categorical {name}"))
    return ColumnPlan(name, "categorical")


def plan_column(name: str, arr: pa.Array, *, forced: str | None, max_categories: int,
                max_int_categories: int) -> ColumnPlan:
    """The kind of one feature column; ``forced`` is "identifier", "categorical", "numeric" or None."""
    t = arr.type
    v = t.value_type if pa.types.is_dictionary(t) else t
    if forced == "identifier":
        if pa.types.is_integer(v) or _is_text(v):
            return ColumnPlan(name, "identifier")
        return ColumnPlan(name, problem=f"has type {t}, which cannot be an identifier (integers or strings): --drop {name}")
    if forced == "categorical":
        if _is_text(v) or pa.types.is_boolean(v) or pa.types.is_integer(v) or pa.types.is_floating(v):
            return ColumnPlan(name, "categorical")
        return ColumnPlan(name, problem=f"has type {t}, which cannot be categorical (strings, booleans, integers, floats): --drop {name}")
    if forced == "numeric":
        if is_numeric_like(t):
            return ColumnPlan(name, "temporal" if ticks_per_day(t) else "numeric")
        return ColumnPlan(name, problem=f"has type {t}, which cannot be numeric (numbers, decimals, dates, times): --drop {name}")
    if _is_text(t):
        problem = _numeric_text(name, arr)
        return ColumnPlan(name, problem=problem) if problem else _text_kind(name, arr, max_categories)
    if pa.types.is_boolean(t) or pa.types.is_dictionary(t):
        return ColumnPlan(name, "categorical")
    if pa.types.is_integer(t):
        present = arr.drop_null()
        distinct = pc.count_distinct(present).as_py()
        if ID_NAME.search(name) and len(present) >= 20 and distinct >= ID_INT_SHARE * len(present):
            return ColumnPlan(name, "identifier")
        return ColumnPlan(name, "categorical" if distinct <= max_int_categories else "numeric")
    if is_numeric_like(t):
        return ColumnPlan(name, "temporal" if ticks_per_day(t) else "numeric")
    return ColumnPlan(name, problem=(f"has type {t}; allowed: numbers, decimals, dates, timestamps, times, "
                                     f"durations, strings, booleans, dictionaries or one image column: --drop {name}"))


