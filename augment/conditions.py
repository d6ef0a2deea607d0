"""Conditions on any column (``--where``): the grammar, its evaluation on Arrow tables, and feasibility.

    age >= 60                    COLUMN OP VALUE, OP one of  =  !=  <  <=  >  >=
    job in retired|management    COLUMN in A|B|C
    pdays is null                COLUMN is null / COLUMN is not null
    `home town` = Leeds          a column name with spaces (or an operator in it) in backquotes

Every clause must hold. Values are parsed in the column's own Arrow type by Arrow's cast (``"60"`` to int64,
``"2020-01-31"`` to a date, ``"12.50"`` to a decimal), so every column kind the codec knows works alike.
``Condition.mask(table)`` evaluates the clauses with ``pyarrow.compute``; a null value meets only ``is null``.

``summarize`` (at training time) keeps per class the min/max of ordered columns, the set of values of the
others and the null count, in JSON (bundle.json's ``summary``); ``impossible`` uses it to refuse, before any
work, a condition that no training row of a class meets.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from augment import arrays
from augment.errors import AugmentError

__all__ = ["ConditionError", "Clause", "Condition", "parse_where", "summarize", "impossible", "OPS"]

OPS = ("=", "!=", "<", "<=", ">", ">=", "in", "is null", "is not null")
# pa.scalar(False), or a Python False handed to pc.fill_null, imports pandas: a False made from buffers, once
_FALSE = arrays.from_numpy(np.zeros(1, dtype=bool))[0]
_COMPARE = {"=": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal, ">": pc.greater,
            ">=": pc.greater_equal}
_NAME = r"(?:`(?P<quoted>[^`]+)`|(?P<bare>[^\s`!=<>]+))"
_PATTERNS = (
    ("is not null", re.compile(rf"^\s*{_NAME}\s+is\s+not\s+null\s*$", re.I)),
    ("is null", re.compile(rf"^\s*{_NAME}\s+is\s+null\s*$", re.I)),
    ("in", re.compile(rf"^\s*{_NAME}\s+in\s+(?P<value>.*\S)\s*$", re.I)),
    ("cmp", re.compile(rf"^\s*{_NAME}\s*(?P<op>!=|<=|>=|=|<|>)\s*(?P<value>.*?)\s*$")),
)
MAX_CLAUSES = 32  # hostile input is refused before the work it would cost
MAX_CLAUSE_CHARS = 10_000


class ConditionError(AugmentError):
    """A ``--where`` clause that cannot be parsed, names an unknown column or value, or cannot be met."""


@dataclass(frozen=True)
class Clause:
    """One parsed clause: ``values`` are Arrow scalars of the column's type (empty for the null tests)."""

    text: str
    column: str
    op: str
    values: tuple = ()

    def mask(self, col: pa.ChunkedArray | pa.Array) -> pa.Array:
        """Rows meeting this clause (nulls meet only ``is null``), as a boolean array without nulls."""
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if self.op == "is null":
            return pc.is_null(col)
        if self.op == "is not null":
            return pc.is_valid(col)
        if self.op == "in":
            hit = pc.is_in(col, value_set=self.value_set)
        else:
            hit = _COMPARE[self.op](col, self.values[0])
        return pc.fill_null(hit, _FALSE)

    @functools.cached_property
    def value_set(self) -> pa.Array:
        """The ``in`` values as one array, made once (through text and a cast: ``pa.array`` would import pandas)."""
        t = self.values[0].type
        try:
            return arrays.from_list([v.cast(pa.string()).as_py() for v in self.values], pa.string()).cast(t)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return pa.array([v.as_py() for v in self.values], type=t)


@dataclass(frozen=True)
class Condition:
    """Clauses that must all hold; ``texts`` are the clauses as the user wrote them (they go into the spec)."""

    clauses: tuple[Clause, ...]

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(c.text for c in self.clauses)

    @property
    def columns(self) -> list[str]:
        return sorted({c.column for c in self.clauses})

    def mask(self, table: pa.Table) -> np.ndarray:
        """(n,) bool: the rows of ``table`` meeting every clause."""
        out = np.ones(table.num_rows, dtype=bool)
        for clause in self.clauses:
            out &= arrays.to_bool(clause.mask(table.column(clause.column)))
        return out

    def filter(self, table: pa.Table) -> pa.Table:
        return table.filter(arrays.from_numpy(self.mask(table)))

    def __str__(self) -> str:
        return " and ".join(self.texts)


