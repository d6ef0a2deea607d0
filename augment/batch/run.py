"""The batch job behind ``augment generate``: counts -> shard plan -> shards written by an engine -> manifest.

One job is a pure function of (bundle, ``JobSpec``): every shard draws from ``shard_rng(seed, class, index)``
and is cut into chunks whose sizes depend only on the output schema (``augment.batch.chunks``), so the bytes of
every file are the same whichever engine (``augment.batch.engines``) runs the shards, with however many workers,
resumed or not. ``_manifest.json`` is written last (``augment.batch.manifest``).

    gen = Generator.from_path("models/bank")
    spec = JobSpec(counts=tuple(resolve_counts(gen.classes, gen.bundle.class_counts, per_class=1000).items()))
    run_job(gen, spec, "synth/bank", engine="local")
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa


from augment.batch.chunks import check_identifiers, identifier_columns, output_schema
from augment.batch.plan import Shard, plan_job
from augment.batch.source import Source, open_source
from augment.batch.spec import JobSpec
from augment.batch.where import WherePlan, where_plan
from augment.errors import AugmentError, InputError
from augment.fs import Location, resolve

__all__ = ["run_job", "probe", "describe_plan", "describe_where", "where_section", "summary"]



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
    """(rows/s, bytes per row) of sampling and writing ``rows`` rows of class 0 in memory on one core (one
    decode lane, one-thread onnxruntime and BLAS, as the engines decode): the dry-run estimate scales it by
    the engine's lanes or actors.

    At least two of the generator's random-draw blocks are timed, so the probe pays the per-block overheads
    in the proportion a job does (one part-filled block read 16% slow on bank), after a one-block warm-up;
    the faster of two timings is kept (a busy moment only ever slows a probe down).
    """
    from augment.batch.write import parquet_writer
    from augment.runtime import blas_single_thread

    block = int(getattr(gen, "block_rows", 0))
    rows = max(int(rows), 2 * block)
    gen = gen.with_threads(1)
    rng = np.random.default_rng(0)
    best, size = 0.0, 0
    with blas_single_thread():
        gen.sample(0, max(256, block), rng, sampler=spec.sampler)  # warm-up: first runs allocate
        for _ in range(2):
            t0 = time.perf_counter()
            table = gen.sample(0, rows, rng, sampler=spec.sampler, temperature=spec.temperature)
            sink = pa.BufferOutputStream()
            with parquet_writer(sink, table.schema) as w:
                w.write_table(table)
            best = max(best, rows / max(time.perf_counter() - t0, 1e-9))
            size = sink.getvalue().size
    return best, size / rows


def estimate_seconds(shards: list[Shard], rate: float, workers: int, startup_s: float) -> float:
    """Start-up plus the time ``workers`` workers, each at ``rate`` rows/s, need when each takes the next
    shard as it finishes its last (the engines' order): the last wave of a plan is often only partly full."""
    import heapq

    free = [0.0] * max(1, workers)
    for s in shards:
        heapq.heappush(free, heapq.heappop(free) + s.rows / rate)
    return startup_s + max(free)


def _fmt_rows(n: float) -> str:
    return f"{n:,.0f}"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n}"


def describe_plan(gen, spec: JobSpec, shards: list[Shard], out: str, runner=None) -> str:
    rate, per_row = probe(gen, spec)
    total = sum(s.rows for s in shards)
    per_class: dict[int, int] = {}
    for s in shards:
        per_class[s.class_index] = per_class.get(s.class_index, 0) + s.rows
    lines = [f"plan: {spec.mode} {_fmt_rows(total)} rows in {len(shards)} file(s) -> {out} (nothing written: --dry-run)"]
    for c, n in sorted(per_class.items()):
        name = "mixed labels (from --from)" if c < 0 else repr(gen.classes[c])
        lines.append(f"  class {name}: {_fmt_rows(n)} rows in {sum(1 for s in shards if s.class_index == c)} file(s)")
    workers, speed, startup, what = runner.capacity(len(shards)) if runner is not None else (1, 1.0, 0.0, "1 core")
    seconds = estimate_seconds(shards, rate * speed, workers, startup)
    lines.append(f"estimate: {_fmt_bytes(per_row * total)} on disk, {seconds:,.1f} s ({_fmt_rows(rate)} rows/s a "
                 f"core from an in-process probe; {what}; {startup:.1f} s start-up)")
    return "\n".join(lines)


