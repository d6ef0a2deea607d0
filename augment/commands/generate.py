"""``augment generate``: labeled synthetic rows from a bundle to a folder of Parquet files, locally or on Ray.

    augment generate --model models/mnist --per-class 10000 --out synth/mnist
    augment generate --model models/bank --class-counts yes=40000,no=5000 --out synth/bank
    augment generate --model models/bank --rows 1000000 --out synth/bank_1m --engine ray
    augment generate --model models/bank --per-class 5000 --where "age >= 60" --where "job in retired|management" --out synth/old
    augment generate --model models/mnist --mode perturb --from real.parquet --per-example 5 --noise 0.5 --out synth/p
"""

from __future__ import annotations

import sys

import click

from augment.cli import SEED, run_command
from augment.constants import DEVICES, MODES, SAMPLERS, WHERE_PROPOSALS

__all__ = ["generate"]


@click.command("generate")
@click.option("--model", "model", required=True, help="Bundle folder written by `augment train` (a path or s3://, gs://, file:// URI).")
@click.option("--out", "out", required=True, help="Output folder (or bucket prefix) of Parquet files + _manifest.json.")
@click.option("--mode", type=click.Choice(MODES), default="sample", show_default=True,
              help="sample: new rows per class; perturb: around real rows of --from; interpolate: between pairs.")
@click.option("--per-class", type=int, default=None,
              help="Rows per class (sample); rows per class from random --from rows (perturb).")
@click.option("--class-counts", multiple=True,
              help="NAME=COUNT[,NAME=COUNT...]; split on the last '=' so names may hold '=' and ','. Repeatable.")
@click.option("--class-counts-file", type=click.Path(), default=None, help='JSON object {"class name": count}.')
@click.option("--balance", is_flag=True, help="Top every class up to the largest training class.")
@click.option("--rows", type=int, default=None, help="Total rows, split in the training class proportions.")
@click.option("--from", "source", type=click.Path(), default=None, help="Real rows for perturb/interpolate.")
@click.option("--per-example", type=int, default=None, help="Perturb: rows per --from row (streams the source).")
@click.option("--noise", type=float, default=1.0, show_default=True,
              help="Perturb: z = mu + noise * sigma * eps (in units of the posterior's spread).")
@click.option("--pairs", type=int, default=None, help="Interpolate: pairs of same-class --from rows.")
@click.option("--steps", type=int, default=None, help="Interpolate: rows per pair, ends included (>= 2).")
@click.option("--sampler", type=click.Choice(SAMPLERS), default="mixture", show_default=True,
              help="Latent draws: the fitted per-class mixture or the N(0, T^2 I) prior.")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="Scale of latent and output noise.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Job seed: same seed, same bytes.")
@click.option("--rows-per-file", type=int, default=None, help="Rows per Parquet file (default 100,000).")
@click.option("--keep-consistent", is_flag=True,
              help="Drop rows the bundle's per-class mixture assigns to another class (sample mode tops up).")
@click.option("--min-distance", default=None,
              help="Drop rows closer than this to any --reference row (DCR, label ignored); 'auto' = the 5th "
                   "percentile of --holdout rows' distance to --reference.")
@click.option("--reference", type=click.Path(), default=None, help="The training rows, for --min-distance.")
@click.option("--holdout", type=click.Path(), default=None, help="Held-out real rows, for --min-distance auto.")
@click.option("--where", "where", multiple=True,
              help="A condition every row meets: 'age >= 60', 'job in retired|management', 'pdays is null', "
                   "'`col name` != x'. Repeatable (all must hold); counts stay exact.")
@click.option("--where-proposal", type=click.Choice(WHERE_PROPOSALS), default="latent", show_default=True,
              help="latent: draw only the latent cells that carry the rows meeting --where, with their own "
                   "weights, and reject the rest (drops at most 2% of the conditional rows; faster); reject: "
                   "plain draws, reject (the exact conditional, slower).")
@click.option("--engine", type=click.Choice(["auto", "local", "ray"]), default="auto", show_default=True,
              help="auto: Ray if --ray-address is given (or Ray is up), else this machine, in process.")
@click.option("--workers", type=int, default=None,
              help="Worker processes (local) or Ray actors. Default: local in this process; Ray one per CPU.")
@click.option("--threads", type=int, default=None,
              help="Decode threads per process, each running onnxruntime on one core. Default: cores / processes.")
@click.option("--ray-address", default=None, help="An existing Ray cluster: auto, HOST:PORT or ray://HOST:PORT.")
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Ray: GPUs each actor asks for (fractions share a GPU); actors with a GPU run onnxruntime's CUDA provider.")
@click.option("--resume", is_flag=True, help="Finish an interrupted job in --out (same options).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--dry-run", is_flag=True, help="Print the plan (files, rows, estimated size and time); write nothing.")
@click.option("--provenance", is_flag=True,
              help="Add the augment_* columns: mode, source row(s) of perturb/interpolate, interpolation alpha.")
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True,
              help="onnxruntime provider: cpu, cuda (an error without CUDA) or auto (CUDA if it works, else CPU). "
                   "Same seed, same bytes holds on one provider; --resume refuses another.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@run_command
