"""Image defaults: the intensity calibration (fitted by training, applied on decode, validated on load), the
network's channels and the KL weight."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pytest

from augment.bundle import load_bundle
from augment.codec import Codec
from augment.columns.image import ImageColumn
from augment.columns.types import type_to_str
from augment.errors import SchemaError
from augment.generator import Generator
from augment.io import image_to_array
from augment.rows import generate_table
from conftest import make_digits_table
from training.config import TrainConfig
from training.model import build_model


def _column(calibration=None, shape=(1, 1, 5)) -> ImageColumn:
    return ImageColumn("image", type_to_str(pa.list_(pa.uint8())), shape, 255.0, calibration=calibration)


def test_calibrate_applies_the_knots_as_a_piecewise_linear_map():
    col = _column((((0.0, 0.5, 1.0), (0.0, 0.0, 1.0)),))  # below the middle -> black, above it stretched
    p = np.array([[0.0, 0.25, 0.5, 0.75, 1.0]], np.float32)
    np.testing.assert_allclose(col.calibrate(p), [[0.0, 0.0, 0.0, 0.5, 1.0]], atol=2 / 4095)  # a 4,096-level table
    assert _column().calibrate(p) is p  # no calibration: the sigmoid's values untouched
    # equal source knots (saturated pixels) keep the first target rather than an undefined slope
    flat = _column((((0.0, 0.5, 0.5, 1.0), (0.0, 0.2, 0.9, 1.0)),), shape=(1, 1, 1))
    assert abs(float(flat.calibrate(np.array([[0.5]], np.float32))[0, 0]) - 0.2) < 1e-3


def test_each_channel_gets_its_own_map():
    identity, halve, black = ((0.0, 1.0), (0.0, 1.0)), ((0.0, 1.0), (0.0, 0.5)), ((0.0, 1.0), (0.0, 0.0))
    col = _column((identity, halve, black), shape=(3, 1, 2))  # channel-first: [c0 c0 c1 c1 c2 c2]
    p = np.array([[0.2, 0.8, 0.2, 0.8, 0.2, 0.8]], np.float32)
    np.testing.assert_allclose(col.calibrate(p), [[0.2, 0.8, 0.1, 0.4, 0.0, 0.0]], atol=2 / 4095)
    back = ImageColumn.from_json(col.to_json())
    assert back.calibration == col.calibration


def _pixels(table):
    return image_to_array(table.column("image").combine_chunks(), (1, 8, 8), name="image").astype(np.float64) / 255


def test_training_fits_a_calibration_that_moves_generated_pixels_to_the_real_histogram(image_bundle):
    bundle = load_bundle(image_bundle)
    (knots,) = bundle.json["codec"]["columns"][0]["calibration"]  # one map: the digits have one channel
    src, dst = np.asarray(knots["source"]), np.asarray(knots["target"])
    assert len(src) == len(dst) > 100 and np.all(np.diff(src) >= 0) and np.all(np.diff(dst) >= 0)
    assert src[0] == 0.0 and src[-1] == 1.0 and 0 <= dst.min() and dst.max() <= 1

    real = _pixels(make_digits_table())
    calibrated = _pixels(generate_table(Generator(bundle), {c: 60 for c in range(10)}, seed=5))
    meta = json.loads((image_bundle / "bundle.json").read_text())
    del meta["codec"]["columns"][0]["calibration"]
    plain = Generator(bundle)
    plain.codec = Codec.from_json(meta["codec"])  # the same network decoded through the bare sigmoid
    raw = _pixels(generate_table(plain, {c: 60 for c in range(10)}, seed=5))
    levels = np.linspace(0.02, 0.98, 49)
    gap = lambda x: np.abs(np.quantile(x, levels) - np.quantile(real, levels)).mean()
    assert gap(calibrated) < 0.5 * gap(raw), (gap(calibrated), gap(raw))


def test_a_bundle_without_a_calibration_decodes_the_plain_sigmoid(tmp_path, image_bundle):
    b = tmp_path / "old"
    shutil.copytree(image_bundle, b)
    meta = json.loads((b / "bundle.json").read_text())
    del meta["codec"]["columns"][0]["calibration"]  # what bundles written before 0.3.2 hold
    (b / "bundle.json").write_text(json.dumps(meta))
    col = Generator(load_bundle(b)).codec.columns[0]
    assert col.calibration is None
    logits = np.linspace(-6, 6, 64, dtype=np.float32)[None, :]  # one 8x8 image
    expected = np.rint(255 / (1 + np.exp(-logits.astype(np.float64))))
    got = image_to_array(col.inverse(logits, np.random.default_rng(0), 1.0), (1, 8, 8), name="image").reshape(1, -1)
    np.testing.assert_allclose(got, expected, atol=1)


@pytest.mark.parametrize("calibration", [
    [{"source": [0.0, 1.0], "target": [1.0, 0.0]}],  # reversed
    [{"source": [0.0, 2.0], "target": [0.0, 1.0]}],  # leaves [0, 1]
    [{"source": [0.0, 0.5, 1.0], "target": [0.0, 1.0]}],  # unequal lengths
    [{"source": [0.0, float("nan")], "target": [0.0, 1.0]}],
    [{"source": [0.0] * 5000, "target": [0.0] * 5000}],  # too many knots
    [{"source": "0,1", "target": [0, 1]}],
    [{"source": [0.0, 1.0], "target": [0.0, 1.0]}] * 2,  # two maps for one channel
    {"source": [0.0, 1.0], "target": [0.0, 1.0]},  # not a list of maps
])
def test_a_damaged_calibration_is_refused_in_one_line(calibration):
    d = _column().to_json() | {"calibration": calibration}
    with pytest.raises(SchemaError, match=r"calibration must hold, for each of its 1 channel\(s\), source and target") as err:
        ImageColumn.from_json(d)
    assert "\n" not in str(err.value)


def test_image_channels_are_a_config_field_the_network_uses():
    assert TrainConfig().image_channels == (32, 64)
    assert TrainConfig(image_channels="16,32").image_channels == (16, 32)
    assert TrainConfig.from_json(TrainConfig(image_channels=(8, 8)).to_json()).image_channels == (8, 8)
    for bad in ("32", "0,8", "a,b"):
        with pytest.raises(ValueError, match="image channels must be two positive integers"):
            TrainConfig(image_channels=bad)
    model = build_model("image", 64, 64, 10, 4, 32, image_shape=(1, 8, 8), image_channels=(8, 12))
    assert model.conv[0].out_channels == 8 and model.conv[2].out_channels == 12


def test_rgb_training_fits_one_map_per_channel(tmp_path):
    from augment.io import array_to_image_column
    from conftest import TINY
    from training.api import train

    rng = np.random.default_rng(0)
    pixels = np.zeros((80, 3, 8, 8), np.uint8)
    pixels[:, 0] = rng.integers(100, 256, (80, 8, 8))  # red: bright noise; green: a dim square; blue: always black
    pixels[:, 1, 2:6, 2:6] = 60
    like = pa.list_(pa.uint8(), 3 * 8 * 8)
    table = pa.table({"image": array_to_image_column(pixels, like, (3, 8, 8)), "label": pa.array([0, 1] * 40)})
    bundle = train(table, label="label", out=tmp_path / "rgb", config=TrainConfig(**TINY), image_shape=(3, 8, 8), progress=False)
    maps = bundle.json["codec"]["columns"][0]["calibration"]
    assert len(maps) == 3 and max(maps[2]["target"]) == 0.0 and max(maps[0]["target"]) > 0.9
    out = image_to_array(generate_table(Generator(bundle), {0: 20, 1: 20}, seed=1).column("image").combine_chunks(),
                         (3, 8, 8), name="image").reshape(40, 3, 64)  # channel-first
    assert out[:, 2].max() == 0 and out[:, 0].min() >= 90  # each channel kept to its own range


def test_beta_defaults_by_modality_and_the_bundle_records_the_one_used(image_bundle, table_bundle):
    assert TrainConfig().resolved_beta("image") == 0.25 and TrainConfig().resolved_beta("table") == 0.5
    assert TrainConfig(beta=1.0).resolved_beta("image") == 1.0
    for path, beta in ((image_bundle, 0.25), (table_bundle, 0.5)):
        assert load_bundle(path).json["training"]["config"]["beta"] == beta
