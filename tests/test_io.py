"""Reading Parquet / CSV / folders, image column detection, shapes and encodings (tiny tables in tmp_path)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from augment.errors import InputError
from augment.io import (
    array_to_image_column,
    detect_image_columns,
    image_shape_of,
    image_to_array,
    parse_image_shape,
    read_table,
)


def test_read_parquet_file_folder_and_csv(tmp_path, mixed_table):
    # Setup
    pq.write_table(mixed_table, tmp_path / "one.parquet")
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(mixed_table.slice(0, 100), folder / "part-0.parquet")
    pq.write_table(mixed_table.slice(100), folder / "part-1.parquet")
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-0.parquet.crc").write_bytes(b"junk")
    pacsv.write_csv(mixed_table, tmp_path / "t.csv")
    # Run
    one = read_table(tmp_path / "one.parquet")
    parts = read_table(folder)
    csv = read_table(tmp_path / "t.csv", columns=["age", "job"])
    # Assert
    assert one.equals(mixed_table)
    assert parts.num_rows == 400 and parts.column_names == mixed_table.column_names
    assert csv.column_names == ["age", "job"] and csv.column("age").to_pylist() == mixed_table.column("age").to_pylist()


@pytest.mark.parametrize("name, content, words", [
    ("missing.parquet", None, ["missing.parquet", "no such"]),
    ("bad.parquet", b"not parquet at all", ["bad.parquet", "cannot read"]),
    ("data.xlsx", b"x", ["'.xlsx'", "Parquet"]),
    ("empty", "dir", ["empty", "no Parquet files"]),
])
def test_read_errors(tmp_path, name, content, words):
    # Setup
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
        (path / "_SUCCESS").write_text("")
    elif content is not None:
        path.write_bytes(content)
    # Run / Assert
    with pytest.raises(InputError) as info:
        read_table(path)
    assert "\n" not in str(info.value) and all(w in str(info.value) for w in words)


def test_parse_image_shape():
    assert parse_image_shape("1,28,28") == (1, 28, 28)
    assert parse_image_shape(" 3, 8 ,8") == (3, 8, 8)
    for bad in ["28,28", "a,b,c", "0,4,4", ""]:
        with pytest.raises(InputError, match="C,H,W"):
            parse_image_shape(bad)


def image_table(encoding: str, shape=(1, 3, 3), n: int = 4) -> tuple[pa.Table, np.ndarray]:
    pixels = np.random.default_rng(0).integers(0, 256, size=(n, int(np.prod(shape))), dtype=np.uint8)
    like = {"fixed_size_list": pa.list_(pa.uint8(), pixels.shape[1]), "list": pa.list_(pa.uint8()),
            "large_list": pa.large_list(pa.uint8()), "png": pa.binary()}[encoding]
    return pa.table({"img": array_to_image_column(pixels, like, shape), "y": np.arange(n) % 2}), pixels


@pytest.mark.parametrize("encoding", ["fixed_size_list", "list", "large_list", "png"])
def test_image_detect_shape_and_round_trip(encoding):
    # Setup
    table, pixels = image_table(encoding)
    # Run
    found = detect_image_columns(table)
    shape = image_shape_of(table, "img")
    back = image_to_array(table.column("img"), shape)
    sliced = image_to_array(table.column("img").combine_chunks().slice(1, 2), shape)
    # Assert
    assert found == ["img"] and shape == (1, 3, 3)
    np.testing.assert_array_equal(back, pixels)
    np.testing.assert_array_equal(sliced, pixels[1:3])


def test_rgb_png_and_explicit_shape():
    table, pixels = image_table("png", shape=(3, 2, 5))
    assert image_shape_of(table, "img") == (3, 2, 5)
    np.testing.assert_array_equal(image_to_array(table.column("img"), (3, 2, 5)), pixels)
    fixed, _ = image_table("fixed_size_list", shape=(3, 2, 5))
    assert image_shape_of(fixed, "img", (3, 2, 5)) == (3, 2, 5)


def test_plain_binary_is_not_an_image():
    table = pa.table({"b": pa.array([b"abc", b"de"]), "s": ["x", "y"]})
    assert detect_image_columns(table) == []


def test_image_errors():
    # inconsistent lengths
    ragged = pa.table({"img": pa.array([[1, 2, 3, 4], [1, 2, 3, 4, 5, 6, 7, 8, 9]], type=pa.list_(pa.uint8()))})
    with pytest.raises(InputError, match=r"'img'.*\[4, 9\]"):
        image_shape_of(ragged, "img")
    with pytest.raises(InputError, match=r"'img'.*\[9\]"):
        image_to_array(ragged.column("img"), (1, 2, 2), name="img")
    # not a square, no shape given
    odd, _ = image_table("fixed_size_list", shape=(3, 2, 5))
    with pytest.raises(InputError, match="--image-shape C,H,W"):
        image_shape_of(odd, "img")
    # shape that does not match the length
    with pytest.raises(InputError, match="30"):
        image_shape_of(odd, "img", (1, 5, 5))
    # null image
    nulls = pa.table({"img": pa.array([[1, 2, 3, 4], None], type=pa.list_(pa.uint8(), 4))})
    with pytest.raises(InputError, match="null"):
        image_to_array(nulls.column("img"), (1, 2, 2))
