"""``JobSpec``: everything that decides the bytes of a job's files (the engine and the workers do not)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from augment.batch.plan import DEFAULT_ROWS_PER_FILE
from augment.constants import MODES, SAMPLERS, WHERE_PROPOSALS
from augment.errors import AugmentError

__all__ = ["JobSpec"]


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
    provenance: bool = False  # write the augment_* provenance columns (mode, source rows, alpha)
    where: tuple[str, ...] = ()  # --where clauses, all must hold (augment.conditions); sample mode
    where_proposal: str = "latent"  # latent: the cells carrying the condition (augment.batch.where); reject: plain

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
        if self.where_proposal not in WHERE_PROPOSALS:
            raise AugmentError(f"unknown --where-proposal {self.where_proposal!r}; allowed: {', '.join(WHERE_PROPOSALS)}")
        if self.where and self.mode != "sample":
            raise AugmentError(f"--where applies to --mode sample, not {self.mode}")
        if self.mode == "sample" and not self.counts:
            raise AugmentError("nothing to generate: give --per-class, --class-counts, --class-counts-file, --balance or --rows")

    def to_json(self) -> dict:
        d = asdict(self)
        d["counts"] = [list(c) for c in self.counts]
        d["where"] = list(self.where)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "JobSpec":
        return cls(**{**d, "counts": tuple(tuple(int(v) for v in c) for c in d.get("counts", ())),
                      "where": tuple(d.get("where", ()))})
