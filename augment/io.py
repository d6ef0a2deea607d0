"""Reading real data and moving image columns between Arrow and numpy.

Inputs are a Parquet file, a folder of Parquet files (read as one dataset, hive partitions included), a CSV
file (comma, semicolon, tab or pipe, sniffed; ``.tsv``; gzip-compressed ``.csv.gz``), JSON lines
(``.jsonl``, ``.ndjson``) or Arrow IPC / Feather (``.arrow``, ``.feather``, ``.ipc``). Training data and
``--from`` rows go through the same ``dataset`` function, so a folder reads the same way for both; every path
may be a URI (s3://, gs://, file://; see ``augment.fs``). Image columns are
``fixed_size_list<int|float>[C*H*W]``, ``list<int|float>`` with one length for every row, or binary PNG bytes;
pixels are channel-first and flattened (``(n, C*H*W)``). Everything but PNG decoding is vectorized.
"""

from __future__ import annotations

import io as _pyio
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow.fs import FileType

from augment import arrays
from augment.errors import InputError
from augment.fs import resolve

__all__ = [
    "read_table",
    "dataset",
    "drop_null_labels",
    "sniff_delimiter",
    "detect_image_columns",
    "image_encoding",
    "image_shape_of",
    "image_to_array",
    "array_to_image_column",
    "parse_image_shape",
]

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
JSON_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
IPC_SUFFIXES = (".arrow", ".feather", ".ipc")
_ALLOWED = ("a Parquet file (.parquet, .pq), a folder of Parquet files, a CSV file (.csv, .tsv, .csv.gz), "
            "JSON lines (.jsonl, .ndjson) or Arrow IPC / Feather (.arrow, .feather)")
DELIMITERS = (",", ";", "\t", "|")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
_CHANNEL_MODES = {c: m for m, c in _PNG_CHANNELS.items()}


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _format_of(name: str) -> str | None:
    name = name.lower()
    for fmt, suffixes in (("parquet", PARQUET_SUFFIXES), ("csv", CSV_SUFFIXES), ("json", JSON_SUFFIXES),
                          ("ipc", IPC_SUFFIXES)):
        if name.endswith(suffixes):
            return fmt
    return None


def sniff_delimiter(path: str | os.PathLike) -> str:
    """The delimiter of a CSV file: the one of comma, semicolon, tab and pipe that splits the first lines
    into the same, largest number of fields (``.tsv``: tab)."""
    import csv

    loc = resolve(path)
    with loc.fs.open_input_stream(loc.path) as raw:  # .gz decompressed by pyarrow (compression="detect")
        head = raw.read(65_536).decode("utf-8", errors="replace")
    if str(path).lower().removesuffix(".gz").endswith(".tsv"):
        return "\t"
    lines = [line for line in head.splitlines()[:20] if line.strip()]
    best, score = ",", 0
    for d in DELIMITERS:
        counts = [len(row) for row in csv.reader(lines[:-1] if len(lines) > 1 else lines, delimiter=d)]
        if counts and min(counts) > 1 and min(counts) == max(counts) and counts[0] > score:
            best, score = d, counts[0]
    return best


def dataset(path: str | os.PathLike, *, delimiter: str | None = None):
    """A ``pyarrow.dataset.Dataset`` over a file or a folder of Parquet files (hive partitions included)."""
    import pyarrow.dataset as ds

    loc = resolve(path)
    kind = loc.info().type
    if kind == FileType.NotFound:
        raise InputError(f"no such file or folder: {loc.uri!r}; expected {_ALLOWED}")
    try:
        if kind == FileType.Directory:
            # ignore_prefixes skips Spark/Hadoop markers such as _SUCCESS and .crc files
            found = ds.dataset(loc.path, filesystem=loc.fs, format="parquet", partitioning="hive",
                               ignore_prefixes=[".", "_"])
            if not found.files:
                raise InputError(f"folder {loc.uri!r} holds no Parquet files; expected {_ALLOWED}")
            return found
        fmt = _format_of(loc.name)
        if fmt is None:
            suffix = os.path.splitext(loc.name)[1]
            raise InputError(f"unsupported file type {suffix or loc.name!r} for {loc.uri!r}; expected {_ALLOWED}")
        if fmt == "csv":
            import pyarrow.csv as pacsv

            sep = delimiter or sniff_delimiter(path)
            fmt = ds.CsvFileFormat(parse_options=pacsv.ParseOptions(delimiter=sep))
        return ds.dataset(loc.path, filesystem=loc.fs, format=fmt)
    except InputError:
        raise
    except (pa.ArrowException, OSError, ValueError) as err:
        raise InputError(f"cannot read {loc.uri!r} ({_one_line(err)}); expected {_ALLOWED}") from err


