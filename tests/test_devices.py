"""Devices without CUDA (this machine, CI): --device cuda is one line and writes nothing, auto trains on CPU
with a note, --gpus-per-worker asks a cluster for GPUs it must have."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")


def train_cli(*args):
    from training.cli import train

    return CliRunner().invoke(train, list(map(str, args)))


def test_train_device_cuda_without_cuda_is_one_line_and_writes_nothing(mixed_table, tmp_path):
    data = tmp_path / "real.parquet"
    pq.write_table(mixed_table, data)
    r = train_cli("--data", data, "--label", "label", "--out", tmp_path / "m", "--device", "cuda", "--quiet")
    assert r.exit_code != 0
    assert r.output.strip().splitlines() == ["Error: --device cuda: torch sees no CUDA device here (use --device auto or cpu)"]
    assert not (tmp_path / "m").exists()


def test_train_device_auto_falls_back_to_cpu_with_a_note(mixed_table, tmp_path):
    data = tmp_path / "real.parquet"
    pq.write_table(mixed_table, data)
    r = train_cli("--data", data, "--label", "label", "--out", tmp_path / "m", "--epochs", 1, "--hidden", 8,
                  "--latent-dim", 2, "--threads", 1, "--quiet")
    assert r.exit_code == 0, r.output
    assert "--device auto: torch sees no CUDA device here; training on CPU" in r.output
    metrics = json.loads((tmp_path / "m" / "bundle.json").read_text())["training"]["metrics"]
    assert metrics["device"] == "cpu" and metrics["mixed_precision"] is False


def test_gpus_per_worker_needs_ray_and_gpus(table_bundle, tmp_path, ray_local):
    from augment.cli import cli

    args = ["generate", "--model", str(table_bundle), "--per-class", "5", "--quiet"]
    r = CliRunner().invoke(cli, [*args, "--engine", "local", "--gpus-per-worker", "1", "--out", str(tmp_path / "a")])
    assert r.exit_code != 0 and "--gpus-per-worker need --engine ray or auto" in r.output
    r = CliRunner().invoke(cli, [*args, "--engine", "ray", "--gpus-per-worker", "0.5", "--out", str(tmp_path / "b")])
    assert r.exit_code != 0
    assert r.output.strip().splitlines()[-1] == "Error: --gpus-per-worker 0.5: the Ray cluster has 0 GPU(s)"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert ray_local.is_initialized()  # the session's Ray is left running
