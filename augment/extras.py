"""The optional parts of augment (pip extras) and the one-line error when one is missing.

``pip install augment`` carries generation only (numpy, pyarrow, onnxruntime, click, tqdm). Each extra below
adds what one set of commands needs; a command whose extra is missing stops with one line that names the
extra to install, never an ImportError traceback. Only the presence of the modules is checked
(``importlib.util.find_spec``): nothing heavy is imported to find out.
"""

from __future__ import annotations

import importlib.util

from augment.errors import MissingExtraError

__all__ = ["EXTRAS", "COMMAND_EXTRAS", "require", "missing"]

# extra -> the top-level modules it installs that augment imports
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("torch", "onnx", "sklearn"),
    "ray": ("ray",),
    "serve": ("fastapi", "uvicorn", "orjson"),
    "evaluate": ("sklearn", "matplotlib", "pandas"),
}

# CLI command -> the extras it needs before it can run at all
COMMAND_EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "demo": ("train", "evaluate"),
    "split": ("evaluate",),
    "evaluate": ("evaluate",),
    "serve": ("serve",),
}


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def require(extra: str, what: str) -> None:
    """Raise ``MissingExtraError`` (one line) when ``extra`` is not installed; ``what`` names who needs it."""
    absent = missing(extra)
    if absent:
        raise MissingExtraError(
            f"{what} needs the {extra!r} extra ({', '.join(absent)} not installed): pip install 'augment[{extra}]'"
            + (" (install torch==2.13.0 first: a looser pin pulls a multi-GB CUDA build)" if extra == "train" else "")
        )
