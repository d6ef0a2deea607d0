"""augment generate --where: exact counts, every row meets every clause, same bytes on every engine, errors first.

The Ray run is in test_generate_ray.py; the service's and the API's ``where`` in their own test files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from augment.cli import cli
from augment.conditions import ConditionError
from augment.rows import generate_table

WHERE = ["age >= 45", "job in retired|services", "income is not null"]


def invoke(command: str, *args):
    return CliRunner().invoke(cli, [command, *map(str, args)], catch_exceptions=False)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


@pytest.fixture(scope="module")
def gen(table_bundle):
    from augment.generator import Generator

    return Generator.from_path(table_bundle)


def meets(table: pa.Table, clauses) -> np.ndarray:
    """The clauses checked independently of augment.conditions, in plain Python."""
    rows = table.to_pylist()
    checks = {"age >= 45": lambda r: r["age"] is not None and r["age"] >= 45,
              "age < 30": lambda r: r["age"] is not None and r["age"] < 30,
              "job in retired|services": lambda r: r["job"] in ("retired", "services"),
              "job = technician": lambda r: r["job"] == "technician",
              "income is not null": lambda r: r["income"] is not None,
              "income is null": lambda r: r["income"] is None,
              "flag = true": lambda r: r["flag"] is True}
    return np.array([all(checks[c](r) for c in clauses) for r in rows], dtype=bool)


@pytest.mark.parametrize("clauses", [WHERE, ["income is null", "flag = true"], ["age < 30", "job = technician"]])
@pytest.mark.parametrize("proposal", ["latent", "reject"])
def test_counts_exact_and_every_row_meets_every_clause_over_many_seeds(gen, clauses, proposal):
    for seed in range(8):
        counts = {0: 37 + seed, 1: 5 + 3 * seed}
        t = generate_table(gen, counts, seed, where=clauses, where_proposal=proposal)
        got = {str(v["values"]): v["counts"] for v in pc.value_counts(t.column("label")).to_pylist()}
        assert got == {"no": counts[0], "yes": counts[1]}, (seed, got)
        assert meets(t, clauses).all(), seed
        assert t.schema.equals(gen.schema)


def test_conditional_rows_differ_from_plain_and_by_seed(gen):
    a = generate_table(gen, {0: 50, 1: 50}, 1, where=WHERE)
    assert a.equals(generate_table(gen, {0: 50, 1: 50}, 1, where=WHERE))
    assert not a.equals(generate_table(gen, {0: 50, 1: 50}, 2, where=WHERE))
    # The tiny bundle's latent barely decides these columns: no cell of its two components is empty enough to
    # drop, so the latent proposal keeps all 16 cells; what it changes is the envelope of the categorical clause
    # (a cell drawn at its mass times M_c >= P(job in retired|services | z), each draw kept with P / M_c).
    from augment.batch.where import where_plan
    from augment.rows import sample_spec

    plan = where_plan(gen, sample_spec({0: 50, 1: 50}, 1, where=tuple(WHERE)))
    assert all(p.kept == tuple(range(p.cells)) and p.cells == 16 and p.dropped_share == 0
               and p.mixture.bounds is not None and p.envelope_mass < 1 for p in plan.classes.values())
    exact = where_plan(gen, sample_spec({0: 50, 1: 50}, 1, where=tuple(WHERE), where_proposal="reject"))
    assert all(p.mixture is None and p.proposal == p.plain for p in exact.classes.values())
    plain = generate_table(gen, {0: 400, 1: 400}, 1)
    assert 0 < meets(plain, WHERE).mean() < 0.5  # the condition is selective, so the test above means something


def test_same_bytes_in_process_lanes_and_process_pool(table_bundle, tmp_path, monkeypatch):
    import augment.batch.chunks as chunks

    monkeypatch.setattr(chunks, "MAX_CHUNK_ROWS", 64)  # several chunks per shard
    args = ["--model", table_bundle, "--class-counts", "no=300,yes=130", "--rows-per-file", 200, "--seed", 4,
            "--quiet", *sum((["--where", w] for w in WHERE), [])]
    for name, extra in (("one", ["--threads", 1]), ("lanes", ["--threads", 2]), ("pool", ["--workers", 2])):
        r = invoke("generate", *args, *extra, "--out", tmp_path / name)
        assert r.exit_code == 0, r.output
    assert digests(tmp_path / "one") == digests(tmp_path / "lanes") == digests(tmp_path / "pool")
    table = ds.dataset(tmp_path / "one").to_table()
    assert table.num_rows == 430 and meets(table, WHERE).all()
    m = json.loads((tmp_path / "one" / "_manifest.json").read_text())
    assert m["options"]["where"] == WHERE and m["where"]["proposal"] == "latent"
    for c in m["where"]["per_class"]:
        assert c["kept"] in (300, 130) and c["decoded"] >= c["kept"] and 0 < c["acceptance"] <= 1
        assert 0 < c["estimated_plain"] <= c["estimated_proposal"] <= 1
        assert c["components"] == 2 and c["cells"] == c["cells_kept"] == 16 and c["dropped_share_bound"] == 0
    assert "--where kept" in r.output


def test_dry_run_prints_the_estimated_acceptance(table_bundle, tmp_path):
    r = invoke("generate", "--model", table_bundle, "--per-class", 100, "--where", "age >= 45", "--dry-run",
               "--out", tmp_path / "d")
    assert r.exit_code == 0, r.output
    assert "where: age >= 45 (proposal latent)" in r.output and "estimated acceptance" in r.output
    assert "class 'yes'" in r.output and not (tmp_path / "d").exists()


@pytest.mark.parametrize("where, message", [
    (["age >= 100"], "no training row of class 'no' has age >= 100; no training row of class 'yes' has age >= 100"),
    (["salary > 3"], "unknown column 'salary'"),
    (["job = pilot"], "never holds 'pilot'"),
    (["age > young"], "'young' is not a value of column 'age' (type int64)"),
    (["label = yes"], "the label 'label' is chosen with --per-class"),
    (["age >> 3"], "'> 3' is not a value of column 'age'"),
    (["age"], "expected COLUMN OP VALUE"),
    (["salary > 3", "job = pilot"], "unknown column 'salary'"),
])
def test_bad_or_impossible_condition_is_one_line_and_writes_nothing(table_bundle, tmp_path, where, message):
    out = tmp_path / "never"
    r = invoke("generate", "--model", table_bundle, "--per-class", 10, "--out", out, "--quiet",
               *sum((["--where", w] for w in where), []))
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], r.output
    assert not out.exists()


def test_where_applies_to_sample_mode_only(table_bundle, tmp_path, mixed_table):
    src = tmp_path / "real.parquet"
    pq.write_table(mixed_table, src)
    r = invoke("generate", "--model", table_bundle, "--mode", "perturb", "--from", src, "--per-example", 2,
               "--where", "age >= 45", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "--where applies to --mode sample" in r.output


def test_rare_condition_completes(gen):
    """A condition few decoded rows meet still gives exact counts (the latent proposal finds them)."""
    plain = generate_table(gen, {0: 4000}, 0)
    ages = np.sort(plain.column("age").to_numpy())
    trained_max = int(gen.bundle.json["summary"]["columns"]["age"]["per_class"][0]["max"])
    cut = min(int(ages[-8]), trained_max)  # about 0.2% of plain draws are at least this old, and a training row is
    t = generate_table(gen, {0: 20}, 0, where=[f"age >= {cut}"])
    assert t.num_rows == 20 and pc.min(t.column("age")).as_py() >= cut


def test_bundle_without_summary_falls_back_to_a_decode_probe(table_bundle, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(table_bundle, old)
    meta = json.loads((old / "bundle.json").read_text())
    meta.pop("summary")
    (old / "bundle.json").write_text(json.dumps(meta))
    r = invoke("generate", "--model", old, "--per-class", 5, "--where", "age >= 1000", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "no decoded row of class 'no', 'yes' in" in r.output and "probe rows" in r.output
    r = invoke("generate", "--model", old, "--per-class", 5, "--where", "age >= 45", "--out", tmp_path / "o", "--quiet")
    assert r.exit_code == 0, r.output


def test_combines_with_keep_consistent(table_bundle, tmp_path):
    r = invoke("generate", "--model", table_bundle, "--per-class", 40, "--where", "age >= 45", "--keep-consistent",
               "--out", tmp_path / "o", "--quiet")
    assert r.exit_code == 0, r.output
    t = ds.dataset(tmp_path / "o").to_table()
    assert t.num_rows == 80 and pc.min(t.column("age")).as_py() >= 45


def test_evaluate_where_scores_against_the_matching_real_rows(table_bundle, tmp_path, mixed_table):
    for name, part in (("train", mixed_table.slice(0, 300)), ("test", mixed_table.slice(300))):
        pq.write_table(part, tmp_path / f"{name}.parquet")
    assert invoke("generate", "--model", table_bundle, "--per-class", 60, "--where", "age >= 45", "--quiet",
                  "--out", tmp_path / "s").exit_code == 0
    r = invoke("evaluate", "--model", table_bundle, "--train", tmp_path / "train.parquet", "--test",
               tmp_path / "test.parquet", "--synthetic", tmp_path / "s", "--report", tmp_path / "r", "--where",
               "age >= 45", "--no-figures", "--sweep-real", "none")
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    real_rows = int((pc.greater_equal(mixed_table.slice(0, 300).column("age"), 45)).to_numpy().sum())
    assert metrics["where"] == {"clauses": ["age >= 45"], "rows": {"train": real_rows, "test": metrics["where"]["rows"]["test"],
                                                                   "synthetic": 120}}
    r = invoke("evaluate", "--train", tmp_path / "train.parquet", "--test", tmp_path / "test.parquet", "--synthetic",
               tmp_path / "s", "--report", tmp_path / "r2", "--label", "label", "--where", "age >= 95")
    assert r.exit_code == 1 and "nothing to score against" in r.output


def test_condition_error_is_an_augment_error(gen):
    with pytest.raises(ConditionError, match="age >= 100"):
        generate_table(gen, {0: 5}, 0, where=["age >= 100"])


def ipc_bytes(table: pa.Table) -> bytes:
    from augment.batch.write import parquet_writer

    table = table.replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with parquet_writer(sink, table.schema, "label") as w:
        w.write_table(table, row_group_size=max(1, table.num_rows))
    return sink.getvalue().to_pybytes()


def test_api_stream_http_and_cli_give_the_same_conditional_rows(table_bundle, tmp_path):
    import io

    from fastapi.testclient import TestClient

    import augment
    from serving.app import create_app
    from serving.settings import ServeSettings

    synth = augment.Synthesizer.load(table_bundle)
    want = synth.sample(class_counts={"no": 70, "yes": 30}, seed=5, where=WHERE, output="arrow")
    assert want.num_rows == 100 and meets(want, WHERE).all()
    assert ipc_bytes(pa.Table.from_batches(list(synth.stream(class_counts={"no": 70, "yes": 30}, seed=5,
                                                             where=WHERE)))) == ipc_bytes(want)
    r = invoke("generate", "--model", table_bundle, "--class-counts", "no=70,yes=30", "--seed", 5, "--quiet",
               "--out", tmp_path / "o", *sum((["--where", w] for w in WHERE), []))
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "o").glob("*.parquet"))
    assert ipc_bytes(pa.concat_tables([pq.read_table(f) for f in files])) == ipc_bytes(want)
    with pytest.raises(ConditionError, match="unknown column 'salary'"):
        synth.sample(per_class=3, where="salary > 1")
    with TestClient(create_app(ServeSettings(model=str(table_bundle)), generator=synth._generator()),
                    raise_server_exceptions=False) as client:
        body = {"counts": {"no": 70, "yes": 30}, "seed": 5, "where": WHERE}
        r = client.post("/v1/generate", json=body, headers={"accept": "application/vnd.apache.parquet"})
        assert r.status_code == 200, r.text
        assert ipc_bytes(pq.read_table(io.BytesIO(r.content))) == ipc_bytes(want)
        for where, fragment in ((["job = pilot"], "never holds 'pilot'"),
                                (["age >= 100"], "no training row of class 'no' has age >= 100")):
            r = client.post("/v1/generate", json={**body, "where": where})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "where"], r.text
            assert fragment in r.json()["detail"][0]["msg"] and "Traceback" not in r.text
        r = client.post("/v1/generate", json={**body, "where": ["age > 1"] * 33})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "where"]
