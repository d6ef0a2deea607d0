"""What a user hands the Python API (a pandas DataFrame or an Arrow table) as an Arrow table of their columns.

A pandas index is never data: ``pa.Table.from_pandas`` keeps a non-trivial index (a filtered frame's) as a
column ``__index_level_0__``, and a Parquet file written by pandas names its index columns in the schema's
``pandas`` metadata. Both are dropped here, and for the CLI in ``augment.io.read_table``, so an index is
never trained as a feature nor generated. pandas is not imported unless the data is a DataFrame.
"""

from __future__ import annotations

import json

import pyarrow as pa

from augment.errors import InputError

__all__ = ["to_arrow", "without_pandas_index", "to_output"]

OUTPUTS = ("pandas", "arrow")


def without_pandas_index(table: pa.Table) -> pa.Table:
    """``table`` without the index columns its pandas metadata names, and without that metadata."""
    meta = table.schema.metadata or {}
    if b"pandas" not in meta:
        return table
    try:
        index = [c for c in json.loads(meta[b"pandas"]).get("index_columns", []) if isinstance(c, str)]
    except (ValueError, AttributeError):
        index = []
    table = table.drop_columns([c for c in index if c in table.column_names])
    rest = {k: v for k, v in meta.items() if k != b"pandas"}
    return table.replace_schema_metadata(rest or None)


def to_arrow(data, what: str = "data") -> pa.Table:
    """A pandas DataFrame or an Arrow table (or record batch) as an Arrow table, its index dropped."""
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        return without_pandas_index(data)
    if type(data).__module__.startswith("pandas") and type(data).__name__ == "DataFrame":
        try:
            return without_pandas_index(pa.Table.from_pandas(data, preserve_index=False))
        except (pa.ArrowException, TypeError, ValueError) as err:
            raise InputError(f"{what}: cannot convert the DataFrame to Arrow ({str(err).splitlines()[0]})") from None
    raise InputError(f"{what} must be a pandas DataFrame or a pyarrow Table, got {type(data).__name__}")


def to_output(table: pa.Table, output: str):
    """``table`` as the caller asked: a pandas DataFrame (``"pandas"``) or the Arrow table (``"arrow"``)."""
    if output == "arrow":
        return table
    if output == "pandas":
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise InputError("output='pandas' needs pandas (pip install pandas), or pass output='arrow'") from None
        return table.to_pandas()
    raise InputError(f"unknown output {output!r}; allowed: {', '.join(OUTPUTS)}")
