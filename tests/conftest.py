"""Shared fixtures: tiny seeded tables, tiny trained bundles (trained once per test run), one local Ray.

Nothing here reads ../shared: a user's clone does not have it.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest


def make_mixed_table(n: int = 400, seed: int = 0) -> pa.Table:
    """A small labeled table with every column kind: skewed, integer, nullable, categorical, unicode names."""
    rng = np.random.default_rng(seed)
    label = rng.choice(["no", "yes"], size=n, p=[0.7, 0.3])
    yes = label == "yes"
    age = np.clip(rng.normal(40 + 8 * yes, 10), 18, 90).round().astype(np.int64)
    balance = np.round(rng.lognormal(6 + yes, 1.0, size=n) - 200, 2)
    income = rng.normal(50.0, 5.0, size=n)
    income_arr = pa.array(income, mask=rng.random(n) < 0.2)  # 20% nulls
    job = rng.choice(["admin.", "technician", "services", "retired"], size=n)
    flag = rng.random(n) < 0.4 + 0.3 * yes
    return pa.table(
        {
            "age": pa.array(age),
            "balance €": pa.array(balance),
            "income": income_arr,
            "job": pa.array(job),
            "flag": pa.array(flag),
            "label": pa.array(label),
        }
    )


@pytest.fixture(scope="session")
def mixed_table() -> pa.Table:
    return make_mixed_table()


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test run: 2 CPUs, no dashboard; shut down at the end."""
    import ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def make_digits_table(n: int = 300) -> pa.Table:
    """The first ``n`` of scikit-learn's bundled 8x8 digits, as the demo reads them."""
    from training.cli import digits_table

    return digits_table().slice(0, n)


TINY = dict(epochs=4, hidden=32, latent_dim=4, batch_size=64, mixture_components=2, threads=1)


@pytest.fixture(scope="session")
def table_bundle(tmp_path_factory, mixed_table):
    """Path of a tiny trained bundle of ``make_mixed_table()`` (labels "no"/"yes"), trained once per run."""
    from training.api import train
    from training.config import TrainConfig

    out = tmp_path_factory.mktemp("bundles") / "table"
    train(mixed_table, label="label", out=out, config=TrainConfig(**TINY), progress=False)
    return out


@pytest.fixture(scope="session")
def image_bundle(tmp_path_factory):
    """Path of a tiny trained bundle of 300 8x8 digits (classes 0..9), trained once per run."""
    from training.api import train
    from training.config import TrainConfig

    out = tmp_path_factory.mktemp("bundles") / "image"
    train(make_digits_table(), label="label", out=out, config=TrainConfig(**TINY), progress=False)
    return out
