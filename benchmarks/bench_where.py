"""Benchmark of ``augment generate --where`` on bank marketing (not a test): fidelity and speed tables.

    python benchmarks/bench_where.py --data ../shared/data/bank_marketing.parquet [--work runs/bench_where]
                                     [--rows 500000] [--skip-speed] [--skip-fidelity] [--skip-acceptance]
                                     [--proposals latent,reject] [--no-train]

Split: 80/20 stratified, seed 0 (``bench_train.split``); three bundles: bank as it is and a copy with
``pdays = -1`` ("never contacted before", 82% of rows) stored as null, for the null test (bank has no nulls),
both with default settings, and bank trained with ``--condition-on job,age`` (``bank_native``: per-value
latent mixtures of those columns, which --where on them draws from). Bundles already under --work are reused.

Fidelity, per condition and per proposal (``latent``: the latent cells carrying the condition, with their
prior mass, at most 2% of the conditional rows dropped; ``reject``: plain rejection, the exact conditional):
the synthetic rows are generated with the class counts of the training rows meeting the condition; column
shapes (augment.evaluate.metrics.column_shapes: 1 - KS / 1 - TVD, mean over the columns) of those rows against
the real training rows meeting it; TSTR / TRTR (augment.evaluate.utility: the evaluation's gradient-boosting
classifier, trained on the synthetic vs the real training rows meeting it, scored on the held-out rows meeting
it), as accuracy and ROC AUC ratios.

Acceptance: per condition (the fidelity ones and the speed ones) and class, the latent plan's estimates at seed
0 (what --dry-run prints): plain and latent acceptance, cells kept, their prior mass, the dropped share of the
conditional rows and its 95% bound, and that share measured on --check-rows fresh rows decoded from the
dropped cells (a stream of its own; its noise is about 1 / sqrt(hits)).

Speed: ``augment generate`` as a fresh process (start-up, bundle load and acceptance probe included), --rows
rows of class 'no' to Parquet, for conditions held by about 5% and 30% of that class's training rows, with
each proposal, and without a condition for reference.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import split  # noqa: E402  (the split every benchmark uses)

LABEL = "y"
FIDELITY = [  # (kind, bundle, clauses)
    ("numeric range", "bank", ["age >= 30", "age < 40"]),
    ("numeric tail", "bank", ["balance < 0"]),
    ("category set", "bank", ["job in retired|management"]),
    ("null test", "bank_nulls", ["pdays is not null"]),
    ("combined", "bank", ["age >= 50", "housing = yes"]),
    ("combined", "bank", ["job in blue-collar|technician", "duration > 300"]),
    ("combined + null", "bank_nulls", ["pdays is null", "marital = single"]),
    ("native numeric tail", "bank_native", ["age >= 59"]),
    ("native category", "bank_native", ["job = retired"]),
    ("native category set", "bank_native", ["job in retired|management"]),
    ("native combined", "bank_native", ["job in blue-collar|technician", "duration > 300"]),
]


def prepare(data: Path, work: Path, train_missing: bool = True) -> dict:
    """{name: (bundle path, train table, test table)} for bank and the nulled copy, trained once (a bundle not
    under --work is left out with --no-train)."""
    from training.api import train
    from training.config import TrainConfig

    table = pq.read_table(data)
    pdays = table.column("pdays")
    nulled = table.set_column(table.schema.get_field_index("pdays"), "pdays",
                              pc.if_else(pc.equal(pdays, -1), pa.scalar(None, pa.int64()), pdays))
    out = {}
    versions = (("bank", table, {}), ("bank_nulls", nulled, {}),
                ("bank_native", table, {"condition_on": ("job", "age")}))
    for name, t, options in versions:
        tr, te = split(t, LABEL, 0.2)
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(tr, folder / "train.parquet")
        pq.write_table(te, folder / "test.parquet")
        if not (folder / "model" / "bundle.json").exists():
            if not train_missing:
                print(f"no bundle {folder / 'model'}: its conditions are left out (--no-train)", file=sys.stderr)
                continue
            t0 = time.perf_counter()
            train(tr, label=LABEL, out=folder / "model", config=TrainConfig(**options), progress=False)
            print(f"trained {name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        out[name] = (folder / "model", tr, te)
    return out


def scores(train_c: pa.Table, test_c: pa.Table, synth: pa.Table) -> tuple[float, float, float]:
    """(column shapes, TSTR/TRTR accuracy, TSTR/TRTR ROC AUC) with augment's own evaluation functions."""
    from augment.evaluate.data import feature_frame, label_indices
    from augment.evaluate.metrics import column_shapes
    from augment.evaluate.suite import prepare as eval_schema
    from augment.evaluate.utility import TableEncoder, tstr_trtr

    schema = eval_schema(train_c, test_c, synth, LABEL, classes=["no", "yes"])
    frames = {k: feature_frame(t, schema) for k, t in (("train", train_c), ("test", test_c), ("synthetic", synth))}
    shapes = column_shapes(frames["train"], frames["synthetic"], schema)["score"]
    enc = TableEncoder(frames["train"], schema)
    xy = {k: (enc.transform(f), label_indices(t, schema, k))
          for (k, f), t in zip(frames.items(), (train_c, test_c, synth))}
    u = tstr_trtr(xy["train"], xy["synthetic"], xy["test"], schema=schema, seed=0, cap=50_000,
                  categorical_mask=enc.categorical_mask)
    ratio = u.get("ratio", {}) if isinstance(u, dict) else {}
    return shapes, _num(ratio.get("accuracy")), _num(ratio.get("roc_auc"))


