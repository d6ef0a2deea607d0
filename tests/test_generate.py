"""augment generate: counts, plan, shards, manifest, resume, modes, bad input (in-process engine).

Ray runs are in test_generate_ray.py. Bundles are the tiny session fixtures of conftest.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute in tests
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from augment.cli import cli
from augment.errors import AugmentError, ClassNameError
from augment.batch.counts import parse_class_counts, resolve_counts
from augment.batch.run import run_job
from augment.batch.spec import JobSpec
from augment.batch.plan import largest_remainder, plan_shards, plan_source_shards, shard_rng


def invoke(*args: str):
    return CliRunner().invoke(cli, ["generate", *map(str, args), "--quiet"], catch_exceptions=False)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


@pytest.fixture(scope="module")
def gen(table_bundle):
    from augment.generator import Generator

    return Generator.from_path(table_bundle)


@pytest.fixture(scope="module")
def source_file(tmp_path_factory, mixed_table) -> Path:
    path = tmp_path_factory.mktemp("src") / "real.parquet"
    pq.write_table(mixed_table, path)
    return path


# ---------------------------------------------------------------- counts and plans (no model)


def test_class_counts_split_on_last_equals():
    classes = ["<=50K", ">50K", "a,b", "x=y", "no"]
    got = parse_class_counts(["<=50K=10,>50K=20", "a,b=3,x=y=4", "no=1"], classes)
    assert got == {0: 10, 1: 20, 2: 3, 3: 4, 4: 1}


@pytest.mark.parametrize("item, error", [
    ("maybe=3", ClassNameError), ("yes=0", AugmentError), ("yes=-2", AugmentError),
    ("yes", AugmentError), ("yes=1,yes=2", AugmentError),
])
def test_class_counts_rejects(item, error):
    with pytest.raises(error):
        parse_class_counts([item], ["no", "yes"])


def test_rows_in_training_proportions_sum_exactly():
    assert largest_remainder(10, [1, 1, 1]) == [4, 3, 3]
    counts = resolve_counts(["a", "b", "c"], [700, 299, 1], rows=1_000_001)
    assert sum(counts.values()) == 1_000_001 and counts[0] == 700_001
    assert resolve_counts(["no", "yes"], [70, 30], balance=True) == {1: 40}
    with pytest.raises(AugmentError, match="exactly one"):
        resolve_counts(["no", "yes"], [70, 30], per_class=3, rows=5)


def test_plans_cover_rows_and_streams_differ():
    shards = plan_shards({0: 250, 1: 100}, rows_per_file=100)
    assert [s.rows for s in shards] == [100, 100, 50, 100]
    assert {s.file_name for s in shards} == {f"class={c:04d}-part={i:05d}.parquet" for c, i in [(0, 0), (0, 1), (0, 2), (1, 0)]}
    src = plan_source_shards(10, 3, rows_per_file=7)  # 2 source rows (6 output rows) per file
    assert sum(s.units for s in src) == 10 and [s.offset for s in src] == [0, 2, 4, 6, 8]
    draws = {shard_rng(0, c, i).integers(1 << 62) for c in (-1, 0, 1) for i in range(3)}
    assert len(draws) == 9
    assert shard_rng(0, 1, 2).random() == shard_rng(0, 1, 2).random()


# ---------------------------------------------------------------- the job end to end (local engine, CLI)


def test_generate_exact_rows_manifest_and_schema(table_bundle, gen, tmp_path):
    out = tmp_path / "synth"
    r = invoke("--model", table_bundle, "--class-counts", "yes=130,no=70", "--rows-per-file", 50, "--out", out,
               "--engine", "local", "--seed", 7, "--provenance")
    assert r.exit_code == 0, r.output
    assert "wrote 200 rows" in r.output
    m = json.loads((out / "_manifest.json").read_text())
    assert m["complete"] and m["rows"] == 200 and m["seed"] == 7
    assert m["rows_per_class"] == [{"class": "no", "rows": 70}, {"class": "yes", "rows": 130}]
    assert m["bundle"]["sha256"] == gen.bundle.sha256 and m["options"]["counts"] == [[0, 70], [1, 130]]
    assert sorted(f["path"] for f in m["files"]) == sorted(digests(out)) and len(m["files"]) == 5
    for f in m["files"]:
        assert hashlib.sha256((out / f["path"]).read_bytes()).hexdigest() == f["sha256"]
        assert pq.read_metadata(out / f["path"]).num_rows == f["rows"]
    assert set(p.name for p in out.iterdir()) == set(digests(out)) | {"_manifest.json"}  # no _job.json, no .tmp
    # one dataset, real schema (label in place) + provenance, in pandas and pyarrow.dataset
    table = ds.dataset(out, format="parquet").to_table()
    real = gen.bundle.schema
    assert table.schema.remove_metadata().equals(
        pa.schema(list(real) + [table.schema.field(n) for n in table.schema.names[len(real):]]).remove_metadata())
    assert table.schema.names[len(real):] == ["augment_mode", "augment_source_row", "augment_source_row_b", "augment_alpha"]
    import pandas as pd

    df = pd.read_parquet(out)
    assert len(df) == 200 and (df["label"] == "yes").sum() == 130 and set(df["augment_mode"]) == {"sample"}
    # floats are not dictionary-encoded; strings are
    col = pq.ParquetFile(next(iter(out.glob("*.parquet")))).metadata.row_group(0)
    enc = {col.column(i).path_in_schema: col.column(i).encodings for i in range(col.num_columns)}
    assert not any("DICTIONARY" in e for e in enc["balance €"]) and any("DICTIONARY" in e for e in enc["job"])


def test_same_seed_same_bytes_other_seed_other_bytes(table_bundle, tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert invoke("--model", table_bundle, "--per-class", 60, "--rows-per-file", 40, "--seed", seed,
                      "--engine", "local", "--out", tmp_path / name).exit_code == 0
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    assert set(digests(tmp_path / "a").values()).isdisjoint(digests(tmp_path / "c").values())


def test_chunked_sampling_equals_one_call(gen):
    """The job calls sample() in chunks of whole blocks; that must equal one call (same rng)."""
    assert gen.block_rows % gen.batch_size == 0
    n = gen.block_rows * 2 + 5
    one = gen.sample(1, n, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    parts = pa.concat_tables([gen.sample(1, gen.block_rows, rng), gen.sample(1, n - gen.block_rows, rng)])
    assert one.equals(parts)


def test_blocks_decode_in_batches_as_one_call(gen):
    """A block runs the decoder ``batch_size`` rows at a time; the output is the one-call output's."""
    rng = np.random.default_rng(0)
    n = gen.batch_size * 3 + 7
    z = rng.standard_normal((n, gen.latent_dim)).astype(np.float32)
    labels = rng.integers(0, gen.n_classes, n)
    whole = gen.decoder.run(None, {"z": z, "y": gen._eye[labels]})[0]
    np.testing.assert_allclose(gen.params(z, labels), whole, rtol=1e-5, atol=1e-5)