def read_table(path: str | os.PathLike, *, columns: list[str] | None = None, delimiter: str | None = None) -> pa.Table:
    """Read a file or a folder of Parquet files into one Arrow table (see the module docstring); a pandas index
    that the file's metadata names is dropped: it is never data."""
    from augment.frames import without_pandas_index

    return without_pandas_index(_read_table(path, columns=columns, delimiter=delimiter))


def _read_table(path: str | os.PathLike, *, columns: list[str] | None = None, delimiter: str | None = None) -> pa.Table:
    found = dataset(path, delimiter=delimiter)
    try:
        table = found.to_table(columns=columns)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise InputError(f"cannot read {str(path)!r} ({_one_line(err)}); expected {_ALLOWED}") from err
    if table.num_rows == 0 and _format_of(resolve(path).name) in ("csv", "json"):
        raise InputError(f"{str(path)!r} has a header ({table.num_columns} columns) but no rows")
    return table


def drop_null_labels(table: pa.Table, label: str | None) -> tuple[pa.Table, int]:
    """``table`` without the rows whose label is null, and how many were dropped (``--drop-null-labels``)."""
    if label is None or label not in table.column_names:
        return table, 0
    valid = pc.is_valid(table.column(label))
    kept = table.filter(valid)
    return kept, table.num_rows - kept.num_rows


def parse_image_shape(text: str) -> tuple[int, int, int]:
    """``"1,28,28"`` -> ``(1, 28, 28)``; a one-line InputError on anything else."""
    parts = [s.strip() for s in str(text).replace("x", ",").split(",")]
    try:
        shape = tuple(int(s) for s in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"bad image shape {text!r}: expected three positive integers C,H,W such as 1,28,28")
    return shape  # type: ignore[return-value]


