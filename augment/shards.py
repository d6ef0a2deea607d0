"""One shard, decoded in chunks and written atomically: the unit of work every engine runs.

A shard's chunks are a pure function of (bundle, spec, shard, source): the random stream is
``shard_rng(seed, class, index)`` and the chunk size depends on the output schema alone, so a file's bytes do not
depend on the engine or the number of workers. ``write_shards`` decodes in the calling thread and hands chunks
through a bounded queue to a writer thread, so decoding and Parquet encoding overlap and memory holds a few
chunks at most. Each file is written under a hidden temporary name (``.tmp-...``, ignored by dataset readers)
and renamed into place when complete.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from augment import arrays
from augment.bundle import sha256_file
from augment.errors import AugmentError
from augment.plan import Shard, chunk_rng, shard_rng

if TYPE_CHECKING:  # pragma: no cover
    from augment.job import JobSpec, Source

__all__ = ["ShardStats", "chunk_rows", "shard_chunks", "write_shards", "parquet_writer", "sha256_file", "TMP_PREFIX"]

TMP_PREFIX = ".tmp-"
CHUNK_BYTES = 16 << 20  # target in-memory size of one chunk (= one Parquet row group)
MAX_CHUNK_ROWS = 65_536
KEEP_CONSISTENT_MAX_DRAWS = 50  # give up when a shard needs more than this many times its rows


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


# ---------------------------------------------------------------- decoding one shard


@dataclass
class ShardStats:
    drawn: int = 0  # rows decoded
    kept: int = 0  # rows written (differs only with --keep-consistent / --min-distance)


def _consistent(gen, table: pa.Table) -> np.ndarray:
    """Rows whose label the bundle's per-class mixture agrees with, judged on the row's own encoding."""
    return np.asarray(gen.classify(table) == gen.codec.encode_labels(table), dtype=bool)


@functools.lru_cache(maxsize=2)
def _privacy_filter(reference: str, label: str | None, threshold: float, image_shape: tuple | None):
    """The --min-distance filter over the --reference rows, built once per process (each worker loads it)."""
    from augment.evaluate.privacy import PrivacyFilter
    from augment.io import read_table

    return PrivacyFilter.fit(read_table(reference), label=label, threshold=threshold, image_shape=image_shape)


def _keep_mask(gen, spec: JobSpec, table: pa.Table) -> np.ndarray:
    mask = np.ones(table.num_rows, dtype=bool)
    if spec.keep_consistent:
        mask &= _consistent(gen, table)
    if spec.min_distance is not None:
        flt = _privacy_filter(spec.reference, gen.bundle.label_column, float(spec.min_distance), gen.codec.image_shape)
        mask &= flt.keep_mask(table)
    return mask


def _set_column(table: pa.Table, name: str, values: np.ndarray) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i), arrays.from_numpy(values, table.schema.field(i).type))


def _raw_chunks(gen, spec: JobSpec, shard: Shard, source: pa.Table | Source | None, step: int,
                rng: np.random.Generator, stats: ShardStats) -> Iterator[pa.Table]:
    """Decoded chunks of one shard, before any consistency filter (the shard's rows, or an endless stream)."""
    if spec.mode == "sample":
        if not spec.filtered:
            for k, n in enumerate(sample_chunk_rows(shard, step)):
                yield sample_chunk(gen, spec, shard, k, n)
            return
        batch = max(1, getattr(gen, "batch_size", 1))
        k = 0
        while True:  # an endless stream: draw what is still missing (whole batches), so small shards stay cheap
            missing = max(1, shard.rows - stats.kept)
            yield sample_chunk(gen, spec, shard, k, min(step, -(-missing // batch) * batch))
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
    rng = chunk_rng(spec.seed, shard.class_index, shard.index, k)
    return gen.sample(shard.class_index, n, rng, sampler=spec.sampler, temperature=spec.temperature)


def shard_chunks(gen, spec: JobSpec, shard: Shard, source=None, stats: ShardStats | None = None) -> Iterator[pa.Table]:
    """The chunks of one shard, in order; a pure function of (bundle, spec, shard, source)."""
    stats = stats if stats is not None else ShardStats()
    rng = shard_rng(spec.seed, shard.class_index, shard.index)
    step = chunk_rows(gen.output_schema, getattr(gen, "batch_size", 1))
    raw = _raw_chunks(gen, spec, shard, source, step, rng, stats)
    if not spec.filtered:
        for chunk in raw:
            stats.drawn += chunk.num_rows
            stats.kept += chunk.num_rows
            yield chunk
        return
    exact = spec.mode == "sample"  # sampling tops up to the planned rows; other modes just drop
    for chunk in raw:
        mask = _keep_mask(gen, spec, chunk)
        kept = chunk.filter(arrays.from_numpy(mask))
        consumed = chunk.num_rows
        if exact and kept.num_rows > shard.rows - stats.kept:
            kept = kept.slice(0, shard.rows - stats.kept)
            # count as drawn only the rows up to the last one kept, so the share kept is not understated
            consumed = int(np.flatnonzero(mask)[kept.num_rows - 1]) + 1 if kept.num_rows else 0
        stats.drawn += consumed
        stats.kept += kept.num_rows
        if kept.num_rows:
            yield kept
        if exact and stats.kept >= shard.rows:
            return
        if exact and stats.drawn > KEEP_CONSISTENT_MAX_DRAWS * max(shard.rows, getattr(gen, "batch_size", 1)):
            raise AugmentError(f"the row filters (--keep-consistent / --min-distance) kept only {stats.kept} of "
                               f"{stats.drawn} rows of class {gen.classes[shard.class_index]!r}: lower --temperature, "
                               f"lower --min-distance or drop the filter")


# ---------------------------------------------------------------- writing shards (decode here, write in a thread)


def parquet_writer(path: str | os.PathLike, schema: pa.Schema, label: str | None = None) -> pq.ParquetWriter:
    """Snappy; dictionary encoding for string columns only (random floats grow 1.5x and write 3-6x slower);
    min/max statistics for the label and the provenance mode only, so readers can still skip row groups by
    class (a filter on the label), while the feature columns' statistics (30% of the write time, of no use for
    random values) are left out."""
    strings = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    stats = [n for n in (label, "augment_mode") if n is not None and n in schema.names]
    where = str(path) if isinstance(path, (str, os.PathLike)) else path  # a path, or an Arrow output stream
    return pq.ParquetWriter(where, schema, compression="snappy", use_dictionary=strings or False,
                            write_statistics=stats or False)


def label_counts(table: pa.Table, label: str | None) -> dict[str, int]:
    if label is None:
        return {"None": table.num_rows}
    vc = pc.value_counts(table.column(label))
    return {str(v["values"]): int(v["counts"]) for v in vc.to_pylist()}


_DONE = object()


class _Writer(threading.Thread):
    """Consumes ("open", shard) / ("chunk", table) / ("close", stats) items and writes the files."""

    def __init__(self, out_dir: Path, schema: pa.Schema, label: str | None, items: queue.Queue,
                 on_rows: Callable[[int], None] | None, on_shard: Callable[[dict], None] | None):
        super().__init__(name="augment-parquet-writer", daemon=True)
        self.out_dir, self.schema, self.label, self.items = out_dir, schema, label, items
        self.on_rows, self.on_shard = on_rows, on_shard
        self.results: list[dict] = []
        self.error: BaseException | None = None
        self._writer = self._tmp = None

    def run(self) -> None:
        try:
            while True:
                item = self.items.get()
                if item is _DONE:
                    break
                getattr(self, "_" + item[0])(*item[1:])
        except BaseException as err:  # handed to the decoding thread, which raises it
            self.error = err
        finally:
            self._discard()

    def _open(self, shard: Shard) -> None:
        self._shard, self._rows, self._counts, self._t0 = shard, 0, {}, time.perf_counter()
        self._tmp = self.out_dir / f"{TMP_PREFIX}{shard.file_name}-{uuid.uuid4().hex[:12]}"
        self._writer = parquet_writer(self._tmp, self.schema, self.label)

    def _chunk(self, table: pa.Table) -> None:
        if not table.schema.equals(self.schema, check_metadata=False):
            table = table.cast(self.schema)
        self._writer.write_table(table, row_group_size=table.num_rows)
        self._rows += table.num_rows
        for k, v in label_counts(table, self.label).items():
            self._counts[k] = self._counts.get(k, 0) + v
        if self.on_rows:
            self.on_rows(table.num_rows)

    def _close(self, stats: ShardStats) -> None:
        self._writer.close()
        self._writer = None
        final = self.out_dir / self._shard.file_name
        result = {"file": final.name, "rows": self._rows, "bytes": self._tmp.stat().st_size,
                  "sha256": sha256_file(self._tmp), "rows_per_class": self._counts,
                  "drawn": stats.drawn, "seconds": round(time.perf_counter() - self._t0, 3),
                  "shard": self._shard.to_json()}
        os.replace(self._tmp, final)
        self._tmp = None
        self.results.append(result)
        if self.on_shard:
            self.on_shard(result)

    def _discard(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the file is removed below either way
                pass
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


def uses_lanes(spec: JobSpec) -> bool:
    """Whether a job's chunks are independent (sampling without row filters), so threads can decode them."""
    return spec.mode == "sample" and not spec.filtered


def write_shards(gen, spec: JobSpec, items: Iterable[tuple[Shard, object]], out_dir: str | os.PathLike, *,
                 on_rows: Callable[[int], None] | None = None, on_shard: Callable[[dict], None] | None = None,
                 queue_size: int = 3, threads: int | None = None) -> list[dict]:
    """Decode each (shard, source) and write it in a writer thread; returns one result per file.

    ``threads`` (None: ``gen`` as it is) is the cores to use. For sampling without row filters they become
    decode lanes: that many threads, each calling a one-thread onnxruntime session, decode the chunks at most
    ``2 * threads`` ahead of the writer, which writes them in plan order; each chunk has its own random stream,
    so the bytes are those of one lane. onnxruntime, numpy and Arrow release the GIL for the heavy work, so on 2
    cores two lanes decode about 1.6x the rows/s of one (benchmarks/bench_generate.py). Other modes decode in
    this thread with ``threads``-thread sessions. The queue holds at most ``queue_size`` chunks, so memory stays
    flat; an interrupt or error removes the temporary file of the shard in progress and re-raises.
    """
    lanes = 1
    if threads is not None and threads > 1 and uses_lanes(spec):
        gen, lanes = gen.with_threads(1), int(threads)
    elif threads is not None:
        gen = gen.with_threads(threads)
    label = (getattr(gen, "bundle", None) and gen.bundle.json.get("label", {}).get("column")) or None
    items_q: queue.Queue = queue.Queue(maxsize=queue_size)
    writer = _Writer(Path(out_dir), gen.output_schema, label, items_q, on_rows, on_shard)
    writer.start()

    def put(item) -> None:
        while True:
            if writer.error is not None or not writer.is_alive():
                raise writer.error or AugmentError("the Parquet writer thread stopped unexpectedly")
            try:
                items_q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    pool = ThreadPoolExecutor(lanes, thread_name_prefix="augment-decode") if lanes > 1 else None
    ahead: deque = deque()  # writer items in plan order; a Future stands for a chunk still being decoded

    def flush(limit: int) -> None:
        while len(ahead) > limit:
            item = ahead.popleft()
            put(("chunk", item.result()) if isinstance(item, Future) else item)

    step = chunk_rows(gen.output_schema, getattr(gen, "batch_size", 1))
    try:
        for shard, source in items:
            if pool is not None:  # lanes: sampling without row filters, for every shard of this call
                ahead.append(("open", shard))
                for k, n in enumerate(sample_chunk_rows(shard, step)):
                    ahead.append(pool.submit(sample_chunk, gen, spec, shard, k, n))
                    flush(2 * lanes)
                ahead.append(("close", ShardStats(drawn=shard.rows, kept=shard.rows)))
                continue
            stats = ShardStats()
            put(("open", shard))
            for chunk in shard_chunks(gen, spec, shard, source, stats):
                put(("chunk", chunk))
            put(("close", stats))
        flush(0)
        put(_DONE)
        writer.join()
    except BaseException:
        for item in ahead:
            if isinstance(item, Future):
                item.cancel()
        # Ctrl-C or a decoding error: the writer finishes the shards already fully decoded and removes the
        # temporary file of the one in progress, so what is on disk is whole files only.
        while writer.is_alive():
            try:
                items_q.put(_DONE, timeout=0.2)
                break
            except queue.Full:
                continue
        writer.join()
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if writer.error is not None:
        raise writer.error
    return writer.results
