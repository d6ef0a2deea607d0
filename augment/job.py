"""The batch job behind ``augment generate``: counts -> shard plan -> shards written by an engine -> manifest.

One job is a pure function of (bundle, ``JobSpec``): every shard draws from ``shard_rng(seed, class, index)``
and is cut into chunks whose sizes depend only on the output schema (``augment.shards``), so the bytes of
every file are the same whichever engine (``augment.engines``) runs the shards, with however many workers,
resumed or not. ``_manifest.json`` is written last (``augment.manifest``).

    gen = Generator.from_path("models/bank")
    spec = JobSpec(counts=tuple(resolve_counts(gen.classes, gen.bundle.class_counts, per_class=1000).items()))
    run_job(gen, spec, "synth/bank", engine="local")
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from augment.errors import AugmentError, ClassNameError, InputError, SchemaError
from augment.plan import DEFAULT_ROWS_PER_FILE, Shard, largest_remainder, plan_shards, plan_source_shards

__all__ = [
    "JobSpec",
    "MODES",
    "SAMPLERS",
    "parse_class_counts",
    "resolve_counts",
    "plan_job",
    "Source",
    "open_source",
    "run_job",
    "probe",
]

MODES = ("sample", "perturb", "interpolate")
SAMPLERS = ("mixture", "prior")
PROVENANCE = ("augment_mode", "augment_source_row", "augment_source_row_b", "augment_alpha")


@dataclass(frozen=True)
class JobSpec:
    """Everything that decides the bytes of a job's files (engine and workers do not)."""

    mode: str = "sample"
    counts: tuple[tuple[int, int], ...] = ()  # (class index, rows): sample mode and perturb --per-class
    seed: int = 0
    rows_per_file: int = DEFAULT_ROWS_PER_FILE
    sampler: str = "mixture"
    temperature: float = 1.0
    source: str | None = None  # --from
    per_example: int | None = None  # perturb: outputs per source row (streamed source)
    noise: float = 1.0
    pairs: int | None = None
    steps: int | None = None
    keep_consistent: bool = False
    min_distance: float | None = None  # drop rows closer than this to a --reference (training) row
    reference: str | None = None

    @property
    def filtered(self) -> bool:
        """Rows may be dropped after decoding (sample mode then draws more until each shard is full)."""
        return self.keep_consistent or self.min_distance is not None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise AugmentError(f"unknown mode {self.mode!r}; allowed: {', '.join(MODES)}")
        if self.sampler not in SAMPLERS:
            raise AugmentError(f"unknown sampler {self.sampler!r}; allowed: {', '.join(SAMPLERS)}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise AugmentError(f"--temperature must be a positive number, got {self.temperature}")
        if self.rows_per_file < 1:
            raise AugmentError(f"--rows-per-file must be >= 1, got {self.rows_per_file}")
        if not (self.noise >= 0 and math.isfinite(self.noise)):
            raise AugmentError(f"--noise must be >= 0, got {self.noise}")
        for name, rows in self.counts:
            if rows < 1:
                raise AugmentError(f"row count for class index {name} must be a positive integer, got {rows}")
        if self.mode != "sample" and not self.source:
            raise AugmentError(f"--mode {self.mode} needs --from SOURCE (a Parquet file or folder, or a CSV file)")
        if self.mode == "perturb":
            if (self.per_example is None) == (not self.counts):
                raise AugmentError("--mode perturb needs exactly one of --per-example N or --per-class N")
            if self.per_example is not None and self.per_example < 1:
                raise AugmentError(f"--per-example must be >= 1, got {self.per_example}")
        if self.mode == "interpolate":
            if not self.pairs or self.pairs < 1 or not self.steps or self.steps < 2:
                raise AugmentError(f"--mode interpolate needs --pairs >= 1 and --steps >= 2, got {self.pairs}, {self.steps}")
        if self.min_distance is not None and not (self.min_distance >= 0 and math.isfinite(self.min_distance)):
            raise AugmentError(f"--min-distance must be a number >= 0 or 'auto', got {self.min_distance}")
        if (self.min_distance is None) != (self.reference is None):
            raise AugmentError("--min-distance and --reference (the training rows) go together")
        if self.mode == "sample" and not self.counts:
            raise AugmentError("nothing to generate: give --per-class, --class-counts, --class-counts-file, --balance or --rows")

    def to_json(self) -> dict:
        d = asdict(self)
        d["counts"] = [list(c) for c in self.counts]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "JobSpec":
        return cls(**{**d, "counts": tuple(tuple(int(v) for v in c) for c in d.get("counts", ()))})


# ---------------------------------------------------------------- counts


def _class_lookup(classes: list) -> dict[str, int]:
    return {str(c): i for i, c in enumerate(classes)}


def _unknown(name: str, classes: list) -> ClassNameError:
    allowed = ", ".join(repr(str(c)) for c in classes)
    return ClassNameError(f"unknown class {name!r}; the bundle's classes are {allowed}")


def _positive(name: str, value, what: str = "count") -> int:
    try:
        n = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise AugmentError(f"{what} for class {name!r} must be a positive integer, got {value!r}") from None
    if isinstance(value, bool) or n < 1:
        raise AugmentError(f"{what} for class {name!r} must be a positive integer, got {value!r}")
    return n


def parse_class_counts(items: Iterable[str], classes: list) -> dict[int, int]:
    """``["yes=40000,no=5000"]`` -> ``{1: 40000, 0: 5000}``; names may hold ``=`` and ``,``.

    Each item is split on commas; a piece whose text after its last ``=`` is not an integer is joined to the
    next one, so ``a,b=5`` is class ``a,b`` and ``<=50K=10`` is class ``<=50K``.
    """
    lookup = _class_lookup(classes)
    out: dict[int, int] = {}
    for item in items:
        pending = ""
        for piece in str(item).split(","):
            text = f"{pending},{piece}" if pending else piece
            name, eq, count = text.rpartition("=")
            if not eq or not count.strip().lstrip("-").isdigit():
                pending = text
                continue
            pending = ""
            _add_count(out, name, count, lookup, classes)
        if pending.strip():
            raise AugmentError(f"bad --class-counts item {pending!r}: expected NAME=COUNT, e.g. yes=40000")
    return out


def _add_count(out: dict[int, int], name: str, count, lookup: dict[str, int], classes: list) -> None:
    key = name if name in lookup else name.strip()
    if key not in lookup:
        raise _unknown(name, classes)
    index = lookup[key]
    if index in out:
        raise AugmentError(f"class {key!r} is given twice in the class counts")
    out[index] = _positive(key, count)


def read_class_counts_file(path: str, classes: list) -> dict[int, int]:
    """A JSON object ``{"yes": 40000, "no": 5000}`` (or a list of ``[name, count]`` pairs)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read --class-counts-file {path!r}: {str(err).splitlines()[0]}") from err
    pairs = data.items() if isinstance(data, dict) else data
    lookup, out = _class_lookup(classes), {}
    try:
        for name, count in pairs:
            _add_count(out, str(name), count, lookup, classes)
    except (TypeError, ValueError):
        raise InputError(f"--class-counts-file {path!r} must hold a JSON object of class name -> count") from None
    return out


def resolve_counts(classes: list, train_counts: list[int], *, per_class: int | None = None,
                   class_counts: Iterable[str] = (), class_counts_file: str | None = None,
                   balance: bool = False, rows: int | None = None) -> dict[int, int]:
    """Rows per class index from exactly one of the counts options (sample mode)."""
    given = [n for n, v in (("--per-class", per_class is not None), ("--class-counts", bool(list(class_counts))),
                             ("--class-counts-file", class_counts_file is not None), ("--balance", balance),
                             ("--rows", rows is not None)) if v]
    if len(given) != 1:
        raise AugmentError("give exactly one of --per-class, --class-counts, --class-counts-file, --balance, --rows"
                           + (f" (got {', '.join(given)})" if given else ""))
    if per_class is not None:
        if per_class < 1:
            raise AugmentError(f"--per-class must be a positive integer, got {per_class}")
        return {i: per_class for i in range(len(classes))}
    if class_counts_file is not None:
        return read_class_counts_file(class_counts_file, classes)
    if rows is not None:
        if rows < 1:
            raise AugmentError(f"--rows must be a positive integer, got {rows}")
        parts = largest_remainder(rows, [float(c) for c in train_counts])
        return {i: n for i, n in enumerate(parts) if n > 0}
    if balance:
        top = max(train_counts)
        counts = {i: top - int(c) for i, c in enumerate(train_counts) if top - int(c) > 0}
        if not counts:
            raise AugmentError("--balance: every class already has the largest count; nothing to generate")
        return counts
    return parse_class_counts(class_counts, classes)


# ---------------------------------------------------------------- the source (--from)


@dataclass
class Source:
    """The ``--from`` data: checked against the bundle's schema, streamed or held (for random draws)."""

    path: str
    schema: pa.Schema  # the bundle's real schema (what rows are cast to)
    num_rows: int
    labels: np.ndarray  # (num_rows,) class index of every source row
    table: pa.Table | None = None  # loaded only where rows are drawn at random

    def class_rows(self) -> list[np.ndarray]:
        k = int(self.labels.max(initial=-1)) + 1
        order = np.argsort(self.labels, kind="stable")
        bounds = np.searchsorted(self.labels[order], np.arange(k + 1))
        return [order[bounds[c]:bounds[c + 1]] for c in range(k)]

    def iter_slices(self, shards: list[Shard]) -> Iterator[pa.Table]:
        """The source rows of each shard, in order, streamed (``shard.offset``, ``shard.units`` rows each)."""
        batches = _dataset(self.path).to_batches(columns=self.schema.names, batch_size=65_536)
        buf: list[pa.RecordBatch] = []
        have = 0
        for shard in shards:
            while have < shard.units:
                batch = next(batches, None)
                if batch is None:
                    raise InputError(f"--from {self.path!r} holds fewer rows than when the job was planned: "
                                     f"it changed while the job ran")
                buf.append(batch)
                have += batch.num_rows
            table = pa.Table.from_batches(buf)
            yield _cast(table.slice(0, shard.units), self.schema)
            rest = table.slice(shard.units)
            buf, have = rest.to_batches(), rest.num_rows


def _dataset(path: str):
    import pyarrow.dataset as ds

    fmt = "csv" if str(path).lower().endswith(".csv") else "parquet"
    return ds.dataset(path, format=fmt, ignore_prefixes=[".", "_"])


def _compatible(have: pa.DataType, want: pa.DataType) -> bool:
    if have.equals(want):
        return True
    num = lambda t: pa.types.is_integer(t) or pa.types.is_floating(t)  # noqa: E731
    text = lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)  # noqa: E731
    return (num(have) and num(want)) or (text(have) and text(want))


