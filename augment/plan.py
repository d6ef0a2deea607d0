"""Shard plans: which rows of which class each output file holds, and the seed that makes them.

A shard's random stream is derived from (job seed, class index, shard index) alone, through numpy's
``SeedSequence``, so a bundle + seed + counts gives byte-identical rows whatever the number of workers, the
engine, or whether the job was resumed. (Ray Data's default per-task seeding repeats streams across tasks;
ray issue 50638. Deriving the stream from the shard's identity avoids that.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Shard", "plan_shards", "shard_rng", "DEFAULT_ROWS_PER_FILE"]

DEFAULT_ROWS_PER_FILE = 100_000


@dataclass(frozen=True)
class Shard:
    """One output file: ``rows`` rows of class ``class_index``, the ``index``-th shard of that class."""

    class_index: int
    index: int
    rows: int
    offset: int  # rows of this class planned before this shard

    @property
    def file_name(self) -> str:
        return f"class={self.class_index:04d}-part={self.index:05d}.parquet"

    def to_json(self) -> dict:
        return asdict(self)


def plan_shards(counts: dict[int, int], rows_per_file: int = DEFAULT_ROWS_PER_FILE) -> list[Shard]:
    """Split per-class row counts (class index -> rows) into shards of at most ``rows_per_file`` rows.

    Classes come out in index order and shards in order within a class, so the plan is a pure function of
    its arguments.
    """
    if rows_per_file < 1:
        raise ValueError(f"rows_per_file must be >= 1, got {rows_per_file}")
    shards: list[Shard] = []
    for class_index in sorted(counts):
        n = int(counts[class_index])
        if n < 0:
            raise ValueError(f"row count for class index {class_index} must be >= 0, got {n}")
        for index, offset in enumerate(range(0, n, rows_per_file)):
            shards.append(Shard(class_index, index, min(rows_per_file, n - offset), offset))
    return shards


def shard_rng(job_seed: int, class_index: int, shard_index: int) -> np.random.Generator:
    """The random stream of one shard, independent of every other shard's."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(job_seed), class_index, shard_index])))
