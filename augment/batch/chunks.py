"""One shard decoded in memory, chunk by chunk: what the batch job writes, the service sends and the API returns.

A shard's chunks are a pure function of (bundle, spec, shard, source): the random stream is
``shard_rng(seed, class, index)`` (``chunk_rng`` per chunk when sampling) and the chunk size depends on the
output schema alone, so a file's bytes do not depend on the engine, the number of workers or the door.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from augment import arrays
from augment.batch.plan import Shard, chunk_rng, shard_rng
from augment.batch.where import where_chunk
from augment.errors import AugmentError

if TYPE_CHECKING:  # pragma: no cover
    from augment.batch.source import Source
    from augment.batch.spec import JobSpec

__all__ = ["ShardStats", "output_schema", "chunk_rows", "chunk_step", "shard_chunks", "sample_chunk",
           "sample_chunk_counted", "sample_chunk_rows", "uses_lanes", "first_job_row", "check_identifiers",
           "identifier_columns"]

CHUNK_BYTES = 16 << 20  # target in-memory size of one chunk (= one Parquet row group)
MAX_CHUNK_ROWS = 65_536
KEEP_CONSISTENT_MAX_DRAWS = 50  # give up when a shard needs more than this many times its rows


def output_schema(gen, spec: JobSpec) -> pa.Schema:
    """The columns a job writes: the real data's, plus the provenance columns when the spec asks for them."""
    return gen.output_schema if spec.provenance else gen.schema


def _columns(gen, spec: JobSpec, table: pa.Table) -> pa.Table:
    return table if spec.provenance else table.select(gen.schema.names)


