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


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API on loopback (moto's server mode), started once per run and stopped at the end."""
    import logging
    import socket

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """This test's environment points pyarrow at the moto server; ``s3.bucket(name)`` creates a bucket."""
    import pyarrow.fs as pafs

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    env = {"AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    class S3:
        endpoint = s3_server
        fs = pafs.S3FileSystem(endpoint_override=s3_server.split("://", 1)[1], scheme="http", region="us-east-1",
                               access_key="testing", secret_key="testing", allow_bucket_creation=True,
                               allow_bucket_deletion=True)

        def bucket(self, name: str) -> str:
            self.fs.create_dir(name)
            return f"s3://{name}"

        def keys(self, prefix: str) -> list[str]:
            sel = pafs.FileSelector(prefix, recursive=True, allow_not_found=True)
            return sorted(i.path[len(prefix) + 1:] for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File)

    return S3()
