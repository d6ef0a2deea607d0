"""Shard plans: which rows of which class each output file holds, and the seed that makes them.

A shard's random stream is derived from (job seed, class index, shard index) alone, through numpy's
``SeedSequence``, so a bundle + seed + counts gives byte-identical rows whatever the number of workers, the
engine, or whether the job was resumed. (Ray Data's default per-task seeding repeats streams across tasks;
ray issue 50638. Deriving the stream from the shard's identity avoids that.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "Shard",
    "plan_shards",
    "plan_source_shards",
    "shard_rng",
    "chunk_rng",
    "largest_remainder",
    "DEFAULT_ROWS_PER_FILE",
    "plan_job",
]

DEFAULT_ROWS_PER_FILE = 100_000


@dataclass(frozen=True)
class Shard:
    """One output file: ``rows`` rows of class ``class_index``, the ``index``-th shard of that class."""

    class_index: int  # -1 for a shard of a streamed source (perturb --per-example): its rows carry mixed labels
    index: int
    rows: int  # output rows
    offset: int  # rows of this class planned before this shard (or, for a source shard, its first source row)
    units: int = 0  # source rows (perturb) or pairs (interpolate) this shard consumes; 0 for sampling

    @property
    def file_name(self) -> str:
        if self.class_index < 0:
            return f"part={self.index:05d}.parquet"
        return f"class={self.class_index:04d}-part={self.index:05d}.parquet"

    @classmethod
    def from_json(cls, d: dict) -> "Shard":
        return cls(**{k: int(d[k]) for k in ("class_index", "index", "rows", "offset", "units") if k in d})

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


def plan_source_shards(units: int, rows_per_unit: int, rows_per_file: int = DEFAULT_ROWS_PER_FILE) -> list[Shard]:
    """Shards over ``units`` source rows (or pairs), each giving ``rows_per_unit`` output rows.

    A shard takes ``max(1, rows_per_file // rows_per_unit)`` units, so files stay near ``rows_per_file`` rows.
    Shards have ``class_index`` -1; the seed of shard ``i`` is ``shard_rng(seed, -1, i)``.
    """
    if rows_per_file < 1 or rows_per_unit < 1:
        raise ValueError(f"rows_per_file and rows_per_unit must be >= 1, got {rows_per_file}, {rows_per_unit}")
    step = max(1, rows_per_file // rows_per_unit)
    return [
        Shard(-1, index, min(step, units - start) * rows_per_unit, start, min(step, units - start))
        for index, start in enumerate(range(0, units, step))
    ]


def largest_remainder(total: int, weights: list[float]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` that sum to exactly ``total``.

    Each part gets the floor of its exact share; the rows left over go to the largest fractional remainders
    (ties to the lower index), so the result is deterministic.
    """
    w = np.asarray(weights, dtype=np.float64)
    if total < 0 or w.size == 0 or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need total >= 0 and non-negative weights with a positive sum, got {total}, {weights}")
    exact = w / w.sum() * total
    parts = np.floor(exact).astype(np.int64)
    left = int(total - parts.sum())
    order = sorted(range(w.size), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[:left]:
        parts[i] += 1
    return [int(p) for p in parts]


def shard_rng(job_seed: int, class_index: int, shard_index: int) -> np.random.Generator:
    """The random stream of one shard, independent of every other shard's.

    The shard's identity goes in the ``spawn_key``, not the entropy: entropy words are zero-padded to the pool
    size, so ``SeedSequence([s, c, 0])`` equals ``SeedSequence([s, c])`` and a list of words would make
    different shards (or seeds above 2**32) share a stream. Source shards (class -1) get their own key kind.
    """
    return np.random.Generator(np.random.PCG64(_shard_seed(job_seed, class_index, shard_index)))


def chunk_rng(job_seed: int, class_index: int, shard_index: int, chunk_index: int) -> np.random.Generator:
    """The random stream of one chunk of a sampled shard: the shard's ``chunk_index``-th spawned child.

    Chunks with their own streams can be decoded concurrently (in threads) and still give the same bytes.
    """
    return np.random.Generator(np.random.PCG64(_shard_seed(job_seed, class_index, shard_index, (chunk_index,))))


def _shard_seed(job_seed: int, class_index: int, shard_index: int, extra: tuple = ()) -> np.random.SeedSequence:
    if job_seed < 0:
        raise ValueError(f"the job seed must be >= 0, got {job_seed}")
    key = (0, class_index, shard_index) if class_index >= 0 else (1, 0, shard_index)
    return np.random.SeedSequence(int(job_seed), spawn_key=key + tuple(extra))


def plan_job(spec, source=None) -> list[Shard]:
    """The shards of a job: per class for sampling (and perturb --per-class), else over the source's rows."""
    if spec.mode == "sample" or (spec.mode == "perturb" and spec.per_example is None):
        return plan_shards(dict(spec.counts), spec.rows_per_file)
    if spec.mode == "perturb":
        return plan_source_shards(source.num_rows, spec.per_example, spec.rows_per_file)
    return plan_source_shards(spec.pairs, spec.steps, spec.rows_per_file)