def _num(v) -> float:
    return float(v) if isinstance(v, float) else float("nan")


def fidelity(bundles: dict, proposals=("latent", "reject")) -> list[tuple]:
    from augment.commands.evaluate import filter_where
    from augment.conditions import parse_where
    from augment.generator import Generator
    from augment.rows import generate_table

    rows = []
    gens = {name: Generator.from_path(b[0]) for name, b in bundles.items()}
    for kind, name, clauses in FIDELITY:
        if name not in bundles:
            continue
        gen, (_, tr, te) = gens[name], bundles[name]
        cond = parse_where(clauses, tr.schema)
        tr_c = cond.filter(tr)
        labels = tr_c.column(LABEL).to_pylist()
        counts = {gen.class_index(c): labels.count(c) for c in gen.classes if labels.count(c)}
        share = tr_c.num_rows / tr.num_rows
        for proposal in proposals:
            t0 = time.perf_counter()
            synth = generate_table(gen, counts, 0, where=clauses, where_proposal=proposal)
            secs = time.perf_counter() - t0
            assert cond.mask(synth).all() and synth.num_rows == tr_c.num_rows
            real_c, te_c, synth_c = filter_where(clauses, tr, te, synth, LABEL, gen)  # what evaluate --where scores
            shapes, acc, auc = scores(real_c, te_c, synth_c)
            rows.append((kind, " and ".join(clauses), f"{share:.1%}", proposal, tr_c.num_rows, te_c.num_rows,
                         shapes, acc, auc, synth.num_rows / secs))
            print(rows[-1], file=sys.stderr)
    return rows


