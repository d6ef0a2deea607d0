"""Training without CUDA (this machine, CI): --device cuda is one line and writes nothing, auto trains on CPU
with a note. (--gpus-per-worker without GPUs: tests/test_generate_ray.py, beside the session's Ray.)"""

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
