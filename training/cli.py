"""``augment train`` and ``augment demo`` (both need torch; imported only when they run)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from augment.cli import SEED, run_command
from augment.constants import DEVICES

__all__ = ["train", "demo"]


def _image_shape(ctx, param, value):
    if value is None:
        return None
    from augment.io import parse_image_shape
    from augment.errors import AugmentError

    try:
        return parse_image_shape(value)
    except AugmentError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option("--data", required=True, help="Parquet file or folder, CSV (.csv, .tsv, .csv.gz), JSON lines or Arrow/Feather.")
@click.option("--label", default=None, help="Label column (omit for an unconditional, one-class model).")
@click.option("--out", required=True, type=click.Path(), help="Bundle folder to write.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs (default: from the data size).")
@click.option("--batch-size", type=click.IntRange(min=2), default=512, show_default=True)
@click.option("--latent-dim", type=click.IntRange(min=1), default=None, help="Latent size (default 32 tables, 16 images).")
@click.option("--hidden", type=click.IntRange(min=2), default=256, show_default=True, help="Hidden layer width.")
@click.option("--beta", type=click.FloatRange(min=0), default=None, help="Weight of the KL term (default: 0.5 tables, 0.25 images).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--class-balance", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Draw batches with weights count(class)**-B: 0 = data proportions, 1 = balanced classes.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads (default: all cores; 1 on a busy machine).")
@click.option("--time-budget", type=click.FloatRange(min=1), default=None,
              help="Stop early (keeping the best epoch) when training would run past this many seconds.")
@click.option("--categorical", default="", help="Comma-separated columns to model as categories (e.g. integer codes).")
@click.option("--numeric", default="", help="Comma-separated integer columns to keep numeric (by default an integer "
              "column with at most 32 distinct values is categorical).")
@click.option("--id", "ids", default="", help="Comma-separated identifier columns: generated fresh in their format, never "
              "modelled or copied (integer and short-code columns that are nearly all distinct are found by themselves).")
@click.option("--drop", default="", help="Comma-separated columns to leave out of the model and the output.")
@click.option("--condition-on", default="", help="Comma-separated categorical columns whose values get their own "
              "latent mixture per class: --where on them then draws from it instead of rejecting rows.")
@click.option("--max-categories", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Most categories (after pooling rare values) a categorical column may have.")
@click.option("--rare-min-rows", type=click.IntRange(min=1), default=5, show_default=True,
              help="A category held by fewer training rows is never written verbatim (see --keep-rare).")
@click.option("--keep-rare", is_flag=True, help="Write rare categories verbatim (they can identify the few rows holding them).")
@click.option("--delimiter", type=click.Choice([",", ";", "tab", "|"]), default=None,
              help="CSV delimiter (default: sniffed from the first lines).")
@click.option("--drop-null-labels", is_flag=True, help="Drop (and count) rows without a label instead of refusing the table.")
@click.option("--image-jitter", type=click.FloatRange(0, 3), default=None,
              help="Images: strength of the random rotation/scale/shear/shift of training batches, 0 = off "
              "(default: 1 below 500 images per class of at least 16x16 pixels, else 0).")
@click.option("--image-channels", default="32,64", show_default=True,
              help="Images: channels of the two convolutions (the decoder mirrors them); 16,32 trains about twice as fast.")
@click.option("--image-shape", callback=_image_shape, default=None, help="C,H,W of an image column (default: inferred).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@run_command
def train(data, label, out, epochs, batch_size, latent_dim, hidden, beta, lr, seed, device, class_balance, threads, time_budget,
          categorical, numeric, ids, drop, condition_on, max_categories, rare_min_rows, keep_rare, delimiter, drop_null_labels,
          image_jitter, image_channels, image_shape, overwrite, quiet):
    """Train a CVAE on labeled data and export a pickle-free ONNX bundle.

    \b
    augment train --data real.parquet --label label --out models/digits
    """
    from augment.io import drop_null_labels as without_null_labels
    from augment.io import read_table
    from training.api import train as train_bundle
    from training.config import TrainConfig
    from training.trainer import device_note, pick_device

    from augment.fs import resolve

    out_loc = resolve(out)
    out_loc.check_reachable()  # a missing or refused bucket fails now, not after the training
    if out_loc.exists() and not overwrite:
        raise click.ClickException(f"output folder {out!r} exists (pass --overwrite to replace it)")
    try:
        config = TrainConfig(epochs=epochs, batch_size=batch_size, latent_dim=latent_dim, hidden=hidden, beta=beta, lr=lr,
                             seed=seed, device=device, class_balance=class_balance, threads=threads, time_budget_s=time_budget,
                             categorical=_names(categorical), numeric=_names(numeric), ids=_names(ids), drop=_names(drop),
                             condition_on=_names(condition_on),
                             max_categories=max_categories, rare_min_rows=rare_min_rows, keep_rare=keep_rare,
                             image_jitter=image_jitter, image_channels=image_channels)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    pick_device(device)  # --device cuda without CUDA: one line, before the data is read
    table = read_table(data, delimiter="\t" if delimiter == "tab" else delimiter)
    if drop_null_labels:
        table, dropped = without_null_labels(table, label)
        if dropped:
            click.echo(f"dropped {dropped:,} rows without a label ({label!r})", err=True)
    note = device_note(device)
    if note:
        click.echo(note, err=True)
    click.echo(f"training on {table.num_rows:,} rows x {table.num_columns} columns from {data}", err=True)
    bundle = train_bundle(table, label=label, out=out, config=config, image_shape=image_shape, overwrite=overwrite,
                          progress=not quiet, source=str(data))
    m = bundle.json["training"]["metrics"]
    click.echo(f"wrote {bundle.source} ({m['epochs_run']} epochs, {m['stopped']}, {m['train_wall_s']:.1f} s, "
               f"validation loss {m['val_loss']:.4f}, parity {max(bundle.json['onnx']['parity'][k] for k in ('encoder_max_abs_diff', 'decoder_max_abs_diff')):.1e})")


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def digits_table():
    """scikit-learn's bundled 8x8 digits as an image table: fixed_size_list<uint8>[64] + int64 label."""
    import numpy as np
    import pyarrow as pa
    from sklearn.datasets import load_digits

    d = load_digits()
    pixels = np.round(d.data * (255.0 / 16.0)).astype(np.uint8)  # (1797, 64), 0..16 -> 0..255
    image = pa.FixedSizeListArray.from_arrays(pa.array(pixels.reshape(-1)), 64)
    return pa.table({"image": image, "label": pa.array(d.target.astype(np.int64))})


