"""Paths on Ray: resolved at the edge (workers have their own working directory), a worker's own one-line
error shown and not retried, and no ``_job.json`` left behind by a job that never wrote a file."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from augment.cli import cli
from augment.errors import AugmentError

pytestmark = pytest.mark.ray


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def test_relative_model_and_out_work_on_workers_started_elsewhere(ray_local, table_bundle, tmp_path, monkeypatch):
    # The session's Ray workers were started in another working directory: relative paths mean nothing there.
    work = tmp_path / "work"
    work.mkdir()
    (work / "bundle").symlink_to(table_bundle, target_is_directory=True)
    monkeypatch.chdir(work)
    args = ["generate", "--model", "bundle", "--per-class", 60, "--rows-per-file", 40, "--seed", 2, "--quiet"]
    res = CliRunner().invoke(cli, [*map(str, args), "--engine", "ray", "--workers", 2, "--out", "synth"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert CliRunner().invoke(cli, [*map(str, args), "--engine", "local", "--out", "local"]).exit_code == 0
    assert digests(work / "synth") == digests(work / "local") and len(digests(work / "local")) == 4
    manifest = json.loads((work / "synth" / "_manifest.json").read_text())
    assert manifest["bundle"]["path"] == str(work / "bundle")  # absolute, as the workers were handed it


def test_a_bundle_workers_cannot_load_fails_once_in_one_line_and_leaves_nothing(ray_local, table_bundle, tmp_path):
    from augment.batch.counts import resolve_counts
    from augment.batch.run import run_job
    from augment.batch.spec import JobSpec
    from augment.generator import Generator

    gen = Generator.from_path(table_bundle)
    missing = tmp_path / "not-on-this-node"
    gen.bundle = dataclasses.replace(gen.bundle, source=str(missing))  # what a worker on another node sees
    spec = JobSpec(counts=tuple(resolve_counts(gen.classes, gen.bundle.class_counts, per_class=50).items()),
                   rows_per_file=25)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    with pytest.raises(AugmentError) as err:
        run_job(gen, spec, out, engine="ray", workers=2, progress=False, echo=lambda s: None)
    message = str(err.value)
    assert "bundle folder not found" in message and str(missing) in message and "\n" not in message
    assert "retries" not in message
    assert time.perf_counter() - t0 < 60
    assert not out.exists()  # no _job.json, no folder: the job never started
