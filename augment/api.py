"""The Python API: ``Synthesizer``, the same bundle, codec and planner as the CLI, in a notebook.

    import augment

    synth = augment.Synthesizer(label="y").fit(df)            # pandas DataFrame or pyarrow Table (train extra)
    synth.save("models/bank")                                  # the bundle `augment train` writes
    synth = augment.Synthesizer.load("models/bank")           # torch-free
    df_syn = synth.sample(per_class=1000, seed=7)             # the rows of `augment generate --per-class 1000 --seed 7`
    for batch in synth.stream(rows=10**9, seed=7): ...        # Arrow RecordBatches, bounded memory, no files

Every sampling call builds the ``JobSpec`` that ``augment generate`` would, plans it with the batch job's planner
and decodes its shards (``augment.rows``), so the CLI, this API and ``POST /v1/generate`` give the same rows for
the same bundle, seed and counts. Training options are keyword arguments with the CLI's names and defaults
(``epochs``, ``batch_size``, ``latent_dim``, ``hidden``, ``beta``, ``lr``, ``seed``, ``device``,
``class_balance``, ``threads``, ``time_budget``, ``categorical``, ``numeric``, ``image_jitter``, ``image_channels``), or a
``training.config.TrainConfig`` as ``config=``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow as pa

from augment.batch.counts import resolve_counts
from augment.batch.plan import DEFAULT_ROWS_PER_FILE
from augment.batch.source import table_source
from augment.batch.spec import JobSpec
from augment.errors import AugmentError, InputError, OutputExistsError
from augment.frames import to_arrow, to_output
from augment.rows import iter_chunks, perturb_spec, sample_spec, spec_table

__all__ = ["Synthesizer"]

# CLI option name -> TrainConfig field, where the two differ
_OPTION_ALIASES = {"time_budget": "time_budget_s"}


def _train_config(config, options: dict):
    """A ``TrainConfig`` from ``config`` and keyword options (CLI names); bad names or values fail here, before
    any data is read. ``training.config`` is plain Python: building it needs no torch."""
    from training.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    names = {_OPTION_ALIASES.get(k, k): v for k, v in options.items()}
    unknown = sorted(k for k in options if _OPTION_ALIASES.get(k, k) not in fields)
    if unknown:
        allowed = sorted((fields - set(_OPTION_ALIASES.values())) | set(_OPTION_ALIASES))
        raise AugmentError(f"unknown training option(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    if config is not None and not isinstance(config, TrainConfig):
        raise AugmentError(f"config must be a training.config.TrainConfig, got {type(config).__name__}")
    try:
        return dataclasses.replace(config, **names) if config is not None else TrainConfig(**names)
    except (TypeError, ValueError) as err:
        raise AugmentError(str(err)) from None


class Synthesizer:
    """Fit a CVAE on a labeled table (or images), save and load its bundle, sample and perturb rows."""

    def __init__(self, label: str | None = None, *, config=None, image_shape: tuple[int, int, int] | None = None,
                 **options) -> None:
        self.label = label
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.config = _train_config(config, options)
        self._gen = None

    # ------------------------------------------------------------------------------ bundle: fit, save, load
    def fit(self, data, *, progress: bool = True) -> "Synthesizer":
        """Train on ``data`` (a pandas DataFrame or a pyarrow Table; its index is never a column). Needs the
        ``train`` extra (torch). Returns ``self``; the bundle lives in a temporary folder until ``save``."""
        from augment.extras import require

        require("train", "Synthesizer.fit")
        from training.api import train

        table = to_arrow(data, "fit data")
        tmp = tempfile.mkdtemp(prefix="augment-fit-")
        try:
            bundle = train(table, label=self.label, out=Path(tmp) / "bundle", config=self.config,
                           image_shape=self.image_shape, progress=progress, source="augment.Synthesizer.fit")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._attach(bundle)
        weakref.finalize(self, shutil.rmtree, tmp, ignore_errors=True)  # the temporary bundle goes with self
        return self

    @classmethod
    def load(cls, path: str | os.PathLike, *, threads: int | None = None, device: str = "cpu") -> "Synthesizer":
        """A synthesizer for the bundle at ``path`` (written by ``save`` or ``augment train``); torch-free.

        ``device`` is ``cpu`` by default: the same seed gives the same bytes on one execution provider only."""
        from augment.bundle import load_bundle

        bundle = load_bundle(path)
        synth = cls.__new__(cls)
        synth.label = bundle.label_column
        cfg = bundle.json.get("training", {}).get("config") or {}
        synth.image_shape = tuple(bundle.json["codec"].get("image_shape") or ()) or None
        synth.config = cfg  # as recorded in the bundle (a dict): load does not need the training package
        synth._gen = None
        synth._attach(bundle, threads=threads, device=device)
        return synth

    def _attach(self, bundle, *, threads: int | None = None, device: str = "cpu") -> None:
        from augment.generator import Generator

        self._gen = Generator(bundle, threads=threads, device=device)

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the bundle to ``path`` (a folder or a URI; ``overwrite=True`` replaces an earlier bundle there)
        through ``write_bundle``, as `augment train` does: atomic, synced, the usual permissions."""
        from augment.bundle import ONNX_FILES, write_bundle
        from augment.fs import resolve

        gen = self._generator()
        out = resolve(path)
        if out.exists():
            if not overwrite:
                raise OutputExistsError(f"{out.uri!r} exists; pass overwrite=True to replace it")
            if not out.join("bundle.json").exists():
                raise OutputExistsError(f"{out.uri!r} exists and is not a bundle folder; choose another path")
        onnx = {name: gen.bundle.path / name for name in ONNX_FILES}
        saved = write_bundle(out.uri, gen.bundle.json, onnx, overwrite=overwrite)
        return saved.path if out.is_local else Path(saved.source)

    # ------------------------------------------------------------------------------------- what it holds
    def _generator(self):
        if self._gen is None:
            raise AugmentError("this Synthesizer is not fitted: call fit(data) or Synthesizer.load(path)")
        return self._gen

    @property
    def classes(self) -> list:
        """The label values, in class-index order (the label column's own type)."""
        return list(self._generator().classes)

    @property
    def schema(self) -> pa.Schema:
        """The real data's Arrow schema (label included): what sampling returns, without provenance."""
        return self._generator().schema

    @property
    def bundle_path(self) -> Path:
        return self._generator().bundle.path

    def info(self) -> dict:
        """What the bundle holds (``augment info --json``): columns and how they are modelled, classes, metrics."""
        from augment.commands.info import summarize

        return summarize(self._generator().bundle)

    def __repr__(self) -> str:
        if self._gen is None:
            return f"Synthesizer(label={self.label!r}, not fitted)"
        return f"Synthesizer(label={self.label!r}, classes={self.classes!r}, bundle={str(self.bundle_path)!r})"

    # ------------------------------------------------------------------------------------------- sampling
    def _sample_spec(self, per_class, rows, class_counts, balance, sampler, temperature, seed, provenance,
                     rows_per_file, where=(), where_proposal: str = "latent") -> JobSpec:
        gen = self._generator()
        if class_counts is not None and not isinstance(class_counts, (Mapping, str)):
            raise InputError("class_counts must be a mapping {class: rows} or a string 'a=10,b=20'")
        counts = resolve_counts(gen.classes, gen.bundle.class_counts, per_class=per_class,
                                class_counts=[class_counts] if isinstance(class_counts, str) else (class_counts or ()),
                                balance=balance, rows=rows)
        if isinstance(where, str):
            where = [where]
        if not isinstance(where, (list, tuple)) or not all(isinstance(w, str) for w in where):
            raise InputError("where must be a list of clauses such as ['age >= 60', 'job in retired|management']")
        return sample_spec(counts, _seed(seed), sampler=sampler, temperature=temperature, provenance=provenance,
                           where=where, where_proposal=where_proposal, rows_per_file=rows_per_file)

    def sample(self, per_class: int | None = None, *, rows: int | None = None, class_counts=None,
               balance: bool = False, sampler: str = "mixture", temperature: float = 1.0, seed: int = 0,
               provenance: bool = False, output: str = "pandas", rows_per_file: int = DEFAULT_ROWS_PER_FILE,
               where=(), where_proposal: str = "latent"):
        """Synthetic rows: exactly one of ``per_class``, ``rows`` (training proportions), ``class_counts``
        (``{"yes": 400}``) or ``balance=True``. A DataFrame, or ``output="arrow"`` for a pyarrow Table; the rows
        of ``augment generate`` with the same options and seed, in plan order (class by class).
        ``where=["age >= 60", "housing = yes"]``: every row meets every clause, counts stay exact (``--where``)."""
        spec = self._sample_spec(per_class, rows, class_counts, balance, sampler, temperature, seed, provenance,
                                 rows_per_file, where, where_proposal)
        return to_output(spec_table(self._generator(), spec), output)

    def stream(self, per_class: int | None = None, *, rows: int | None = None, class_counts=None,
               balance: bool = False, sampler: str = "mixture", temperature: float = 1.0, seed: int = 0,
               provenance: bool = False, rows_per_file: int = DEFAULT_ROWS_PER_FILE, where=(),
               where_proposal: str = "latent") -> Iterator[pa.RecordBatch]:
        """The rows of ``sample`` as Arrow RecordBatches (at most 65,536 rows each), decoded as they are
        consumed: memory holds one batch whatever the total, so ``rows=10**9`` can feed a training loop."""
        spec = self._sample_spec(per_class, rows, class_counts, balance, sampler, temperature, seed, provenance,
                                 rows_per_file, where, where_proposal)
        for chunk in iter_chunks(self._generator(), spec):
            yield from chunk.to_batches()

    def perturb(self, data, per_example: int = 1, *, noise: float = 1.0, seed: int = 0, provenance: bool = False,
                output: str = "pandas", rows_per_file: int = DEFAULT_ROWS_PER_FILE):
        """``per_example`` rows around each real row of ``data`` (its label kept): z = mu + noise * sigma * eps.

        The rows of ``augment generate --mode perturb --per-example N --noise X --from <data>``."""
        gen = self._generator()
        table = table_source(to_arrow(data, "perturb data"), gen.schema, gen.bundle.label_column, gen.classes,
                             "perturb data")
        spec = perturb_spec(per_example, noise, _seed(seed), provenance=provenance, rows_per_file=rows_per_file)
        return to_output(spec_table(gen, spec, table), output)

    # ----------------------------------------------------------------------------------------- evaluation
    def evaluate(self, train, test, synthetic, *, seed: int = 0, figures: bool = False,
                 report: str | os.PathLike | None = None, overwrite: bool = False, **options):
        """The metrics of ``augment evaluate`` (fidelity, utility, privacy) for ``synthetic`` against real
        ``train`` (what the model saw) and ``test`` (held out). Needs the ``evaluate`` extra. ``options``:
        fields of ``augment.evaluate.EvalConfig`` (``sweep_sizes=()`` skips the augmentation sweep).
        ``report``: also write metrics.json and index.html there. Returns an ``Evaluation`` (``.metrics``)."""
        from augment.extras import require

        require("evaluate", "Synthesizer.evaluate")
        from augment.evaluate import EvalConfig, run_evaluation, write_report

        gen = self._generator()
        try:
            config = EvalConfig(seed=_seed(seed), figures=figures or report is not None, **options)
        except (TypeError, ValueError) as err:
            raise AugmentError(f"evaluate: {err}") from None
        tables = {k: to_arrow(v, f"evaluate {k}") for k, v in (("train", train), ("test", test), ("synthetic", synthetic))}
        evaluation = run_evaluation(tables["train"], tables["test"], tables["synthetic"], gen.bundle.label_column,
                                    config=config, image_shape=gen.codec.image_shape, classes=list(gen.classes),
                                    model=gen)
        if report is not None:
            write_report(evaluation, report, overwrite=overwrite)
        return evaluation


def _seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise AugmentError(f"seed must be an integer >= 0, got {seed!r}")
    return seed
