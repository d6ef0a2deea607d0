"""Latent-mixture variants on bundles already trained by bench_quality.py, without retraining the CVAE.

    python benchmarks/bench_mixture.py --run-dir runs/bench_quality --datasets bank airbnb \
        --variant 'means={}' --variant 'inflate1={"inflate": 1.0}' --variant 'draws4={"fit_on": "samples", "draws": 4}'

For each dataset under --run-dir (its model/, train.parquet and test.parquet as bench_quality.py left them),
encode the training rows with the bundle's own encoder (ties dequantized with the training seed, as training
does), refit the per-class mixture with each variant's ``fit_class_mixtures`` options, swap it into the
bundle's sampler (in memory; the ONNX files are untouched), generate the same synthetic set as bench_quality.py
(seed 0, or --gen-seed) and score it with the same evaluation. Prints one table row per dataset and variant.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import DATASETS, synthetic_counts  # noqa: E402

from augment.bundle import load_bundle  # noqa: E402
from augment.evaluate.privacy import PrivacyFilter  # noqa: E402
from augment.evaluate.suite import EvalConfig, run_evaluation  # noqa: E402
from augment.generator import Generator  # noqa: E402
from augment.rows import generate_table  # noqa: E402
from training.mixture import fit_class_mixtures  # noqa: E402


def encode_training_rows(gen: Generator, train_t, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = train_t.drop_columns([c for c in gen.codec.dropped if c in train_t.column_names])
    x = gen.codec.transform(table, rng=np.random.default_rng(seed))
    labels = gen.codec.encode_labels(table)
    eye = np.eye(gen.n_classes, dtype=np.float32)
    mus, logvars = [], []
    for i in range(0, len(x), 4096):
        mu, logvar = gen.encoder.run(None, {"x": x[i:i + 4096], "y": eye[labels[i:i + 4096]]})
        mus.append(mu)
        logvars.append(logvar)
    return np.concatenate(mus), np.concatenate(logvars), labels


def score(name: str, gen: Generator, train_t, test_t, label: str, seed: int = 0, guard=None) -> dict:
    how = DATASETS[name][3]
    synthetic = generate_table(gen, synthetic_counts(gen, how), seed=seed)
    if guard is not None:  # what ``augment generate --min-distance auto --reference`` keeps
        synthetic = guard.filter(synthetic)
    m = run_evaluation(train_t, test_t, synthetic, label, config=EvalConfig(sweep_sizes=(), figures=False),
                       image_shape=tuple(gen.codec.image_shape) if gen.codec.image_shape else None).metrics
    ratio = m["utility"]["tstr_trtr"]["ratio"]
    priv, fid = m["privacy"], m["fidelity"]
    image = gen.codec.image_shape is not None
    return {
        "tstr": ratio["accuracy"] if image else ratio["roc_auc"],
        "shapes": fid["column_shapes"]["score"], "pairs": fid["column_pair_trends"]["score"],
        "detection": fid["detection"]["auc"],
        "dcr_median": priv["dcr_synthetic"]["median"] / priv["dcr_holdout"]["median"],
        "dcr_p5": priv["dcr_synthetic"]["p5"] / priv["dcr_holdout"]["p5"],
        "closest": priv["synthetic_share_of_closest_5pct"], "too_close": priv["too_close"],
    }


def _num(v) -> str:
    return format(v, ".3f") if isinstance(v, float) else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default="runs/bench_quality")
    ap.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=["bank", "airbnb"])
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                    help="fit_class_mixtures options (fit_on, covariance, max_components, inflate, draws); "
                         "'NAME=bundle' keeps the bundle's own mixture")
    ap.add_argument("--gen-seed", type=int, default=0, help="generation seed (bench_quality.py: 0)")
    ap.add_argument("--guard", action="store_true",
                    help="also score each variant through the privacy guard (PrivacyFilter calibrated on the held-out "
                         "rows, as --min-distance auto does; those rows are the evaluation's too, so this is optimistic)")
    args = ap.parse_args()
    variants = []
    for item in args.variant or ["bundle=bundle"]:
        name, _, opts = item.partition("=")
        variants.append((name, None if opts == "bundle" else json.loads(opts)))
    print("| dataset | variant | fit s | TSTR / TRTR | column shapes | pair trends | detection AUC | DCR median ratio "
          "| DCR p5 ratio | synthetic share of closest 5% | privacy flag |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for ds in args.datasets:
        label = DATASETS[ds][1]
        root = Path(args.run_dir) / ds
        bundle = load_bundle(root / "model")
        train_t, test_t = pq.read_table(root / "train.parquet"), pq.read_table(root / "test.parquet")
        cfg = bundle.json["training"]["config"]
        mu = logvar = labels = None
        for name, opts in variants:
            fit_s = None
            if opts is None:
                gen = Generator(bundle)
            else:
                if mu is None:
                    mu, logvar, labels = encode_training_rows(Generator(bundle), train_t, cfg["seed"])
                defaults = bundle.json["sampler"]["mixture"]
                image = bundle.json["modality"] == "image"  # the bundle's settings (50 / 10 before they were recorded)
                kw = {"max_components": cfg.get("mixture_components") or (10 if image else 50),
                      "covariance": defaults["covariance"], "fit_on": cfg.get("mixture_fit") or ("samples" if image else "means"),
                      "seed": cfg["seed"], **opts}
                start = time.perf_counter()
                mixture = fit_class_mixtures(mu, logvar, labels, len(bundle.class_counts), **kw)
                fit_s = time.perf_counter() - start
                meta = copy.deepcopy(bundle.json)
                meta["sampler"]["mixture"] = mixture
                gen = Generator(replace(bundle, json=meta))
            runs = [(name, None)]
            if args.guard:
                kept = [c for c in train_t.column_names if c in gen.schema.names]  # not the --drop columns
                runs.append((name + " + guard", PrivacyFilter.calibrate(train_t.select(kept), test_t.select(kept), label=label)))
            for shown, guard in runs:
                r = score(ds, gen, train_t, test_t, label, args.gen_seed, guard)
                print(f"| {ds} | {shown} | {_num(fit_s) if fit_s is not None else 'bundle'} | {r['tstr']:.3f} | {_num(r['shapes'])} "
                      f"| {_num(r['pairs'])} | {r['detection']:.3f} | {r['dcr_median']:.3f} | {r['dcr_p5']:.3f} "
                      f"| {r['closest']:.3f} | {'yes' if r['too_close'] else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