def _split(text: str) -> tuple[str, str, str | None]:
    """(column, op, value text) of one clause, or a ConditionError saying what the grammar allows."""
    for kind, pattern in _PATTERNS:
        m = pattern.match(text)
        if m:
            name = m.group("quoted") if m.group("quoted") is not None else m.group("bare")
            op = m.group("op") if kind == "cmp" else kind
            value = m.groupdict().get("value")
            return name, op, value
    raise ConditionError(f"--where {text!r}: expected COLUMN OP VALUE (OP one of = != < <= > >=), COLUMN in A|B|C, "
                         "COLUMN is null or COLUMN is not null (backquote names with spaces: `my col` = 3)")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _cast(text: str, value: str, name: str, t: pa.DataType) -> pa.Scalar:
    target = t.value_type if pa.types.is_dictionary(t) else t
    raw = _unquote(value.strip())
    try:
        if pa.types.is_boolean(target):  # Arrow's string -> bool cast takes true/false/1/0 only
            raw = {"yes": "true", "no": "false"}.get(raw.lower(), raw)
        return arrays.from_list([raw], pa.string()).cast(target)[0]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        raise ConditionError(f"--where {text!r}: {raw!r} is not a value of column {name!r} (type {target})") from None


def _check_known(text: str, name: str, values: tuple, categories: list | None) -> None:
    """A value the bundle never saw in a categorical column (a typo, most of the time) is an error."""
    if categories is None:
        return
    known = {str(c) for c in categories}
    unseen = [str(v.as_py()) for v in values if str(v.as_py()) not in known]
    if unseen:
        shown = ", ".join(sorted(known)[:20]) + (", ..." if len(known) > 20 else "")
        raise ConditionError(f"--where {text!r}: column {name!r} never holds {', '.join(map(repr, unseen))} in "
                             f"training; its values are {shown}")


def _parse_one(text: str, schema: pa.Schema, categories: dict[str, list]) -> Clause:
    if len(text) > MAX_CLAUSE_CHARS:
        raise ConditionError(f"--where clause of {len(text):,} characters: at most {MAX_CLAUSE_CHARS:,}")
    name, op, value = _split(text)
    if name not in schema.names:
        raise ConditionError(f"--where {text!r}: unknown column {name!r}; the columns are "
                             f"{', '.join(schema.names)}")
    t = schema.field(name).type
    if op in ("is null", "is not null"):
        return Clause(text, name, op)
    if op == "in":
        pieces = [p for p in value.split("|")]
        if any(not p.strip() for p in pieces):
            raise ConditionError(f"--where {text!r}: empty value in the list (write A|B|C)")
        values = tuple(_cast(text, p, name, t) for p in pieces)
    else:
        if not value:
            raise ConditionError(f"--where {text!r}: no value after {op!r}")
        values = (_cast(text, value, name, t),)
        if op not in ("=", "!=") and name in categories and not _ordered(t):
            raise ConditionError(f"--where {text!r}: {op!r} needs an ordered column; {name!r} is categorical "
                                 f"(use = != or in)")
    if op in ("=", "in"):
        _check_known(text, name, values, categories.get(name))
    return Clause(text, name, op, values)


def _ordered(t: pa.DataType) -> bool:
    t = t.value_type if pa.types.is_dictionary(t) else t
    return not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t))


def parse_where(texts, schema: pa.Schema, categories: dict[str, list] | None = None) -> Condition:
    """Parse ``--where`` clauses against a schema; every bad clause is reported at once, one line.

    ``categories``: column name -> the values the bundle knows (categorical columns), for the unseen-value check.
    """
    texts = [texts] if isinstance(texts, str) else list(texts or ())
    if len(texts) > MAX_CLAUSES:
        raise ConditionError(f"{len(texts)} --where clauses: at most {MAX_CLAUSES}")
    clauses, errors = [], []
    for text in texts:
        if not isinstance(text, str):
            errors.append(f"--where {text!r}: a clause is a string")
            continue
        try:
            clauses.append(_parse_one(text, schema, categories or {}))
        except ConditionError as err:
            errors.append(str(err))
    if errors:
        raise ConditionError("; ".join(errors))
    return Condition(tuple(clauses))


# ------------------------------------------------------------------------------------- training summary
def _as_strings(arr: pa.Array) -> list[str]:
    return [str(v) for v in arr.cast(pa.string()).to_pylist()]