def describe_where(gen, spec: JobSpec, plan: WherePlan) -> str:
    """The --dry-run lines of a conditional job: per class, the estimated share of decoded rows kept."""
    lines = [f"where: {plan.condition} (proposal {spec.where_proposal})"]
    for c, p in sorted(plan.classes.items()):
        kept = (f"; {len(p.kept)} of {p.cells} latent cells, dropping at most {p.dropped_bound:.2%} of the "
                f"conditional rows" if p.components and len(p.kept) < p.cells else "")
        if p.native is not None:
            kept = (f"; drawn from the --condition-on mixture of {p.native!r} ({p.native_share:.2%} of the class's "
                    f"training rows)") + kept
        lines.append(f"  class {str(gen.classes[c])!r}: estimated acceptance {p.proposal:.2%} "
                     f"(plain draws {p.plain:.2%}; {p.probe_rows:,} probe rows{kept}), "
                     f"{1 / max(p.proposal, 1e-9):,.1f} rows decoded per row written")
    return "\n".join(lines)


def where_section(gen, spec: JobSpec, results: list[dict]) -> dict | None:
    """The manifest's ``where``: the clauses, the estimates and the acceptance measured on this job's shards."""
    if not spec.where:
        return None
    plan = where_plan(gen, spec)
    measured: dict[int, list[int]] = {}
    for r in results:
        if r.get("where_drawn"):
            m = measured.setdefault(r["shard"]["class_index"], [0, 0])
            m[0] += r["where_drawn"]
            m[1] += r["shard"]["rows"]
    per_class = []
    for c, p in sorted(plan.classes.items()):
        entry = p.to_json(gen.classes)
        if c in measured:
            entry.update(decoded=measured[c][0], kept=measured[c][1],
                         acceptance=round(measured[c][1] / max(1, measured[c][0]), 6))
        per_class.append(entry)
    return {"clauses": list(spec.where), "proposal": spec.where_proposal, "per_class": per_class}


def run_job(gen, spec: JobSpec, out: str | os.PathLike, *, engine: str = "auto", workers: int | None = None,
            threads: int | None = None, ray_address: str | None = None, gpus_per_worker: float = 0.0, resume: bool = False, overwrite: bool = False, dry_run: bool = False,
            progress: bool = True, echo: Callable[[str], None] = print, die_marker: str | None = None) -> dict | None:
    """Plan, check, write every shard, then the manifest; returns the manifest (None for a dry run).

    Everything that can be wrong with the input is checked before the output folder is touched.
    """
    from augment.batch.engines import choose_engine
    from augment.batch.manifest import prepare_out_dir

    t_start = time.perf_counter()
    out = resolve(out)  # at the edge: workers get an absolute path or a URI, never a relative path
    source = _load_source(spec, gen)
    shards = plan_job(spec, source)
    total = sum(s.rows for s in shards)
    if total < 1:
        raise AugmentError("the plan holds no rows: nothing to generate")
    check_identifiers(gen, total)
    conditional = where_plan(gen, spec) if spec.where else None  # an impossible condition fails here
    prepare_out_dir(out, overwrite=overwrite, resume=resume, dry_run=True)  # checks only
    runner = choose_engine(engine, address=ray_address, workers=workers, threads=threads,
                           gpus_per_worker=gpus_per_worker)
    if dry_run:
        echo(describe_plan(gen, spec, shards, out.uri, runner))
        if conditional is not None:
            echo(describe_where(gen, spec, conditional))
        return None
    if die_marker:  # tests: a Ray worker dies once mid-shard
        runner.die_marker = die_marker
    runner.prepare()  # connect to Ray (or fail) before the output folder is touched
    try:
        return _run(gen, spec, out, runner, shards, source, resume=resume, overwrite=overwrite, progress=progress,
                    echo=echo, t_start=t_start)
    finally:
        runner.close()


