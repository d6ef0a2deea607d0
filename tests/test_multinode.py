"""augment generate on a real two-node Ray cluster (tests/multinode.py): network namespaces, else loopback.

One cluster for the module, writing to an S3 API (moto's server, on the address both nodes reach: the bridge's
in namespace mode, else 127.0.0.1); one test in steps, each a driver on the head node: a job both nodes write
(bytes equal to the local engine's, the manifest naming both nodes), a job whose worker node is killed mid-job
(its shards retried on the head), and a job whose driver is killed mid-job and finished with --resume.
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


@pytest.fixture(scope="module")
def bucket(cluster):
    """A moto S3 server where both nodes reach it; the drivers' environment points at it; one bucket."""
    import logging
    import socket

    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with socket.socket() as s:
        s.bind((cluster.host_ip, 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address=cluster.host_ip, port=port, verbose=False)
    server.start()
    endpoint = f"http://{cluster.host_ip}:{port}"
    cluster.env.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"})
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"):
        cluster.env.pop(name, None)
    fs = pafs.S3FileSystem(endpoint_override=f"{cluster.host_ip}:{port}", scheme="http", region="us-east-1",
                           access_key="testing", secret_key="testing", allow_bucket_creation=True)
    fs.create_dir("synth")
    try:
        yield fs
    finally:
        server.stop()


def digests(folder) -> dict[str, str]:
    """sha256 of each data file: ``folder`` a local Path, or (fs, "bucket/prefix") on the S3 server."""
    if isinstance(folder, Path):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}
    fs, prefix = folder
    out = {}
    for info in sorted(objects(fs, prefix), key=lambda i: i.path):
        with fs.open_input_stream(info.path) as f:
            out[info.base_name] = hashlib.sha256(f.read()).hexdigest()
    return out


def objects(fs, prefix: str) -> list:
    import pyarrow.fs as pafs

    try:
        infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=False))
    except FileNotFoundError:
        return []
    return [i for i in infos if i.base_name.endswith(".parquet") and i.type == pafs.FileType.File]


def read_json(fs, path: str) -> dict:
    with fs.open_input_stream(path) as f:
        return json.loads(f.read())


def records(fs, prefix: str) -> list:
    """The committed files' records (``_shards/<file>.json``): a file counts for --resume once its record is there."""
    import pyarrow.fs as pafs

    try:
        infos = fs.get_file_info(pafs.FileSelector(f"{prefix}/_shards", recursive=False))
    except FileNotFoundError:
        return []
    return [i for i in infos if i.base_name.endswith(".json") and i.type == pafs.FileType.File]


def wait_files(fs, prefix: str, n: int, proc, timeout: float = 120) -> None:
    """Until ``n`` files are committed and recorded (a file committed but not yet recorded when the driver dies
    is rewritten by --resume, rightly)."""
    deadline = time.monotonic() + timeout
    while len(objects(fs, prefix)) < n or len(records(fs, prefix)) < n:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, f"fewer than {n} files in {timeout} s"
        time.sleep(0.05)


def test_two_nodes_write_the_local_bytes_survive_a_lost_node_and_resume(cluster, bucket, table_bundle, tmp_path):
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
    r = cluster.augment(["generate", *on_ray, "--out", "s3://synth/both"])
    assert r.returncode == 0, r.stdout + cluster.logs()
    assert digests((bucket, "synth/both")) == want
    m = read_json(bucket, "synth/both/_manifest.json")
    assert {f["node"] for f in m["files"]} == {cluster.head_ip, cluster.worker_ip} or cluster.mode == "loopback"
    assert sorted(m["engine"]["nodes"]) == sorted({cluster.head_ip, cluster.worker_ip})
    assert len(m["files"]) == SHARDS and m["engine"]["actors_started"] == 2

    # 2. The worker node dies mid-job: its shards are retried on the head and the job completes.
    proc = cluster.driver(["generate", *on_ray, "--out", "s3://synth/lost-node"])
    wait_files(bucket, "synth/lost-node", 3, proc)
    cluster.kill_worker()
    text, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, text + cluster.logs()
    assert digests((bucket, "synth/lost-node")) == want
    m = read_json(bucket, "synth/lost-node/_manifest.json")
    assert m["engine"]["actors_lost"] >= 1 and m["engine"]["retried_shards"] >= 1
    assert {f["node"] for f in m["files"][-3:]} == {cluster.head_ip}  # the last shards: only the head is left

    # 3. The driver dies mid-job (on the one node left): --resume keeps the whole files and writes the rest.
    proc = cluster.driver(["generate", *on_ray, "--out", "s3://synth/resumed"])
    wait_files(bucket, "synth/resumed", 3, proc)
    proc.kill()
    proc.communicate(timeout=60)
    assert bucket.get_file_info("synth/resumed/_manifest.json").type.name == "NotFound"
    r = cluster.augment(["generate", *on_ray, "--out", "s3://synth/resumed", "--resume"])
    assert r.returncode == 0, r.stdout + cluster.logs()
    assert "kept from the interrupted run" in r.stdout
    assert digests((bucket, "synth/resumed")) == want
    m = read_json(bucket, "synth/resumed/_manifest.json")
    assert 3 <= sum(f["resumed"] for f in m["files"]) < SHARDS