def summarize(table: pa.Table, label: str | None, classes: list, categorical: set[str]) -> dict:
    """Per column, per class: ``nulls``, ``rows``, and ``min``/``max`` (ordered columns) or ``values``.

    Values are strings (Arrow's cast to string), read back in the column's type, so JSON holds any type.
    """
    labels = table.column(label).cast(pa.string()) if label else None
    out: dict[str, dict] = {}
    for field in table.schema:
        if field.name == label or pa.types.is_list(field.type) or pa.types.is_fixed_size_list(field.type) \
                or pa.types.is_binary(field.type) or pa.types.is_large_list(field.type):
            continue
        col = table.column(field.name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        try:
            per_class = [_class_entry(col, labels, c, field.name in categorical or not _ordered(field.type))
                         for c in classes]
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            continue  # a type Arrow cannot order or print (a duration): the decode probe judges its clauses
        out[field.name] = {"type": str(field.type), "per_class": per_class}
    return {"columns": out}


def _class_entry(col: pa.ChunkedArray, labels: pa.ChunkedArray | None, c, as_values: bool) -> dict:
    part = col.filter(pc.equal(labels, str(c))) if labels is not None else col
    entry = {"rows": len(part), "nulls": part.null_count}
    valid = part.drop_null()
    if as_values:
        entry["values"] = sorted(set(_as_strings(pc.unique(valid)))) if len(valid) else []
    elif len(valid):
        mm = pc.min_max(valid)
        entry["min"], entry["max"] = _as_strings(pa.array([mm["min"].as_py(), mm["max"].as_py()], valid.type))
    return entry


def _column_possible(clauses: list[Clause], entry: dict, t: pa.DataType) -> bool:
    """Whether some training row of one class could meet all of these clauses on one column."""
    t = t.value_type if pa.types.is_dictionary(t) else t
    valid = entry["rows"] - entry["nulls"]
    if any(c.op == "is null" for c in clauses):
        return entry["nulls"] > 0 and all(c.op == "is null" for c in clauses)
    if valid == 0:
        return False
    if "values" in entry:  # the training values of the class, each tested against every clause
        seen = arrays.from_list(entry["values"], pa.string()).cast(t) if entry["values"] else pa.array([], t)
        ok = np.ones(len(seen), dtype=bool)
        for c in clauses:
            ok &= arrays.to_bool(c.mask(seen))
        return bool(ok.any())
    lo, hi = arrays.from_list([entry["min"], entry["max"]], pa.string()).cast(t)
    lo_open = hi_open = False  # the training range [lo, hi], narrowed by each clause; empty means impossible
    for c in clauses:
        v = c.values[0] if c.values else None
        if c.op in (">", ">=") and not pc.less(v, lo).as_py():
            lo_open = c.op == ">" or (lo_open and v == lo)
            lo = v
        elif c.op in ("<", "<=") and not pc.greater(v, hi).as_py():
            hi_open = c.op == "<" or (hi_open and v == hi)
            hi = v
    if pc.greater(lo, hi).as_py() or (lo == hi and (lo_open or hi_open)):
        return False
    for c in clauses:
        if c.op in ("=", "in") and not any(_inside(x, lo, hi, lo_open, hi_open) for x in c.values):
            return False
    return True


def _inside(x: pa.Scalar, lo: pa.Scalar, hi: pa.Scalar, lo_open: bool, hi_open: bool) -> bool:
    above = pc.greater(x, lo).as_py() if lo_open else pc.greater_equal(x, lo).as_py()
    below = pc.less(x, hi).as_py() if hi_open else pc.less_equal(x, hi).as_py()
    return bool(above and below)


def impossible(condition: Condition, summary: dict | None, classes: list, class_indices) -> list[str]:
    """Messages for each class (of ``class_indices``) no training row of which meets the condition.

    Judged per column on the summary (so a joint condition two columns make impossible together passes here
    and is caught by the decode probe); an empty list without a summary.
    """
    if not summary:
        return []
    columns = summary.get("columns", {})
    by_column: dict[str, list[Clause]] = {}
    for c in condition.clauses:
        by_column.setdefault(c.column, []).append(c)
    out = []
    for k in class_indices:
        for name, clauses in by_column.items():
            info = columns.get(name)
            if info is None or k >= len(info["per_class"]):
                continue
            if not _column_possible(clauses, info["per_class"][k], _type_of(info["type"], clauses)):
                out.append(f"no training row of class {str(classes[k])!r} has {' and '.join(c.text for c in clauses)}")
    return out


def _type_of(type_str: str, clauses: list[Clause]) -> pa.DataType:
    typed = [c.values[0].type for c in clauses if c.values]
    if typed:
        return typed[0]
    try:
        return pa.type_for_alias(type_str)
    except (ValueError, KeyError):
        return pa.string()
