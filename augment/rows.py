"""Rows in memory through the batch job's own planner: what the Python API returns and the service sends.

Every door (``augment generate``, ``Synthesizer.sample`` / ``stream``, ``POST /v1/generate``) turns its request
into a ``JobSpec``, plans it with ``plan_job`` and decodes each shard with ``shard_chunks``, so the same bundle,
seed and counts give the same rows, in plan order (class index order, then shard order), byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from augment.batch.chunks import output_schema, shard_chunks
from augment.batch.plan import DEFAULT_ROWS_PER_FILE, plan_job
from augment.batch.spec import JobSpec
from augment.batch.where import where_plan

__all__ = ["iter_chunks", "spec_table", "sample_spec", "perturb_spec", "generate_table", "perturb_table"]


def iter_chunks(gen, spec: JobSpec, source: pa.Table | None = None) -> Iterator[pa.Table]:
    """The chunks of every shard of ``spec``, in plan order; memory holds one chunk at a time.

    ``source``: the rows to perturb for ``--per-example`` perturbation (a table in memory, not a path).
    """
    if spec.mode == "sample":
        if spec.where:
            where_plan(gen, spec)  # an impossible condition fails before any row is decoded
        for shard in plan_job(spec):
            yield from shard_chunks(gen, spec, shard)
        return
    if spec.mode != "perturb" or spec.per_example is None or source is None:
        raise ValueError("in-memory generation covers sampling and --per-example perturbation of a table")
    for shard in plan_job(spec, source):
        yield from shard_chunks(gen, spec, shard, source.slice(shard.offset, shard.units))


def spec_table(gen, spec: JobSpec, source: pa.Table | None = None) -> pa.Table:
    """All rows of ``spec`` as one table (the concatenation of ``iter_chunks``)."""
    chunks = list(iter_chunks(gen, spec, source))
    if not chunks:
        return output_schema(gen, spec).empty_table()
    return chunks[0] if len(chunks) == 1 else pa.concat_tables(chunks)


def sample_spec(counts: dict[int, int], seed: int, *, sampler: str = "mixture", temperature: float = 1.0,
                provenance: bool = False, where=(), where_proposal: str = "latent",
                rows_per_file: int = DEFAULT_ROWS_PER_FILE) -> JobSpec:
    """The spec of ``augment generate`` for per-class counts (class index -> rows), ``--where`` clauses included."""
    return JobSpec(mode="sample", counts=tuple(sorted((int(c), int(n)) for c, n in counts.items() if n > 0)),
                   seed=int(seed), sampler=sampler, temperature=float(temperature), provenance=bool(provenance),
                   where=(where,) if isinstance(where, str) else tuple(where or ()), where_proposal=where_proposal,
                   rows_per_file=rows_per_file)


def perturb_spec(per_example: int, noise: float, seed: int, *, temperature: float = 1.0,
                 provenance: bool = False, rows_per_file: int = DEFAULT_ROWS_PER_FILE) -> JobSpec:
    """The spec of ``augment generate --mode perturb --per-example N`` over rows held in memory."""
    return JobSpec(mode="perturb", source="<in memory>", per_example=int(per_example), noise=float(noise),
                   seed=int(seed), temperature=float(temperature), provenance=bool(provenance),
                   rows_per_file=rows_per_file)


def generate_table(gen, counts: dict[int, int], seed: int, *, sampler: str = "mixture", temperature: float = 1.0,
                   provenance: bool = False, where=(), where_proposal: str = "latent") -> pa.Table:
    """Rows for per-class counts: the rows `augment generate` writes for them, in plan order."""
    return spec_table(gen, sample_spec(counts, seed, sampler=sampler, temperature=temperature, provenance=provenance,
                                       where=where, where_proposal=where_proposal))


def perturb_table(gen, table: pa.Table, per_example: int, noise: float, seed: int, *,
                  provenance: bool = False) -> pa.Table:
    """``per_example`` perturbed rows per row of ``table`` (``augment_source_row`` indexes its rows): the rows
    `augment generate --mode perturb --per-example N --from <these rows>` writes, in plan order."""
    return spec_table(gen, perturb_spec(per_example, noise, seed, provenance=provenance), table)