def generate(model, out, mode, per_class, class_counts, class_counts_file, balance, rows, source, per_example,
             noise, pairs, steps, sampler, temperature, seed, rows_per_file, keep_consistent, min_distance, reference, holdout, where, where_proposal,
             engine, workers, threads, ray_address, gpus_per_worker, resume, overwrite, dry_run, provenance, device, quiet) -> None:
    """Generate labeled synthetic rows to Parquet (local or Ray)."""
    from augment.errors import AugmentError
    from augment.generator import Generator
    from augment.batch.counts import resolve_counts
    from augment.batch.spec import JobSpec
    from augment.batch.plan import DEFAULT_ROWS_PER_FILE

    if workers is not None and workers < 1:
        raise click.BadParameter(f"must be >= 1, got {workers}", param_hint="--workers")
    if threads is not None and threads < 1:
        raise click.BadParameter(f"must be >= 1, got {threads}", param_hint="--threads")
    if rows_per_file is not None and rows_per_file < 1:  # was `rows_per_file or 100_000`: 0 became the default
        raise click.BadParameter(f"must be >= 1, got {rows_per_file}", param_hint="--rows-per-file")
    if mode != "sample":
        others = [n for n, v in (("--class-counts", class_counts), ("--class-counts-file", class_counts_file),
                                 ("--balance", balance), ("--rows", rows)) if v]
        if others:
            raise AugmentError(f"{', '.join(others)} apply to --mode sample only")
    if mode == "sample":
        misplaced = [n for n, v in (("--from", source), ("--per-example", per_example), ("--pairs", pairs),
                                    ("--steps", steps)) if v is not None]
        if misplaced:
            raise AugmentError(f"{', '.join(misplaced)} apply to --mode perturb/interpolate, not sample")
    from augment.fs import resolve

    # at the edge: every path becomes absolute (or stays a URI) before it reaches a worker elsewhere
    model, out = resolve(model).uri, resolve(out).uri
    source, reference, holdout = (resolve(p).uri if p else None for p in (source, reference, holdout))
    gen = Generator.from_path(model, device=device)
    if device == "auto" and gen.device == "cpu":
        click.echo("note: --device auto: CUDA is not available to onnxruntime here; generating on CPU", err=True)
    counts: dict[int, int] = {}
    if mode == "sample":
        counts = resolve_counts(gen.classes, gen.bundle.class_counts, per_class=per_class, class_counts=class_counts,
                                class_counts_file=class_counts_file, balance=balance, rows=rows)
    elif mode == "perturb" and per_class is not None:
        if per_class < 1:
            raise AugmentError(f"--per-class must be a positive integer, got {per_class}")
        counts = {i: per_class for i in range(len(gen.classes))}
    threshold = _min_distance(gen, min_distance, reference, holdout, seed) if min_distance is not None else None
    spec = JobSpec(mode=mode, counts=tuple(sorted(counts.items())), seed=seed,
                   rows_per_file=rows_per_file or DEFAULT_ROWS_PER_FILE, sampler=sampler, temperature=temperature,
                   source=source, per_example=per_example, noise=noise, pairs=pairs,
                   steps=steps, keep_consistent=keep_consistent, min_distance=threshold,
                   reference=reference if threshold is not None else None, provenance=provenance,
                   where=tuple(where), where_proposal=where_proposal)
    from augment.batch.run import run_job

    try:
        run_job(gen, spec, out, engine=engine, workers=workers, threads=threads, ray_address=ray_address,
                gpus_per_worker=gpus_per_worker, resume=resume,
                overwrite=overwrite, dry_run=dry_run, progress=not quiet, echo=click.echo)
    except KeyboardInterrupt:
        click.echo(f"Interrupted: {out} has no manifest; rerun the same command with --resume to finish it.", err=True)
        sys.exit(130)


def _min_distance(gen, value: str, reference: str | None, holdout: str | None, seed: int) -> float:
    """--min-distance as a number, or calibrated on held-out rows ('auto'); the threshold goes into the spec."""
    from augment.errors import AugmentError
    from augment.evaluate.privacy import PrivacyFilter
    from augment.io import read_table

    from augment.extras import require

    require("evaluate", "--min-distance")  # its nearest-neighbour index is scikit-learn's
    if reference is None:
        raise AugmentError("--min-distance needs --reference, the rows the model was trained on")
    if value != "auto":
        try:
            threshold = float(value)
        except ValueError:
            raise AugmentError(f"--min-distance must be a number >= 0 or 'auto', got {value!r}") from None
        if not threshold >= 0:
            raise AugmentError(f"--min-distance must be a number >= 0 or 'auto', got {value!r}")
        try:  # load the reference once here, so a bad file fails before anything is written
            PrivacyFilter.fit(read_table(reference), label=gen.bundle.label_column, threshold=threshold,
                              image_shape=gen.codec.image_shape)
        except ValueError as exc:
            raise AugmentError(f"--reference {reference!r}: {exc}") from None
        return threshold
    if holdout is None:
        raise AugmentError("--min-distance auto needs --holdout, real rows the model never saw")
    try:
        flt = PrivacyFilter.calibrate(read_table(reference), read_table(holdout), label=gen.bundle.label_column,
                                      seed=seed, image_shape=gen.codec.image_shape)
    except ValueError as exc:
        raise AugmentError(f"--min-distance auto: {exc}") from None
    click.echo(f"--min-distance auto: {flt.threshold:.4g} (the 5th percentile of the held-out rows' distance to "
               f"the nearest --reference row)", err=True)
    return flt.threshold
