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
