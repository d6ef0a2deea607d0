"""Does synthetic data help a classifier that has only 20 real images per class?

    python benchmarks/bench_small_data.py --data ../shared/data/mnist_test.parquet [--seeds 0 1 2]

For each seed: take the stratified 8,000 / 2,000 split of the MNIST file (seed 0), draw 20 training images per
class (this seed's subset), train a CVAE on those 200 images alone (default settings), generate synthetic
images per class, then train the same fixed classifier (scikit-learn MLP, 256 hidden units, Adam) for the same
number of optimizer steps on (a) the 200 real images and (b) the 200 real plus the synthetic ones, and score
both on the 2,000 held-out images. Prints one row per seed and the mean gain in accuracy points.

With 200 28x28 images the CVAE trains on randomly jittered batches by default (training/jitter.py;
``--image-jitter 0`` turns that off). For reference the table also shows what the same jitter gives when it is
applied to the classifier's own batches instead (classic augmentation, no CVAE), and with the synthetic
images added on top of it.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

from augment.generator import Generator
from training.api import train
from training.config import TrainConfig
from training.jitter import random_affine

STEPS = 1500
BATCH = 64


def pixels(table: pa.Table) -> np.ndarray:
    return np.asarray(table.column("image").combine_chunks().flatten(), dtype=np.float32).reshape(table.num_rows, -1) / 255.0


def fit_fixed_steps(x: np.ndarray, y: np.ndarray, seed: int, steps: int = STEPS, jitter: float = 0.0,
                    shape: tuple[int, int, int] = (1, 28, 28)) -> MLPClassifier:
    """The same number of Adam steps whatever the training set's size (minibatches drawn with replacement).

    ``jitter`` > 0: every minibatch goes through the random affine maps the CVAE trains with.
    """
    clf = MLPClassifier(hidden_layer_sizes=(256,), learning_rate_init=1e-3, random_state=seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    classes = np.unique(y)
    for _ in range(steps):
        idx = rng.integers(0, len(x), BATCH)
        xb = x[idx] if not jitter else random_affine(torch.from_numpy(x[idx]), shape, gen, jitter).numpy()
        clf.partial_fit(xb, y[idx], classes=classes)
    return clf


def mnist_split(path: str) -> tuple[pa.Table, pa.Table]:
    """The 8,000 / 2,000 stratified split (seed 0) of the MNIST file, as in bench_train.py."""
    table = pq.read_table(path)
    labels = table.column("label").to_numpy()
    tr, te = train_test_split(np.arange(len(labels)), test_size=2000, stratify=labels, random_state=0)
    return table.take(np.sort(tr)), table.take(np.sort(te))


def run_seed(train_all: pa.Table, test: pa.Table, seed: int, *, per_class_real: int = 20, per_class_synthetic: int = 500,
             sampler: str = "mixture", image_jitter: float | None = None, classifier: str = "mlp") -> dict:
    """One seed: the CVAE on ``per_class_real`` images per class, then the fixed classifier with and without
    its synthetic images (and, for the MLP, the same with jittered classifier batches)."""
    x_test, y_test = pixels(test), test.column("label").to_numpy()
    y_all = train_all.column("label").to_numpy()
    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.choice(np.flatnonzero(y_all == c), per_class_real, replace=False) for c in np.unique(y_all)])
    small = train_all.take(np.sort(pick))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        bundle = train(small, label="label", out=f"{tmp}/model", config=TrainConfig(seed=seed, image_jitter=image_jitter),
                       progress=False)
        seconds = time.perf_counter() - start
        gen = Generator(bundle)
        synth = pa.concat_tables([
            gen.sample(c, per_class_synthetic, np.random.default_rng([seed, c]), sampler=sampler)
            for c in range(gen.n_classes)
        ])
    x_real, y_real = pixels(small), small.column("label").to_numpy()
    x_syn = pixels(synth)
    y_syn = np.asarray([gen.classes[i] for i in gen.codec.encode_labels(synth)])
    x_both, y_both = np.concatenate([x_real, x_syn]), np.concatenate([y_real, y_syn])
    out = {"seed": seed, "seconds": seconds, "jitter": bundle.json["training"]["config"]["image_jitter"]}
    if classifier == "cnn":
        from bench_image_classifier import cnn_accuracy

        out["real"], out["both"] = (cnn_accuracy(x, y, x_test, y_test, 28, 10, seed, steps=STEPS, batch=BATCH)
                                    for x, y in ((x_real, y_real), (x_both, y_both)))
    else:
        out["real"] = fit_fixed_steps(x_real, y_real, seed).score(x_test, y_test)
        out["both"] = fit_fixed_steps(x_both, y_both, seed).score(x_test, y_test)
        out["real_jit"] = fit_fixed_steps(x_real, y_real, seed, jitter=1.0).score(x_test, y_test)
        out["both_jit"] = fit_fixed_steps(x_both, y_both, seed, jitter=1.0).score(x_test, y_test)
        out["gain_jit"] = 100 * (out["both_jit"] - out["real_jit"])
    out["gain"] = 100 * (out["both"] - out["real"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/mnist_test.parquet")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--per-class-real", type=int, default=20)
    ap.add_argument("--per-class-synthetic", type=int, default=500)
    ap.add_argument("--sampler", choices=["mixture", "prior"], default="mixture")
    ap.add_argument("--image-jitter", type=float, default=None, help="the CVAE's training jitter (default: automatic)")
    ap.add_argument("--classifier", choices=["mlp", "cnn"], default="mlp",
                    help="cnn: the small CNN of bench_image_classifier.py, same steps and batches, no jitter reference")
    args = ap.parse_args()
    torch.set_num_threads(1)
    train_all, test = mnist_split(args.data)

    print("| seed | real only | real + synthetic | gain (points) | CVAE jitter | CVAE training s "
          "| ref: real, jittered batches | ref: real + synthetic, jittered batches |")
    print("|---|---|---|---|---|---|---|---|")
    gains, ref_gains = [], []
    for seed in args.seeds:
        r = run_seed(train_all, test, seed, per_class_real=args.per_class_real, per_class_synthetic=args.per_class_synthetic,
                     sampler=args.sampler, image_jitter=args.image_jitter, classifier=args.classifier)
        gains.append(r["gain"])
        if "gain_jit" in r:
            ref_gains.append(r["gain_jit"])
            ref = f"{r['real_jit']:.4f} | {r['both_jit']:.4f} ({r['gain_jit']:+.2f})"
        else:
            ref = "- | -"
        print(f"| {seed} | {r['real']:.4f} | {r['both']:.4f} | {r['gain']:+.2f} | {r['jitter']:g} | {r['seconds']:.0f} | {ref} |",
              flush=True)
    print(f"\nmean gain over {len(gains)} seeds: {np.mean(gains):+.2f} accuracy points (target: >= +2)")
    if ref_gains:
        print(f"with jittered classifier batches, synthetic adds {np.mean(ref_gains):+.2f} points on top")


if __name__ == "__main__":
    main()
