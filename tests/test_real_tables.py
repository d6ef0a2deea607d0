"""Real tables (issue 11): dates, timestamps, decimals, wide integers, identifiers, rare values, free text,
NaN and infinities, and the readers. Tiny seeded fixtures; one small bundle trained once."""

from __future__ import annotations

import decimal
import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from augment.cli import cli
from augment.codec import Codec
from augment.columns import RARE_TOKEN
from augment.errors import InputError, SchemaError
from augment.generator import Generator
from augment.io import read_table
from tests.test_codec import mode_params

N = 600


def typed_table(n: int = N, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    days = 18_000 + 7 * rng.integers(0, 150, n) + rng.choice([0, 4], n)  # only Mondays (0) and Fridays (4)
    hours = rng.choice([9, 18], n, p=[0.7, 0.3])
    ticks = ((days * 86_400 + hours * 3_600 + rng.integers(0, 600, n)) * 1_000_000).astype(np.int64)
    f = rng.normal(size=n)
    f[:60], f[60:90], f[90:105] = np.nan, np.inf, -np.inf
    city = rng.choice(["amsterdam", "rotterdam", "utrecht"], n).astype(object)
    city[:3] = ["tiny1", "tiny2", "tiny3"]  # each held by one row: rare
    return pa.table({
        "day": pa.array(days.astype(np.int32), mask=rng.random(n) < 0.1).cast(pa.date32()),
        "at": pa.array(ticks).cast(pa.timestamp("us", tz="Europe/Amsterdam")),
        "price": pa.array([decimal.Decimal(f"{x:.2f}") for x in rng.lognormal(4, 0.4, n)], pa.decimal128(10, 2)),
        "big": pa.array(rng.integers(2**40, 2**41, n).astype(np.uint64)),
        "clock": pa.array(rng.integers(0, 86_400, n).astype(np.int32), pa.int32()).cast(pa.time32("s")),
        "wait": pa.array(rng.integers(0, 10**6, n)).cast(pa.duration("ms")),
        "f": pa.array(f, mask=np.arange(n) >= n - 45),
        "code": pa.array([f"{rng.integers(1000, 9999)}-{''.join(rng.choice(list('ABCDEFGHJK'), 5))}" for _ in range(n)]),
        "customer_id": pa.array(rng.permutation(900_000)[:n] + 100_000),
        "city": pa.array(city.tolist()),
        "label": pa.array(rng.choice(["x", "y"], n)),
    })


@pytest.fixture(scope="module")
def typed() -> pa.Table:
    return typed_table()


@pytest.fixture(scope="module")
def typed_bundle(tmp_path_factory, typed):
    from training.api import train
    from training.config import TrainConfig
    from tests.conftest import TINY

    out = tmp_path_factory.mktemp("typed") / "bundle"
    train(typed, label="label", out=out, config=TrainConfig(**TINY), progress=False)
    return out


def test_codec_kinds_of_a_real_table(typed):
    codec = Codec.fit(typed, label="label")
    kinds = {c.name: c.kind for c in codec.columns}
    assert kinds == {"day": "temporal", "at": "temporal", "price": "numeric", "big": "numeric", "clock": "numeric",
                     "wait": "numeric", "f": "numeric", "code": "identifier", "customer_id": "identifier",
                     "city": "categorical"}
    assert [s.name for s in codec.segments if s.name.startswith("at")] == ["at", "at:time", "at:weekday"]
    again = Codec.from_json(json.loads(json.dumps(codec.to_json())))
    assert again.to_json() == codec.to_json() and again.segments == codec.segments


def test_every_kind_comes_back_in_its_type_range_and_unit(typed_bundle, typed):
    gen = Generator.from_path(typed_bundle)
    out = gen.sample(0, 2000, np.random.default_rng(1))
    for field in typed.schema:
        assert out.schema.field(field.name).type == field.type, field.name
    def number(a):
        return a.cast(pa.int64()) if pa.types.is_duration(a.type) else a

    for name in ["day", "at", "price", "big", "clock", "wait"]:
        lo, hi = pc.min_max(number(typed[name])).values()
        col = number(out[name])
        assert pc.all(pc.greater_equal(col, lo)).as_py() and pc.all(pc.less_equal(col, hi)).as_py(), name
    assert all(v.as_py().as_tuple().exponent == -2 for v in out["price"].drop_null())  # the decimal's scale
    assert out["day"].null_count > 0 and out["city"].null_count == 0  # nulls where training had them only


def test_null_nan_and_infinities_are_four_states(typed):
    # Setup: decoder parameters that reproduce each row's state
    codec = Codec.fit(typed.select(["f", "label"]), label="label")
    x = codec.transform(typed)
    # Run
    out = codec.inverse(mode_params(codec, x), np.random.default_rng(0), temperature=1.0)["f"]
    # Assert: each state where it was, none merged into another
    values = out.to_numpy(zero_copy_only=False)
    real = typed["f"].to_numpy(zero_copy_only=False)
    null = out.is_null().to_numpy(zero_copy_only=False)
    assert (null == typed["f"].is_null().to_numpy(zero_copy_only=False)).all()
    assert (np.isnan(values[~null]) == np.isnan(real[~null])).all()
    assert (np.isposinf(values) == np.isposinf(real)).all() and (np.isneginf(values) == np.isneginf(real)).all()
    assert codec.columns[0].specials == ["nan", "inf", "-inf"]


def test_calendar_histograms_follow_the_weekday_and_time_parts(typed):
    # Setup: reproduce the weekday and time parts but blur the day number by up to +-3 days
    codec = Codec.fit(typed.select(["at", "day", "label"]), label="label")
    x = codec.transform(typed)
    p = mode_params(codec, x)
    rng = np.random.default_rng(0)
    for s in codec.segments:
        if s.name in ("at", "day"):
            p[:, s.out_start + 1] = np.log(0.02)  # a wide variance on the normal scale: days move
    # Run
    out = codec.inverse(p, rng, temperature=1.0)
    # Assert: weekdays only Monday and Friday, hours only 9 and 18, as in the real rows
    def weekdays(a):
        return set(np.unique(pc.day_of_week(a.drop_null()).to_numpy(zero_copy_only=False)).tolist())

    assert len(weekdays(typed["day"])) == 2 and weekdays(out["day"]) == weekdays(typed["day"])
    local, real_local = pc.local_timestamp(out["at"]), pc.local_timestamp(typed["at"])
    assert weekdays(local) == weekdays(real_local)
    hours, real_hours = pc.hour(local).to_numpy(), pc.hour(real_local).to_numpy()
    # the quantile lookup interpolates across the empty hours between two clusters for a few rows
    assert np.isin(hours, np.unique(real_hours)).mean() > 0.98
    for h in np.unique(real_hours):
        assert abs((hours == h).mean() - (real_hours == h).mean()) < 0.05
    real_days = typed["day"].drop_null().cast(pa.int32()).to_numpy()
    moved = out["day"].drop_null().cast(pa.int32()).to_numpy()
    assert not np.array_equal(np.sort(real_days), np.sort(moved))  # the day part did vary


def test_identifiers_are_fresh_formatted_and_never_training_values(typed_bundle, typed):
    gen = Generator.from_path(typed_bundle)
    from augment.rows import generate_table

    out = generate_table(gen, {0: 3000, 1: 2000}, seed=5)
    codes = out["code"].to_pylist()
    assert len(set(codes)) == len(codes) and len(set(out["customer_id"].to_pylist())) == out.num_rows
    assert not set(codes) & set(typed["code"].to_pylist())
    assert not set(out["customer_id"].to_pylist()) & set(typed["customer_id"].to_pylist())
    assert all(len(c) == 10 and c[4] == "-" and c[:4].isdigit() and c[5:].isupper() for c in codes)
    assert all(100_000 <= v <= 999_999 for v in out["customer_id"].to_pylist())  # the observed digit count
    again = generate_table(gen, {0: 3000, 1: 2000}, seed=5)
    other = generate_table(gen, {0: 3000, 1: 2000}, seed=6)
    assert again["code"].equals(out["code"]) and not other["code"].equals(out["code"])


def test_identifier_never_copied_even_when_training_fills_most_of_the_space():
    from augment.columns import IdentifierColumn

    taken = np.random.default_rng(0).permutation(np.arange(1000, 10_000))[:6000]  # 2/3 of the 4-digit space
    col = IdentifierColumn.fit("id", pa.array(taken))
    values = col.generate(np.arange(col.rows_max), seed=1).to_numpy()
    assert len(np.unique(values)) == values.size and not np.isin(values, taken).any()
    assert col.lanes > 8 and col.rows_max == 9000 // col.lanes
    with pytest.raises(InputError, match=f"at most {col.rows_max:,} rows"):
        col.generate(np.arange(col.rows_max + 1), seed=1)


def test_identifiers_unique_across_shards_resume_and_filters(typed_bundle, tmp_path):
    from augment.batch.run import run_job
    from augment.batch.spec import JobSpec
    from tests.test_generate import Interrupting

    gen = Generator.from_path(typed_bundle)
    spec = JobSpec(counts=((0, 900), (1, 700)), seed=2, rows_per_file=250)
    full = run_job(gen, spec, tmp_path / "full", engine="local", progress=False, echo=lambda s: None)
    with pytest.raises(KeyboardInterrupt):
        run_job(Interrupting(gen, after=2), spec, tmp_path / "cut", engine="local", threads=1, progress=False,
                echo=lambda s: None)
    run_job(gen, spec, tmp_path / "cut", engine="local", resume=True, progress=False, echo=lambda s: None)
    a = ds.dataset(tmp_path / "full", format="parquet").to_table()
    b = ds.dataset(tmp_path / "cut", format="parquet").to_table()
    assert a.num_rows == 1600 and pc.count_distinct(a["code"]).as_py() == 1600 and a["code"].equals(b["code"])
    assert full["identifiers"] == [{"name": "code", "format": gen.codec.identifiers[0].format},
                                   {"name": "customer_id", "format": "integers 100000..999999"}]
    kept = run_job(gen, JobSpec(counts=((0, 300), (1, 300)), seed=2, rows_per_file=100, keep_consistent=True),
                   tmp_path / "kept", engine="local", progress=False, echo=lambda s: None)
    k = ds.dataset(tmp_path / "kept", format="parquet").to_table()
    assert kept["rows"] == 600 and pc.count_distinct(k["customer_id"]).as_py() == 600


@pytest.mark.ray
def test_identifiers_unique_on_two_ray_workers(ray_local, typed_bundle, tmp_path):
    from augment.batch.run import run_job
    from augment.batch.spec import JobSpec

    gen = Generator.from_path(typed_bundle)
    spec = JobSpec(counts=((0, 500), (1, 400)), seed=4, rows_per_file=150)
    run_job(gen, spec, tmp_path / "local", engine="local", progress=False, echo=lambda s: None)
    run_job(gen, spec, tmp_path / "ray", engine="ray", workers=2, progress=False, echo=lambda s: None)
    a = ds.dataset(tmp_path / "local", format="parquet").to_table()
    b = ds.dataset(tmp_path / "ray", format="parquet").to_table()
    assert pc.count_distinct(b["code"]).as_py() == 900 and a.sort_by("code")["code"].equals(b.sort_by("code")["code"])


def test_rare_values_never_written_verbatim(typed_bundle, typed):
    gen = Generator.from_path(typed_bundle)
    out = gen.sample(0, 3000, np.random.default_rng(0))
    assert not {"tiny1", "tiny2", "tiny3"} & set(out["city"].to_pylist())
    codec = Codec.fit(typed, label="label")
    city = next(c for c in codec.columns if c.name == "city")
    assert city.rare == {"values": 3, "rows": 3, "min_rows": 5, "stand_in": RARE_TOKEN}
    assert "tiny1" not in json.dumps(codec.to_json())  # not even in the bundle
    kept = next(c for c in Codec.fit(typed, label="label", keep_rare=True).columns if c.name == "city")
    assert kept.rare is None and "tiny1" in kept.categories
    nums = next(c for c in Codec.fit(pa.table({"z": [1011] * 50 + [1012] * 40 + [1019]}), label=None,
                                          categorical=["z"]).columns)
    assert nums.categories == [1011, 1012] and nums.codes(pa.array([1019])).tolist() == [1]  # the nearest common


def test_every_unusable_column_in_one_line(typed):
    rng = np.random.default_rng(0)
    words = ["a", "quiet", "canal", "house", "near", "the", "centre", "with", "view"]
    bad = typed.append_column("title", pa.array([" ".join(rng.choice(words, 6)) + f" {i}" for i in range(N)]))
    bad = bad.append_column("zip", pa.array([f"Z{i % 300:03d}" for i in range(N)]))
    bad = bad.append_column("nested", pa.array([{"a": 1}] * N))
    with pytest.raises(SchemaError) as info:
        Codec.fit(bad, label="label", max_categories=100)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("3 column(s) cannot be modelled")
    for words_in in (["'title'", "free text", "--drop title", "--id title", "--categorical title"],
                     ["'zip'", "300 distinct", "--max-categories 300"], ["'nested'", "struct", "--drop nested"]):
        assert all(w in msg for w in words_in), (words_in, msg)
    ok = Codec.fit(bad, label="label", drop=["title", "nested"], max_categories=300)
    assert ok.dropped == ["title", "nested"] and "title" not in ok.column_names


def test_numeric_nulls_refused_where_training_had_none(typed):
    codec = Codec.fit(typed.select(["price", "f", "label"]), label="label")
    rows = typed.select(["price", "f", "label"]).slice(100, 5)
    rows = rows.set_column(0, "price", pa.array([None] + [decimal.Decimal("1.00")] * 4, pa.decimal128(10, 2)))
    with pytest.raises(InputError, match="'price' holds nulls .* but had none in training"):
        codec.transform(rows)
    nan = pa.table({"v": pa.array([1.0, 2.0, 3.0] * 10)})
    with pytest.raises(InputError, match="holds nan"):
        Codec.fit(nan, label=None).transform(pa.table({"v": pa.array([1.0, np.nan])}))


@pytest.mark.parametrize("name, text", [
    ("semi.csv", "a;b;label\n1;x;y\n2;z;n\n"), ("tabs.tsv", "a\tb\tlabel\n1\tx\ty\n2\tz\tn\n"),
    ("pipe.csv", "a|b|label\n1|x, y|y\n2|z|n\n"), ("gz.csv.gz", "a,b,label\n1,x,y\n2,z,n\n"),
    ("lines.jsonl", '{"a": 1, "b": "x", "label": "y"}\n{"a": 2, "b": "z", "label": "n"}\n'),
])
def test_readers(tmp_path, name, text):
    path = tmp_path / name
    (gzip.open(path, "wt") if name.endswith(".gz") else open(path, "w")).write(text)
    t = read_table(path)
    assert t.column_names == ["a", "b", "label"] and t.num_rows == 2 and t["a"].to_pylist() == [1, 2]


def test_feather_and_header_only(tmp_path):
    feather.write_feather(pa.table({"a": [1, 2], "label": ["y", "n"]}), tmp_path / "t.feather")
    assert read_table(tmp_path / "t.feather").num_rows == 2
    (tmp_path / "h.csv").write_text("a,b,label\n")
    with pytest.raises(InputError, match="has a header .3 columns. but no rows"):
        read_table(tmp_path / "h.csv")


def test_drop_null_labels_and_partitioned_from(tmp_path):
    rng = np.random.default_rng(0)
    n = 200
    t = pa.table({"v": rng.normal(size=n), "part": np.repeat([1, 2], n // 2),
                  "label": pa.array(rng.choice(["a", "b"], n), mask=np.arange(n) < 7)})
    pq.write_table(t, tmp_path / "t.parquet")
    args = ["train", "--data", str(tmp_path / "t.parquet"), "--label", "label", "--epochs", "2", "--hidden", "8",
            "--latent-dim", "2", "--quiet", "--threads", "1"]
    r = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "m0")])
    assert r.exit_code == 1 and "7 null values" in r.output and "--drop-null-labels" in r.output
    r = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "m1"), "--drop-null-labels"])
    assert r.exit_code == 0 and "dropped 7 rows without a label" in r.output
    # a hive-partitioned folder: trains with its partition column, and reads the same way as --from
    ds.write_dataset(t.drop_columns(["part"]).slice(7).append_column("part", t["part"].slice(7)), tmp_path / "hive",
                     format="parquet", partitioning=["part"], partitioning_flavor="hive")
    r = CliRunner().invoke(cli, args[:2] + [str(tmp_path / "hive")] + args[3:] + ["--out", str(tmp_path / "m2"),
                                                                                  "--categorical", "part"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["generate", "--model", str(tmp_path / "m2"), "--mode", "perturb", "--from",
                                 str(tmp_path / "hive"), "--per-example", "1", "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    assert "part" in ds.dataset(tmp_path / "p", format="parquet").schema.names


def test_info_lists_identifiers_rare_values_and_dropped(typed_bundle):
    r = CliRunner().invoke(cli, ["info", str(typed_bundle)])
    assert r.exit_code == 0
    assert "code: string  (identifier, generated fresh as [0-9][0-9][0-9][0-9]-[" in r.output
    assert "customer_id: int64  (identifier, generated fresh as integers 100000..999999" in r.output
    assert "3 rare values (3 rows, < 5 rows each) written as '<rare>'" in r.output
    assert "also nan, inf, -inf" in r.output and "at: timestamp[us, tz=Europe/Amsterdam]  (temporal" in r.output
    s = json.loads(CliRunner().invoke(cli, ["info", str(typed_bundle), "--json"]).output)
    assert s["identifiers"] == ["code", "customer_id"] and s["dropped"] == []


def test_evaluation_checks_identifiers_and_rare_values(typed):
    from augment.evaluate.suite import identifier_checks, rare_value_share
    from augment.evaluate.data import infer_schema

    syn = typed.set_column(typed.schema.get_field_index("code"), "code",
                           pa.array(typed["code"].to_pylist()[:10] + [f"N{i}" for i in range(N - 10)]))
    checks = identifier_checks(typed, syn, ["code"])
    assert checks["code"]["copied"] == 10 and checks["code"]["unique_share"] == 1.0
    schema = infer_schema(typed, "label", identifiers=["code", "customer_id"])
    assert "code" not in schema.features and "day" in schema.temporal and "day" in schema.numeric
    share = rare_value_share(typed, typed, schema, {"city": 5})["city"]
    assert share["rare_values"] == 3 and share["share"] == pytest.approx(3 / N)


def test_json_wire_format_of_typed_columns(typed):
    orjson = pytest.importorskip("orjson")
    from serving.formats import rows_to_table, table_to_rows

    t = typed.select(["day", "at", "price", "clock", "wait"]).slice(0, 20)
    rows = orjson.loads(orjson.dumps(table_to_rows(t)))
    first = rows[0]
    assert isinstance(first["price"], str) and first["at"][10] == "T" and first["at"][-6] in "+-"
    assert first["wait"].startswith("PT") and first["wait"].endswith("S")
    assert rows_to_table(rows, t.schema).equals(t)