class Interrupting:
    """The real generator, but Ctrl-C arrives during its ``after``+1-th sample() call."""

    def __init__(self, gen, after: int):
        self._gen, self.after, self.calls = gen, after, 0

    def __getattr__(self, name):
        return getattr(self._gen, name)

    def with_threads(self, threads: int) -> "Interrupting":
        self._gen = self._gen.with_threads(threads)
        return self

    def sample(self, *args, **kwargs):
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return self._gen.sample(*args, **kwargs)


def test_interrupted_then_resumed_gives_same_bytes(table_bundle, gen, tmp_path):
    args = ["--model", table_bundle, "--per-class", 100, "--rows-per-file", 30, "--seed", 1, "--engine", "local"]
    assert invoke(*args, "--out", tmp_path / "full").exit_code == 0
    spec = JobSpec(counts=((0, 100), (1, 100)), seed=1, rows_per_file=30)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run_job(Interrupting(gen, after=3), spec, out, engine="local", threads=1, progress=False, echo=lambda s: None)
    assert not (out / "_manifest.json").exists() and (out / "_job.json").exists()
    assert not list(out.glob(".tmp-*")) and len(list(out.glob("*.parquet"))) == 3
    (out / ".tmp-class=0001-part=00000.parquet-dead").write_bytes(b"half")  # a hard kill's leftover
    (out / "class=0000-part=00001.parquet").write_bytes(b"not parquet")  # a damaged file is redone
    r = invoke(*args, "--out", out, "--resume")
    assert r.exit_code == 0, r.output
    assert "kept from the interrupted run" in r.output
    assert digests(out) == digests(tmp_path / "full")
    assert not list(out.glob(".tmp-*")) and not (out / "_job.json").exists()
    again = invoke(*args, "--out", out, "--resume")
    assert again.exit_code == 0 and "already complete" in again.output
    other = invoke(*[a if a != 1 else 2 for a in args], "--out", tmp_path / "cut2")
    assert other.exit_code == 0


