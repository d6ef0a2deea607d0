"""``augment train`` and ``augment demo`` (both need torch; imported only when they run)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from augment.cli import run_command

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
@click.option("--data", required=True, help="Parquet file, folder of Parquet files, or CSV.")
@click.option("--label", default=None, help="Label column (omit for an unconditional, one-class model).")
@click.option("--out", required=True, type=click.Path(), help="Bundle folder to write.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs (default: from the data size).")
@click.option("--batch-size", type=click.IntRange(min=2), default=512, show_default=True)
@click.option("--latent-dim", type=click.IntRange(min=1), default=None, help="Latent size (default 32 tables, 16 images).")
@click.option("--hidden", type=click.IntRange(min=2), default=256, show_default=True, help="Hidden layer width.")
@click.option("--beta", type=click.FloatRange(min=0), default=0.5, show_default=True, help="Weight of the KL term.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--time-budget", type=click.FloatRange(min=1), default=None,
              help="Stop early (keeping the best epoch) when training would run past this many seconds.")
@click.option("--image-shape", callback=_image_shape, default=None, help="C,H,W of an image column (default: inferred).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@run_command
def train(data, label, out, epochs, batch_size, latent_dim, hidden, beta, lr, seed, device, time_budget,
          image_shape, overwrite, quiet):
    """Train a CVAE on labeled data and export a pickle-free ONNX bundle.

    \b
    augment train --data real.parquet --label label --out models/digits
    """
    from augment.io import read_table
    from training.api import train as train_bundle
    from training.config import TrainConfig

    if Path(out).exists() and not overwrite:
        raise click.ClickException(f"output folder {out!r} exists (pass --overwrite to replace it)")
    table = read_table(data)
    try:
        config = TrainConfig(epochs=epochs, batch_size=batch_size, latent_dim=latent_dim, hidden=hidden, beta=beta, lr=lr,
                             seed=seed, device=device, time_budget_s=time_budget)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"training on {table.num_rows:,} rows x {table.num_columns} columns from {data}", err=True)
    bundle = train_bundle(table, label=label, out=out, config=config, image_shape=image_shape, overwrite=overwrite,
                          progress=not quiet, source=str(data))
    m = bundle.json["training"]["metrics"]
    click.echo(f"wrote {bundle.path} ({m['epochs_run']} epochs, {m['stopped']}, {m['train_wall_s']:.1f} s, "
               f"validation loss {m['val_loss']:.4f}, parity {max(bundle.json['onnx']['parity'][k] for k in ('encoder_max_abs_diff', 'decoder_max_abs_diff')):.1e})")


def digits_table():
    """scikit-learn's bundled 8x8 digits as an image table: fixed_size_list<uint8>[64] + int64 label."""
    import numpy as np
    import pyarrow as pa
    from sklearn.datasets import load_digits

    d = load_digits()
    pixels = np.round(d.data * (255.0 / 16.0)).astype(np.uint8)  # (1797, 64), 0..16 -> 0..255
    image = pa.FixedSizeListArray.from_arrays(pa.array(pixels.reshape(-1)), 64)
    return pa.table({"image": image, "label": pa.array(d.target.astype(np.int64))})


@click.command()
@click.option("--out", type=click.Path(), default="augment-demo", show_default=True, help="Folder for everything the demo writes.")
@click.option("--per-class", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=60, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True)
@run_command
def demo(out, per_class, epochs, seed, quiet):
    """Offline end to end: train on scikit-learn's digits, generate rows per class, write Parquet."""
    import shutil

    from augment.job import GenerateOptions, run_job
    from augment.report_images import save_image_grid
    from training.api import train as train_bundle
    from training.config import TrainConfig

    root = Path(out)
    marker = root / "demo.json"
    if root.exists():
        if not marker.is_file():
            raise click.ClickException(f"{out!r} exists and is not a demo folder (choose another --out)")
        shutil.rmtree(root)  # the demo replaces its own previous output
    start = time.perf_counter()
    table = digits_table()
    click.echo(f"1/3 training a CVAE on scikit-learn's digits ({table.num_rows} images, 8x8, 10 classes)", err=True)
    bundle = train_bundle(table, label="label", out=root / "model", config=TrainConfig(epochs=epochs, seed=seed),
                          progress=not quiet, source="sklearn.datasets.load_digits")
    click.echo(f"2/3 generating {per_class} images per class", err=True)
    result = run_job(GenerateOptions(model=str(bundle.path), out=str(root / "synthetic"), per_class=per_class, seed=seed,
                                     engine="local", progress=not quiet))
    grid = save_image_grid(root / "synthetic", bundle.path, root / "samples.png", per_class=8)
    marker.write_text(json.dumps({"seconds": round(time.perf_counter() - start, 1)}))
    click.echo(f"3/3 done in {time.perf_counter() - start:.0f} s", err=True)
    click.echo(f"bundle:    {bundle.path}")
    click.echo(f"synthetic: {result.out} ({result.rows:,} rows, Parquet; read with pandas.read_parquet)")
    click.echo(f"picture:   {grid}")
