"""Is the image classifier of `augment evaluate` (a scikit-learn MLP) as sensitive as a small CNN?

    python benchmarks/bench_image_classifier.py --model runs/bench_train/mnist/model \
        --train runs/bench_train/mnist/train.parquet --test runs/bench_train/mnist/test.parquet

`augment evaluate` scores images with a fixed MLP because `augment/` may not import torch. A utility metric
is only useful if it tells better synthetic data from worse, so this script makes synthetic sets of known,
different quality from one bundle and scores each one with both classifiers, trained for the same steps on the
same mini-batches: TSTR accuracy as a share of TRTR. If the MLP ranks the sets like the CNN and spreads them at
least as far apart, it is as sensitive for this purpose.

The sets (1,000 per class each): the per-class mixture (the default), the same at temperature 0.5 (less
variety), perturbations of 100 training images per class at 0.5 sigma (near copies of few sources), and the
N(0, I) prior (off the data for a beta < 1 model). The CNN: two 3x3 convolutions (32, 64 channels, max
pooling), 128 hidden units, Adam at 1e-3, the MLP's steps and batch size.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from augment.evaluate.utility import IMAGE_BATCH, IMAGE_STEPS, fit_classifier
from augment.generator import Generator
from augment.io import read_table
from bench_small_data import pixels


class SmallCNN(nn.Module):
    def __init__(self, side: int, n_classes: int):
        super().__init__()
        self.side = side
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (side // 4) ** 2, 128), nn.ReLU(), nn.Linear(128, n_classes),
        )

    def forward(self, x):
        return self.net(x.reshape(-1, 1, self.side, self.side))


def cnn_accuracy(x, y, x_test, y_test, side: int, n_classes: int, seed: int, steps: int = IMAGE_STEPS,
                 batch: int = IMAGE_BATCH) -> float:
    """The small CNN trained for ``steps`` Adam steps on mini-batches drawn like the MLP's; test accuracy."""
    torch.manual_seed(seed)
    model = SmallCNN(side, n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)  # the MLP's mini-batch draws
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(x), batch))
        loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = model(torch.from_numpy(x_test)).argmax(1).numpy()
    return float((pred == y_test).mean())


def mlp_accuracy(x, y, x_test, y_test, n_classes: int, seed: int) -> float:
    model = fit_classifier(x, y, modality="image", n_classes=n_classes, seed=seed, threads=2)
    return float((model.predict(x_test) == y_test).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)

    gen = Generator.from_path(args.model)
    side = gen.codec.image_shape[1]
    train, test = read_table(args.train), read_table(args.test)
    y_train = gen.codec.encode_labels(train)
    x_test, y_test = pixels(test), gen.codec.encode_labels(test)
    k, n = gen.n_classes, args.per_class
    rng = np.random.default_rng(args.seed)

    def sampled(**kw):
        return pa.concat_tables([gen.sample(c, n, np.random.default_rng([args.seed, c]), **kw) for c in range(k)])

    sources = train.take(np.sort(np.concatenate([rng.choice(np.flatnonzero(y_train == c), 100, replace=False) for c in range(k)])))
    sets = {
        "real training set (TRTR)": train,
        "mixture (default)": sampled(),
        "mixture, temperature 0.5": sampled(temperature=0.5),
        "perturb 100/class at 0.5 sigma": gen.perturb(sources, n // 100, 0.5, rng),
        "prior N(0, I)": sampled(sampler="prior"),
    }
    rows = []
    for name, table in sets.items():
        x, y = pixels(table), gen.codec.encode_labels(table)
        t0 = time.perf_counter()
        mlp = mlp_accuracy(x, y, x_test, y_test, k, args.seed)
        t1 = time.perf_counter()
        cnn = cnn_accuracy(x, y, x_test, y_test, side, k, args.seed)
        rows.append((name, mlp, cnn, t1 - t0, time.perf_counter() - t1))
        print(f"  {name}: mlp {mlp:.4f} cnn {cnn:.4f}", flush=True)
    base_mlp, base_cnn = rows[0][1], rows[0][2]
    print("\n| training set | MLP acc | CNN acc | MLP TSTR/TRTR | CNN TSTR/TRTR | MLP s | CNN s |")
    print("|---|---|---|---|---|---|---|")
    for name, mlp, cnn, ms, cs in rows:
        print(f"| {name} | {mlp:.4f} | {cnn:.4f} | {mlp / base_mlp:.3f} | {cnn / base_cnn:.3f} | {ms:.0f} | {cs:.0f} |")
    syn = rows[1:]
    order_mlp = [r[0] for r in sorted(syn, key=lambda r: -r[1] / base_mlp)]
    order_cnn = [r[0] for r in sorted(syn, key=lambda r: -r[2] / base_cnn)]
    spread = lambda j, base: max(r[j] for r in syn) / base - min(r[j] for r in syn) / base
    print(f"\nsame ranking of the synthetic sets: {order_mlp == order_cnn}")
    print(f"spread of TSTR/TRTR across the sets: MLP {spread(1, base_mlp):.3f}, CNN {spread(2, base_cnn):.3f}")


if __name__ == "__main__":
    main()
