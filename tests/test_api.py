"""The Python API (`augment.Synthesizer`) and the one-planner contract: every door gives the same rows."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import augment
from augment.cli import cli
from augment.errors import AugmentError, OutputExistsError, SchemaError
from conftest import TINY, make_mixed_table

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {k: v for k, v in TINY.items()}


def ipc_bytes(table: pa.Table) -> bytes:
    """The table as the job writes Parquet (one file, one row group), schema metadata dropped: equal bytes =
    equal columns, types, values and nulls (the bytes under a null slot, which no reader sees, are not part
    of it)."""
    from augment.batch.write import parquet_writer

    table = table.replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with parquet_writer(sink, table.schema, "label") as w:
        w.write_table(table, row_group_size=max(1, table.num_rows))
    return sink.getvalue().to_pybytes()


@pytest.fixture(scope="module")
def synth(table_bundle):
    return augment.Synthesizer.load(table_bundle)


# ---------------------------------------------------------------- one planner for every door


def test_cli_api_stream_and_http_give_the_same_rows(synth, table_bundle, tmp_path):
    """The CLI (in process, decode lanes, a process pool), the API, its stream and the service: the same bytes.
    The Ray engine's files equal the local engine's (tests/test_generate_ray.py), so Ray is covered too; it is
    not started here, where it would change the engine `auto` picks for the tests that follow."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.settings import ServeSettings

    counts = {"yes": 130, "no": 70}
    want = ipc_bytes(synth.sample(class_counts=counts, seed=7, output="arrow", rows_per_file=50))
    runs = {"in process": [], "2 threads": ["--threads", "2"], "2 processes": ["--workers", "2", "--engine", "local"]}
    for name, extra in runs.items():
        out = tmp_path / name.replace(" ", "_").replace(",", "")
        r = CliRunner().invoke(cli, ["generate", "--model", str(table_bundle), "--class-counts", "yes=130,no=70",
                                     "--seed", "7", "--rows-per-file", "50", "--out", str(out), "--quiet", *extra])
        assert r.exit_code == 0, (name, r.output)
        files = sorted(out.glob("*.parquet"))  # file names sort in plan order: class, then part
        got = pa.concat_tables([pq.read_table(f) for f in files])
        assert ipc_bytes(got) == want, name
    batches = list(synth.stream(class_counts=counts, seed=7, rows_per_file=50))
    assert ipc_bytes(pa.Table.from_batches(batches)) == want
    with TestClient(create_app(ServeSettings(model=str(table_bundle)), generator=synth._generator())) as client:
        # the service plans with the default rows per file: compare it with the API's default
        r = client.post("/v1/generate", json={"counts": counts, "seed": 7}, headers={"accept": "application/vnd.apache.parquet"})
        assert r.status_code == 200, r.text
        assert ipc_bytes(pq.read_table(io.BytesIO(r.content))) == ipc_bytes(
            synth.sample(class_counts=counts, seed=7, output="arrow"))


def test_sample_counts_options_and_outputs(synth):
    df = synth.sample(per_class=5, seed=1)
    assert list(df.columns) == synth.schema.names and len(df) == 10  # a DataFrame, no provenance by default
    assert sorted(df["label"].value_counts().to_dict().items()) == [("no", 5), ("yes", 5)]
    t = synth.sample(rows=100, seed=1, output="arrow", provenance=True)
    assert isinstance(t, pa.Table) and t.num_rows == 100 and t.schema.names[-4:][0] == "augment_mode"
    assert synth.sample(class_counts="yes=3", seed=1, output="arrow").column("label").to_pylist() == ["yes"] * 3
    assert synth.sample(per_class=5, seed=2, output="arrow").num_rows == 10
    assert not synth.sample(per_class=5, seed=2).equals(df)  # another seed, other rows
    for bad, message in [(dict(per_class=5, rows=10), "exactly one"), (dict(class_counts={"maybe": 3}), "unknown class"),
                         (dict(per_class=5, seed=-1), "seed must be"), (dict(per_class=5, output="json"), "unknown output"),
                         (dict(per_class=5, sampler="flow"), "unknown sampler")]:
        with pytest.raises(AugmentError, match=message):
            synth.sample(**bad)


def test_stream_is_lazy_and_bounded(synth):
    stream = synth.stream(rows=10**9, seed=3)  # a billion rows: only what is consumed is decoded
    first = next(stream)
    assert isinstance(first, pa.RecordBatch) and 0 < first.num_rows <= 65_536
    assert first.schema.names == synth.schema.names
    stream.close()