def _demo_picture(real, synth_dir: Path, out: Path) -> Path:
    """Real vs synthetic digits, 8 per class, side by side (PNG)."""
    import numpy as np

    from augment.evaluate.figures import sample_grid_figure
    from augment.io import read_table

    synth = read_table(synth_dir)

    def by_class(table):
        pixels = np.asarray(table.column("image").combine_chunks().flatten()).reshape(-1, 64) / 255.0
        labels = np.asarray(table.column("label"))
        return {str(c): pixels[labels == c] for c in range(10)}

    fig = sample_grid_figure(by_class(real), by_class(synth), (1, 8, 8), [str(c) for c in range(10)], per_class=8)
    fig.savefig(out, dpi=110)
    return out


@click.command()
@click.option("--out", type=click.Path(), default="augment-demo", show_default=True, help="Folder for everything the demo writes.")
@click.option("--per-class", type=click.IntRange(min=1), default=500, show_default=True, help="Synthetic images per class.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs (default: from the data size).")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@run_command
def demo(out, per_class, epochs, seed, quiet):
    """Offline end to end: train on scikit-learn's digits, generate images per class, write Parquet.

    Re-running replaces the previous demo folder (and only a demo folder, even one an interrupted demo left).
    """
    import shutil


    from augment.generator import Generator
    from augment.batch.run import run_job
    from augment.batch.spec import JobSpec
    from training.api import train as train_bundle
    from training.config import TrainConfig

    root = Path(out)
    marker = root / "demo.json"
    if root.exists():
        if not marker.is_file():
            raise click.ClickException(f"{out!r} exists and is not a folder the demo wrote (choose another --out)")
        shutil.rmtree(root)
    root.mkdir(parents=True)
    # The marker first: an interrupted demo leaves a folder the next demo recognises and replaces.
    marker.write_text(json.dumps({"complete": False}))
    start = time.perf_counter()
    table = digits_table()
    click.echo(f"1/3 training a CVAE on scikit-learn's digits ({table.num_rows} images, 8x8, 10 classes)", err=True)
    bundle = train_bundle(table, label="label", out=root / "model", config=TrainConfig(epochs=epochs, seed=seed),
                          progress=not quiet, source="sklearn.datasets.load_digits")
    click.echo(f"2/3 generating {per_class} images per class", err=True)
    gen = Generator(bundle)
    spec = JobSpec(counts=tuple((i, per_class) for i in range(gen.n_classes)), seed=seed)
    manifest = run_job(gen, spec, root / "synthetic", engine="local", progress=not quiet,
                       echo=lambda line: click.echo(line, err=True))
    picture = _demo_picture(table, root / "synthetic", root / "samples.png")
    seconds = time.perf_counter() - start
    marker.write_text(json.dumps({"complete": True, "seconds": round(seconds, 1), "per_class": per_class, "seed": seed}))
    click.echo(f"3/3 done in {seconds:.0f} s", err=True)
    click.echo(f"bundle:    {bundle.path}   (augment info {bundle.path})")
    click.echo(f"synthetic: {root / 'synthetic'}   ({manifest['rows']:,} rows of Parquet: "
               f"pandas.read_parquet('{root / 'synthetic'}'))")
    click.echo(f"picture:   {picture}   (real vs synthetic, 8 per class)")
