"""Paths and URIs (augment.fs) against a real S3 API on loopback (moto's server, tests/conftest.py ``s3``).

train --out s3://, generate --model s3:// --out s3:// with the bytes of a local run, --resume on a bucket,
unreachable or missing buckets as one-line errors, serving a bundle from a bucket; and the local-disk
durability rules (a kept shard is checked against its recorded sha256).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from augment.cli import cli
from augment.errors import StorageError
from augment.fs import commit, resolve


def run(*args: str):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


def local_digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def bucket_digests(s3, prefix: str) -> dict[str, str]:
    out = {}
    for key in s3.keys(prefix):
        if key.endswith(".parquet"):
            with s3.fs.open_input_stream(f"{prefix}/{key}") as f:
                out[key] = hashlib.sha256(f.read()).hexdigest()
    return out


def upload_folder(s3, folder: Path, prefix: str) -> None:
    for p in sorted(folder.iterdir()):
        with s3.fs.open_output_stream(f"{prefix}/{p.name}") as f:
            f.write(p.read_bytes())


# In process: the resume tests interrupt through a patched write.record_result, which Ray actors would not see
# (engine auto picks Ray once the session's Ray is up).
GEN = ("--per-class", 700, "--rows-per-file", 300, "--seed", 3, "--quiet", "--engine", "local")


# ------------------------------------------------------------------------------------------ fs module


def test_resolve_makes_local_paths_absolute_and_keeps_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve("data/x.parquet").uri == str(tmp_path / "data" / "x.parquet")
    assert resolve(f"file://{tmp_path}/y").uri == str(tmp_path / "y")
    loc = resolve("s3://bucket/a/b/")
    assert (loc.uri, loc.path, loc.is_local) == ("s3://bucket/a/b", "bucket/a/b", False)
    assert loc.join("c.json").uri == "s3://bucket/a/b/c.json"
    with pytest.raises(StorageError, match="names no bucket"):
        resolve("s3://")
    with pytest.raises(StorageError, match="cannot use 'nosuch://x'"):
        resolve("nosuch://x")


def test_a_failed_commit_leaves_nothing_on_disk_or_in_the_bucket(tmp_path, s3):
    bucket = s3.bucket("commit-test")
    for dest in (resolve(tmp_path / "f.bin"), resolve(f"{bucket}/f.bin")):
        with pytest.raises(RuntimeError):
            with commit(dest) as tmp:
                tmp.write_bytes(b"half")
                raise RuntimeError("interrupted mid-file")
        assert not dest.exists()
        with commit(dest) as tmp:
            tmp.write_bytes(b"whole")
        assert dest.read_bytes() == b"whole"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temporary left beside it


# ------------------------------------------------------------------------------------- train, generate


def test_train_reads_and_writes_a_bucket_and_generate_matches_a_local_run(tmp_path, s3, mixed_table, table_bundle):
    raw, models, synth = s3.bucket("raw"), s3.bucket("models"), s3.bucket("synth")
    with s3.fs.open_output_stream("raw/table.parquet") as f:
        pq.write_table(mixed_table.slice(0, 200), f)
    res = run("train", "--data", f"{raw}/table.parquet", "--label", "label", "--out", f"{models}/trained",
              "--epochs", 2, "--hidden", 16, "--latent-dim", 4, "--threads", 1, "--quiet")
    assert res.exit_code == 0, res.output
    assert s3.keys("models/trained") == ["bundle.json", "decoder.onnx", "encoder.onnx"]
    from augment.bundle import load_bundle

    assert load_bundle(f"{models}/trained").source == "s3://models/trained"

    # the session's tiny bundle, uploaded: generation from the bucket to the bucket gives the local bytes
    upload_folder(s3, Path(table_bundle), "models/table")
    assert run("generate", "--model", table_bundle, "--out", tmp_path / "local", *GEN).exit_code == 0
    res = run("generate", "--model", f"{models}/table", "--out", f"{synth}/bank-3", *GEN)
    assert res.exit_code == 0, res.output
    want = local_digests(tmp_path / "local")
    assert len(want) == 6 and bucket_digests(s3, "synth/bank-3") == want
    keys = s3.keys("synth/bank-3")
    assert "_manifest.json" in keys and "_job.json" not in keys and not any(k.startswith("_shards") for k in keys)
    with s3.fs.open_input_stream("synth/bank-3/_manifest.json") as f:
        manifest = json.loads(f.read())
    assert manifest["bundle"]["path"] == "s3://models/table"
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == want
    from augment.evaluate import read_synthetic

    assert read_synthetic(f"{synth}/bank-3").num_rows == 1400


def test_resume_on_a_bucket_keeps_recorded_shards_and_redoes_the_rest(tmp_path, s3, table_bundle, monkeypatch):
    synth = s3.bucket("resume")
    import augment.batch.write as write

    real, calls = write.record_result, []

    def interrupted(out_dir, result):  # the 3rd shard is committed, then Ctrl-C before its record is written
        calls.append(result["file"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(out_dir, result)

    monkeypatch.setattr(write, "record_result", interrupted)
    res = run("generate", "--model", table_bundle, "--out", f"{synth}/job", *GEN)
    assert res.exit_code == 130 and "--resume" in res.output
    keys = s3.keys("resume/job")
    assert "_job.json" in keys and "_manifest.json" not in keys
    assert sum(k.endswith(".parquet") for k in keys) == 3 and sum(k.startswith("_shards/") for k in keys) == 2
    monkeypatch.setattr(write, "record_result", real)

    res = run("generate", "--model", table_bundle, "--out", f"{synth}/job", *GEN, "--resume")
    assert res.exit_code == 0, res.output
    with s3.fs.open_input_stream("resume/job/_manifest.json") as f:
        manifest = json.loads(f.read())
    assert [f["path"] for f in manifest["files"] if f["resumed"]] == calls[:2]  # the unrecorded one was redone
    assert run("generate", "--model", table_bundle, "--out", tmp_path / "local", *GEN).exit_code == 0
    assert bucket_digests(s3, "resume/job") == local_digests(tmp_path / "local")
    assert "_job.json" not in s3.keys("resume/job")


# --------------------------------------------------------------------------------------- bad buckets


def _one_line_error(res, *needles: str) -> None:
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    for n in needles:
        assert n in lines[0], lines[0]


def test_unreachable_endpoint_and_missing_bucket_fail_in_one_line_quickly(tmp_path, s3, table_bundle, monkeypatch):
    res = run("generate", "--model", table_bundle, "--out", "s3://no-such-bucket/x", *GEN)
    _one_line_error(res, "no-such-bucket", "does not exist")
    res = run("train", "--data", tmp_path / "absent.parquet", "--label", "label", "--out", "s3://no-such-bucket/m")
    _one_line_error(res, "no-such-bucket")  # refused before the data is even read

    import socket

    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{dead}")
    monkeypatch.chdir(tmp_path)
    for args in (("generate", "--model", table_bundle, "--out", "s3://synth/x", *GEN),
                 ("generate", "--model", "s3://models/table", "--out", "out", *GEN)):
        t0 = time.perf_counter()
        res = run(*args)
        assert time.perf_counter() - t0 < 15
        _one_line_error(res, "s3://")
    assert list(tmp_path.iterdir()) == []  # nothing written


# ----------------------------------------------------------------------------------------------- serve


def test_serve_loads_a_bundle_from_a_bucket(s3, table_bundle, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.settings import ServeSettings

    monkeypatch.setenv("AUGMENT_CACHE_DIR", str(tmp_path / "cache"))
    upload_folder(s3, Path(table_bundle), f"{s3.bucket('served')[5:]}/table")
    body = {"counts": {"yes": 7, "no": 5}, "seed": 11}
    answers = []
    for model in ("s3://served/table", str(table_bundle)):
        app = create_app(ServeSettings(model=model))  # the app loads the bundle itself, as a replica does
        with TestClient(app) as client:
            for _ in range(50):
                if client.get("/healthz").status_code == 200:
                    break
                time.sleep(0.1)
            res = client.post("/v1/generate", json=body)
            assert res.status_code == 200, res.text
            answers.append(res.json()["rows"])
    assert answers[0] == answers[1] and len(answers[0]) == 12
    assert len(list((tmp_path / "cache" / "bundles").iterdir())) == 1  # downloaded once, kept by content


def test_a_bundle_from_a_bucket_is_cached_by_content_and_fetched_again_if_the_copy_changed(s3, table_bundle, tmp_path,
                                                                                         monkeypatch):
    from augment.bundle import load_bundle

    monkeypatch.setenv("AUGMENT_CACHE_DIR", str(tmp_path / "cache"))
    upload_folder(s3, Path(table_bundle), f"{s3.bucket('cached')[5:]}/table")
    first = load_bundle("s3://cached/table")
    assert first.sha256 == load_bundle(table_bundle).sha256 and first.path.parent == tmp_path / "cache" / "bundles"
    (first.path / "decoder.onnx").write_bytes(b"not onnx")  # the local copy damaged
    again = load_bundle("s3://cached/table")
    assert again.path == first.path and (again.path / "decoder.onnx").read_bytes() == (Path(table_bundle) / "decoder.onnx").read_bytes()


# ------------------------------------------------------------------------------------ local durability


def test_resume_redoes_a_kept_file_whose_bytes_changed_though_its_footer_fits(tmp_path, table_bundle, monkeypatch):
    import augment.batch.write as write

    out = tmp_path / "job"
    real, calls = write.record_result, []

    def interrupted(out_dir, result):
        calls.append(result["file"])
        real(out_dir, result)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(write, "record_result", interrupted)
    assert run("generate", "--model", table_bundle, "--out", out, *GEN).exit_code == 130
    monkeypatch.setattr(write, "record_result", real)
    first, second = (out / calls[0]), (out / calls[1])
    assert pq.read_metadata(first).num_rows == pq.read_metadata(second).num_rows  # same rows, same schema
    first.write_bytes(second.read_bytes())  # a readable file, the planned footer, the wrong bytes
    res = run("generate", "--model", table_bundle, "--out", out, *GEN, "--resume")
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "_manifest.json").read_text())
    assert [f["path"] for f in manifest["files"] if f["resumed"]] == [calls[1]]
    assert run("generate", "--model", table_bundle, "--out", tmp_path / "fresh", *GEN).exit_code == 0
    assert local_digests(out) == local_digests(tmp_path / "fresh")
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(("_", "."))) == ["_manifest.json"]


def test_commits_fsync_the_file_and_its_folder_before_and_after_the_rename(tmp_path, monkeypatch):
    import os

    import augment.fs as fs

    events = []
    monkeypatch.setattr(fs, "fsync_file", lambda p: events.append(("fsync", Path(p).name.startswith(".tmp-"))))
    monkeypatch.setattr(fs, "fsync_dir", lambda p: events.append(("fsync_dir", str(p))))
    real_replace = os.replace
    monkeypatch.setattr(fs.os, "replace", lambda a, b: (events.append(("rename", Path(b).name)), real_replace(a, b)))
    resolve(tmp_path / "_manifest.json").write_bytes(b"{}")
    assert events == [("fsync", True), ("rename", "_manifest.json"), ("fsync_dir", str(tmp_path))]