def _cast(table: pa.Table, schema: pa.Schema) -> pa.Table:
    table = table.select(schema.names)
    if table.schema.equals(schema, check_metadata=False):
        return table
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise SchemaError(f"--from rows do not fit the bundle's types: {str(err).splitlines()[0]}") from None


def open_source(path: str, real_schema: pa.Schema, label: str | None, classes: list, *, load: bool) -> Source:
    """Check ``--from`` against the bundle (columns, types, labels) before anything is written."""
    if not Path(path).exists():
        raise InputError(f"--from {path!r}: no such file or folder")
    try:
        dataset = _dataset(path)
        have = dataset.schema
    except (pa.ArrowException, OSError, ValueError) as err:
        raise InputError(f"cannot read --from {path!r}: {str(err).splitlines()[0]}") from None
    if label is None:
        raise SchemaError("this bundle was trained without a label column; perturb and interpolate need one")
    if label not in have.names:
        raise SchemaError(f"--from {path!r} has no label column {label!r}: perturbed rows keep their source label")
    for f in real_schema:
        if f.name not in have.names:
            raise SchemaError(f"--from {path!r} has no column {f.name!r}; the bundle needs {', '.join(real_schema.names)}")
        got = have.field(f.name).type
        if not _compatible(got, f.type):
            raise SchemaError(f"column {f.name!r} is {got} in --from but {f.type} in the bundle")
    if load:
        table = _cast(dataset.to_table(columns=real_schema.names), real_schema)
        label_col = table.column(label)
    else:
        table = None
        label_col = _cast(dataset.to_table(columns=real_schema.names[:0] + [label]),
                          pa.schema([real_schema.field(label)])).column(label)
    lookup = {str(c): i for i, c in enumerate(classes)}
    values = label_col.to_pylist()
    unknown = sorted({str(v) for v in values if str(v) not in lookup})
    if unknown:
        raise ClassNameError(f"--from holds labels {unknown[:5]} that the bundle does not know; its classes are "
                             + ", ".join(repr(str(c)) for c in classes))
    labels = np.fromiter((lookup[str(v)] for v in values), dtype=np.int64, count=len(values))
    if len(labels) == 0:
        raise InputError(f"--from {path!r} holds no rows")
    return Source(str(path), real_schema, len(labels), labels, table)


