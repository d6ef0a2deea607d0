"""Speed of the --min-distance privacy guard: rows/s checked, brute force against the category-grouped search.

    python benchmarks/bench_privacy_guard.py --model runs/bench_quality/bank/model --train T.parquet --holdout H.parquet [--rows 50000]

The threshold is calibrated as ``--min-distance auto`` does (the held-out rows' 5th percentile DCR); the
queries are rows sampled from the bundle. Both paths must keep the same rows (checked), so only the time differs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow.parquet as pq

from augment.evaluate.privacy import PrivacyFilter, closest_distances
from augment.generator import Generator
from augment.rows import generate_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--holdout", required=True)
    ap.add_argument("--rows", type=int, default=50_000)
    args = ap.parse_args()
    gen = Generator.from_path(args.model)
    label = gen.bundle.label_column
    counts = gen.bundle.class_counts
    total = sum(counts)
    synthetic = generate_table(gen, {i: max(1, round(args.rows * c / total)) for i, c in enumerate(counts)}, seed=0)
    start = time.perf_counter()
    flt = PrivacyFilter.calibrate(pq.read_table(args.train), pq.read_table(args.holdout), label=label)
    calibrate_s = time.perf_counter() - start
    start = time.perf_counter()
    brute = closest_distances(flt.reference, flt.space.transform(synthetic)) >= flt.threshold
    brute_s = time.perf_counter() - start
    start = time.perf_counter()
    grouped = flt.keep_mask(synthetic)  # builds the groups once, then checks
    grouped_s = time.perf_counter() - start
    assert np.array_equal(brute, grouped), "the grouped search kept other rows than brute force"
    n = synthetic.num_rows
    print(f"reference {flt.reference.shape[0]:,} rows x {flt.reference.shape[1]} coordinates, threshold {flt.threshold:.4f} "
          f"(calibration {calibrate_s:.1f} s), {n:,} synthetic rows, {1 - grouped.mean():.2%} dropped")
    print("| search | s | rows/s |")
    print("|---|---|---|")
    print(f"| brute force | {brute_s:.2f} | {n / brute_s:,.0f} |")
    print(f"| within category groups (index built included) | {grouped_s:.2f} | {n / grouped_s:,.0f} |")


if __name__ == "__main__":
    main()