def dropped_measured(gen, plan, c: int, rows: int) -> float:
    """The dropped cells' share of class ``c``'s conditional rows, measured on ``rows`` fresh rows decoded from
    those cells in proportion to their prior mass (a stream no plan uses), against the plan's estimate of A."""
    from augment.batch import where

    p = plan.classes[c]
    cells = np.setdiff1d(np.arange(p.cells), np.asarray(p.kept))
    if p.mixture is None or not cells.size:
        return 0.0
    mix = p.mixture.mix
    mass = mix.weights[cells // where.STRATA] / where.STRATA
    rng = np.random.default_rng([7, c])
    pick = cells[np.searchsorted(np.cumsum(mass / mass.sum()), rng.random(rows), side="right").clip(0, cells.size - 1)]
    hits = 0
    for start in range(0, rows, 8192):
        part = pick[start:start + 8192]
        z, _ = where.draw_cells(mix, p.mixture.directions, part // where.STRATA, part % where.STRATA, rng)
        table = gen.decode(z, np.full(part.size, c, dtype=np.int64), rng, columns=plan.condition.columns)
        hits += int(plan.condition.mask(table).sum())
    return float(mass.sum()) * hits / rows / p.plain


def acceptance(bundles: dict, check_rows: int = 0) -> list[tuple]:
    """Per condition of both tables and class: the plan's estimates for the latent proposal (seed 0), and with
    ``check_rows`` the dropped share measured on that many fresh rows of the dropped cells."""
    from augment.batch.where import where_plan
    from augment.conditions import parse_where
    from augment.generator import Generator
    from augment.rows import sample_spec

    gens = {name: Generator.from_path(b[0]) for name, b in bundles.items()}
    out = []
    for kind, name, clauses in FIDELITY + [("speed", "bank", w) for _, w in SPEED_CASES]:
        if name not in bundles:
            continue
        gen, tr = gens[name], bundles[name][1]
        if clauses[0].startswith("age >= QUANTILE"):
            clauses = [_quantile_clause(tr, float(clauses[0].split()[-1]))]
        held = parse_where(clauses, tr.schema).mask(tr)
        labels = np.asarray(tr.column(LABEL).to_pylist())
        plan = where_plan(gen, sample_spec({c: 1 for c in range(len(gen.classes))}, 0, where=tuple(clauses)))
        for c, p in sorted(plan.classes.items()):
            real = float(held[labels == gen.classes[c]].mean())
            measured = dropped_measured(gen, plan, c, check_rows) if check_rows else float("nan")
            out.append((kind, " and ".join(clauses), str(gen.classes[c]), real, p.plain, p.proposal,
                        f"{len(p.kept)}/{p.cells}", p.kept_weight, p.dropped_share, p.dropped_bound, p.probe_rows,
                        measured))
            print(out[-1], file=sys.stderr)
    return out


SPEED_CASES = [("5% numeric", ["age >= QUANTILE 0.05"]), ("5% category", ["job = retired"]),
               ("30% numeric", ["age >= QUANTILE 0.30"]), ("30% combined", ["housing = yes", "loan = no", "age < 45"])]
NATIVE_SPEED_CASES = [("5% numeric", ["age >= QUANTILE 0.05"]), ("5% category", ["job = retired"]),
                      ("30% numeric", ["age >= QUANTILE 0.30"]), ("30% category set", ["job in management|admin."]),
                      ("4% combined", ["job = retired", "age >= 50"])]


def _quantile_clause(tr: pa.Table, share: float) -> str:
    """'age >= V' held by about ``share`` of class 'no''s training rows."""
    ages = np.sort(tr.filter(pc.equal(tr.column(LABEL), "no")).column("age").to_numpy())
    best = min(range(int(ages.min()), int(ages.max()) + 1), key=lambda v: abs((ages >= v).mean() - share))
    return f"age >= {best}"


def _run(model: Path, out: Path, rows: int, where: list[str], proposal: str) -> tuple[float, dict]:
    args = [sys.executable, "-m", "augment.cli", "generate", "--model", str(model), "--class-counts", f"no={rows}",
            "--out", str(out), "--overwrite", "--quiet", "--where-proposal", proposal]
    for w in where:
        args += ["--where", w]
    t0 = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    return rows / wall, json.loads((out / "_manifest.json").read_text())


def speed(bundles: dict, work: Path, rows: int, proposals=("latent", "reject")) -> list[tuple]:
    model, tr, _ = bundles["bank"]
    no = tr.filter(pc.equal(tr.column(LABEL), "no"))
    cases = [(name, "bank", [_quantile_clause(tr, float(w[0].split()[-1]))] if w[0].startswith("age >= QUANTILE")
              else w) for name, w in SPEED_CASES]
    if "bank_native" in bundles:  # the same split, trained with --condition-on job,age
        cases += [(f"{name} (--condition-on job,age)", "bank_native",
                   [_quantile_clause(tr, float(w[0].split()[-1]))] if w[0].startswith("age >= QUANTILE") else w)
                  for name, w in NATIVE_SPEED_CASES]
    out = []
    rate, _ = _run(model, work / "speed", rows, [], "latent")
    out.append(("none", "", "100%", "", rate, 1.0))
    for name, bundle, where in cases:
        held = float(parse(where, no).mean())
        for proposal in proposals:
            if bundle != "bank" and proposal != "latent":
                continue  # reject never reads the native mixtures: the bank rows above are its figures
            rate, manifest = _run(bundles[bundle][0], work / "speed", rows, where, proposal)
            acc = manifest["where"]["per_class"][0]["acceptance"]
            out.append((name, " and ".join(where), f"{held:.1%}", proposal, rate, acc))
            print(out[-1], file=sys.stderr)
    return out


def parse(where: list[str], table: pa.Table) -> np.ndarray:
    from augment.conditions import parse_where

    return parse_where(where, table.schema).mask(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/bank_marketing.parquet")
    ap.add_argument("--work", default="runs/bench_where")
    ap.add_argument("--rows", type=int, default=500_000, help="rows per speed run")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-fidelity", action="store_true")
    ap.add_argument("--skip-acceptance", action="store_true")
    ap.add_argument("--check-rows", type=int, default=65_536,
                    help="fresh rows decoded from each plan's dropped cells to measure their share (0: none)")
    ap.add_argument("--no-train", action="store_true", help="use the bundles under --work, train none")
    ap.add_argument("--proposals", default="latent,reject", help="comma-separated --where-proposal values to run")
    args = ap.parse_args()
    work = Path(args.work)
    bundles = prepare(Path(args.data), work, train_missing=not args.no_train)
    if not args.skip_fidelity:
        print("| kind | condition | train rows meeting it | proposal | real train / test rows | column shapes | "
              "TSTR/TRTR accuracy | TSTR/TRTR ROC AUC | rows/s in memory |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in fidelity(bundles, tuple(args.proposals.split(","))):
            print(f"| {r[0]} | `{r[1]}` | {r[2]} | {r[3]} | {r[4]:,} / {r[5]:,} | {r[6]:.3f} | {r[7]:.3f} | "
                  f"{r[8]:.3f} | {r[9]:,.0f} |")
    if not args.skip_acceptance:
        print("\n| kind | condition | class | train rows of the class meeting it | estimated plain acceptance | "
              "estimated latent acceptance | cells kept | their prior mass | dropped share (estimate) | "
              f"dropped share (95% bound) | dropped share measured ({args.check_rows:,} fresh rows) | probe rows |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in acceptance(bundles, args.check_rows):
            gain = r[5] / max(r[4], 1e-9)
            print(f"| {r[0]} | `{r[1]}` | {r[2]} | {r[3]:.1%} | {r[4]:.1%} | {r[5]:.1%} ({gain:.2f}x) | "
                  f"{r[6]} | {r[7]:.3f} | {r[8]:.2%} | {r[9]:.2%} | {r[11]:.2%} | {r[10]:,} |")
    if not args.skip_speed:
        print(f"\n| case | condition | class 'no' rows meeting it | proposal | rows/s to Parquet, start-up incl. "
              f"({args.rows:,} rows) | acceptance |")
        print("|---|---|---|---|---|---|")
        for r in speed(bundles, work, args.rows, tuple(args.proposals.split(","))):
            print(f"| {r[0]} | `{r[1]}` | {r[2]} | {r[3]} | {r[4]:,.0f} | {r[5]:.1%} |")


if __name__ == "__main__":
    main()
