"""A real table end to end: types, identifiers, utility, fidelity and privacy (augment's own evaluation suite).

    python benchmarks/bench_real_table.py --data ../shared/data/airbnb_amsterdam.parquet --label room_type \
        --drop name,host_name [--out runs/bench_real_table]
    python benchmarks/bench_real_table.py --data ../shared/data/bank_marketing.parquet --label y

Stratified 80/20 split (seed 0), default training (``--drop`` for the free-text columns that training refuses by
default), as many synthetic rows per class as the training split holds, then ``run_evaluation``. Goals for
airbnb (issue 11): every column back in its Arrow type, 0 copied identifiers, TSTR ROC AUC >= 0.97 of TRTR,
column shapes >= 0.97, detection AUC <= 0.75, synthetic rows no closer to training than held-out rows.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from augment.evaluate import EvalConfig, run_evaluation
from augment.generator import Generator
from augment.io import read_table
from augment.rows import generate_table
from benchmarks.bench_train import split
from training.api import train
from training.config import TrainConfig


def _row(name: str, value, goal: str = "") -> None:
    print(f"| {name:<44} | {value:>22} | {goal:<16} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/airbnb_amsterdam.parquet")
    ap.add_argument("--label", default="room_type")
    ap.add_argument("--drop", default="name,host_name")
    ap.add_argument("--out", default="runs/bench_real_table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores; 1 on a busy machine)")
    args = ap.parse_args()
    table = read_table(args.data)
    tr, te = split(table, args.label, 0.2, seed=args.seed)
    drop = tuple(n for n in args.drop.split(",") if n and n in table.column_names)
    t0 = time.perf_counter()
    bundle = train(tr, label=args.label, out=Path(args.out) / "model", overwrite=True, progress=False,
                   config=TrainConfig(seed=args.seed, threads=args.threads, **({"drop": drop} if drop else {})))
    train_s = time.perf_counter() - t0
    gen = Generator(bundle)
    counts = {i: int(n) for i, n in enumerate(bundle.class_counts)}
    syn = generate_table(gen, counts, seed=args.seed)
    ev = run_evaluation(tr, te, syn, args.label, model=gen, config=EvalConfig(seed=args.seed, sweep_sizes=(), figures=False))
    m = ev.metrics
    print(f"\n{args.data}: {tr.num_rows:,} train / {te.num_rows:,} test rows, {syn.num_rows:,} synthetic; dropped {list(drop)}\n")
    print(f"| {'check':<44} | {'value':>22} | {'goal':<16} |\n|{'-' * 46}|{'-' * 24}|{'-' * 18}|")
    _row("training wall (s)", f"{train_s:.1f}", "about 60")
    kept = [f for f in tr.schema if f.name not in drop]
    same = [f.name for f in kept if syn.schema.field(f.name).type == f.type]
    _row("columns back in their Arrow type", f"{len(same)}/{len(kept)}", "all")
    ids = set(m.get("identifiers", {}))
    for f in kept:
        col = syn[f.name]
        if f.name in ids:  # fresh values in the training values' digit count, not their observed range
            _row(f"  {f.name} ({f.type})", "identifier: fresh")
            continue
        lo, hi = pc.min_max(tr[f.name]).values() if f.type.id != 0 and tr[f.name].null_count < tr.num_rows else (None, None)
        ok = "" if lo is None else ("in range" if pc.all(pc.and_(pc.greater_equal(col, lo), pc.less_equal(col, hi))).as_py() in (True, None) else "OUT OF RANGE")
        null_real, null_syn = tr[f.name].null_count / tr.num_rows, col.null_count / syn.num_rows
        _row(f"  {f.name} ({f.type})", f"nulls {null_real:.3f}/{null_syn:.3f} {ok}")
    for name, chk in m.get("identifiers", {}).items():
        _row(f"identifier {name}: unique share / copied", f"{chk['unique_share']:.4f} / {chk['copied']}", "1 / 0")
    for name, chk in m.get("privacy_rare_values", {}).items():
        if chk["rare_values"]:
            _row(f"rare values of {name} (k={chk['k']}) written", f"{chk['share']:.4f}", "0")
    tt = m["utility"]["tstr_trtr"]
    _row("TRTR / TSTR ROC AUC", f"{tt['trtr']['roc_auc']:.4f} / {tt['tstr']['roc_auc']:.4f}")
    _row("TSTR / TRTR ROC AUC", f"{tt['ratio']['roc_auc']:.4f}", ">= 0.97")
    _row("TSTR / TRTR accuracy", f"{tt['ratio']['accuracy']:.4f}")
    fid = m["fidelity"]
    _row("column shapes", f"{fid['column_shapes']['score']:.4f}", ">= 0.97")
    _row("column pair trends", f"{fid['column_pair_trends']['score']:.4f}")
    _row("detection AUC", f"{fid['detection']['auc']:.4f}", "<= 0.75")
    p = m["privacy"]
    _row("DCR median synthetic / held-out", f"{p['dcr_synthetic']['median']:.4f} / {p['dcr_holdout']['median']:.4f}", "syn >= held-out")
    scored = {k: v["score"] for k, v in fid["column_shapes"]["columns"].items() if "score" in v}
    print("\nworst column shapes:", ", ".join(f"{k} {v:.3f}" for k, v in sorted(scored.items(), key=lambda kv: kv[1])[:4]))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