def test_resume_refuses_a_different_job(table_bundle, gen, tmp_path):
    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        run_job(Interrupting(gen, after=1), JobSpec(counts=((0, 50),), rows_per_file=20), out, engine="local",
                threads=1, progress=False, echo=lambda s: None)
    r = invoke("--model", table_bundle, "--class-counts", "no=50", "--rows-per-file", 20, "--seed", 9,
               "--out", out, "--resume")
    assert r.exit_code == 1 and "different job" in r.output and "seed" in r.output


def test_perturb_keeps_labels_and_provenance(table_bundle, source_file, mixed_table, tmp_path):
    out = tmp_path / "p"
    r = invoke("--model", table_bundle, "--mode", "perturb", "--from", source_file, "--per-example", 3,
               "--noise", 0.5, "--rows-per-file", 250, "--out", out, "--provenance")
    assert r.exit_code == 0, r.output
    t = ds.dataset(out, format="parquet").to_table().to_pandas()
    assert len(t) == 3 * mixed_table.num_rows and len(list(out.glob("part=*.parquet"))) == 5
    labels = np.asarray(mixed_table.column("label").to_pylist())
    assert sorted(t["augment_source_row"]) == sorted(np.repeat(np.arange(mixed_table.num_rows), 3))
    assert (t["label"].to_numpy() == labels[t["augment_source_row"].to_numpy()]).all()
    assert set(t["augment_mode"]) == {"perturb"}
    r = invoke("--model", table_bundle, "--mode", "perturb", "--from", source_file, "--per-class", 40,
               "--out", tmp_path / "pc", "--provenance")
    t = ds.dataset(tmp_path / "pc", format="parquet").to_table().to_pandas()
    assert r.exit_code == 0 and t["label"].value_counts().to_dict() == {"no": 40, "yes": 40}
    assert (t["label"].to_numpy() == labels[t["augment_source_row"].to_numpy()]).all()


def test_interpolate_pairs_within_a_class(table_bundle, source_file, mixed_table, tmp_path):
    out = tmp_path / "i"
    assert invoke("--model", table_bundle, "--mode", "interpolate", "--from", source_file, "--pairs", 20,
                  "--steps", 4, "--out", out, "--provenance").exit_code == 0
    t = ds.dataset(out, format="parquet").to_table().to_pandas()
    labels = np.asarray(mixed_table.column("label").to_pylist())
    assert len(t) == 80 and np.allclose(sorted(set(t["augment_alpha"])), [0, 1 / 3, 2 / 3, 1])
    a, b = t["augment_source_row"].to_numpy(), t["augment_source_row_b"].to_numpy()
    assert (labels[a] == labels[b]).all() and (t["label"].to_numpy() == labels[a]).all()


def test_image_bundle_keeps_image_encoding(image_bundle, tmp_path):
    out = tmp_path / "img"
    r = invoke("--model", image_bundle, "--class-counts", "3=20,7=5", "--out", out)
    assert r.exit_code == 0, r.output
    t = ds.dataset(out, format="parquet").to_table()
    assert t.schema.field("image").type == pa.list_(pa.uint8(), 64)
    assert t.column("label").type == pa.int64() and sorted(t.column("label").to_pylist()) == [3] * 20 + [7] * 5


def test_dry_run_and_overwrite(table_bundle, tmp_path):
    out = tmp_path / "d"
    r = invoke("--model", table_bundle, "--rows", 1001, "--out", out, "--dry-run")
    assert r.exit_code == 0 and "1,001 rows" in r.output and "estimate" in r.output and not out.exists()
    assert invoke("--model", table_bundle, "--per-class", 5, "--out", out).exit_code == 0
    assert invoke("--model", table_bundle, "--per-class", 6, "--out", out, "--overwrite").exit_code == 0
    assert json.loads((out / "_manifest.json").read_text())["rows"] == 12
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    r = invoke("--model", table_bundle, "--per-class", 5, "--out", foreign, "--overwrite")
    assert r.exit_code == 1 and "not an augment output folder" in r.output and (foreign / "notes.txt").exists()


