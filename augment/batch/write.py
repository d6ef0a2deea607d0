"""Shards written atomically: decode in the calling thread (or in decode lanes), encode Parquet in a writer thread.

``write_shards`` hands chunks through a bounded queue to a writer thread, so decoding and Parquet encoding
overlap and memory holds a few chunks at most. Each file is written to a local temporary file and committed
whole by ``augment.fs.commit`` (fsync + rename on local disk, one upload to a bucket), then its result (rows,
sha256) is recorded in ``_shards/<file>.json``, which ``--resume`` checks a kept file against.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from augment.batch.chunks import (ShardStats, chunk_step, output_schema, sample_chunk_counted, sample_chunk_rows,
                                  shard_chunks, uses_lanes)
from augment.batch.plan import Shard
from augment.bundle import sha256_file
from augment.errors import AugmentError
from augment.fs import TMP_PREFIX, Location, commit, resolve

if TYPE_CHECKING:  # pragma: no cover
    from augment.batch.spec import JobSpec

__all__ = ["write_shards", "parquet_writer", "label_counts", "sha256_file", "TMP_PREFIX", "RESULTS_DIR",
           "record_result"]

RESULTS_DIR = "_shards"  # one small JSON per committed file: what --resume verifies a kept file against


def record_result(out_dir: Location, result: dict) -> None:
    """After a file is committed: its rows and sha256, written whole (a torn record is no record)."""
    data = json.dumps(result, ensure_ascii=False).encode("utf-8")
    out_dir.join(RESULTS_DIR, f"{result['file']}.json").write_bytes(data)


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

    def __init__(self, out_dir: Location, schema: pa.Schema, label: str | None, items: queue.Queue,
                 on_rows: Callable[[int], None] | None, on_shard: Callable[[dict], None] | None):
        super().__init__(name="augment-parquet-writer", daemon=True)
        self.out_dir, self.schema, self.label, self.items = out_dir, schema, label, items
        self.on_rows, self.on_shard = on_rows, on_shard
        self.results: list[dict] = []
        self.error: BaseException | None = None
        self._writer = self._tmp = None
        self._commit: contextlib.ExitStack | None = None

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
        self._commit = contextlib.ExitStack()
        self._tmp = self._commit.enter_context(commit(self.out_dir.join(shard.file_name)))
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
        result = {"file": self._shard.file_name, "rows": self._rows, "bytes": self._tmp.stat().st_size,
                  "sha256": sha256_file(self._tmp), "rows_per_class": self._counts,
                  "drawn": stats.drawn, "where_drawn": stats.where_drawn, "seconds": round(time.perf_counter() - self._t0, 3),
                  "shard": self._shard.to_json()}
        done, self._commit, self._tmp = self._commit, None, None
        done.close()  # commits the file: renamed into place, or uploaded whole
        record_result(self.out_dir, result)
        self.results.append(result)
        if self.on_shard:
            self.on_shard(result)

    def _discard(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the file is removed below either way
                pass
        if self._commit is not None:  # an unfinished shard: its temporary file is removed, nothing committed
            self._commit.__exit__(AugmentError, AugmentError("discarded"), None)
            self._commit = self._tmp = None


def write_shards(gen, spec: JobSpec, items: Iterable[tuple[Shard, object]], out_dir: str | os.PathLike | Location, *,
                 on_rows: Callable[[int], None] | None = None, on_shard: Callable[[dict], None] | None = None,
                 queue_size: int = 3, threads: int | None = None) -> list[dict]:
    """Decode each (shard, source) and write it in a writer thread; returns one result per file.

    ``threads`` (None: ``gen`` as it is) is the cores to use. For sampling without row filters they become
    decode lanes: that many threads, each calling a one-thread onnxruntime session, decode the chunks at most
    ``2 * threads`` ahead of the writer, which writes them in plan order; each chunk has its own random stream,
    so the bytes are those of one lane. onnxruntime, numpy and Arrow release the GIL for the heavy work, so on 2
    cores two lanes decode about 1.4x the rows/s of one (benchmarks/bench_generate.py). Other modes decode in
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
    writer = _Writer(resolve(out_dir), output_schema(gen, spec), label, items_q, on_rows, on_shard)
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
            if isinstance(item[0], Future):  # (chunk being decoded, its shard's stats)
                table, drawn = item[0].result()
                item[1].where_drawn += drawn
                item = ("chunk", table)
            put(item)

    step = chunk_step(gen)
    try:
        for shard, source in items:
            if pool is not None:  # lanes: sampling without row filters, for every shard of this call
                ahead.append(("open", shard))
                stats = ShardStats(drawn=shard.rows, kept=shard.rows)
                for k, n in enumerate(sample_chunk_rows(shard, step)):
                    ahead.append((pool.submit(sample_chunk_counted, gen, spec, shard, k, n), stats))
                    flush(2 * lanes)
                ahead.append(("close", stats))
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
            if isinstance(item[0], Future):
                item[0].cancel()
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
