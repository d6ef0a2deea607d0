"""Image jitter during training: the affine maps, when it is on by default, and a bundle trained with it."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from augment.cli import cli
from conftest import TINY
from training.api import train
from training.config import JITTER_BELOW, TrainConfig
from training.jitter import jittered_copies, mixture_copies, random_affine

SHAPE = (1, 16, 16)


def _squares(n: int, seed: int = 0) -> np.ndarray:
    """(n, 256) images in [0, 1]: a bright 6x6 square at a random place on a dark ground."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 16, 16), np.float32)
    for img, (r, c) in zip(x, rng.integers(3, 7, (n, 2))):
        img[r:r + 6, c:c + 6] = 1.0
    return x.reshape(n, -1)


def test_random_affine_is_identity_at_strength_zero_and_moves_pixels_otherwise():
    x = torch.from_numpy(_squares(32))
    same = random_affine(x, SHAPE, torch.Generator().manual_seed(0), 0.0)
    assert torch.allclose(same, x, atol=1e-5)
    moved = random_affine(x, SHAPE, torch.Generator().manual_seed(0), 1.0)
    again = random_affine(x, SHAPE, torch.Generator().manual_seed(0), 1.0)
    assert moved.shape == x.shape and torch.equal(moved, again)  # seeded
    assert moved.min() >= 0 and moved.max() <= 1
    change = (moved - x).abs().sum(1)  # every image gets its own map: none stays put, and they differ
    assert bool((change > 0.5).all()) and len(torch.unique(change.round(decimals=3))) > 16
    # the square keeps most of its ink: an affine map near identity, not noise
    assert torch.allclose(moved.sum(1), x.sum(1), rtol=0.35)


def test_jitter_is_on_by_default_only_for_few_images_of_16_pixels_or_more():
    c = TrainConfig()
    assert c.resolved_image_jitter("image", 200, 10, (1, 28, 28)) == 1.0
    assert c.resolved_image_jitter("image", JITTER_BELOW * 10, 10, (1, 28, 28)) == 0.0  # plenty of images
    assert c.resolved_image_jitter("image", 200, 10, (1, 8, 8)) == 0.0  # 8x8: resampling blurs more than it adds
    assert c.resolved_image_jitter("table", 200, 10) == 0.0
    assert TrainConfig(image_jitter=0.5).resolved_image_jitter("image", 10**6, 10, (1, 8, 8)) == 0.5
    assert TrainConfig(image_jitter=0).resolved_image_jitter("image", 200, 10, (1, 28, 28)) == 0.0
    # jittered batches never repeat: three times the optimizer steps
    plain, jittered = c.resolved_epochs(200, "image", 784), c.resolved_epochs(200, "image", 784, jitter=1.0)
    assert jittered == min(300, 3 * plain)
    with pytest.raises(ValueError, match="image jitter must be in"):
        TrainConfig(image_jitter=4)


def test_jittered_copies_give_each_class_about_400_encodings():
    x, y = _squares(60), np.repeat([0, 1, 2], [20, 20, 20])
    copies = mixture_copies(y)
    xs = list(jittered_copies(x, SHAPE, 1.0, seed=0, copies=copies))
    ys = np.tile(y, copies + 1)  # originals first, then the copies, as training fits the mixture
    assert (copies + 1) * 60 == 21 * 60 and np.bincount(ys).tolist() == [420] * 3
    assert all(c.shape == x.shape for c in xs) and not np.allclose(xs[0], x)
    assert mixture_copies(np.zeros(800, int)) == 1  # one copy for a large class


def test_small_image_data_trains_with_jitter_and_the_cli_checks_the_strength(tmp_path):
    x = _squares(120)
    image = pa.FixedSizeListArray.from_arrays(pa.array(np.rint(x * 255).astype(np.uint8).reshape(-1)), 256)
    table = pa.table({"image": image, "label": pa.array(np.repeat([0, 1], 60))})
    bundle = train(table, label="label", out=tmp_path / "m", config=TrainConfig(**TINY), progress=False)
    meta = json.loads((bundle.path / "bundle.json").read_text())
    assert meta["training"]["config"]["image_jitter"] == 1.0
    out = CliRunner().invoke(cli, ["info", str(bundle.path)]).output
    assert "image jitter 1" in out
    pq.write_table(table, tmp_path / "t.parquet")
    result = CliRunner().invoke(cli, ["train", "--data", str(tmp_path / "t.parquet"), "--label", "label",
                                      "--out", str(tmp_path / "bad"), "--image-jitter", "5", "--quiet"])
    assert result.exit_code != 0 and "5" in result.output and "0<=x<=3" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "bad").exists()
