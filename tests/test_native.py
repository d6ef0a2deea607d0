"""augment train --condition-on: per-value latent mixtures that --where on those columns draws from.

A table where the job says the age (retired rows are old): the native mixture of "retired" must give old rows
with every job "retired" and no probe, a value too rare for a mixture falls back to the cells, and a column
that cannot be conditioned on is refused before training.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner

from augment.batch.where import NativeMixture, where_plan
from augment.cli import cli
from augment.errors import InputError
from augment.generator import Generator
from augment.rows import generate_table, sample_spec
from conftest import TINY


def jobs_table(n: int = 2400, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    job = rng.choice(["admin.", "technician", "retired", "student"], size=n, p=[0.46, 0.33, 0.2, 0.01])
    age = np.where(job == "retired", rng.normal(66, 4, n), rng.normal(36, 7, n)).round().astype(np.int64)
    label = rng.choice(["no", "yes"], size=n, p=[0.6, 0.4])
    joined = pa.array((20_000 - 365 * (age - 18) + rng.integers(0, 365, n)).astype("int32")).cast(pa.date32())
    return pa.table({"age": age, "job": job, "housing": rng.choice(["yes", "no"], size=n), "joined": joined,
                     "code": [f"K{i}" for i in rng.choice(90_000_000, n, replace=False) + 10_000_000], "label": label})


@pytest.fixture(scope="module")
def native_bundle(tmp_path_factory):
    from training.api import train
    from training.config import TrainConfig

    out = tmp_path_factory.mktemp("bundles") / "native"
    config = TrainConfig(**{**TINY, "epochs": 12, "latent_dim": 4}, condition_on=("job", "age", "joined"))
    train(jobs_table(), label="label", out=out, config=config, progress=False)
    return out


def test_the_bundle_holds_a_mixture_per_class_and_common_value(native_bundle):
    meta = json.loads((native_bundle / "bundle.json").read_text())
    native = meta["sampler"]["native"]["columns"]["job"]["classes"]
    table = jobs_table()
    for c, cls in enumerate(["no", "yes"]):
        mine = table.filter(pc.equal(table["label"], cls))
        counts = {d["values"]: d["counts"] for d in mine["job"].value_counts().to_pylist()}
        categories = meta["codec"]["columns"][1]["categories"]
        assert native[c]["rows"] == [counts.get(v, 0) for v in categories]
        with_mixture = {categories[int(v)] for v in native[c]["values"]}
        assert with_mixture == {v for v, k in counts.items() if k >= 25}  # "student" is too rare for one
        for m in native[c]["values"].values():  # at most 10 full components, lower triangles packed
            assert 1 <= len(m["weights"]) <= 10 and len(m["cholesky_tril"][0]) == 4 * 5 // 2


def test_where_on_the_column_draws_from_its_mixture(native_bundle):
    gen = Generator.from_path(native_bundle)
    plan = where_plan(gen, sample_spec({0: 1, 1: 1}, 0, where=("job = retired",)))
    for p in plan.classes.values():
        assert p.native == "job" and p.proposal == 1.0 and p.probe_rows == 0
        assert isinstance(p.mixture, NativeMixture) and p.native_share == pytest.approx(0.2, abs=0.05)
    t = generate_table(gen, {0: 3000, 1: 1000}, 3, where=["job = retired"])
    assert t.num_rows == 4000 and set(t["job"].to_pylist()) == {"retired"}
    assert t.equals(generate_table(gen, {0: 3000, 1: 1000}, 3, where=["job = retired"]))
    plain = generate_table(gen, {0: 3000}, 3)
    old = np.mean(t["age"].to_numpy())
    assert old > 55 and np.mean(plain["age"].to_numpy()) < 48  # the retired rows' ages, not everyone's


def test_other_clauses_are_tested_on_top_and_rare_values_fall_back(native_bundle):
    gen = Generator.from_path(native_bundle)
    where = ["job in retired|admin.", "housing = no", "age >= 30"]
    plan = where_plan(gen, sample_spec({0: 1}, 0, where=tuple(where)))
    assert plan.classes[0].native == "job" and plan.classes[0].probe_rows > 0  # 65% of rows, age >= 30 more
    t = generate_table(gen, {0: 500}, 1, where=where)
    assert t.num_rows == 500 and set(t["job"].to_pylist()) <= {"retired", "admin."}
    assert set(t["housing"].to_pylist()) == {"no"} and pc.min(t["age"]).as_py() >= 30
    rare = where_plan(gen, sample_spec({0: 1}, 0, where=("job in student|retired",))).classes[0]
    assert rare.native is None and rare.probe_rows > 0  # no mixture for "student": the cells answer it
    t = generate_table(gen, {0: 200}, 1, where=["job in student|retired"])
    assert t.num_rows == 200 and set(t["job"].to_pylist()) <= {"student", "retired"}
    exact = where_plan(gen, sample_spec({0: 1}, 0, where=("job = retired",), where_proposal="reject"))
    assert exact.classes[0].native is None  # reject is plain rejection on the model, as documented


def test_dry_run_and_manifest_name_the_native_column(native_bundle, tmp_path):
    args = ["generate", "--model", str(native_bundle), "--per-class", "300", "--where", "job = retired"]
    r = CliRunner().invoke(cli, [*args, "--dry-run", "--out", str(tmp_path / "d")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "drawn from the --condition-on mixture of 'job'" in r.output and not (tmp_path / "d").exists()
    r = CliRunner().invoke(cli, [*args, "--quiet", "--out", str(tmp_path / "o")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "o" / "_manifest.json").read_text())
    assert [p["native"] for p in manifest["where"]["per_class"]] == ["job", "job"]
    r = CliRunner().invoke(cli, ["info", str(native_bundle)], catch_exceptions=False)
    assert "--condition-on job: a latent mixture for 3/3 of its values per class" in r.output
    assert "--condition-on age: a latent mixture for 20/20 of its quantile bins per class" in r.output
    table = ds.dataset(tmp_path / "o").to_table()
    assert table.num_rows == 600 and set(table["job"].to_pylist()) == {"retired"}


def test_condition_on_names_every_bad_column_before_training(tmp_path):
    from training.api import train
    from training.config import TrainConfig

    with pytest.raises(InputError) as err:
        train(jobs_table(), label="label", out=tmp_path / "m",
              config=TrainConfig(**TINY, condition_on=("code", "salary", "job")), progress=False)
    assert str(err.value) == ("--condition-on 'code', 'salary': not a categorical, number or date column of the "
                              "model; allowed: age, job, housing, joined")
    assert not (tmp_path / "m").exists()
    import pyarrow.parquet as pq

    pq.write_table(jobs_table(), tmp_path / "jobs.parquet")
    r = CliRunner().invoke(cli, ["train", "--data", str(tmp_path / "jobs.parquet"), "--label", "label", "--out",
                                 str(tmp_path / "m"), "--condition-on", "salary", "--quiet", "--epochs", "1"])
    assert r.exit_code != 0 and "--condition-on 'salary': not a categorical, number or date column" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "m").exists()


def test_a_number_column_draws_from_its_bins_and_keeps_testing_the_bound(native_bundle):
    meta = json.loads((native_bundle / "bundle.json").read_text())
    entry = meta["sampler"]["native"]["columns"]["age"]
    ages = jobs_table()["age"].to_numpy()
    edges = np.asarray(entry["edges"])
    assert entry["kind"] == "bins" and edges[0] == ages.min() and edges[-1] == ages.max()
    assert np.allclose(edges, np.unique(np.quantile(ages, np.linspace(0, 1, 21))))
    gen = Generator.from_path(native_bundle)
    from augment.batch.where import spill

    assert spill(np.array([0, 0, 1, 0, 0, 1, 1, 0], bool)).tolist() == [0, 1, 1, 1, 1, 1, 1, 0]  # null last
    plan = where_plan(gen, sample_spec({0: 1, 1: 1}, 0, where=("age >= 58",)))
    for p in plan.classes.values():
        assert p.native == "age" and 0.15 <= p.native_share <= 0.3 and p.probe_rows > 0
    t = generate_table(gen, {0: 400, 1: 200}, 2, where=["age >= 58"])
    assert t.num_rows == 600 and pc.min(t["age"]).as_py() >= 58
    jobs = t["job"].to_pylist()
    assert jobs.count("retired") > 0.6 * len(jobs)  # the old rows are the retired ones, as in training


def test_allowed_bins_never_leave_out_a_bin_holding_a_match():
    from augment.batch.where import allowed_bins
    from augment.conditions import parse_where

    schema = pa.schema([("x", pa.float64()), ("n", pa.int64())])
    edges = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    cases = {("x >= 2",): [0, 0, 1, 1, 0], ("x > 2",): [0, 0, 1, 1, 0], ("x < 1",): [1, 0, 0, 0, 0],
             ("x > 1.2", "x < 1.4"): [0, 1, 0, 0, 0], ("x = 3",): [0, 0, 0, 1, 0], ("x in 0.5|3.5",): [1, 0, 0, 1, 0],
             ("x is null",): [0, 0, 0, 0, 1], ("x is not null",): [1, 1, 1, 1, 0], ("x != 1",): [1, 1, 1, 1, 0],
             ("x > 9",): [0, 0, 0, 0, 0]}
    for where, want in cases.items():
        got = allowed_bins(parse_where(list(where), schema).clauses, edges, non_finite=False)
        assert got.tolist() == [bool(w) for w in want], where
        nan = allowed_bins(parse_where(list(where), schema).clauses, edges, non_finite=True)[-1]
        assert nan == (where != ("x is not null",)), where  # NaN meets every clause but a null test
    rng = np.random.default_rng(0)  # and against values: every bin holding a value that meets the clauses is in
    for _ in range(200):
        x = rng.uniform(-1, 5, 2000).round(rng.integers(0, 3))
        lo, hi = sorted(rng.uniform(-1, 5, 2).round(1))
        clauses = parse_where([f"x >= {lo}", f"x < {hi}"], schema).clauses
        got = allowed_bins(clauses, edges, non_finite=False)
        hit = x[(x >= lo) & (x < hi) & (x >= 0) & (x <= 4)]
        need = np.unique(np.searchsorted(edges[1:-1], hit, side="right"))
        assert got[need].all(), (lo, hi)


def test_the_api_and_the_service_draw_the_same_native_rows(native_bundle):
    import io

    import pyarrow.parquet as pq
    from fastapi.testclient import TestClient

    import augment
    from serving.app import create_app
    from serving.settings import ServeSettings

    synth = augment.Synthesizer.load(native_bundle)
    where = ["job = retired", "age >= 50"]
    want = synth.sample(class_counts={"no": 70, "yes": 30}, seed=5, where=where, output="arrow")
    assert want.equals(generate_table(Generator.from_path(native_bundle), {0: 70, 1: 30}, 5, where=where))
    with TestClient(create_app(ServeSettings(model=str(native_bundle)), generator=synth._generator()),
                    raise_server_exceptions=False) as client:
        r = client.post("/v1/generate", json={"counts": {"no": 70, "yes": 30}, "seed": 5, "where": where},
                        headers={"accept": "application/vnd.apache.parquet"})
        assert r.status_code == 200, r.text
    got = pq.read_table(io.BytesIO(r.content))
    assert got.select(want.column_names).equals(want)


def test_a_date_column_draws_from_its_bins(native_bundle):
    import datetime

    gen = Generator.from_path(native_bundle)
    cut = "2000-01-01"  # joined before it: the older rows (joined = day 20,000 - 365 (age - 18) + noise)
    plan = where_plan(gen, sample_spec({0: 1, 1: 1}, 0, where=(f"joined < {cut}",)))
    days = jobs_table()["joined"].cast(pa.int32()).to_numpy()
    held = float((days < (datetime.date(2000, 1, 1) - datetime.date(1970, 1, 1)).days).mean())
    for p in plan.classes.values():
        assert p.native == "joined" and held - 0.02 <= p.native_share <= held + 0.12  # its bins and one beyond
    t = generate_table(gen, {0: 300, 1: 200}, 4, where=[f"joined < {cut}"])
    assert t.num_rows == 500 and pc.max(t["joined"]).as_py() < datetime.date(2000, 1, 1)