def _is_pixel_type(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def image_encoding(t: pa.DataType) -> str | None:
    """'fixed_size_list', 'list', 'png' (any binary; content not checked) or None for a non-image type."""
    if pa.types.is_fixed_size_list(t) and _is_pixel_type(t.value_type):
        return "fixed_size_list"
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_pixel_type(t.value_type):
        return "list"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "png"
    return None


def _as_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        if column.num_chunks == 1:
            return column.chunk(0)
        return column.combine_chunks() if column.num_chunks else pa.array([], type=column.type)
    return column


def detect_image_columns(table: pa.Table) -> list[str]:
    """Names of the columns holding images, in table order (binary columns only if they hold PNG bytes)."""
    found = []
    for field in table.schema:
        enc = image_encoding(field.type)
        if enc == "png":
            first = table.column(field.name).drop_null()
            if len(first) == 0 or not bytes(first[0].as_py()).startswith(_PNG_MAGIC):
                continue
        if enc is not None:
            found.append(field.name)
    return found


def _decode_png(data: bytes, column: str, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """PNG bytes -> (C, H, W) uint8 array. With ``shape``, the PNG's declared size is compared with it before a
    pixel is decoded (``Image.open`` is lazy), so a small PNG declaring 50,000 x 50,000 costs nothing."""
    from PIL import Image

    try:
        with Image.open(_pyio.BytesIO(data)) as img:
            if shape is not None and (img.size[1], img.size[0]) != tuple(shape[1:]):
                raise InputError(f"image column {column!r} holds a PNG of {img.size[0]}x{img.size[1]} pixels; the "
                                 f"bundle's images are {shape[2]}x{shape[1]} (W x H)")
            if img.mode not in _PNG_CHANNELS:
                img = img.convert("RGBA" if "A" in img.getbands() else ("L" if img.mode in ("1", "I", "I;16") else "RGB"))
            arr = np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError as err:  # not an OSError: it would otherwise be a 500
        raise InputError(f"image column {column!r} holds a PNG too large to decode ({_one_line(err)})") from None
    except (OSError, ValueError) as err:
        raise InputError(f"image column {column!r} holds bytes that are not a readable PNG ({_one_line(err)})") from err
    return arr[None, :, :] if arr.ndim == 2 else np.transpose(arr, (2, 0, 1))


def image_shape_of(table: pa.Table, column: str, image_shape: tuple[int, int, int] | None = None) -> tuple[int, int, int]:
    """(C, H, W) of an image column: checked against ``image_shape`` if given, else inferred."""
    col = table.column(column)
    enc = image_encoding(col.type)
    if enc is None:
        raise InputError(f"column {column!r} of type {col.type} is not an image column")
    if enc == "png":
        present = col.drop_null()
        if len(present) == 0:
            raise InputError(f"image column {column!r} holds no images")
        natural = tuple(int(s) for s in _decode_png(present[0].as_py(), column).shape)
        if image_shape is not None and tuple(image_shape) != natural:
            raise InputError(f"image shape {tuple(image_shape)} does not match the PNGs in {column!r}, which are {natural} (C,H,W)")
        return natural  # type: ignore[return-value]
    if enc == "fixed_size_list":
        length = col.type.list_size
    else:
        seen = pc.unique(pc.list_value_length(col)).drop_null().to_pylist()
        if not seen:
            raise InputError(f"image column {column!r} holds no images")
        if len(seen) > 1:
            raise InputError(f"image column {column!r} holds images of different lengths {sorted(seen)[:8]}: every image must have the same number of values")
        length = seen[0]
    if image_shape is not None:
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 3 or math.prod(shape) != length:
            raise InputError(f"image shape {shape} has {math.prod(shape)} values but the images in {column!r} have {length}: give --image-shape C,H,W with C*H*W = {length}")
        return shape  # type: ignore[return-value]
    side = math.isqrt(length)
    if side * side != length:
        raise InputError(f"cannot infer the shape of image column {column!r} from {length} values per image: give --image-shape C,H,W")
    return (1, side, side)


def image_to_array(column: pa.Array | pa.ChunkedArray, shape: tuple[int, int, int], *, name: str = "image") -> np.ndarray:
    """An image column -> ``(n, C*H*W)`` array in the column's element dtype (uint8 for PNG)."""
    arr = _as_array(column)
    n, length = len(arr), math.prod(shape)
    if arr.null_count:
        raise InputError(f"image column {name!r} has {arr.null_count} null rows: every row must hold an image")
    enc = image_encoding(arr.type)
    if enc == "png":
        images = [_decode_png(v, name, shape) for v in arr.to_pylist()]
        for img in images:
            if img.shape != tuple(shape):
                raise InputError(f"image column {name!r} holds PNGs of shapes {img.shape} and {tuple(shape)} (C,H,W): all must be the same")
        return np.stack(images).reshape(n, length) if images else np.zeros((0, length), np.uint8)
    if enc == "list":
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        bad = np.unique(lengths[lengths != length])
        if bad.size:
            raise InputError(f"image column {name!r} holds images of lengths {[int(b) for b in bad[:8]]} besides {length}: every image must have {length} values")
    elif enc == "fixed_size_list":
        if arr.type.list_size != length:
            raise InputError(f"image column {name!r} has {arr.type.list_size} values per image, not {length} = C*H*W")
    else:
        raise InputError(f"column {name!r} of type {arr.type} is not an image column")
    values = arr.flatten()  # respects slicing offsets, no per-row loop
    if values.null_count:
        raise InputError(f"image column {name!r} has null pixel values")
    return values.to_numpy(zero_copy_only=False).reshape(n, length)


def _encode_png(img: np.ndarray) -> bytes:
    from PIL import Image

    c = img.shape[0]
    hwc = img[0] if c == 1 else np.transpose(img, (1, 2, 0))
    buf = _pyio.BytesIO()
    Image.fromarray(np.ascontiguousarray(hwc), mode=_CHANNEL_MODES[c]).save(buf, format="PNG")
    return buf.getvalue()


def array_to_image_column(arr: np.ndarray, like_type: pa.DataType, shape: tuple[int, int, int]) -> pa.Array:
    """``(n, C*H*W)`` pixels -> an Arrow array of ``like_type`` in the same encoding (PNG bytes for binary)."""
    n, length = arr.shape[0], math.prod(shape)
    enc = image_encoding(like_type)
    if enc == "png":
        if shape[0] not in _CHANNEL_MODES:
            raise InputError(f"cannot write {shape[0]}-channel images as PNG: 1, 2, 3 or 4 channels are allowed")
        pixels = np.clip(np.rint(arr), 0, 255).astype(np.uint8).reshape(n, *shape)
        return pa.array([_encode_png(img) for img in pixels], type=like_type)
    if enc is None:
        raise InputError(f"type {like_type} is not an image type")
    vt = like_type.value_type
    values = arrays.from_numpy(np.ascontiguousarray(arr).reshape(-1).astype(vt.to_pandas_dtype(), copy=False), vt)
    if enc == "fixed_size_list":
        return pa.FixedSizeListArray.from_arrays(values, type=like_type)
    offsets = np.arange(n + 1, dtype=np.int64 if pa.types.is_large_list(like_type) else np.int32) * length
    cls = pa.LargeListArray if pa.types.is_large_list(like_type) else pa.ListArray
    return cls.from_arrays(arrays.from_numpy(offsets), values, type=like_type)
