"""Codec round trips per column kind, JSON round trip, and each bad input (tiny seeded tables)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from scipy.special import logit

from augment.codec import Codec, LabelSpec, Segment
from augment.errors import ClassNameError, InputError, SchemaError


def mode_params(codec: Codec, x: np.ndarray) -> np.ndarray:
    """Decoder params that reproduce the encoded rows x: numeric mean = value, tiny logvar; one-hot logits."""
    p = np.zeros((x.shape[0], codec.output_dim), np.float32)
    for s in codec.segments:
        xi = x[:, s.in_start:s.in_stop]
        if s.kind == "numeric":
            p[:, s.out_start] = xi[:, 0]
            p[:, s.out_start + 1] = -20.0
            if s.has_nulls:
                p[:, s.out_start + 2] = np.where(xi[:, 1] > 0, 20.0, -20.0)
            if s.spikes:
                p[:, s.out_stop - s.spikes:s.out_stop] = np.where(xi[:, -s.spikes:] > 0, 20.0, -20.0)
        elif s.kind == "categorical":
            p[:, s.out_start:s.out_stop] = np.where(xi > 0, 20.0, -20.0)
        else:
            p[:, s.out_start:s.out_stop] = logit(np.clip(xi, 1e-6, 1 - 1e-6))
    return p


def ks_stat(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), grid, side="right") / a.size
    fb = np.searchsorted(np.sort(b), grid, side="right") / b.size
    return float(np.abs(fa - fb).max())


def test_mixed_table_segments_and_round_trip(mixed_table):
    # Setup
    codec = Codec.fit(mixed_table, label="label")
    # Run
    x = codec.transform(mixed_table)
    back = codec.inverse(mode_params(codec, x), np.random.default_rng(0), temperature=0.0)
    # Assert
    assert x.dtype == np.float32 and x.shape == (mixed_table.num_rows, codec.input_dim)
    assert [s.name for s in codec.segments] == ["age", "balance €", "income", "job", "flag"]
    assert all(isinstance(s, Segment) for s in codec.segments)
    assert codec.segments[-1].in_stop == codec.input_dim and codec.segments[-1].out_stop == codec.output_dim
    assert back.schema == mixed_table.drop_columns(["label"]).schema
    assert back.column("age").to_pylist() == mixed_table.column("age").to_pylist()
    assert back.column("job").to_pylist() == mixed_table.column("job").to_pylist()
    assert back.column("income").is_null().to_pylist() == mixed_table.column("income").is_null().to_pylist()
    np.testing.assert_allclose(back.column("balance €").to_numpy(), mixed_table.column("balance €").to_numpy(), rtol=1e-3, atol=0.5)


def test_skewed_quantiles_near_identity_and_sampled_marginal():
    # Setup
    rng = np.random.default_rng(1)
    v = rng.lognormal(0.0, 1.5, size=2000)
    table = pa.table({"v": v})
    codec = Codec.fit(table, label=None)
    # Run
    x = codec.transform(table)
    back = codec.inverse(mode_params(codec, x), rng, temperature=0.0).column("v").to_numpy()
    prior = np.zeros((5000, codec.output_dim), np.float32)  # mean 0, logvar 0: sample N(0, 1) scores
    sampled = codec.inverse(prior, np.random.default_rng(2)).column("v").to_numpy()
    # Assert
    assert abs(x[:, 0].mean()) < 0.05 and abs(x[:, 0].std() - 1) < 0.1
    np.testing.assert_allclose(back, v, rtol=1e-2, atol=1e-2)
    assert ks_stat(sampled, v) < 0.05
    assert sampled.min() >= v.min() and sampled.max() <= v.max()


def test_null_rate_reproduced():
    # Setup
    rng = np.random.default_rng(3)
    n = 5000
    table = pa.table({"v": pa.array(rng.normal(size=n), mask=rng.random(n) < 0.2)})
    codec = Codec.fit(table, label=None)
    rate = table.column("v").null_count / n
    params = np.zeros((n, codec.output_dim), np.float32)
    params[:, 2] = logit(rate)
    # Run
    out = codec.inverse(params, np.random.default_rng(4)).column("v")
    # Assert
    assert codec.segments[0].has_nulls and codec.input_dim == 2 and codec.output_dim == 3
    assert abs(out.null_count / n - rate) < 0.02


def test_point_masses_get_their_own_category():
    # Setup: pdays-like (-1 for 70%, else spread out), a column with 2 spikes and nulls, a 0/1 column (all spikes)
    rng = np.random.default_rng(5)
    n = 4000
    pdays = np.where(rng.random(n) < 0.7, -1, rng.integers(1, 400, n))
    small = rng.choice([1, 2, 3, 4, 5, 6, 7, 8], size=n, p=[0.4, 0.25, 0.1, 0.08, 0.06, 0.05, 0.03, 0.03])
    table = pa.table({"pdays": pdays, "small": pa.array(small.astype(float), mask=rng.random(n) < 0.1),
                      "bit": rng.integers(0, 2, n), "smooth": rng.normal(size=n)})
    codec = Codec.fit(table, label=None, numeric=["bit"])  # a 0/1 integer column would be categorical otherwise
    cols = {c.name: c for c in codec.columns}
    # Run
    x = codec.transform(table)
    back = codec.inverse(mode_params(codec, x), rng, temperature=0.0)
    again = Codec.from_json(json.loads(json.dumps(codec.to_json())))
    # Assert: spikes found (at most MAX_SPIKES, by share), the layout carries them, and values come back exactly
    assert cols["pdays"].spikes == [-1] and cols["smooth"].spikes == []
    assert cols["small"].spikes == [1.0, 2.0, 3.0, 4.0] and cols["bit"].spikes == [0, 1]
    seg = {s.name: s for s in codec.segments}
    assert seg["pdays"].spikes == 2 and seg["small"].spikes == 5 and seg["smooth"].spikes == 0
    assert seg["small"].in_stop - seg["small"].in_start == 1 + 1 + 5
    pd_x = x[:, seg["pdays"].in_start:seg["pdays"].in_stop]
    np.testing.assert_array_equal(pd_x[:, 1], pdays == -1)  # the spike's one-hot
    np.testing.assert_array_equal(pd_x[:, 2], pdays != -1)  # "other"
    assert cols["pdays"].quantiles.min() >= 1  # the quantiles cover the other values only
    assert back.column("pdays").to_pylist() == pdays.tolist() and back.column("bit").to_pylist() == table.column("bit").to_pylist()
    assert back.column("small").to_pylist() == table.column("small").to_pylist()
    assert again.to_json() == codec.to_json()
    # sampling: the spike logits' softmax gives the spike's share
    params = np.zeros((n, codec.output_dim), np.float32)
    params[:, seg["pdays"].out_stop - 2] = np.log(0.7 / 0.3)
    sampled = codec.inverse(params, np.random.default_rng(6)).column("pdays").to_numpy()
    assert abs((sampled == -1).mean() - 0.7) < 0.03 and (sampled[sampled != -1] >= 1).all()


def test_integer_columns_with_few_values_are_categorical_unless_forced():
    rng = np.random.default_rng(7)
    table = pa.table({"day": rng.integers(1, 32, 500), "count": rng.integers(0, 200, 500), "f": rng.normal(size=500)})
    kinds = {c.name: c.kind for c in Codec.fit(table, label=None).columns}
    assert kinds == {"day": "categorical", "count": "numeric", "f": "numeric"}
    kinds = {c.name: c.kind for c in Codec.fit(table, label=None, numeric=["day"], categorical=["count"]).columns}
    assert kinds == {"day": "numeric", "count": "categorical", "f": "numeric"}
    with pytest.raises(SchemaError, match="more than one of --categorical, --numeric"):
        Codec.fit(table, label=None, numeric=["day"], categorical=["day"])
    with pytest.raises(SchemaError, match="numeric columns"):
        Codec.fit(table, label=None, numeric=["nope"])


def test_bundles_without_spikes_still_load():
    col = Codec.fit(pa.table({"v": np.random.default_rng(0).normal(size=50)}), label=None).to_json()
    del col["columns"][0]["spikes"]
    assert Codec.from_json(col).columns[0].spikes == []


def test_categories_kept_and_frequencies_reproduced():
    # Setup
    rng = np.random.default_rng(5)
    freq = {"a": 0.6, "b": 0.3, "c": 0.09, "rare": 0.01}
    table = pa.table({"c": pa.array(rng.choice(list(freq), size=3000, p=list(freq.values())).tolist() + ["rare", None])})
    codec = Codec.fit(table, label=None)
    n = 20000
    # Run
    params = np.tile(np.log(list(freq.values()) + [1e-9]).astype(np.float32), (n, 1))
    out = codec.inverse(params, np.random.default_rng(6)).column("c").to_pylist()
    # Assert
    assert codec.columns[0].categories == ["a", "b", "c", "rare"] and codec.columns[0].has_nulls
    for k, p in freq.items():
        assert abs(out.count(k) / n - p) < 0.015


def test_integer_rounding_type_and_range_clipping():
    # Setup
    table = pa.table({"i": pa.array(np.arange(10, 60, dtype=np.int16)), "f": pa.array(np.linspace(0, 1, 50, dtype=np.float32))})
    codec = Codec.fit(table, label=None)
    params = np.zeros((4, codec.output_dim), np.float32)
    params[:, 0] = [-40.0, 40.0, 0.3, 0.0]  # far outside the observed range, and inside
    params[:, 2] = [-40.0, 40.0, 0.3, 0.0]
    # Run
    out = codec.inverse(params, np.random.default_rng(0), temperature=0.0)
    # Assert
    assert out.schema.field("i").type == pa.int16() and out.schema.field("f").type == pa.float32()
    assert out.column("i").to_pylist()[:2] == [10, 59]
    assert out.column("f").to_pylist()[:2] == [0.0, 1.0]


def test_constant_and_all_null_columns():
    # Setup
    table = pa.table({"k": pa.array([7] * 10), "nul": pa.nulls(10), "fnul": pa.array([None] * 10, type=pa.float32()),
                      "x": pa.array(np.arange(10.0))})
    codec = Codec.fit(table, label=None, numeric=["k"])
    params = np.random.default_rng(0).normal(size=(50, codec.output_dim)).astype(np.float32)
    # Run
    x = codec.transform(table)
    out = codec.inverse(params, np.random.default_rng(1))
    # Assert
    assert np.all(x[:, 0] == 0)
    assert out.column("k").to_pylist() == [7] * 50
    assert out.schema.field("nul").type == pa.null() and out.column("nul").null_count == 50
    assert out.schema.field("fnul").type == pa.float32() and out.column("fnul").null_count == 50


@pytest.mark.parametrize("encoding", ["fixed_size_list", "list", "png"])
def test_image_round_trip_exact(encoding):
    # Setup
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(6, 3 * 4 * 4), dtype=np.uint8)
    like = {"fixed_size_list": pa.list_(pa.uint8(), 48), "list": pa.list_(pa.uint8()), "png": pa.binary()}[encoding]
    from augment.io import array_to_image_column

    table = pa.table({"img": array_to_image_column(pixels, like, (3, 4, 4)), "label": pa.array([0, 1] * 3)})
    codec = Codec.fit(table, label="label", image_shape=(3, 4, 4))
    # Run
    x = codec.transform(table)
    out = codec.inverse(mode_params(codec, x), np.random.default_rng(0), temperature=0.0)
    # Assert
    assert codec.modality == "image" and codec.image_shape == (3, 4, 4) and codec.input_dim == 48
    assert out.schema.field("img").type == like
    assert out.column("img").to_pylist() == table.column("img").to_pylist()


def test_float_image_scale():
    # Setup
    pixels = np.random.default_rng(0).random((4, 16)).astype(np.float32) * 2.0
    table = pa.table({"img": pa.FixedSizeListArray.from_arrays(pa.array(pixels.ravel()), 16)})
    codec = Codec.fit(table, label=None)
    # Run
    x = codec.transform(table)
    out = codec.inverse(mode_params(codec, x), np.random.default_rng(0))
    # Assert
    assert codec.image_shape == (1, 4, 4) and x.max() <= 1.0
    np.testing.assert_allclose(np.stack(out.column("img").to_numpy(zero_copy_only=False)), pixels, atol=1e-4)


def test_single_class_and_unconditional_labels(mixed_table):
    # Setup
    one = mixed_table.filter(pc.equal(mixed_table.column("label"), "yes"))
    # Run
    single = Codec.fit(one, label="label")
    uncond = Codec.fit(mixed_table.drop_columns(["label"]), label=None)
    # Assert
    assert single.label.classes == ["yes"] and np.all(single.encode_labels(one) == 0)
    assert uncond.label == LabelSpec(None, [None], [mixed_table.num_rows], None)
    assert np.all(uncond.encode_labels(mixed_table) == 0)


@pytest.mark.parametrize("labels", [[3, 1, 2] * 4, ["b", "a", "c"] * 4, [True, False] * 6])
def test_label_types_round_trip(labels):
    # Setup
    table = pa.table({"x": pa.array(np.arange(12.0)), "y": pa.array(labels)})
    codec = Codec.fit(table, label="y")
    # Run
    idx = codec.encode_labels(table)
    back = codec.label_array(idx)
    # Assert
    assert codec.label.classes == sorted(set(labels))
    assert back.type == table.schema.field("y").type and back.to_pylist() == labels
    assert codec.label.counts == [labels.count(c) for c in codec.label.classes]


def test_dictionary_and_forced_categorical_columns():
    # Setup
    table = pa.table({"d": pa.array(["x", "y", None, "x"]).dictionary_encode(), "code": pa.array([5, 9, 5, 9])})
    codec = Codec.fit(table, label=None, categorical=["code"], keep_rare=True)  # 4 rows: every value is rare
    # Run
    out = codec.inverse(mode_params(codec, codec.transform(table)), np.random.default_rng(0), temperature=0.0)
    # Assert
    assert [s.kind for s in codec.segments] == ["categorical", "categorical"]
    assert out.schema == table.schema and out.column("d").to_pylist() == ["x", "y", None, "x"]
    assert out.column("code").to_pylist() == [5, 9, 5, 9]


def test_unicode_and_space_names_json_round_trip(mixed_table):
    # Setup
    table = mixed_table.rename_columns(["âge ü", "balance €", "in come", "job 職業", "flag", "label"])
    codec = Codec.fit(table, label="label")
    params = np.random.default_rng(0).normal(size=(100, codec.output_dim)).astype(np.float32)
    # Run
    again = Codec.from_json(json.loads(json.dumps(codec.to_json())))
    # Assert
    assert again.to_json() == codec.to_json() and again.segments == codec.segments and again.label == codec.label
    np.testing.assert_array_equal(again.transform(table), codec.transform(table))
    assert again.inverse(params, np.random.default_rng(1)).equals(codec.inverse(params, np.random.default_rng(1)))


def test_same_seed_same_rows(mixed_table):
    codec = Codec.fit(mixed_table, label="label")
    params = np.random.default_rng(0).normal(size=(64, codec.output_dim)).astype(np.float32)
    assert codec.inverse(params, np.random.default_rng(9)).equals(codec.inverse(params, np.random.default_rng(9)))


@pytest.mark.parametrize(
    "make, kwargs, error, words",
    [
        (lambda t: t, {"label": "target"}, SchemaError, ["'target'", "available"]),
        (lambda t: t.append_column("one", pa.array([1] * 399 + [2])).drop_columns(["label"]), {"label": "one"}, InputError, ["class 2", "at least 2"]),
        (lambda t: t.set_column(5, "label", pa.array(["a"] * 399 + [None])), {"label": "label"}, InputError, ["null"]),
        (lambda t: t.append_column("when", pa.array([{"a": 0}] * 400)), {"label": "label"}, SchemaError, ["'when'", "struct<a: int64>", "--drop when"]),
    ],
)
def test_fit_errors(mixed_table, make, kwargs, error, words):
    with pytest.raises(error) as info:
        Codec.fit(make(mixed_table), **kwargs)
    assert "\n" not in str(info.value) and all(w in str(info.value) for w in words)


def test_image_table_with_other_columns_rejected():
    table = pa.table({"img": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(8, np.uint8)), 4), "extra": [1.0, 2.0], "y": [0, 0]})
    with pytest.raises(SchemaError, match="'extra'"):
        Codec.fit(table, label="y")


def test_transform_errors(mixed_table):
    # Setup
    codec = Codec.fit(mixed_table, label="label")
    # Run / Assert: text in a numeric column
    with pytest.raises(SchemaError, match=r"'age'.*int64.*string"):
        codec.transform(mixed_table.set_column(0, "age", pa.array(["x"] * 400)))
    # unseen category
    with pytest.raises(InputError, match=r"'job'.*'pilot'.*allowed: \['admin.'"):
        codec.transform(mixed_table.set_column(3, "job", pa.array(["pilot"] * 400)))
    # missing column
    with pytest.raises(SchemaError, match="'flag'"):
        codec.transform(mixed_table.drop_columns(["flag"]))
    # unknown label
    with pytest.raises(ClassNameError, match=r"'maybe'.*\['no', 'yes'\]"):
        codec.encode_labels(mixed_table.set_column(5, "label", pa.array(["maybe"] * 400)))


def test_codec_and_io_do_not_import_torch():
    code = "import sys, augment.codec, augment.io; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