@pytest.mark.parametrize("args, message", [
    (["--class-counts", "maybe=3"], "unknown class 'maybe'"),
    (["--class-counts", "yes=0"], "positive integer"),
    (["--per-class", "0"], "positive integer"),
    (["--per-class", "2", "--balance"], "exactly one"),
    (["--mode", "perturb", "--from", "{nolabel}", "--per-example", "2"], "no label column"),
    (["--mode", "perturb", "--from", "{badtype}", "--per-example", "2"], "'age' is string (the bundle has int64)"),
    (["--mode", "perturb", "--from", "{src}", "--per-example", "2", "--noise", "-1"], "--noise must be >= 0"),
    (["--mode", "perturb", "--from", "{src}"], "exactly one of --per-example"),
    (["--per-class", "2", "--ray-address", "127.0.0.1:9"], "cannot reach Ray"),
    (["--per-class", "2", "--temperature", "0"], "temperature"),
])
def test_bad_input_one_line_error_nothing_written(table_bundle, source_file, mixed_table, tmp_path, args, message):
    nolabel, badtype = tmp_path / "nolabel.parquet", tmp_path / "badtype.parquet"
    pq.write_table(mixed_table.drop(["label"]), nolabel)
    pq.write_table(mixed_table.set_column(0, "age", mixed_table.column("age").cast(pa.string())), badtype)
    args = [a.format(nolabel=nolabel, badtype=badtype, src=source_file) for a in args]
    out = tmp_path / "never"
    r = invoke("--model", table_bundle, "--out", out, *args)
    assert r.exit_code != 0
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], r.output
    assert not out.exists()


