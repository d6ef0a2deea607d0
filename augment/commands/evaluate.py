"""``augment evaluate``: fidelity, utility and privacy of synthetic data (metrics.json and an HTML report).

    augment evaluate --model models/bank --train data/bank/train.parquet --test data/bank/test.parquet \\
                     --synthetic synth/bank --report reports/bank
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from augment.cli import SEED, run_command
from augment.commands.split import label_from
from augment.errors import OutputExistsError

__all__ = ["evaluate"]


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
@click.option("--overwrite", is_flag=True, help="Replace an existing report.")
@run_command
def evaluate(train_path, test_path, synth_path, report_path, model_path, label, seed, sweep_real, sweep_synth, sweep_seeds,
             threads, no_figures, overwrite):
    """Fidelity, utility and privacy of synthetic data: REPORT/metrics.json and REPORT/index.html."""
    from augment.evaluate import EvalConfig, read_real, read_synthetic, run_evaluation, summary_rows, write_report
    from augment.evaluate.utility import parse_real_sizes

    report = Path(report_path)
    if report.exists() and any(report.iterdir()) and not overwrite:
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
    train = read_real(train_path)
    label = label_from(train, label, gen.bundle.label_column if gen else None)
    evaluation = run_evaluation(
        train, read_real(test_path), read_synthetic(synth_path), label, config=config,
        image_shape=tuple(gen.codec.image_shape) if gen is not None and gen.codec.image_shape else None,
        classes=list(gen.classes) if gen is not None else None, model=gen,
    )
    evaluation.metrics["seconds"] = round(time.perf_counter() - started, 1)
    page = write_report(evaluation, report, overwrite=overwrite)
    rows = summary_rows(evaluation.metrics)
    width = max(len(name) for name, _ in rows)
    for w in evaluation.metrics["warnings"]:
        click.echo(f"warning: {w}", err=True)
    click.echo("\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    click.echo(f"report: {page} ({evaluation.metrics['seconds']} s)")
