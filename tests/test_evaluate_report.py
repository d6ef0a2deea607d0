"""The report folder, the `augment split` / `augment evaluate` commands, and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from augment.cli import cli
from augment.errors import InputError, SchemaError
from augment.evaluate import EvalConfig, read_synthetic, run_evaluation, write_report
from conftest import make_digits_table, make_mixed_table

FAST = EvalConfig(sweep_sizes=("50%", "100%"), sweep_multipliers=(0, 1), image_steps=50, detection_cap=300)


def _strict_json(path: Path) -> dict:
    def no_nan(token):
        raise AssertionError(f"{path} holds {token}")

    return json.loads(path.read_text(), parse_constant=no_nan)


def _referenced(page: Path) -> list[str]:
    return re.findall(r'(?:src|href)=["\']([^"\']+)["\']', page.read_text())


def test_table_report_files_and_links(tmp_path):
    # Setup
    train, test, syn = make_mixed_table(300, 0), make_mixed_table(150, 1), make_mixed_table(300, 2)
    # Run
    page = write_report(run_evaluation(train, test, syn, "label", config=FAST), tmp_path / "rep")
    # Assert
    metrics = _strict_json(tmp_path / "rep" / "metrics.json")
    refs = _referenced(page)
    assert refs and all((page.parent / r).is_file() for r in refs)
    assert {"figures/column_shapes.png", "figures/worst_columns.png", "figures/association_difference.png",
            "figures/dcr.png", "figures/sweep.png"} <= set(metrics["figures"])
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["figures", "index.html", "metrics.json"]
    assert set(metrics["fidelity"]["per_class"]) == {"no", "yes"}
    assert 0 < metrics["fidelity"]["column_shapes"]["score"] <= 1
    assert metrics["privacy"]["too_close"] is False
    # every skipped metric is listed with its reason (here: sweep cells short of synthetic rows)
    assert all(s["reason"] for s in metrics["skipped"])
    with pytest.raises(Exception, match="--overwrite"):
        write_report(run_evaluation(train, test, syn, "label", config=EvalConfig(figures=False, sweep_multipliers=(0,))), tmp_path / "rep")


def test_image_report_has_sample_grid(tmp_path):
    d = make_digits_table(600)
    ev = run_evaluation(d.slice(0, 300), d.slice(300, 150), d.slice(450), "label", config=FAST)
    page = write_report(ev, tmp_path / "img")
    assert "samples.png" in ev.figures  # was `... if "figures" in ev.metrics else True`: true whatever the code did
    assert "figures/samples.png" in _referenced(page)
    assert all((page.parent / r).is_file() for r in _referenced(page))
    m = _strict_json(tmp_path / "img" / "metrics.json")
    assert "figures/samples.png" in m["figures"]
    assert m["modality"] == "image" and "skipped" in m["fidelity"]["column_shapes"]["score"]
    assert isinstance(m["utility"]["tstr_trtr"]["tstr"]["accuracy"], float)


def test_bad_inputs_are_named():
    train = make_mixed_table(200, 0)
    with pytest.raises(SchemaError, match=r"missing 'income'.*unexpected 'extra'"):
        run_evaluation(train, train, train.drop_columns(["income"]).append_column("extra", pa.array([1] * 200)), "label")
    with pytest.raises(SchemaError, match=r"'age' is categorical"):
        run_evaluation(train, train, train.set_column(0, "age", pa.array(["x"] * 200)), "label")
    odd = train.set_column(train.schema.get_field_index("label"), "label", pa.array(["maybe"] * 200))
    with pytest.raises(SchemaError, match="'maybe'"):
        run_evaluation(train, train, odd, "label")
    with pytest.raises(SchemaError, match="label column 'nope'"):
        run_evaluation(train, train, train, "nope")


def test_label_missing_from_test_and_too_few_rows():
    train = make_mixed_table(200, 0)
    test = train.filter(pa.compute.equal(train["label"], "no"))
    ev = run_evaluation(train, test, make_mixed_table(200, 3).slice(0, 12), "label",
                        config=EvalConfig(figures=False, sweep_sizes=("100%",), sweep_multipliers=(0,)))
    m = ev.metrics
    assert any("'yes' has no rows in the test data" in w for w in m["warnings"])
    skipped = {s["metric"]: s["reason"] for s in m["skipped"]}
    assert "single class" in skipped["utility.tstr_trtr.trtr.roc_auc"]
    assert "absent" in skipped["utility.tstr_trtr.trtr.per_class_recall.yes"]
    assert "at least 20" in skipped["fidelity.detection"] and "at least 20" in skipped["privacy"]


def test_unfinished_generate_folder_is_refused(tmp_path):
    (tmp_path / "synth").mkdir()
    pq.write_table(make_mixed_table(10), tmp_path / "synth" / "class=0000-part=00000.parquet")
    with pytest.raises(InputError, match="_manifest.json"):
        read_synthetic(tmp_path / "synth")
    (tmp_path / "synth" / "_manifest.json").write_text(json.dumps({"files": [{"path": "class=0000-part=00000.parquet"}]}))
    t = read_synthetic(tmp_path / "synth")
    assert t.num_rows == 10


def test_split_and_evaluate_commands(tmp_path):
    runner = CliRunner()
    data = tmp_path / "real.parquet"
    pq.write_table(make_mixed_table(400, 0), data)
    r = runner.invoke(cli, ["split", "--data", str(data), "--label", "label", "--test-size", "0.25", "--seed", "0", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    train, test = pq.read_table(tmp_path / "s" / "train.parquet"), pq.read_table(tmp_path / "s" / "test.parquet")
    assert (train.num_rows, test.num_rows) == (300, 100)
    share = lambda t: np.mean(np.asarray(t["label"].to_pylist()) == "yes")
    assert abs(share(train) - share(test)) < 0.02  # stratified
    again = runner.invoke(cli, ["split", "--data", str(data), "--label", "label", "--out", str(tmp_path / "s")])
    assert again.exit_code == 1 and "--overwrite" in again.output
    pc = runner.invoke(cli, ["split", "--data", str(data), "--label", "label", "--per-class", "20", "--out", str(tmp_path / "pc")])
    assert pc.exit_code == 0 and pq.read_table(tmp_path / "pc" / "train.parquet").num_rows == 40

    synth = tmp_path / "synth"
    synth.mkdir()
    fake = make_mixed_table(300, 7)
    fake = fake.append_column("augment_mode", pa.array(["sample"] * fake.num_rows))
    pq.write_table(fake, synth / "part-0.parquet")
    (synth / "_manifest.json").write_text(json.dumps({"files": [{"path": "part-0.parquet"}]}))
    args = ["evaluate", "--train", str(tmp_path / "s" / "train.parquet"), "--test", str(tmp_path / "s" / "test.parquet"),
            "--synthetic", str(synth), "--report", str(tmp_path / "rep"), "--label", "label",
            "--sweep-real", "50%,100%", "--sweep-synth", "0,1", "--no-figures"]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "column shapes" in r.output and "detection AUC" in r.output and "report:" in r.output
    assert (tmp_path / "rep" / "metrics.json").is_file() and (tmp_path / "rep" / "index.html").is_file()

    # --sweep-real none: no sweep classifiers, and the report says so rather than showing an empty table
    none = runner.invoke(cli, [*args, "--overwrite", "--sweep-real", "none"])
    assert none.exit_code == 0 and "augmentation sweep" in none.output and "not run" in none.output, none.output
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert m["utility"]["sweep"]["cells"] == [] and {"metric": "utility.sweep", "reason": "not run (--sweep-real none)"} in m["skipped"]
    assert "Skipped: not run" in (tmp_path / "rep" / "index.html").read_text()
    bad = runner.invoke(cli, args + ["--overwrite", "--sweep-real", "lots"])
    assert bad.exit_code == 2 and "--sweep-real" in bad.output, bad.output
    pq.write_table(make_mixed_table(50).drop_columns(["job"]), tmp_path / "bad.parquet")
    bad = runner.invoke(cli, [a if a != str(synth) else str(tmp_path / "bad.parquet") for a in args] + ["--overwrite"])
    assert bad.exit_code == 1 and "missing 'job'" in bad.output and "Traceback" not in bad.output


@pytest.mark.slow
def test_bundle_adds_latent_map_and_interpolation(tmp_path, image_bundle):
    from augment.generator import Generator

    gen = Generator.from_path(image_bundle)
    d = make_digits_table(600)
    syn = pa.concat_tables([gen.sample(c, 20, np.random.default_rng(c)) for c in range(10)])
    syn = syn.select([c for c in syn.column_names if not c.startswith("augment_")])
    ev = run_evaluation(d.slice(0, 300), d.slice(300), syn, "label", config=FAST, model=gen,
                        classes=list(gen.classes), image_shape=tuple(gen.codec.image_shape))
    assert {"latent_map.png", "interpolation.png", "samples.png"} <= set(ev.figures)
    page = write_report(ev, tmp_path / "rep")
    assert all((page.parent / r).is_file() for r in _referenced(page))