def test_existing_output_refused(table_bundle, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("")
    r = invoke("--model", table_bundle, "--per-class", 2, "--out", tmp_path / "x")
    assert r.exit_code == 1 and "exists" in r.output


def test_generate_never_imports_torch(table_bundle, tmp_path):
    code = (
        "import sys\n"
        "from augment.cli import main\n"
        "try:\n"
        f"    main(['generate', '--model', {str(table_bundle)!r}, '--per-class', '3', '--quiet',"
        f" '--engine', 'local', '--out', {str(tmp_path / 'o')!r}])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "import augment.batch.engines, augment.batch.manifest, augment.batch.write\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_perturb_per_class_needs_every_class_in_source(table_bundle, mixed_table, tmp_path):
    only_no = tmp_path / "no.parquet"
    pq.write_table(mixed_table.filter(pa.compute.equal(mixed_table.column("label"), "no")), only_no)
    r = invoke("--model", table_bundle, "--mode", "perturb", "--from", only_no, "--per-class", 5, "--out", tmp_path / "o")
    assert r.exit_code == 1 and "no rows of class 'yes'" in r.output and not (tmp_path / "o").exists()


def test_local_process_pool_same_bytes(table_bundle, source_file, tmp_path):
    """--workers 2 on the local engine: spawned processes, same files as in process (sample and streamed perturb)."""
    for mode_args in (["--per-class", 120], ["--mode", "perturb", "--from", source_file, "--per-example", 2]):
        args = ["--model", table_bundle, *mode_args, "--rows-per-file", 100, "--engine", "local"]
        assert invoke(*args, "--out", tmp_path / "one").exit_code == 0
        r = invoke(*args, "--workers", 2, "--out", tmp_path / "two")
        assert r.exit_code == 0, r.output
        assert json.loads((tmp_path / "two" / "_manifest.json").read_text())["engine"]["processes"] == 2
        assert digests(tmp_path / "one") == digests(tmp_path / "two")
        for d in ("one", "two"):
            import shutil

            shutil.rmtree(tmp_path / d)


@pytest.mark.slow
def test_ctrl_c_leaves_no_manifest_and_resume_finishes(table_bundle, tmp_path):
    """A real SIGINT to `augment generate`: exit 130, whole files only, no manifest; --resume gives the same bytes."""
    import signal
    import time

    args = ["generate", "--model", str(table_bundle), "--per-class", "20000", "--rows-per-file", "2500",
            "--engine", "local", "--quiet"]
    cut = tmp_path / "cut"
    # Each shard's decoding is slowed (0.5 s) in the child, so the 16-shard job cannot finish before Ctrl-C
    # arrives: the test used to turn into a skip when it did.
    # SIGINT as a terminal gives it: a shell's background job (`.ci/run &`) starts with it ignored, and the child
    # would inherit that and finish instead
    slow = ("import signal, sys, time; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "from augment.generator import Generator; real = Generator.sample\n"
            "def sample(self, *a, **k):\n    time.sleep(0.5)\n    return real(self, *a, **k)\n"
            "Generator.sample = sample\nfrom augment.cli import main; main(sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", slow, *args, "--threads", "1", "--out", str(cut)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(cut.glob("*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "--resume" in err
    assert not (cut / "_manifest.json").exists() and not list(cut.glob(".tmp-*"))
    assert 1 <= len(list(cut.glob("*.parquet"))) < 16
    r = invoke(*args[1:-1], "--out", cut, "--resume")
    assert r.exit_code == 0, r.output
    assert invoke(*args[1:-1], "--out", tmp_path / "full").exit_code == 0
    assert digests(cut) == digests(tmp_path / "full")


def test_decode_lanes_give_the_same_bytes(table_bundle, tmp_path, monkeypatch):
    """A shard's chunks decoded by 3 threads (each chunk its own random stream) = by one thread, byte for byte."""
    import augment.batch.chunks as chunks
    import augment.batch.write as shards
    from augment.generator import Generator

    monkeypatch.setattr(chunks, "MAX_CHUNK_ROWS", 64)
    gen = Generator.from_path(table_bundle, batch_size=16, threads=1)
    gen.block_rows = 32  # chunks of 64 rows: two random-draw blocks of two decoder batches each
    spec = JobSpec(counts=((0, 300), (1, 130)), seed=3, rows_per_file=200)
    plan = plan_shards(dict(spec.counts), spec.rows_per_file)
    for lanes in (1, 3):
        (tmp_path / f"l{lanes}").mkdir()
        results = shards.write_shards(gen, spec, [(s, None) for s in plan], tmp_path / f"l{lanes}", threads=lanes)
        assert sorted(r["rows"] for r in results) == [100, 130, 200]
    assert digests(tmp_path / "l1") == digests(tmp_path / "l3")
    assert pq.ParquetFile(tmp_path / "l3" / plan[0].file_name).num_row_groups == 4  # 200 rows in chunks of 64


class ThreadSpy:
    """The real generator, recording the session thread counts asked for."""

    def __init__(self, gen, asked: list):
        self._gen, self.asked = gen, asked

    def __getattr__(self, name):
        return getattr(self._gen, name)

    def with_threads(self, threads: int) -> "ThreadSpy":
        self.asked.append(threads)
        return ThreadSpy(self._gen.with_threads(threads), self.asked)


def test_threads_are_lanes_for_sampling_and_session_threads_otherwise(gen, source_file, tmp_path):
    from augment.batch.write import write_shards

    shard = plan_shards({0: 20})[0]
    asked: list = []
    write_shards(ThreadSpy(gen, asked), JobSpec(counts=((0, 20),)), [(shard, None)], tmp_path, threads=2)
    assert asked == [1]  # two lanes of one-thread sessions
    asked.clear()
    (tmp_path / "p").mkdir()
    spec = JobSpec(mode="perturb", counts=((0, 20),), source=str(source_file), noise=1.0)
    src = __import__("augment.batch.run", fromlist=["x"])._load_source(spec, gen)
    write_shards(ThreadSpy(gen, asked), spec, [(shard, src)], tmp_path / "p", threads=2)
    assert asked == [2]  # one lane, onnxruntime on both cores
    assert gen.with_threads(1) is gen.with_threads(1)  # sessions made once per thread count


def test_threads_option_same_bytes_and_recorded(table_bundle, tmp_path):
    args = ["--model", table_bundle, "--per-class", 150, "--rows-per-file", 50, "--seed", 4]
    for n in (1, 3):
        r = invoke(*args, "--threads", n, "--out", tmp_path / f"t{n}")
        assert r.exit_code == 0, r.output
        assert json.loads((tmp_path / f"t{n}" / "_manifest.json").read_text())["engine"]["threads"] == n
    assert digests(tmp_path / "t1") == digests(tmp_path / "t3")
    bad = CliRunner().invoke(cli, ["generate", *map(str, args), "--threads", "0", "--out", str(tmp_path / "t0")])
    assert bad.exit_code == 2 and "--threads" in bad.output and not (tmp_path / "t0").exists()


def test_auto_engine_choice(monkeypatch):
    from augment.batch.engines import LocalEngine, RayEngine, choose_engine

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert isinstance(choose_engine("auto", address="h:1", workers=None), RayEngine)
    in_process = choose_engine("auto", address=None, workers=None)
    assert isinstance(in_process, LocalEngine) and in_process.workers is None
    assert choose_engine("auto", address=None, workers=3).workers == 3
    with pytest.raises(AugmentError, match="needs --engine ray"):
        choose_engine("local", address="h:1", workers=None)


def test_keep_consistent_perturb_drops_and_reports(image_bundle, tmp_path):
    from conftest import make_digits_table

    from augment.generator import Generator

    src = tmp_path / "digits.parquet"
    pq.write_table(make_digits_table(), src)
    out = tmp_path / "kc"
    r = invoke("--model", image_bundle, "--mode", "perturb", "--from", src, "--per-example", 2, "--keep-consistent",
               "--out", out)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "_manifest.json").read_text())
    kc = m["keep_consistent"]
    assert kc["drawn"] == 600 and kc["kept"] == m["rows"] <= 600 and f"{kc['share_kept']:.1%}" in r.output
    # The check below was skipped exactly when the filter dropped every row: these rows must exist.
    assert m["rows"] > 0
    gen = Generator.from_path(image_bundle)
    table = ds.dataset(out, format="parquet").to_table()
    assert (gen.classify(table) == gen.codec.encode_labels(table)).all()


def test_resume_with_a_row_filter_reports_the_share_of_this_runs_draws(table_bundle, gen, mixed_table, tmp_path):
    """Shards kept by --resume have no count of draws: dividing every row by this run's draws reported "kept 171%".
    (--min-distance tops each shard up to its planned rows, so its shards are the ones --resume keeps.)"""
    train = tmp_path / "train.parquet"
    pq.write_table(mixed_table, train)
    out = tmp_path / "md"
    spec = JobSpec(counts=((0, 100), (1, 100)), rows_per_file=50, seed=3, min_distance=0.05, reference=str(train))
    with pytest.raises(KeyboardInterrupt):
        run_job(Interrupting(gen, after=2), spec, out, engine="local", threads=1, progress=False, echo=lambda s: None)
    assert 1 <= len(list(out.glob("*.parquet"))) < 4
    r = invoke("--model", table_bundle, "--per-class", 100, "--rows-per-file", 50, "--seed", 3, "--min-distance", 0.05,
               "--reference", train, "--engine", "local", "--threads", 1, "--out", out, "--resume")
    assert r.exit_code == 0, r.output
    m = json.loads((out / "_manifest.json").read_text())
    kc = m["keep_consistent"]
    assert kc["resumed_rows"] > 0 and kc["kept"] == m["rows"]  # kept shards bring their recorded draws
    assert kc["drawn"] >= kc["kept"] and 0 < kc["share_kept"] <= 1
    assert f"kept {kc['share_kept']:.1%} of decoded rows" in r.output


# ---------------------------------------------------------------- --min-distance (privacy filter at generation time)


def test_min_distance_auto_writes_only_rows_far_enough_from_training(tmp_path, table_bundle, mixed_table):
    # Setup: the fixture bundle was trained on mixed_table; a second draw of the same generator is the held-out set
    from augment.evaluate.privacy import PrivacyFilter
    from conftest import make_mixed_table

    train = tmp_path / "train.parquet"
    holdout = tmp_path / "holdout.parquet"
    pq.write_table(mixed_table, train)
    pq.write_table(make_mixed_table(200, seed=1), holdout)
    out = tmp_path / "out"
    # Run
    result = invoke("--model", table_bundle, "--per-class", 300, "--min-distance", "auto", "--reference", train,
                    "--holdout", holdout, "--out", out, "--engine", "local")
    # Assert
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "_manifest.json").read_text())
    threshold = manifest["options"]["min_distance"]
    assert threshold > 0 and manifest["options"]["reference"] == str(train.resolve())
    assert [c["rows"] for c in manifest["rows_per_class"]] == [300, 300]
    assert 0 < manifest["keep_consistent"]["share_kept"] <= 1
    written = ds.dataset(out).to_table()
    flt = PrivacyFilter.fit(mixed_table, label="label", threshold=threshold)
    assert (flt.distances(written) >= threshold).all()


def test_min_distance_bad_input_is_one_line_and_writes_nothing(tmp_path, table_bundle, source_file):
    for args, message in [
        (("--min-distance", "0.1"), "--reference"),
        (("--min-distance", "near", "--reference", source_file), "'near'"),
        (("--min-distance", "auto", "--reference", source_file), "--holdout"),
    ]:
        result = invoke("--model", table_bundle, "--per-class", 10, *args, "--out", tmp_path / "out")
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
        assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- hardware, resume and option mistakes (issue 12)


def test_generation_defaults_to_cpu_and_records_provider_and_version(table_bundle, tmp_path, monkeypatch):
    """onnxruntime-gpu lists CUDA even without it; generation picked it and "same seed, same bytes" then
    depended on the machine. CPU is the default; the provider and version go into _job.json and the manifest."""
    import onnxruntime as ort

    from augment import __version__

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    asked = []
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, providers, **k: asked.append(providers) or real(*a, providers=["CPUExecutionProvider"], **k))
    out = tmp_path / "o"
    r = invoke("--model", table_bundle, "--per-class", 20, "--engine", "local", "--out", out)
    assert r.exit_code == 0, r.output
    assert asked and all(p == ["CPUExecutionProvider"] for p in asked)
    m = json.loads((out / "_manifest.json").read_text())
    assert m["provider"] == "CPUExecutionProvider" and m["augment_version"] == __version__


