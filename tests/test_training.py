"""Training, export and the bundle: files, round trip, parity, determinism, awkward and bad input."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from augment.bundle import FORMAT_VERSION, load_bundle
from augment.cli import COMMANDS, cli
from augment.errors import AugmentError, BundleError, OutputExistsError
from augment.generator import Generator
from conftest import TINY, make_mixed_table
from training import export as export_mod
from training.api import train
from training.config import TrainConfig
from training.model import build_model


def _decode(bundle_path, z, y):
    s = ort.InferenceSession(str(bundle_path / "decoder.onnx"), providers=["CPUExecutionProvider"])
    return s.run(None, {"z": z, "y": y})[0]


def test_bundle_holds_exactly_json_and_two_onnx_files(table_bundle):
    assert sorted(p.name for p in table_bundle.iterdir()) == ["bundle.json", "decoder.onnx", "encoder.onnx"]


def test_bundle_json_records_schema_classes_metrics_and_checksums(table_bundle, mixed_table):
    bundle = load_bundle(table_bundle)
    meta = bundle.json
    assert meta["format_version"] == FORMAT_VERSION
    assert bundle.schema == mixed_table.schema
    assert meta["label"]["column"] == "label"
    assert meta["label"]["classes"] == ["no", "yes"]
    labels = mixed_table.column("label").to_pylist()
    assert meta["label"]["counts"] == [labels.count("no"), labels.count("yes")]
    assert set(meta["onnx"]["files"]) == {"encoder.onnx", "decoder.onnx"}
    assert meta["training"]["metrics"]["epochs_run"] == TINY["epochs"]
    assert np.isfinite(meta["training"]["metrics"]["val_loss"])
    assert max(meta["onnx"]["parity"]["encoder_max_abs_diff"], meta["onnx"]["parity"]["decoder_max_abs_diff"]) <= 1e-4
    assert len(meta["sampler"]["mixture"]["classes"]) == 2


def test_onnx_graphs_have_named_io_and_a_dynamic_batch(table_bundle):
    bundle = load_bundle(table_bundle)
    enc = ort.InferenceSession(str(bundle.encoder_path), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(bundle.decoder_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in enc.get_inputs()] == ["x", "y"] and [o.name for o in enc.get_outputs()] == ["mu", "logvar"]
    assert [i.name for i in dec.get_inputs()] == ["z", "y"] and [o.name for o in dec.get_outputs()] == ["params"]
    d = bundle.latent_dim
    for n in (1, 7, 300):
        out = dec.run(None, {"z": np.zeros((n, d), np.float32), "y": np.tile(np.eye(2, dtype=np.float32)[:1], (n, 1))})[0]
        assert out.shape[0] == n


def test_export_parity_matches_torch_and_fails_loudly_above_tolerance(monkeypatch):
    # Setup
    model = build_model("table", 6, 9, 2, 3, 8, logvar_index=(1, 4)).eval()
    x = np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[np.arange(16) % 2]
    # Run
    enc, dec, report = export_mod.export_onnx(model, x, y)
    z = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    got = ort.InferenceSession(dec, providers=["CPUExecutionProvider"]).run(None, {"z": z, "y": y[:5]})[0]
    with torch.no_grad():
        want = model.decode(torch.from_numpy(z), torch.from_numpy(y[:5])).numpy()
    # Assert
    assert np.abs(got - want).max() <= 1e-5
    assert report["decoder_max_abs_diff"] <= 1e-4
    monkeypatch.setattr(export_mod, "PARITY_TOL", -1.0)
    with pytest.raises(AugmentError, match="parity"):
        export_mod.export_onnx(model, x, y)


def test_the_log_variance_floor_changes_only_the_numeric_log_variance_outputs():
    from training.model import LOGVAR_FLOOR

    # Setup: raw decoder outputs far below the floor, so the floor has work to do
    model = build_model("table", 6, 9, 2, 3, 8, logvar_index=(1, 4)).eval()
    with torch.no_grad():
        model.decoder[-1].bias.fill_(-40.0)
    z = torch.from_numpy(np.random.default_rng(1).standard_normal((64, 3)).astype(np.float32))
    y = torch.from_numpy(np.eye(2, dtype=np.float32)[np.arange(64) % 2])
    # Run
    with torch.no_grad():
        raw = model.decoder(torch.cat([z, y], dim=1)).numpy()
        out = model.decode(z, y).numpy()
    # Assert: the two log-variance columns softly floored, every other output the raw one bit for bit
    others = [j for j in range(9) if j not in (1, 4)]
    np.testing.assert_array_equal(out[:, others], raw[:, others])
    want = LOGVAR_FLOOR + np.logaddexp(0.0, raw[:, [1, 4]].astype(np.float64) - LOGVAR_FLOOR)
    np.testing.assert_allclose(out[:, [1, 4]], want, atol=1e-5)
    assert out[:, [1, 4]].min() >= LOGVAR_FLOOR and raw[:, [1, 4]].max() < LOGVAR_FLOOR


def test_same_seed_same_data_gives_the_same_onnx_outputs(tmp_path, mixed_table, table_bundle):
    again = train(mixed_table, label="label", out=tmp_path / "again", config=TrainConfig(**TINY), progress=False)
    z = np.random.default_rng(0).standard_normal((32, again.latent_dim)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[np.arange(32) % 2]
    np.testing.assert_array_equal(_decode(table_bundle, z, y), _decode(again.path, z, y))


def test_class_balance_changes_what_the_model_learns(tmp_path, mixed_table, table_bundle):
    balanced = train(mixed_table, label="label", out=tmp_path / "bal", config=TrainConfig(**TINY, class_balance=1.0),
                     progress=False)
    z = np.zeros((4, balanced.latent_dim), np.float32)
    y = np.eye(2, dtype=np.float32)[[0, 1, 0, 1]]
    assert np.abs(_decode(table_bundle, z, y) - _decode(balanced.path, z, y)).max() > 1e-4
    with pytest.raises(ValueError, match="class balance"):
        TrainConfig(class_balance=1.5)


def test_bundle_generates_rows_with_the_real_schema(table_bundle, mixed_table):
    gen = Generator.from_path(table_bundle)
    out = gen.sample(gen.class_index("yes"), 50, np.random.default_rng(0))
    assert out.num_rows == 50
    assert out.select(mixed_table.column_names).schema == mixed_table.schema
    assert set(out.column("label").to_pylist()) == {"yes"}


def test_awkward_but_valid_table_trains(tmp_path):
    # constant column, all-null column, one class, integer label, unicode and space column names
    n = 60
    rng = np.random.default_rng(0)
    table = pa.table({
        "größe (cm)": pa.array(rng.normal(170, 10, n)),
        "constant": pa.array(np.full(n, 7, dtype=np.int64)),
        "nothing": pa.nulls(n, pa.float64()),
        "kind": pa.array(rng.choice(["a", "b"], n)),
        "label": pa.array(np.full(n, 3, dtype=np.int64)),
    })
    bundle = train(table, label="label", out=tmp_path / "b", config=TrainConfig(**TINY), progress=False)
    gen = Generator(bundle)
    out = gen.sample(gen.class_index(3), 40, np.random.default_rng(0))
    assert out.column("constant").to_pylist() == [7] * 40
    assert out.column("nothing").null_count == 40
    assert out.column("label").to_pylist() == [3] * 40
    assert out.schema.field("größe (cm)").type == pa.float64()


def test_unconditional_model_without_label(tmp_path, mixed_table):
    bundle = train(mixed_table.drop(["label"]), label=None, out=tmp_path / "u", config=TrainConfig(**TINY), progress=False)
    gen = Generator(bundle)
    assert gen.n_classes == 1
    assert gen.sample(0, 10, np.random.default_rng(0)).num_rows == 10


def test_existing_output_folder_is_refused_before_training(tmp_path, mixed_table):
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        train(mixed_table, label="label", out=tmp_path / "out", config=TrainConfig(**TINY), progress=False)


# ------------------------------------------------------------------------------------------------- bundle load
def _copy_bundle(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_tampered_onnx_file_fails_its_checksum(tmp_path, table_bundle):
    b = _copy_bundle(table_bundle, tmp_path / "b")
    (b / "decoder.onnx").write_bytes((b / "decoder.onnx").read_bytes()[:-10])
    with pytest.raises(BundleError, match="decoder.onnx fails its checksum"):
        load_bundle(b)


def test_newer_format_version_is_refused(tmp_path, table_bundle):
    b = _copy_bundle(table_bundle, tmp_path / "b")
    meta = json.loads((b / "bundle.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (b / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=f"format_version {FORMAT_VERSION + 1}"):
        load_bundle(b)


# ---------------------------------------------------------------------------------------------------- the CLI
def _invoke(args):
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.output


def test_help_of_the_group_and_every_subcommand():
    code, out = _invoke(["--help"])
    assert code == 0 and all(name in out for name in COMMANDS)
    for name in COMMANDS:
        code, out = _invoke([name, "--help"])
        assert code == 0, (name, out)
        assert "Usage: " in out and name in out


def test_info_prints_classes_and_json(table_bundle):
    code, out = _invoke(["info", str(table_bundle)])
    assert code == 0 and "yes" in out and "balance €" in out
    assert "job: string  (categorical, " in out and "label: string  (label)" in out and "mixture components" in out
    code, out = _invoke(["info", str(table_bundle), "--json"])
    summary = json.loads(out)
    assert code == 0 and summary["label"]["classes"] == ["no", "yes"]
    models = {c["name"]: c.get("model") for c in summary["columns"]}
    assert models["job"] == "categorical" and models["income"] == "numeric" and models["label"] == "label"


@pytest.mark.parametrize("make, message", [
    (lambda d: ["--data", str(d / "missing.parquet")], "missing.parquet"),
    (lambda d: ["--data", str(d / "t.parquet"), "--label", "nope"], "'nope'"),
    (lambda d: ["--data", str(d / "one.parquet"), "--label", "label"], "at least 2 rows"),
    (lambda d: ["--data", str(d / "text.csv"), "--label", "label"], "'12x'"),
    (lambda d: ["--data", str(d / "ragged.parquet"), "--label", "label"], "lengths"),
    (lambda d: ["--data", str(d / "t.parquet"), "--label", "label", "--epochs", "0"], "epochs"),
    (lambda d: ["--data", str(d / "t.parquet"), "--label", "label", "--image-channels", "32,x"], "image channels"),
])
def test_train_bad_input_is_one_line_nonzero_and_writes_nothing(tmp_path, make, message):
    # Setup
    t = make_mixed_table(40)
    pq.write_table(t, tmp_path / "t.parquet")
    one = t.slice(0, 30).append_column("label2", pa.array(["a"] * 29 + ["b"])).drop(["label"]).rename_columns(
        [*t.column_names[:-1], "label"])
    pq.write_table(one, tmp_path / "one.parquet")
    (tmp_path / "text.csv").write_text("age,label\n" + "".join(f"{v},{'ab'[i % 2]}\n" for i, v in enumerate([*range(30), "12x"])))
    ragged = pa.table({"image": pa.array([[1, 2, 3, 4]] * 5 + [[1, 2]] * 5, pa.list_(pa.uint8())), "label": pa.array([0, 1] * 5)})
    pq.write_table(ragged, tmp_path / "ragged.parquet")
    # Run
    code, out = _invoke(["train", *make(tmp_path), "--out", str(tmp_path / "model"), "--quiet"])
    # Assert
    assert code != 0
    assert message in out
    error_lines = [line for line in out.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1 and "Traceback" not in out
    assert not (tmp_path / "model").exists()


def test_train_cli_refuses_existing_output(tmp_path):
    pq.write_table(make_mixed_table(40), tmp_path / "t.parquet")
    (tmp_path / "model").mkdir()
    code, out = _invoke(["train", "--data", str(tmp_path / "t.parquet"), "--label", "label", "--out", str(tmp_path / "model")])
    assert code != 0 and "--overwrite" in out


def test_info_on_a_tampered_bundle_is_a_one_line_error(tmp_path, table_bundle):
    b = _copy_bundle(table_bundle, tmp_path / "b")
    (b / "encoder.onnx").write_bytes(b"not onnx")
    code, out = _invoke(["info", str(b)])
    assert code == 1 and "encoder.onnx fails its checksum" in out and "Traceback" not in out


def test_generation_side_never_imports_torch():
    modules = ["augment.cli", "augment.generator", "augment.batch.run", "augment.commands.generate", "augment.commands.info",
               "augment.commands.evaluate", "serving.app"]
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules) + \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_bundle_json_without_a_required_key_is_refused(tmp_path, table_bundle):
    b = _copy_bundle(table_bundle, tmp_path / "b")
    meta = json.loads((b / "bundle.json").read_text())
    del meta["codec"]
    (b / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="lacks 'codec'"):
        load_bundle(b)


def test_overwriting_a_bundle_replaces_it_whole(tmp_path, mixed_table):
    out = tmp_path / "b"
    first = train(mixed_table, label="label", out=out, config=TrainConfig(**TINY), progress=False)
    second = train(mixed_table, label="label", out=out, config=TrainConfig(**TINY, seed=1), overwrite=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temporary or old folder left beside it
    assert first.sha256 != second.sha256 and load_bundle(out).sha256 == second.sha256


def test_loss_ignores_the_value_of_point_mass_and_null_rows():
    """The Gaussian term counts on "other" rows only; the spike category has its own cross-entropy."""
    import torch

    from augment.codec import Codec
    from training.loss import ReconstructionLoss

    rng = np.random.default_rng(0)
    v = np.where(rng.random(400) < 0.6, 0.0, rng.normal(5, 1, 400))
    table = pa.table({"v": pa.array(v, mask=rng.random(400) < 0.1)})
    codec = Codec.fit(table, label=None)
    seg = codec.segments[0]
    assert seg.spikes == 2 and seg.has_nulls
    x = torch.from_numpy(codec.transform(table))
    loss = ReconstructionLoss(codec.segments)
    params = torch.zeros(len(v), codec.output_dim)
    moved = params.clone()
    moved[:, seg.out_start] = 3.0  # a different mean: changes the Gaussian term only
    delta = (loss(moved, x) - loss(params, x)).numpy()
    other = x[:, seg.in_stop - 1].numpy() > 0
    assert np.all(delta[~other] == 0) and np.all(delta[other] != 0)
    spike_logits = params.clone()
    spike_logits[:, seg.out_stop - 2] = 2.0  # favour the spike
    d2 = (loss(spike_logits, x) - loss(params, x)).numpy()
    is_spike = x[:, seg.in_stop - 2].numpy() > 0
    assert np.all(d2[is_spike] < 0) and np.all(d2[other] > 0)


def test_latent_mixture_defaults_by_modality_and_overrides(table_bundle, image_bundle):
    for bundle in (table_bundle, image_bundle):
        mix = json.loads((bundle / "bundle.json").read_text())["sampler"]["mixture"]
        assert mix["covariance"] == "full" and all("cholesky" in c for c in mix["classes"])
    from training.config import TrainConfig
    from training.mixture import fit_class_mixtures

    # tables: fitted to the means, half the posterior spread added back; images: draws, which carry it already
    assert TrainConfig().resolved_mixture("table") == (100, "full", "means", 0.5)
    assert TrainConfig().resolved_mixture("image") == (10, "full", "samples", 0.0)
    assert TrainConfig(mixture_components=3, mixture_covariance="diag").resolved_mixture("table") == (3, "diag", "means", 0.5)
    assert TrainConfig(mixture_fit="samples").resolved_mixture("table")[3] == 0.0
    assert TrainConfig(mixture_inflate=0.0).resolved_mixture("table")[3] == 0.0
    assert TrainConfig(mixture_fit="means", mixture_inflate=1.0).resolved_mixture("image")[3] == 1.0
    for bundle, inflate in ((table_bundle, 0.5), (image_bundle, 0.0)):  # what was used is recorded
        recorded = json.loads((bundle / "bundle.json").read_text())["training"]["config"]
        assert recorded["mixture_inflate"] == inflate and recorded["mixture_components"] == 2
    with pytest.raises(ValueError, match="mixture covariance"):
        TrainConfig(mixture_covariance="spherical")
    with pytest.raises(ValueError, match="mixture fit"):
        TrainConfig(mixture_fit="modes")
    # fitted to the means, a class whose rows sit on two points gets two tight components there
    rng = np.random.default_rng(0)
    mu = np.concatenate([np.full((100, 2), -3.0), np.full((100, 2), 3.0)]) + rng.normal(0, 0.01, (200, 2))
    logvar = np.zeros((200, 2))  # posterior std 1: draws would blur the two points into one cloud
    mix = fit_class_mixtures(mu, logvar, np.zeros(200, int), 1, 2, 0, "full", "means")["classes"][0]
    assert sorted(round(m[0]) for m in mix["means"]) == [-3, 3]
    assert max(abs(v) for c in mix["cholesky"] for row in c for v in row) < 0.05
    # inflate: each component's covariance gains that share of its rows' posterior variance (here 0.25)
    lv = np.full((200, 2), np.log(0.25))
    for inflate in (1.0, 0.5):
        wide = fit_class_mixtures(mu, lv, np.zeros(200, int), 1, 2, 0, "full", "means", inflate=inflate)["classes"][0]
        cov = [np.asarray(c) @ np.asarray(c).T for c in wide["cholesky"]]
        assert all(np.allclose(np.diag(c), 0.25 * inflate, atol=2e-3) for c in cov)
    # inflate_min_var: only the dimensions whose posterior variance reaches it; inflate_min_rows: only big classes
    lv2 = np.log(np.tile([0.25, 1.0], (200, 1)))
    some = fit_class_mixtures(mu, lv2, np.zeros(200, int), 1, 2, 0, "full", "means", inflate=1.0,
                              inflate_min_var=0.5)["classes"][0]
    cov = [np.asarray(c) @ np.asarray(c).T for c in some["cholesky"]]
    assert all(np.diag(c)[0] < 2e-3 and abs(np.diag(c)[1] - 1.0) < 2e-3 for c in cov)
    none = fit_class_mixtures(mu, lv2, np.zeros(200, int), 1, 2, 0, "full", "means", inflate=1.0,
                              inflate_min_rows=201)["classes"][0]
    assert max(abs(v) for c in none["cholesky"] for row in c for v in row) < 0.05
    with pytest.raises(ValueError, match="mixture inflate"):
        TrainConfig(mixture_inflate=-1)


def test_a_diverged_model_stops_training_with_a_clear_error(tmp_path, mixed_table, monkeypatch):
    """A NaN loss was trained on for every remaining epoch and the NaN decoder exported."""
    from training import trainer

    real = trainer.ReconstructionLoss

    class Diverging(real):
        def forward(self, params, x):
            return super().forward(params, x) * float("nan")

    monkeypatch.setattr(trainer, "ReconstructionLoss", Diverging)
    out = tmp_path / "b"
    with pytest.raises(AugmentError, match=r"training diverged: the loss is nan at epoch 1, step 1.*--lr"):
        train(mixed_table, label="label", out=out, config=TrainConfig(**TINY), progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_refuses_non_finite_outputs_and_parity_sees_nan():
    model = build_model("table", 6, 9, 2, 3, 8, logvar_index=(1, 4)).eval()
    x = np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[np.arange(16) % 2]
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "dec" in n).fill_(float("nan"))
    with pytest.raises(AugmentError, match="non-finite outputs \\(params"):
        export_mod.export_onnx(model, x, y)
    from onnx import TensorProto, helper

    io_ = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", io_[:1], io_[1:])
    identity = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9).SerializeToString()
    nan = np.array([np.nan, 1.0], np.float32)
    assert export_mod._max_diff(identity, {"x": nan}, [nan]) == float("inf")  # nan - nan is nan; nan > tol is False
    assert export_mod._max_diff(identity, {"x": nan[1:].repeat(2)}, [nan[1:].repeat(2)]) == 0.0


@pytest.mark.parametrize("path, value", [(("label", "classes"), None), (("onnx", "files"), None),
                                         (("sampler", "mixture"), None), (("codec", "columns"), "x")])
def test_bundle_json_missing_an_inner_key_is_a_bundle_error(tmp_path, table_bundle, path, value):
    """``del meta["label"]["classes"]`` was a KeyError (a traceback) far from the bundle."""
    b = _copy_bundle(table_bundle, tmp_path / "b")
    meta = json.loads((b / "bundle.json").read_text())
    if value is None:
        del meta[path[0]][path[1]]
    else:
        meta[path[0]][path[1]] = value
    (b / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=f"lacks {path[0]}.{path[1]}"):
        load_bundle(b)
    r = CliRunner().invoke(cli, ["info", str(b)])
    assert r.exit_code == 1 and f"{path[0]}.{path[1]}" in r.output and "Traceback" not in r.output


def test_bundle_folder_and_files_get_the_umask_permissions_and_are_synced(tmp_path, table_bundle, monkeypatch):
    """mkdtemp + rename left the bundle folder 0700: unreadable to another user (a team folder, uid 1000)."""
    import os
    import stat

    from augment import bundle as bundle_mod

    synced = []
    for name in ("fsync_file", "fsync_dir"):
        monkeypatch.setattr(bundle_mod, name, lambda p, real=getattr(bundle_mod, name): synced.append(Path(p).name) or real(p))
    meta = json.loads((table_bundle / "bundle.json").read_text())
    files = {name: table_bundle / name for name in ("encoder.onnx", "decoder.onnx")}
    old = os.umask(0o022)
    try:
        out = bundle_mod.write_bundle(tmp_path / "b", meta, files).path
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert all(stat.S_IMODE((out / n).stat().st_mode) == 0o644 for n in bundle_mod.BUNDLE_FILES)
    assert set(bundle_mod.BUNDLE_FILES) <= set(synced) and out.parent.name in synced  # files, folder, parent
