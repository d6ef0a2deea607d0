"""Training benchmark on the shared datasets: epochs, wall time, rows/s, final validation loss.

    python benchmarks/bench_train.py --data-dir ../shared/data [--out runs/bench_train]

MNIST: 8,000 train / 2,000 held out (stratified, seed 0). Bank marketing: 80/20 (stratified, seed 0). Default
training settings. Not a test: it prints a table (and writes the bundles under --out for the other benchmarks).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.model_selection import train_test_split

from training.api import train
from training.config import TrainConfig


def split(table: pa.Table, label: str, test_size, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    import numpy as np

    idx = np.arange(table.num_rows)
    tr, te = train_test_split(idx, test_size=test_size, stratify=table.column(label).to_numpy(), random_state=seed)
    return table.take(np.sort(tr)), table.take(np.sort(te))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--out", default="runs/bench_train")
    ap.add_argument("--only", choices=["mnist", "bank"], default=None)
    args = ap.parse_args()
    data, out = Path(args.data_dir), Path(args.out)
    jobs = [("mnist", "mnist_test.parquet", "label", 2000), ("bank", "bank_marketing.parquet", "y", 0.2)]
    rows = []
    for name, file, label, test_size in jobs:
        if args.only and name != args.only:
            continue
        train_t, test_t = split(pq.read_table(data / file), label, test_size)
        (out / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(train_t, out / name / "train.parquet")
        pq.write_table(test_t, out / name / "test.parquet")
        start = time.perf_counter()
        bundle = train(train_t, label=label, out=out / name / "model", config=TrainConfig(), overwrite=True, progress=False)
        wall = time.perf_counter() - start
        m = bundle.json["training"]["metrics"]
        rows.append((name, train_t.num_rows, m["epochs_run"], m["stopped"], m["train_wall_s"], wall, m["rows_per_s"], m["val_loss"]))
    print(f"| dataset | train rows | epochs | stopped | training s | total s (fit+export) | rows/s | val loss |")
    print(f"|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:,} | {r[2]} | {r[3]} | {r[4]:.1f} | {r[5]:.1f} | {r[6]:,.0f} | {r[7]:.4f} |")


if __name__ == "__main__":
    main()