def test_device_auto_falls_back_with_a_note_and_cuda_is_a_one_line_error(table_bundle, tmp_path, monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    r = CliRunner().invoke(cli, ["generate", "--model", str(table_bundle), "--per-class", "5", "--device", "auto",
                                 "--engine", "local", "--out", str(tmp_path / "a"), "--quiet"])
    assert r.exit_code == 0 and "generating on CPU" in r.output
    r = invoke("--model", table_bundle, "--per-class", 5, "--device", "cuda", "--out", tmp_path / "c")
    assert r.exit_code == 1 and "device 'cuda'" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_resume_refuses_another_provider_or_version(table_bundle, gen, tmp_path):
    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        run_job(Interrupting(gen, after=1), JobSpec(counts=((0, 50),), rows_per_file=20), out, engine="local",
                threads=1, progress=False, echo=lambda s: None)
    job = json.loads((out / "_job.json").read_text())
    assert job["provider"] == "CPUExecutionProvider" and job["augment_version"]
    args = ["--model", table_bundle, "--class-counts", "no=50", "--rows-per-file", 20, "--engine", "local",
            "--out", out, "--resume"]
    (out / "_job.json").write_text(json.dumps({**job, "provider": "CUDAExecutionProvider"}))
    r = invoke(*args)
    assert r.exit_code == 1 and "provider 'CUDAExecutionProvider'" in r.output and "--device" in r.output
    (out / "_job.json").write_text(json.dumps({**job, "augment_version": "0.0.1"}))
    r = invoke(*args)
    assert r.exit_code == 1 and "augment version '0.0.1'" in r.output
    (out / "_job.json").write_text(json.dumps(job))
    assert invoke(*args).exit_code == 0


@pytest.mark.parametrize("content", ["{not json", "[]", '{"rows": 5}'])
def test_resume_on_a_corrupt_manifest_is_one_line(table_bundle, tmp_path, content):
    out = tmp_path / "o"
    args = ["--model", table_bundle, "--per-class", 5, "--engine", "local", "--out", out]
    assert invoke(*args).exit_code == 0
    (out / "_manifest.json").write_text(content)
    r = CliRunner().invoke(cli, ["generate", *map(str, args), "--resume", "--quiet"])
    assert r.exit_code == 1 and "_manifest.json" in r.output and "--overwrite" in r.output
    assert len(r.output.strip().splitlines()) == 1 and r.exception is None or isinstance(r.exception, SystemExit)


def test_rows_per_file_zero_is_refused(table_bundle, tmp_path):
    """--rows-per-file 0 silently became 100,000 (`rows_per_file or DEFAULT`)."""
    r = invoke("--model", table_bundle, "--per-class", 5, "--rows-per-file", 0, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "--rows-per-file" in r.output and "got 0" in r.output
    assert not (tmp_path / "o").exists()