def test_perturb_keeps_labels_and_checks_columns(synth, mixed_table):
    rows = mixed_table.slice(0, 6)
    out = synth.perturb(rows.to_pandas(), per_example=3, noise=0.5, seed=2, provenance=True, output="arrow")
    assert out.num_rows == 18
    assert out.column("augment_source_row").to_pylist() == [i for i in range(6) for _ in range(3)]
    assert out.column("label").to_pylist() == [v for v in rows.column("label").to_pylist() for _ in range(3)]
    with pytest.raises(SchemaError, match=r"no column 'age', 'job'"):  # every missing column at once
        synth.perturb(rows.drop_columns(["age", "job"]), seed=1)


def test_fit_takes_pandas_or_arrow_and_never_trains_the_index(tmp_path):
    import torch

    df = make_mixed_table(300, seed=4).to_pandas()
    df = df[df["age"] > 25]  # a filtered frame: its index is not 0..n-1
    torch.set_num_threads(2)
    synth = augment.Synthesizer(label="label", **{**OPTIONS, "threads": 1}).fit(df, progress=False)
    assert torch.get_num_threads() == 2  # the library call left the process's torch threads as they were
    assert synth.schema.names == list(df.columns) and synth.classes == ["no", "yes"]
    arrow = pa.Table.from_pandas(df)  # keeps the index as __index_level_0__, named in the pandas metadata
    assert "__index_level_0__" in arrow.column_names
    assert augment.Synthesizer(label="label", **OPTIONS).fit(arrow, progress=False).schema.names == list(df.columns)
    # the CLI's reader drops it too
    pq.write_table(arrow, tmp_path / "with_index.parquet")
    from augment.io import read_table

    assert read_table(tmp_path / "with_index.parquet").column_names == list(df.columns)
    # save: the same files as `augment train`, usual permissions; load gives the same rows
    saved = synth.save(tmp_path / "model")
    assert sorted(p.name for p in saved.iterdir()) == ["bundle.json", "decoder.onnx", "encoder.onnx"]
    assert (saved.stat().st_mode & 0o777) == 0o777 & ~_umask()
    again = augment.Synthesizer.load(saved)
    assert again.sample(per_class=4, seed=5).equals(synth.sample(per_class=4, seed=5))
    with pytest.raises(OutputExistsError):
        synth.save(saved)
    assert synth.save(saved, overwrite=True) == saved
    info = again.info()
    assert info["label"]["column"] == "label" and [c["name"] for c in info["columns"]] == list(df.columns)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_options_are_checked_before_any_data(tmp_path):
    with pytest.raises(AugmentError, match="unknown training option.*epochz.*allowed: .*epochs"):
        augment.Synthesizer(label="y", epochz=3)
    with pytest.raises(AugmentError, match="epochs must be >= 1"):
        augment.Synthesizer(label="y", epochs=0)
    with pytest.raises(AugmentError, match="not fitted"):
        augment.Synthesizer(label="y").sample(per_class=3)
    with pytest.raises(AugmentError, match="must be a pandas DataFrame or a pyarrow Table"):
        augment.Synthesizer(label="y", **OPTIONS).fit([1, 2, 3])
    assert augment.Synthesizer(label="y", time_budget=30).config.time_budget_s == 30  # the CLI's option name


def test_load_and_sample_import_no_torch(table_bundle):
    code = ("import sys, augment\n"
            f"s = augment.Synthesizer.load({str(table_bundle)!r})\n"
            "t = s.sample(per_class=3, seed=1, output='arrow')\n"
            "print(t.num_rows, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split() == ["6", "False"]


def test_evaluate_gives_the_metrics_of_augment_evaluate(synth, mixed_table):
    train, test = mixed_table.slice(0, 300), mixed_table.slice(300)
    result = synth.evaluate(train, test, synth.sample(per_class=150, seed=4), sweep_sizes=())
    m = result.metrics
    assert set(m) >= {"fidelity", "utility", "privacy"} and 0 < m["fidelity"]["column_shapes"]["score"] <= 1
    with pytest.raises(AugmentError, match="evaluate:"):
        synth.evaluate(train, test, train, no_such_option=1)


def test_fit_without_torch_names_the_extra(monkeypatch):
    import importlib.util

    from augment.errors import MissingExtraError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r"Synthesizer.fit needs the 'train' extra .*pip install 'augment\[train\]'"):
        augment.Synthesizer(label="label").fit(make_mixed_table(50))
