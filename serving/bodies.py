"""Reading a request body without the work a hostile one would cost: sizes from the metadata first, then only
the bundle's columns.

A 117 KB zstd Parquet body once decoded to 5,000,000 rows (202 MB) before the row limit was checked. Here:

- Parquet: the footer gives the row count, the schema and, per column chunk, the decompressed size and the
  number of leaf values; all are checked before a page is decoded, and only the bundle's columns are read.
- Arrow IPC stream: each message's flatbuffer header gives the batch length and, for a compressed body, the
  8-byte uncompressed length in front of every buffer; all are checked before a buffer is decompressed.
- Dictionary-encoded strings and binaries (a 1 MB string once, referenced by 100,000 rows) are read as
  dictionaries, and their decoded size is computed from the indices before they are expanded.

Every refusal is a ``BodyError`` with the HTTP status (413 too big, 422 unreadable or mismatched columns).
"""

from __future__ import annotations

import io
import struct

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from serving import formats

__all__ = ["BodyError", "read_table_body", "DECODED_BYTES_PER_BODY_BYTE"]

# A body may decode to at most this many times its own size limit (a legitimate MNIST Parquet upload is about
# 8x; a bomb is thousands of times).
DECODED_BYTES_PER_BODY_BYTE = 16


class BodyError(ValueError):
    def __init__(self, status: int, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.status, self.column = status, column


def read_table_body(body: bytes, media_type: str, schema: pa.Schema, *, max_rows: int, max_decoded_bytes: int,
                    per_example: int = 1) -> pa.Table:
    """A Parquet or Arrow IPC body as a table of the bundle's ``schema``, refused (``BodyError``) before decoding
    when its rows x ``per_example`` exceed ``max_rows`` or it would decode to more than ``max_decoded_bytes``."""
    reader = _read_parquet if media_type == formats.PARQUET else _read_ipc
    try:
        table = reader(body, schema, _RowLimit(max_rows, per_example), max_decoded_bytes)
    except (pa.ArrowException, OSError, struct.error, IndexError) as exc:
        raise BodyError(422, f"the body is not a readable {media_type} file: {exc}") from None
    _check_dictionary_sizes(table, max_decoded_bytes)
    try:
        return formats.cast_to_schema(table, schema)
    except formats.ColumnError as exc:
        raise BodyError(422, str(exc), exc.column) from None


def _names(got: list[str], schema: pa.Schema) -> None:
    try:
        formats.check_names(got, schema)
    except formats.ColumnError as exc:
        raise BodyError(422, str(exc), exc.column) from None


class _RowLimit:
    def __init__(self, max_rows: int, per_example: int) -> None:
        self.max_rows, self.per_example = max_rows, per_example

    def check(self, rows: int) -> None:
        if rows * self.per_example > self.max_rows:
            times = f" x per_example {self.per_example} = {rows * self.per_example}" if self.per_example > 1 else ""
            raise BodyError(413, f"the body holds {rows} rows{times}; this service sends at most {self.max_rows} "
                                 "rows per request")


def _too_big(size: int, max_decoded_bytes: int) -> BodyError:
    return BodyError(413, f"the body would decode to {size} bytes; this service decodes at most {max_decoded_bytes} "
                          "per request (send fewer rows)")


# --- Parquet: the footer first ---------------------------------------------------------------------------


def _read_parquet(body: bytes, schema: pa.Schema, limit: _RowLimit, max_decoded_bytes: int) -> pa.Table:
    pf = pq.ParquetFile(io.BytesIO(body))  # reads the footer only
    meta = pf.metadata
    limit.check(meta.num_rows)
    _names(pf.schema_arrow.names, schema)
    wanted = set(schema.names)
    decompressed = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            if chunk.path_in_schema.split(".")[0] not in wanted:
                continue
            decompressed += chunk.total_uncompressed_size
            # RLE can repeat one value for ever: leaf values per row are bounded by the widest bundle column.
            if chunk.num_values > _leaf_budget(schema, limit.max_rows):
                raise _too_big(chunk.num_values * 8, max_decoded_bytes)
    if decompressed > max_decoded_bytes:
        raise _too_big(decompressed, max_decoded_bytes)
    strings = [f.name for f in schema if _is_bytes(f.type)]  # present: _names checked it
    return pq.ParquetFile(io.BytesIO(body), read_dictionary=strings).read(columns=schema.names)


def _leaf_budget(schema: pa.Schema, max_rows: int) -> int:
    widest = max((f.type.list_size for f in schema if pa.types.is_fixed_size_list(f.type)), default=1)
    return max_rows * max(widest, 1)


def _is_bytes(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)


# --- Arrow IPC: each message's header first -------------------------------------------------------------

_SCHEMA, _DICTIONARY, _RECORD_BATCH = 1, 2, 3  # flatbuffer MessageHeader union tags (Message.fbs)


def _read_ipc(body: bytes, schema: pa.Schema, limit: _RowLimit, max_decoded_bytes: int) -> pa.Table:
    rows = decoded = 0
    for message in pa.ipc.MessageReader.open_stream(pa.py_buffer(body)):
        kind, batch_rows, sizes = _message_sizes(message.metadata.to_pybytes(), message.body)
        if kind == _SCHEMA:
            _names(pa.ipc.read_schema(message).names, schema)
        rows += batch_rows if kind == _RECORD_BATCH else 0
        decoded += sizes
        limit.check(rows)
        if decoded > max_decoded_bytes:
            raise _too_big(decoded, max_decoded_bytes)
    reader = pa.ipc.open_stream(body)
    keep = [i for i, name in enumerate(reader.schema.names) if name in set(schema.names)]
    reader = pa.ipc.open_stream(body, options=pa.ipc.IpcReadOptions(included_fields=keep))
    return reader.read_all()


def _table(buf: bytes, pos: int) -> tuple[int, list[int]]:
    """A flatbuffer table at ``pos``: (pos, the byte offset of each field within it, 0 when absent)."""
    vtable = pos - struct.unpack_from("<i", buf, pos)[0]
    vsize = struct.unpack_from("<H", buf, vtable)[0]
    return pos, [struct.unpack_from("<H", buf, vtable + 4 + 2 * i)[0] for i in range((vsize - 4) // 2)]


def _field(fields: list[int], i: int) -> int:
    return fields[i] if i < len(fields) else 0


def _message_sizes(meta: bytes, body: pa.Buffer | None) -> tuple[int, int, int]:
    """(header kind, rows of a record batch, decoded bytes of its buffers) from a Message flatbuffer."""
    msg, f = _table(meta, struct.unpack_from("<I", meta, 0)[0])
    kind = meta[msg + f[1]] if _field(f, 1) else 0
    if kind not in (_DICTIONARY, _RECORD_BATCH) or not _field(f, 2):
        return kind, 0, 0
    header = msg + f[2] + struct.unpack_from("<I", meta, msg + f[2])[0]
    if kind == _DICTIONARY:  # DictionaryBatch { id, data: RecordBatch, isDelta }
        dpos, df = _table(meta, header)
        if not _field(df, 1):
            return kind, 0, 0
        header = dpos + df[1] + struct.unpack_from("<I", meta, dpos + df[1])[0]
    batch, bf = _table(meta, header)
    rows = struct.unpack_from("<q", meta, batch + bf[0])[0] if _field(bf, 0) else 0
    compressed = bool(_field(bf, 3))
    size = 0
    if _field(bf, 2):  # buffers: [struct Buffer { offset: long; length: long }]
        vec = batch + bf[2] + struct.unpack_from("<I", meta, batch + bf[2])[0]
        raw = body.to_pybytes() if (compressed and body is not None) else b""
        for i in range(struct.unpack_from("<I", meta, vec)[0]):
            offset, length = struct.unpack_from("<qq", meta, vec + 4 + 16 * i)
            if compressed and length >= 8:
                declared = struct.unpack_from("<q", raw, offset)[0]  # -1: stored uncompressed
                size += length - 8 if declared < 0 else declared
            else:
                size += length
    return kind, rows, size


# --- dictionaries: their decoded size from the indices ----------------------------------------------------


def _check_dictionary_sizes(table: pa.Table, max_decoded_bytes: int) -> None:
    total = 0
    for column in table.columns:
        if not pa.types.is_dictionary(column.type):
            continue
        for chunk in column.chunks:
            lengths = pc.binary_length(chunk.dictionary) if _is_bytes(chunk.dictionary.type) else None
            if lengths is None:
                continue
            total += pc.sum(pc.take(lengths, chunk.indices)).as_py() or 0
            if total > max_decoded_bytes:
                raise _too_big(total, max_decoded_bytes)
