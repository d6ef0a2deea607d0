"""The ``augment`` command line: a thin group whose subcommands load lazily.

``augment --help`` imports neither torch nor ray: each subcommand lives in its own module and is imported
only when it runs (click's "lazily loading subcommands" pattern). Domain errors (``AugmentError``) become a
one-line ``Error: ...`` with exit code 1 here, at the edge.
"""

from __future__ import annotations

import importlib
import sys

import click

from augment import __version__
from augment.errors import AugmentError

__all__ = ["main", "cli", "SEED", "run_command"]

# Every command's --seed: numpy, torch and the job's plan take seeds in [0, 2**63); -1 was a traceback deep inside.
SEED = click.IntRange(0, 2**63 - 1)

# name -> (module:attribute, one-line help shown by `augment --help` without importing the module)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("training.cli:train", "Train a CVAE on labeled data and export an ONNX bundle (needs torch)."),
    "info": ("augment.commands.info:info", "Show what a bundle holds: schema, classes, metrics."),
    "demo": ("training.cli:demo", "Offline end to end: train on scikit-learn's digits, generate, write Parquet."),
    "generate": ("augment.commands.generate:generate", "Generate labeled synthetic rows to Parquet (local or Ray)."),
    "split": ("augment.commands.split:split", "Stratified, seeded train/test split of a dataset."),
    "evaluate": ("augment.commands.evaluate:evaluate", "Fidelity, utility and privacy report for synthetic data."),
    "serve": ("serving.cli:serve", "Serve generation over HTTP (uvicorn, or Ray Serve with --ray)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        from augment.extras import COMMAND_EXTRAS, require

        for extra in COMMAND_EXTRAS.get(name, ()):
            require(extra, f"augment {name}")
        target, _ = COMMANDS[name]
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table above, so listing commands imports nothing heavy.
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in COMMANDS.items()])


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="augment")
def cli() -> None:
    """augment: labeled synthetic data from a conditional VAE, as Parquet, on one machine, Ray or HTTP."""


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="augment", standalone_mode=True)
    except AugmentError as exc:  # raised outside a command's own handling
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


def run_command(fn):
    """Decorator for command bodies: an ``AugmentError`` becomes a one-line ClickException (exit 1)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AugmentError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


if __name__ == "__main__":  # pragma: no cover
    main()