# ---------------------------------------------------------------- the plan


def plan_job(spec: JobSpec, source: Source | None = None) -> list[Shard]:
    if spec.mode == "sample" or (spec.mode == "perturb" and spec.per_example is None):
        return plan_shards(dict(spec.counts), spec.rows_per_file)
    if spec.mode == "perturb":
        return plan_source_shards(source.num_rows, spec.per_example, spec.rows_per_file)
    return plan_source_shards(spec.pairs, spec.steps, spec.rows_per_file)


# ---------------------------------------------------------------- running a job


def _load_source(spec: JobSpec, gen) -> Source | None:
    if spec.mode == "sample":
        return None
    held = spec.mode == "interpolate" or spec.per_example is None  # random draws need the rows at hand
    source = open_source(spec.source, gen.schema, gen.bundle.label_column, gen.classes, load=held)
    if spec.mode == "perturb" and spec.per_example is None:
        have = np.bincount(source.labels, minlength=len(gen.classes))
        missing = [repr(gen.classes[c]) for c, _ in spec.counts if have[c] == 0]
        if missing:
            raise InputError(f"--from holds no rows of class {', '.join(missing)} to perturb with --per-class")
    return source


def _items(spec: JobSpec, shards: list[Shard], todo: set[str], source: Source | None) -> Iterator[tuple[Shard, object]]:
    """(shard, what it reads) for every shard still to write; a streamed source is read once, in order."""
    if spec.mode == "perturb" and spec.per_example is not None:
        for shard, part in zip(shards, source.iter_slices(shards)):
            if shard.file_name in todo:
                yield shard, part
    else:
        for shard in shards:
            if shard.file_name in todo:
                yield shard, source


