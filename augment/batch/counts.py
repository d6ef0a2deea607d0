"""Rows per class from the counts options (``--per-class``, ``--class-counts``, ``--balance``, ``--rows`` ...)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from augment.batch.plan import largest_remainder
from augment.errors import AugmentError, ClassNameError, InputError

__all__ = ["parse_class_counts", "read_class_counts_file", "counts_from_mapping", "resolve_counts"]



def _class_lookup(classes: list) -> dict[str, int]:
    return {str(c): i for i, c in enumerate(classes)}


def _unknown(name: str, classes: list) -> ClassNameError:
    allowed = ", ".join(repr(str(c)) for c in classes)
    return ClassNameError(f"unknown class {name!r}; the bundle's classes are {allowed}")


def _positive(name: str, value, what: str = "count") -> int:
    try:
        n = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise AugmentError(f"{what} for class {name!r} must be a positive integer, got {value!r}") from None
    if isinstance(value, bool) or n < 1:
        raise AugmentError(f"{what} for class {name!r} must be a positive integer, got {value!r}")
    return n


def parse_class_counts(items: Iterable[str], classes: list) -> dict[int, int]:
    """``["yes=40000,no=5000"]`` -> ``{1: 40000, 0: 5000}``; names may hold ``=`` and ``,``.

    Each item is split on commas; a piece whose text after its last ``=`` is not an integer is joined to the
    next one, so ``a,b=5`` is class ``a,b`` and ``<=50K=10`` is class ``<=50K``.
    """
    lookup = _class_lookup(classes)
    out: dict[int, int] = {}
    for item in items:
        pending = ""
        for piece in str(item).split(","):
            text = f"{pending},{piece}" if pending else piece
            name, eq, count = text.rpartition("=")
            if not eq or not count.strip().lstrip("-").isdigit():
                pending = text
                continue
            pending = ""
            _add_count(out, name, count, lookup, classes)
        if pending.strip():
            raise AugmentError(f"bad --class-counts item {pending!r}: expected NAME=COUNT, e.g. yes=40000")
    return out


def _add_count(out: dict[int, int], name: str, count, lookup: dict[str, int], classes: list) -> None:
    key = name if name in lookup else name.strip()
    if key not in lookup:
        raise _unknown(name, classes)
    index = lookup[key]
    if index in out:
        raise AugmentError(f"class {key!r} is given twice in the class counts")
    out[index] = _positive(key, count)


def counts_from_mapping(mapping, classes: list) -> dict[int, int]:
    """``{"yes": 40000, "no": 5000}`` (class values or their names as text) -> rows per class index."""
    lookup, out = _class_lookup(classes), {}
    for name, count in dict(mapping).items():
        _add_count(out, str(name), count, lookup, classes)
    return out


def read_class_counts_file(path: str, classes: list) -> dict[int, int]:
    """A JSON object ``{"yes": 40000, "no": 5000}`` (or a list of ``[name, count]`` pairs)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read --class-counts-file {path!r}: {str(err).splitlines()[0]}") from err
    pairs = data.items() if isinstance(data, dict) else data
    lookup, out = _class_lookup(classes), {}
    try:
        for name, count in pairs:
            _add_count(out, str(name), count, lookup, classes)
    except (TypeError, ValueError):
        raise InputError(f"--class-counts-file {path!r} must hold a JSON object of class name -> count") from None
    return out


def resolve_counts(classes: list, train_counts: list[int], *, per_class: int | None = None,
                   class_counts: Iterable[str] | Mapping = (), class_counts_file: str | None = None,
                   balance: bool = False, rows: int | None = None) -> dict[int, int]:
    """Rows per class index from exactly one of the counts options (sample mode)."""
    given = [n for n, v in (("--per-class", per_class is not None), ("--class-counts", bool(list(class_counts))),
                             ("--class-counts-file", class_counts_file is not None), ("--balance", balance),
                             ("--rows", rows is not None)) if v]
    if len(given) != 1:
        raise AugmentError("give exactly one of --per-class, --class-counts, --class-counts-file, --balance, --rows"
                           + (f" (got {', '.join(given)})" if given else ""))
    if per_class is not None:
        if per_class < 1:
            raise AugmentError(f"--per-class must be a positive integer, got {per_class}")
        return {i: per_class for i in range(len(classes))}
    if class_counts_file is not None:
        return read_class_counts_file(class_counts_file, classes)
    if rows is not None:
        if rows < 1:
            raise AugmentError(f"--rows must be a positive integer, got {rows}")
        parts = largest_remainder(rows, [float(c) for c in train_counts])
        return {i: n for i, n in enumerate(parts) if n > 0}
    if balance:
        top = max(train_counts)
        counts = {i: top - int(c) for i, c in enumerate(train_counts) if top - int(c) > 0}
        if not counts:
            raise AugmentError("--balance: every class already has the largest count; nothing to generate")
        return counts
    if isinstance(class_counts, Mapping):  # the Python API: {"yes": 40000, "no": 5000}
        return counts_from_mapping(class_counts, classes)
    return parse_class_counts(class_counts, classes)
