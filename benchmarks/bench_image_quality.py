"""Image networks and the intensity calibration on MNIST: quick quality scores and generation speed.

    python benchmarks/bench_image_quality.py --data ../shared/data/mnist_test.parquet [--channels 16,32 32,64] [--out runs/bench_image_quality]
    python benchmarks/bench_image_quality.py --data digits      # scikit-learn's 8x8 digits, 80/20 stratified, seed 0

For each ``--channels`` value, train with defaults but that ``image_channels`` on the 8,000 / 2,000 split of
bench_train.py (or the digits split), generate 1,000 images per class (seed 0), and score them twice: decoded through the bundle's
intensity calibration (what generation writes) and through the bare sigmoid (the bundle's codec without it,
what 0.3.1 wrote). Scores: TSTR accuracy of the fixed image MLP of ``augment evaluate`` over its TRTR, and
the detection AUC of ``augment evaluate`` (2,000 per side). Then image generation speed in process (20,000
images, best of 3). One table row per network.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import parse_overrides  # noqa: E402
from bench_small_data import mnist_split  # noqa: E402

from augment.codec import Codec  # noqa: E402
from augment.evaluate.metrics import detection_auc  # noqa: E402
from augment.evaluate.utility import fit_classifier  # noqa: E402
from augment.generator import Generator  # noqa: E402
from augment.io import image_to_array  # noqa: E402
from augment.rows import generate_table  # noqa: E402
from training.api import train  # noqa: E402
from training.config import TrainConfig  # noqa: E402


def pixels(table) -> np.ndarray:
    side = int(round(np.sqrt(len(table.column("image").combine_chunks()[0]))))
    return image_to_array(table.column("image").combine_chunks(), (1, side, side), name="image").reshape(table.num_rows, -1) / np.float32(255)


def digits_split():
    from sklearn.model_selection import train_test_split

    from training.cli import digits_table

    table = digits_table()
    labels = table.column("label").to_numpy()
    tr, te = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0)
    return table.take(np.sort(tr)), table.take(np.sort(te))


def accuracy(x, y, x_test, y_test) -> float:
    model = fit_classifier(x, y, modality="image", n_classes=10, seed=0, threads=2)
    return float((model.predict(x_test) == y_test).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/mnist_test.parquet")
    ap.add_argument("--channels", nargs="+", default=["16,32", "32,64"])
    ap.add_argument("--out", default="runs/bench_image_quality")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a non-default TrainConfig field for every network (experiments)")
    args = ap.parse_args()
    overrides = parse_overrides(args.overrides)
    if "image_channels" in overrides:
        ap.error("--set image_channels=...: give the networks with --channels")
    train_t, test_t = digits_split() if args.data == "digits" else mnist_split(args.data)
    x_real, y_real = pixels(train_t), train_t.column("label").to_numpy()
    x_test, y_test = pixels(test_t), test_t.column("label").to_numpy()
    trtr = accuracy(x_real, y_real, x_test, y_test)
    print(f"{args.data}: {train_t.num_rows:,} training and {test_t.num_rows:,} held-out images; TRTR accuracy {trtr:.4f}\n")
    print("| channels | training s | TSTR / TRTR, sigmoid | detection, sigmoid | TSTR / TRTR, calibrated | detection, calibrated | images/s |")
    print("|---|---|---|---|---|---|---|")
    for channels in args.channels:
        start = time.perf_counter()
        bundle = train(train_t, label="label", out=f"{args.out}/{channels.replace(',', '_')}",
                       config=TrainConfig(**overrides, image_channels=channels),
                       overwrite=True, progress=False)
        seconds = time.perf_counter() - start
        gen = Generator(bundle)
        plain = Generator(bundle)
        codec = bundle.json["codec"]
        plain.codec = Codec.from_json({**codec, "columns": [{k: v for k, v in c.items() if k != "calibration"} for c in codec["columns"]]})
        scores = []
        for g in (plain, gen):
            synth = generate_table(g, {c: 1000 for c in range(10)}, seed=0)
            xs, ys = pixels(synth), np.asarray([int(v) for v in synth.column("label").to_pylist()])
            scores += [accuracy(xs, ys, x_test, y_test) / trtr, detection_auc(x_real, xs, seed=0, cap=2000, threads=2)["auc"]]
        best = float("inf")
        for seed in range(3):
            t = time.perf_counter()
            generate_table(gen, {c: 2000 for c in range(10)}, seed=seed)
            best = min(best, time.perf_counter() - t)
        print(f"| {channels} | {seconds:.0f} | {scores[0]:.3f} | {scores[1]:.3f} | {scores[2]:.3f} | {scores[3]:.3f} | {20000 / best:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