def probe(gen, spec: JobSpec, rows: int = 8192) -> tuple[float, float]:
    """(rows/s, bytes per row) of sampling and writing ``rows`` rows of class 0 in memory: the dry-run estimate."""
    from augment.shards import parquet_writer

    rng = np.random.default_rng(0)
    gen.sample(0, min(rows, 256), rng, sampler=spec.sampler)  # warm-up: first runs allocate
    t0 = time.perf_counter()
    table = gen.sample(0, rows, rng, sampler=spec.sampler, temperature=spec.temperature)
    sink = pa.BufferOutputStream()
    with parquet_writer(sink, table.schema) as w:
        w.write_table(table)
    seconds = time.perf_counter() - t0
    return rows / max(seconds, 1e-9), sink.getvalue().size / rows


def _fmt_rows(n: float) -> str:
    return f"{n:,.0f}"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n}"


def describe_plan(gen, spec: JobSpec, shards: list[Shard], out: str) -> str:
    rate, per_row = probe(gen, spec)
    total = sum(s.rows for s in shards)
    per_class: dict[int, int] = {}
    for s in shards:
        per_class[s.class_index] = per_class.get(s.class_index, 0) + s.rows
    lines = [f"plan: {spec.mode} {_fmt_rows(total)} rows in {len(shards)} file(s) -> {out} (nothing written: --dry-run)"]
    for c, n in sorted(per_class.items()):
        name = "mixed labels (from --from)" if c < 0 else repr(gen.classes[c])
        lines.append(f"  class {name}: {_fmt_rows(n)} rows in {sum(1 for s in shards if s.class_index == c)} file(s)")
    lines.append(f"estimate: {_fmt_bytes(per_row * total)} on disk, {total / rate:,.1f} s at "
                 f"{_fmt_rows(rate)} rows/s (in-process sampling probe, start-up not included)")
    return "\n".join(lines)


def run_job(gen, spec: JobSpec, out: str | os.PathLike, *, engine: str = "auto", workers: int | None = None,
            threads: int | None = None, ray_address: str | None = None, resume: bool = False, overwrite: bool = False, dry_run: bool = False,
            progress: bool = True, echo: Callable[[str], None] = print, die_marker: str | None = None) -> dict | None:
    """Plan, check, write every shard, then the manifest; returns the manifest (None for a dry run).

    Everything that can be wrong with the input is checked before the output folder is touched.
    """
    from augment.engines import choose_engine
    from augment.manifest import prepare_out_dir

    t_start = time.perf_counter()
    out = Path(out)
    source = _load_source(spec, gen)
    shards = plan_job(spec, source)
    total = sum(s.rows for s in shards)
    if total < 1:
        raise AugmentError("the plan holds no rows: nothing to generate")
    prepare_out_dir(out, overwrite=overwrite, resume=resume, dry_run=True)  # checks only
    if dry_run:
        echo(describe_plan(gen, spec, shards, str(out)))
        return None
    runner = choose_engine(engine, address=ray_address, workers=workers, threads=threads)
    if die_marker:  # tests: a Ray worker dies once mid-shard
        runner.die_marker = die_marker
    runner.prepare()  # connect to Ray (or fail) before the output folder is touched
    try:
        return _run(gen, spec, out, runner, shards, source, resume=resume, overwrite=overwrite, progress=progress,
                    echo=echo, t_start=t_start)
    finally:
        runner.close()