def chunk_rows(schema: pa.Schema, batch: int = 1) -> int:
    """Rows per decoded chunk (= per Parquet row group): about CHUNK_BYTES, a multiple of ``batch``.

    Depends on the schema alone, so every engine cuts a shard the same way.
    """
    width = 0
    for f in schema:
        t = f.type
        if pa.types.is_fixed_size_list(t):
            width += t.list_size * max(1, t.value_type.bit_width // 8)
        elif pa.types.is_list(t) or pa.types.is_binary(t) or pa.types.is_large_list(t):
            width += 1024
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            width += 16
        else:
            width += 8
    rows = min(MAX_CHUNK_ROWS, max(1, CHUNK_BYTES // max(1, width)))
    return max(batch, rows // batch * batch)



def chunk_step(gen) -> int:
    """Rows per chunk of this generator's shards: ``chunk_rows`` in whole random-draw blocks."""
    return chunk_rows(gen.output_schema, getattr(gen, "block_rows", getattr(gen, "batch_size", 1)))


@dataclass
class ShardStats:
    drawn: int = 0  # rows decoded
    kept: int = 0  # rows written (differs only with --keep-consistent / --min-distance)
    where_drawn: int = 0  # rows decoded to find the rows meeting --where (0 without it)


def _consistent(gen, table: pa.Table) -> np.ndarray:
    """Rows whose label the bundle's per-class mixture agrees with, judged on the row's own encoding."""
    return np.asarray(gen.classify(table) == gen.codec.encode_labels(table), dtype=bool)


def _content_key(path: str) -> str:
    """sha256 over the files of ``path`` (a file or a folder, a path or a URI): a cache key that changes when
    the data does."""
    import hashlib

    from augment.fs import resolve

    root = resolve(path)
    files = [(n, root.join(n)) for n in root.files()] if root.is_dir() else [(root.name, root)]
    digest = hashlib.sha256()
    for name, loc in files:
        digest.update(f"{name}:{loc.sha256()};".encode())
    return digest.hexdigest()


def _privacy_filter(reference: str, label: str | None, threshold: float, image_shape: tuple | None):
    """The --min-distance filter over the --reference rows, built once per process (each worker loads it);
    cached by the reference's content, so a file rewritten between two calls is read again."""
    return _fitted_filter(_content_key(reference), reference, label, threshold, image_shape)


@functools.lru_cache(maxsize=2)
def _fitted_filter(key: str, reference: str, label: str | None, threshold: float, image_shape: tuple | None):
    from augment.evaluate.privacy import PrivacyFilter
    from augment.io import read_table

    return PrivacyFilter.fit(read_table(reference), label=label, threshold=threshold, image_shape=image_shape)


def _row_filter(gen, spec: JobSpec):
    """The spec's row filters as one function table -> keep mask (the privacy filter looked up once per shard)."""
    flt = None
    if spec.min_distance is not None:
        flt = _privacy_filter(spec.reference, gen.bundle.label_column, float(spec.min_distance), gen.codec.image_shape)

    def keep_mask(table: pa.Table) -> np.ndarray:
        mask = np.ones(table.num_rows, dtype=bool)
        if spec.keep_consistent:
            mask &= _consistent(gen, table)
        if flt is not None:
            mask &= flt.keep_mask(table)
        return mask

    return keep_mask


def _set_column(table: pa.Table, name: str, values: np.ndarray) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i), arrays.from_numpy(values, table.schema.field(i).type))


def _raw_chunks(gen, spec: JobSpec, shard: Shard, source: pa.Table | Source | None, step: int,
                rng: np.random.Generator, stats: ShardStats) -> Iterator[pa.Table]:
    """Decoded chunks of one shard, before any consistency filter (the shard's rows, or an endless stream)."""
    if spec.mode == "sample":
        if not spec.filtered:
            for k, n in enumerate(sample_chunk_rows(shard, step)):
                chunk, drawn = sample_chunk_counted(gen, spec, shard, k, n)
                stats.where_drawn += drawn
                yield chunk
            return
        batch = max(1, getattr(gen, "batch_size", 1))
        k = 0
        while True:  # an endless stream: draw what is still missing (whole batches), so small shards stay cheap
            missing = max(1, shard.rows - stats.kept)
            chunk, drawn = sample_chunk_counted(gen, spec, shard, k, min(step, -(-missing // batch) * batch))
            stats.where_drawn += drawn
            yield chunk
            k += 1
    elif spec.mode == "perturb" and shard.class_index < 0:  # streamed source slice, per_example rows each
        per = max(1, step // spec.per_example)
        for start in range(0, shard.units, per):
            part = source.slice(start, per)
            yield gen.perturb(part, spec.per_example, spec.noise, rng, source_offset=shard.offset + start,
                              temperature=spec.temperature)
    elif spec.mode == "perturb":  # --per-class: source rows of this class drawn with replacement
        rows = source.class_rows()[shard.class_index]
        if rows.size == 0:
            raise AugmentError(f"--from holds no rows of class {gen.classes[shard.class_index]!r} to perturb")
        for start in range(0, shard.rows, step):
            idx = rows[rng.integers(0, rows.size, size=min(step, shard.rows - start))]
            out = gen.perturb(source.table.take(arrays.from_numpy(idx)), 1, spec.noise, rng, temperature=spec.temperature)
            yield _set_column(out, "augment_source_row", idx)
    else:  # interpolate: pairs drawn at random, both ends of a pair from one class
        by_class = source.class_rows()
        per = max(1, step // spec.steps)
        for start in range(0, shard.units, per):
            n = min(per, shard.units - start)
            a = rng.integers(0, source.num_rows, size=n)
            pool = [by_class[c] for c in source.labels[a]]
            b = np.array([p[int(u * p.size)] for p, u in zip(pool, rng.random(n))], dtype=np.int64)
            out = gen.interpolate(source.table.take(arrays.from_numpy(a)), source.table.take(arrays.from_numpy(b)), spec.steps, rng,
                                  temperature=spec.temperature)
            out = _set_column(out, "augment_source_row", np.repeat(a, spec.steps))
            yield _set_column(out, "augment_source_row_b", np.repeat(b, spec.steps))


def sample_chunk_rows(shard: Shard, step: int) -> list[int]:
    """Rows of each chunk of a sampled shard (without row filters): ``step`` each, the rest in the last."""
    return [min(step, shard.rows - start) for start in range(0, shard.rows, step)]


def sample_chunk(gen, spec: JobSpec, shard: Shard, k: int, n: int) -> pa.Table:
    """Chunk ``k`` of a sampled shard: ``n`` rows from the chunk's own stream, so chunks may run in any thread."""
    return sample_chunk_counted(gen, spec, shard, k, n)[0]


def sample_chunk_counted(gen, spec: JobSpec, shard: Shard, k: int, n: int) -> tuple[pa.Table, int]:
    """(``sample_chunk``, rows decoded for it): more than ``n`` with ``--where``, whose rows all meet it."""
    rng = chunk_rng(spec.seed, shard.class_index, shard.index, k)
    if spec.where:
        table, drawn = where_chunk(gen, spec, shard.class_index, n, rng, lambda t: _columns(gen, spec, t))
    else:
        table = _columns(gen, spec, gen.sample(shard.class_index, n, rng, sampler=spec.sampler, temperature=spec.temperature))
        drawn = n
    if uses_lanes(spec) and identifier_columns(gen):  # chunk k starts k full chunks in (--where tops each chunk up)
        step = chunk_step(gen)
        table = gen.codec.fill_identifiers(table, first_job_row(spec, shard) + k * step, spec.seed)
    return table, drawn


def identifier_columns(gen) -> list:
    """The bundle's identifier columns (none for generators without a codec, such as test doubles)."""
    return list(getattr(getattr(gen, "codec", None), "identifiers", None) or ())


def first_job_row(spec: JobSpec, shard: Shard) -> int:
    """The shard's first row's number within the job: the rows the plan puts before it (classes in index
    order, then shards), so rows of different shards never share a number. Fresh identifiers derive from it."""
    if shard.class_index < 0:  # a source shard: ``offset`` source rows (or pairs) before it, each giving n rows
        return shard.offset * (spec.per_example if spec.mode == "perturb" else spec.steps)
    return sum(n for c, n in spec.counts if c < shard.class_index) + shard.offset


def check_identifiers(gen, total_rows: int) -> None:
    """Refuse, before anything is written, a job with more rows than an identifier column's format holds."""
    for col in identifier_columns(gen):
        if total_rows > col.rows_max:
            col.generate([total_rows - 1], 0)  # raises the column's one-line error


def shard_chunks(gen, spec: JobSpec, shard: Shard, source=None, stats: ShardStats | None = None) -> Iterator[pa.Table]:
    """The chunks of one shard, in order; a pure function of (bundle, spec, shard, source)."""
    chunks = _shard_chunks(gen, spec, shard, source, stats)
    if uses_lanes(spec) or not identifier_columns(gen):  # sample_chunk numbers them
        yield from chunks
        return
    row = first_job_row(spec, shard)
    for chunk in chunks:  # identifiers numbered after the row filters, so kept rows are numbered densely
        yield gen.codec.fill_identifiers(chunk, row, spec.seed)
        row += chunk.num_rows


def _shard_chunks(gen, spec: JobSpec, shard: Shard, source=None, stats: ShardStats | None = None) -> Iterator[pa.Table]:
    stats = stats if stats is not None else ShardStats()
    rng = shard_rng(spec.seed, shard.class_index, shard.index)
    step = chunk_step(gen)
    raw = _raw_chunks(gen, spec, shard, source, step, rng, stats)
    if not spec.filtered:
        for chunk in raw:
            stats.drawn += chunk.num_rows
            stats.kept += chunk.num_rows
            yield _columns(gen, spec, chunk)
        return
    exact = spec.mode == "sample"  # sampling tops up to the planned rows; other modes just drop
    keep_mask = _row_filter(gen, spec)
    for chunk in raw:
        mask = keep_mask(chunk)
        kept = chunk.filter(arrays.from_numpy(mask))
        consumed = chunk.num_rows
        if exact and kept.num_rows > shard.rows - stats.kept:
            kept = kept.slice(0, shard.rows - stats.kept)
            # count as drawn only the rows up to the last one kept, so the share kept is not understated
            consumed = int(np.flatnonzero(mask)[kept.num_rows - 1]) + 1 if kept.num_rows else 0
        stats.drawn += consumed
        stats.kept += kept.num_rows
        if kept.num_rows:
            yield _columns(gen, spec, kept)
        if exact and stats.kept >= shard.rows:
            return
        if exact and stats.drawn > KEEP_CONSISTENT_MAX_DRAWS * max(shard.rows, getattr(gen, "batch_size", 1)):
            raise AugmentError(f"the row filters (--keep-consistent / --min-distance) kept only {stats.kept} of "
                               f"{stats.drawn} rows of class {gen.classes[shard.class_index]!r}: lower --temperature, "
                               f"lower --min-distance or drop the filter")


def uses_lanes(spec: JobSpec) -> bool:
    """Whether a job's chunks are independent (sampling without row filters), so threads can decode them."""
    return spec.mode == "sample" and not spec.filtered