def _run(gen, spec: JobSpec, out: Location, runner, shards: list[Shard], source: Source | None, *, resume: bool,
         overwrite: bool, progress: bool, echo: Callable[[str], None], t_start: float) -> dict:
    from augment.batch.manifest import (JOB_FILE, abandon, build_manifest, check_job_file, finish,
                                        prepare_out_dir, read_manifest, remove_temporaries, verified_shards,
                                        write_json_atomic)

    total = sum(s.rows for s in shards)
    created = not out.exists()
    resuming = prepare_out_dir(out, overwrite=overwrite, resume=resume)
    job = {"format": "augment-job/1", "bundle_path": gen.bundle.source, "bundle_sha256": gen.bundle.sha256,
           "spec": spec.to_json(), "plan": [s.to_json() for s in shards], **run_environment(gen)}
    label = gen.bundle.label_column
    done: dict[str, dict] = {}
    if resuming:
        finished = read_manifest(out)
        if finished is not None:
            if finished.get("options") != job["spec"] or finished.get("bundle", {}).get("sha256") != gen.bundle.sha256:
                raise AugmentError(f"--resume: {out.uri!r} holds a finished, different job; use --overwrite")
            echo(f"{out} is already complete ({_fmt_rows(finished.get('rows', 0))} rows); nothing to do")
            return finished
        check_job_file(out, job)
        remove_temporaries(out)
        done = verified_shards(out, shards, output_schema(gen, spec), label)
    else:
        write_json_atomic(out.join(JOB_FILE), job)
    todo = {s.file_name for s in shards} - set(done)
    todo_rows = sum(s.rows for s in shards if s.file_name in todo)
    results = list(done.values())
    bar = _progress_bar(total, total - todo_rows, progress)
    t_gen = time.perf_counter()
    try:
        runner.run(gen, gen.bundle.source, spec, _items(spec, shards, todo, source), out.uri,
                   on_rows=bar.update, on_shard=results.append, shards=len(todo))
    except Exception:  # an error, not Ctrl-C (whose message offers --resume)
        if not resuming:  # a job that never committed a file leaves nothing behind
            abandon(out, created)
        raise
    finally:
        bar.close()
        remove_temporaries(out)
    gen_s = time.perf_counter() - t_gen
    timings = {"generate_s": round(gen_s, 3), "total_s": round(time.perf_counter() - t_start, 3),
               "rows_per_s": round(todo_rows / max(gen_s, 1e-9), 1)}
    if getattr(runner, "startup_s", None) is not None:
        timings["ray_startup_s"] = round(runner.startup_s, 3)
    where = where_section(gen, spec, results)
    manifest = build_manifest(job=job, classes=gen.classes, results=results, timings=timings,
                              engine=runner.describe(), schema=output_schema(gen, spec),
                              extra={"provider": job["provider"],
                                     "identifiers": [{"name": c.name, "format": c.format} for c in identifier_columns(gen)],
                                     **({"where": where} if where else {})})
    finish(out, manifest)  # the manifest last: from here on the folder is a result
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


def run_environment(gen) -> dict:
    """What the bytes depend on besides the spec and bundle: the execution provider and augment's version."""
    from augment import __version__

    return {"provider": getattr(gen, "provider", "CPUExecutionProvider"), "augment_version": __version__}


def summary(manifest: dict, out, resumed: int = 0) -> str:
    per_class = ", ".join(f"{c['class']}: {_fmt_rows(c['rows'])}" for c in manifest["rows_per_class"] if c["rows"])
    t = manifest["timings"]
    line = (f"wrote {_fmt_rows(manifest['rows'])} rows ({per_class}) in {len(manifest['files'])} file(s), "
            f"{_fmt_bytes(manifest['bytes'])}, {t['generate_s']:.1f} s ({_fmt_rows(t['rows_per_s'])} rows/s, "
            f"engine {manifest['engine']['name']}) to {out}")
    if resumed:
        line += f"; {resumed} file(s) kept from the interrupted run"
    measured = [c for c in (manifest.get("where") or {}).get("per_class", []) if "acceptance" in c]
    if measured:
        line += "; --where kept " + ", ".join(f"{c['acceptance']:.1%} ({c['class']})" for c in measured) + \
                " of decoded rows"
    if manifest.get("keep_consistent") and manifest["keep_consistent"]["share_kept"] is not None:
        what = " and ".join(n for n, on in (("--keep-consistent", manifest["options"].get("keep_consistent")),
                                            ("--min-distance", manifest["options"].get("min_distance") is not None)) if on)
        line += f"; {what} kept {manifest['keep_consistent']['share_kept']:.1%} of decoded rows"
    return line
