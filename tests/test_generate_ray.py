"""augment generate on Ray (the session's one local Ray): same bytes as in-process, retries, ray.data reads it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from augment.cli import cli

pytestmark = pytest.mark.ray


def invoke(*args):
    return CliRunner().invoke(cli, ["generate", *map(str, args), "--quiet"], catch_exceptions=False)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def test_ray_one_and_two_workers_match_local_and_read_as_dataset(ray_local, table_bundle, tmp_path):
    args = ["--model", table_bundle, "--class-counts", "no=90,yes=50", "--rows-per-file", 40, "--seed", 5]
    assert invoke(*args, "--engine", "local", "--out", tmp_path / "local").exit_code == 0
    for workers in (1, 2):
        r = invoke(*args, "--engine", "ray", "--workers", workers, "--out", tmp_path / f"ray{workers}")
        assert r.exit_code == 0, r.output
        m = json.loads((tmp_path / f"ray{workers}" / "_manifest.json").read_text())
        assert m["engine"]["name"] == "ray" and m["engine"]["workers"] == workers
        assert digests(tmp_path / f"ray{workers}") == digests(tmp_path / "local")
    assert ray_local.is_initialized()  # an existing Ray is used, not shut down
    data = ray_local.data.read_parquet(str(tmp_path / "ray2"))
    assert data.count() == 140 and data.schema().names == ray_local_names(table_bundle)  # no provenance unless asked


def ray_local_names(bundle) -> list[str]:
    from augment.bundle import load_bundle

    return load_bundle(bundle).schema.names


class Bar:
    """Stands in for the progress bar: records each update."""

    updates: list = []

    def __init__(self, total, initial, enabled):
        Bar.updates = []

    def update(self, n):
        Bar.updates.append(n)

    def close(self):
        pass


def test_ray_worker_dies_mid_shard_is_retried(ray_local, table_bundle, source_file_factory, tmp_path, monkeypatch):
    """Also: the progress the workers report after each chunk adds up to the rows, the rerun shard counted once."""
    import augment.batch.run
    from augment.generator import Generator
    from augment.batch.run import run_job
    from augment.batch.spec import JobSpec

    monkeypatch.setattr(augment.batch.run, "_progress_bar", Bar)

    gen = Generator.from_path(table_bundle)
    src = source_file_factory(tmp_path)
    spec = JobSpec(mode="perturb", source=str(src), per_example=2, noise=0.5, rows_per_file=200, seed=2)
    local = run_job(gen, spec, tmp_path / "local", engine="local", progress=False, echo=lambda s: None)
    marker = tmp_path / "died-once"
    m = run_job(gen, spec, tmp_path / "ray", engine="ray", workers=2, progress=False, echo=lambda s: None,
                die_marker=str(marker))
    assert marker.exists()  # a worker really died mid-shard
    assert m["rows"] == local["rows"] == 800
    assert sum(Bar.updates) == 800 and all(n > 0 for n in Bar.updates)
    assert digests(tmp_path / "ray") == digests(tmp_path / "local")
    assert not list((tmp_path / "ray").glob(".tmp-*"))


@pytest.fixture
def source_file_factory(mixed_table):
    def make(folder: Path) -> Path:
        path = folder / "real.parquet"
        pq.write_table(mixed_table, path)
        return path

    return make


def test_ray_where_same_bytes_as_local(ray_local, table_bundle, tmp_path):
    args = ["--model", table_bundle, "--class-counts", "no=90,yes=50", "--rows-per-file", 40, "--seed", 2,
            "--where", "age >= 45", "--where", "job in retired|services"]
    assert invoke(*args, "--engine", "local", "--out", tmp_path / "local").exit_code == 0
    r = invoke(*args, "--engine", "ray", "--workers", 2, "--out", tmp_path / "ray")
    assert r.exit_code == 0, r.output
    assert digests(tmp_path / "ray") == digests(tmp_path / "local")
    m = json.loads((tmp_path / "ray" / "_manifest.json").read_text())
    assert [c["kept"] for c in m["where"]["per_class"]] == [90, 50]


def test_gpus_per_worker_needs_ray_and_gpus(table_bundle, tmp_path, ray_local):
    """Without GPUs in the cluster: one line, nothing written, the session's Ray left running."""
    args = ["generate", "--model", str(table_bundle), "--per-class", "5", "--quiet"]
    r = CliRunner().invoke(cli, [*args, "--engine", "local", "--gpus-per-worker", "1", "--out", str(tmp_path / "a")])
    assert r.exit_code != 0 and "--gpus-per-worker needs --engine ray or auto" in r.output
    r = CliRunner().invoke(cli, [*args, "--engine", "ray", "--gpus-per-worker", "0.5", "--out", str(tmp_path / "b")])
    assert r.exit_code != 0
    assert r.output.strip().splitlines()[-1] == "Error: --gpus-per-worker 0.5: the Ray cluster has 0 GPU(s)"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert ray_local.is_initialized()  # the session's Ray is left running
