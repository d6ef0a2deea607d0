"""``augment evaluate``: fidelity, utility and privacy of synthetic data (metrics.json and an HTML report).

    augment evaluate --model models/bank --train data/bank/train.parquet --test data/bank/test.parquet \\
                     --synthetic synth/bank --report reports/bank
"""

from __future__ import annotations

import time

import click

from augment.cli import SEED, run_command
from augment.commands.split import label_from
from augment.errors import InputError, OutputExistsError

__all__ = ["evaluate", "filter_where"]


def filter_where(where, train, test, synthetic, label: str, gen=None):
    """(train, test, synthetic) keeping the rows meeting every --where clause; parsed on the real data's schema.
    Columns the clauses leave all null in the training rows are dropped from all three.

    Every class of the synthetic rows must keep some training and test rows, or there is nothing to score against.
    """
    import pyarrow.compute as pc

    from augment.conditions import parse_where

    categories = {c.name: c.categories for c in gen.codec.columns if hasattr(c, "categories")} if gen else None
    condition = parse_where(where, train.schema, categories)
    out = [condition.filter(t) for t in (train, test, synthetic)]
    need = set(pc.unique(out[2].column(label).cast("string")).to_pylist()) if out[2].num_rows else set()
    for name, t in zip(("--train", "--test"), out[:2]):
        have = set(pc.unique(t.column(label).cast("string")).to_pylist()) if t.num_rows else set()
        missing = sorted(need - have)
        if not t.num_rows or missing:
            raise InputError(f"--where {condition}: {name} holds no row of class {', '.join(map(repr, missing or ['any']))} "
                             "meeting it, so there is nothing to score against")
    # a column the clauses leave all null (`pdays is null`) holds nothing to compare or learn from
    empty = [c for c in condition.columns if out[0].column(c).null_count == out[0].num_rows]
    return tuple(t.drop_columns(empty) for t in out)


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None


@click.command()
@click.option("--train", "train_path", required=True, type=click.Path(), help="Real training data (what the model was trained on).")
@click.option("--test", "test_path", required=True, type=click.Path(), help="Held-out real data, never seen in training.")
@click.option("--synthetic", "synth_path", required=True, type=click.Path(), help="`augment generate` output folder or a Parquet file.")
@click.option("--report", "report_path", required=True, type=click.Path(), help="Folder for metrics.json, index.html, figures/.")
@click.option("--model", "model_path", default=None, type=click.Path(), help="Bundle: label, class order, latent map, interpolations.")
@click.option("--label", default=None, help="Label column (default: the bundle's, or the file's label_column metadata).")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--sweep-real", default="1%,10%,100%", show_default=True, help="Real subsets: percentages or N/class; none skips the sweep (its classifiers take most of an image "
              "evaluation's time).")
@click.option("--sweep-synth", default="0,1,2,5", show_default=True, help="Synthetic rows added, as multiples of the subset.")
@click.option("--sweep-seeds", default=1, show_default=True, type=click.IntRange(min=1), help="Repeats of the sweep, each with its own subsets.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1), help="CPU threads for scikit-learn.")
@click.option("--no-figures", is_flag=True, help="Numbers only (faster).")
@click.option("--where", "where", multiple=True,
              help="Score conditional synthetic data (augment generate --where) against the real rows meeting the "
                   "same clauses: train, test and synthetic are all filtered by them. Repeatable.")
@click.option("--overwrite", is_flag=True, help="Replace an existing report.")
@run_command
def evaluate(train_path, test_path, synth_path, report_path, model_path, label, seed, sweep_real, sweep_synth, sweep_seeds,
             threads, no_figures, where, overwrite):
    """Fidelity, utility and privacy of synthetic data: REPORT/metrics.json and REPORT/index.html."""
    from augment.evaluate import EvalConfig, read_real, read_synthetic, run_evaluation, summary_rows, write_report
    from augment.evaluate.utility import parse_real_sizes
    from augment.fs import resolve

    report = resolve(report_path)
    report.check_reachable()
    if report.list() and not overwrite:
        raise OutputExistsError(f"report folder {report} exists and is not empty; pass --overwrite to replace it")
    try:
        sizes = tuple(parse_real_sizes(sweep_real))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--sweep-real") from None
    config = EvalConfig(seed=seed, sweep_sizes=sizes, sweep_multipliers=_ints(sweep_synth),
                        sweep_seeds=tuple(range(seed, seed + sweep_seeds)), figures=not no_figures, threads=threads)
    started = time.perf_counter()
    gen = None
    if model_path:
        from augment.generator import Generator

        gen = Generator.from_path(model_path)
    train, test, synthetic = read_real(train_path), read_real(test_path), read_synthetic(synth_path)
    label = label_from(train, label, gen.bundle.label_column if gen else None)
    if where:
        train, test, synthetic = filter_where(where, train, test, synthetic, label, gen)
    evaluation = run_evaluation(
        train, test, synthetic, label, config=config,
        image_shape=tuple(gen.codec.image_shape) if gen is not None and gen.codec.image_shape else None,
        classes=list(gen.classes) if gen is not None else None, model=gen,
    )
    evaluation.metrics["seconds"] = round(time.perf_counter() - started, 1)
    if where:
        evaluation.metrics["where"] = {"clauses": list(where), "rows": {"train": train.num_rows, "test": test.num_rows,
                                                                       "synthetic": synthetic.num_rows}}
    page = write_report(evaluation, report, overwrite=overwrite)
    rows = summary_rows(evaluation.metrics)
    width = max(len(name) for name, _ in rows)
    for w in evaluation.metrics["warnings"]:
        click.echo(f"warning: {w}", err=True)
    click.echo("\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    click.echo(f"report: {page} ({evaluation.metrics['seconds']} s)")