def _run(gen, spec: JobSpec, out: Path, runner, shards: list[Shard], source: Source | None, *, resume: bool,
         overwrite: bool, progress: bool, echo: Callable[[str], None], t_start: float) -> dict:
    from augment.manifest import (JOB_FILE, MANIFEST, build_manifest, check_job_file, prepare_out_dir,
                                  read_manifest, remove_temporaries, verified_shards, write_json_atomic)

    total = sum(s.rows for s in shards)
    resuming = prepare_out_dir(out, overwrite=overwrite, resume=resume)
    job = {"format": "augment-job/1", "bundle_path": str(gen.bundle.path), "bundle_sha256": gen.bundle.sha256,
           "spec": spec.to_json(), "plan": [s.to_json() for s in shards]}
    label = gen.bundle.label_column
    done: dict[str, dict] = {}
    if resuming:
        if (out / MANIFEST).exists():
            finished = read_manifest(out)
            if finished.get("options") != job["spec"] or finished["bundle"]["sha256"] != gen.bundle.sha256:
                raise AugmentError(f"--resume: {str(out)!r} holds a finished, different job; use --overwrite")
            echo(f"{out} is already complete ({_fmt_rows(finished['rows'])} rows); nothing to do")
            return finished
        check_job_file(out, job)
        remove_temporaries(out)
        done = verified_shards(out, shards, gen.output_schema, label)
    else:
        write_json_atomic(out / JOB_FILE, job)
    todo = {s.file_name for s in shards} - set(done)
    todo_rows = sum(s.rows for s in shards if s.file_name in todo)
    results = list(done.values())
    bar = _progress_bar(total, total - todo_rows, progress)
    t_gen = time.perf_counter()
    try:
        runner.run(gen, str(gen.bundle.path), spec, _items(spec, shards, todo, source), str(out),
                   on_rows=bar.update, on_shard=results.append, shards=len(todo))
    finally:
        bar.close()
        remove_temporaries(out)
    gen_s = time.perf_counter() - t_gen
    timings = {"generate_s": round(gen_s, 3), "total_s": round(time.perf_counter() - t_start, 3),
               "rows_per_s": round(todo_rows / max(gen_s, 1e-9), 1)}
    if getattr(runner, "startup_s", None) is not None:
        timings["ray_startup_s"] = round(runner.startup_s, 3)
    manifest = build_manifest(job=job, classes=gen.classes, results=results, timings=timings,
                              engine=runner.describe(), schema=gen.output_schema)
    write_json_atomic(out / MANIFEST, manifest)  # last: from here on the folder is a result
    (out / JOB_FILE).unlink(missing_ok=True)
    echo(summary(manifest, out, resumed=len(done)))
    return manifest


class _NoBar:
    """What ``--quiet`` gets: tqdm's interface, nothing drawn, tqdm not imported (30 ms of start-up)."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="rows", unit_scale=True, dynamic_ncols=True,
                disable=not enabled, desc="generate", smoothing=0.1)


def summary(manifest: dict, out: Path, resumed: int = 0) -> str:
    per_class = ", ".join(f"{c['class']}: {_fmt_rows(c['rows'])}" for c in manifest["rows_per_class"] if c["rows"])
    t = manifest["timings"]
    line = (f"wrote {_fmt_rows(manifest['rows'])} rows ({per_class}) in {len(manifest['files'])} file(s), "
            f"{_fmt_bytes(manifest['bytes'])}, {t['generate_s']:.1f} s ({_fmt_rows(t['rows_per_s'])} rows/s, "
            f"engine {manifest['engine']['name']}) to {out}")
    if resumed:
        line += f"; {resumed} file(s) kept from the interrupted run"
    if manifest.get("keep_consistent"):
        what = " and ".join(n for n, on in (("--keep-consistent", manifest["options"].get("keep_consistent")),
                                            ("--min-distance", manifest["options"].get("min_distance") is not None)) if on)
        line += f"; {what} kept {manifest['keep_consistent']['share_kept']:.1%} of decoded rows"
    return line
