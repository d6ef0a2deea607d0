"""augment generate on a real two-node Ray cluster (tests/multinode.py): network namespaces, else loopback.

One cluster for the module; one test in steps, each a driver on the head node: a job both nodes write (bytes
equal to the local engine's, the manifest naming both nodes), a job whose worker node is killed mid-job (its
shards retried on the head), and a job whose driver is killed mid-job and finished with --resume.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from augment.cli import cli
from multinode import start_cluster

pytestmark = [pytest.mark.ray, pytest.mark.multinode]

SHARDS = 12
ROWS_PER_FILE = 20_000


@pytest.fixture(scope="module")
def cluster():
    t0 = time.perf_counter()
    c = start_cluster(cpus=1)
    why = f", not namespaces: {c.why}" if c.why else ""
    print(f"\nmulti-node Ray cluster: {c.mode}{why} (up in {time.perf_counter() - t0:.1f} s)")
    try:
        yield c
    finally:
        c.close()


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def wait_files(folder: Path, n: int, proc, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(list(folder.glob("*.parquet"))) < n:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, f"fewer than {n} files in {timeout} s"
        time.sleep(0.05)


def test_two_nodes_write_the_local_bytes_survive_a_lost_node_and_resume(cluster, table_bundle, tmp_path):
    rows = SHARDS * ROWS_PER_FILE // 2
    job = ["--model", str(table_bundle), "--class-counts", f"no={rows},yes={rows}", "--rows-per-file",
           str(ROWS_PER_FILE), "--seed", "5", "--quiet"]
    local = tmp_path / "local"
    r = CliRunner().invoke(cli, ["generate", *job, "--engine", "local", "--out", str(local)])
    assert r.exit_code == 0, r.output
    want = digests(local)
    assert len(want) == SHARDS
    on_ray = [*job, "--engine", "ray", "--ray-address", cluster.address]

    # 1. Both nodes write shards; the bytes are the local engine's; the manifest says which node wrote what.
    out = tmp_path / "both"
    r = cluster.augment(["generate", *on_ray, "--out", str(out)])
    assert r.returncode == 0, r.stdout + cluster.logs()
    assert digests(out) == want
    m = json.loads((out / "_manifest.json").read_text())
    assert {f["node"] for f in m["files"]} == {cluster.head_ip, cluster.worker_ip} or cluster.mode == "loopback"
    assert sorted(m["engine"]["nodes"]) == sorted({cluster.head_ip, cluster.worker_ip})
    assert len(m["files"]) == SHARDS and m["engine"]["actors_started"] == 2

    # 2. The worker node dies mid-job: its shards are retried on the head and the job completes.
    out = tmp_path / "lost-node"
    proc = cluster.driver(["generate", *on_ray, "--out", str(out)])
    wait_files(out, 3, proc)
    cluster.kill_worker()
    text, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, text + cluster.logs()
    assert digests(out) == want
    m = json.loads((out / "_manifest.json").read_text())
    assert m["engine"]["actors_lost"] >= 1 and m["engine"]["retried_shards"] >= 1
    assert {f["node"] for f in m["files"][-3:]} == {cluster.head_ip}  # the last shards: only the head is left
    assert not list(out.glob(".tmp-*"))

    # 3. The driver dies mid-job (on the one node left): --resume keeps the whole files and writes the rest.
    out = tmp_path / "resumed"
    proc = cluster.driver(["generate", *on_ray, "--out", str(out)])
    wait_files(out, 3, proc)
    proc.kill()
    proc.communicate(timeout=60)
    assert not (out / "_manifest.json").exists()
    r = cluster.augment(["generate", *on_ray, "--out", str(out), "--resume"])
    assert r.returncode == 0, r.stdout + cluster.logs()
    assert "kept from the interrupted run" in r.stdout
    assert digests(out) == want
    m = json.loads((out / "_manifest.json").read_text())
    assert 3 <= sum(f["resumed"] for f in m["files"]) < SHARDS
