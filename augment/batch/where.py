"""Conditional sampling (``--where``): a latent proposal per class, and chunks whose every row meets the condition.

Plain rejection decodes 1 / A rows per row kept (A: the share of decoded rows meeting the condition). The
per-class latent mixture does better: once per job and class, ``PROBE_PER_COMPONENT`` rows are decoded from
each mixture component (seeded from the job seed alone, so every process finds the same estimates), giving
each component's acceptance a_j. The ``latent`` proposal draws components with weights w_j * a_j (a floor
keeps components where the probe saw no hit) and rejects the rows that still miss; it decodes
sum(w a) / sum(w a^2) rows per row kept instead of 1 / sum(w a). Its component shares are w_j a_j^2 where the
exact conditional has w_j a_j: the rows lean towards the components that meet the condition most often
(benchmarks/bench_where.py measures what that costs in fidelity; ``reject`` is exact).

Chunk k of a shard holds exactly its planned rows: it draws from its own stream (``chunk_rng``) until enough
rows meet the condition, so chunks stay independent (decode lanes still apply) and the bytes do not depend on
the engine or the workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from augment.conditions import Condition, ConditionError, impossible, parse_where

__all__ = ["WherePlan", "ClassProposal", "where_plan", "where_chunk", "condition_for", "PROBE_PER_COMPONENT"]

PROBE_PER_COMPONENT = 256  # decoded rows per mixture component to estimate its acceptance (once per job)
PROBE_PRIOR_ROWS = 16_384  # rows of the prior sampler's probe (no components to weigh)
FLOOR = 0.05  # a component's acceptance in the proposal is at least this share of the class's acceptance
OVERSAMPLE = 1.15  # draw this much more than the estimate says a chunk needs (fewer top-up rounds)
MIN_DRAW_BUDGET = 2_000_000  # a chunk gives up after max(this, 200 x its rows / estimate) rows decoded


@dataclass(frozen=True)
class ClassProposal:
    """One class's estimates: the acceptance of plain draws, of the proposal, and the proposal mixture."""

    class_index: int
    plain: float  # estimated share of plain draws meeting the condition
    proposal: float  # estimated share of proposal draws meeting it
    probe_rows: int
    mixture: object | None = field(default=None, repr=False)  # GaussianMixture to draw from (None: plain)

    def to_json(self, classes: list) -> dict:
        return {"class": str(classes[self.class_index]), "estimated_plain": round(self.plain, 6),
                "estimated_proposal": round(self.proposal, 6), "probe_rows": self.probe_rows}


@dataclass(frozen=True)
class WherePlan:
    condition: Condition
    classes: dict[int, ClassProposal]


def condition_for(gen, texts) -> Condition:
    """``texts`` parsed against the bundle's schema and categories; the label is chosen by the counts."""
    label = gen.bundle.label_column
    if label is not None:
        on_label = [t for t in texts if isinstance(t, str) and _names_label(t, label)]
        if on_label:
            raise ConditionError(f"--where {on_label[0]!r}: the label {label!r} is chosen with --per-class, "
                                 "--class-counts, --balance or --rows, not --where")
    categories = {c.name: c.categories for c in gen.codec.columns if hasattr(c, "categories")}
    return parse_where(texts, gen.schema, categories)


def _names_label(text: str, label: str) -> bool:
    stripped = text.strip()
    return stripped.startswith(f"`{label}`") or (stripped.startswith(label) and stripped[len(label):len(label) + 1]
                                                 in (" ", "=", "!", "<", ">"))


def _probe_rng(seed: int, class_index: int) -> np.random.Generator:
    # key kind 2: never one of the shard (0) or source-shard (1) streams of plan.py
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(2, class_index))))


def _estimate(gen, spec, condition: Condition, c: int) -> ClassProposal:
    rng = _probe_rng(spec.seed, c)
    if spec.sampler != "mixture":
        table = gen.sample(c, PROBE_PRIOR_ROWS, rng, sampler=spec.sampler, temperature=spec.temperature)
        share = float(condition.mask(table).mean())
        return ClassProposal(c, share, share, PROBE_PRIOR_ROWS, None)
    mix = gen.mixture.mixtures[c]
    k = len(mix.weights)
    comp = np.repeat(np.arange(k), PROBE_PER_COMPONENT)
    hits = np.zeros(k)
    for start in range(0, comp.size, gen.batch_size):
        part = comp[start:start + gen.batch_size]
        z = mix.draw(part, rng, spec.temperature)
        features = gen.decode(z, np.full(part.size, c, dtype=np.int64), rng, spec.temperature)
        np.add.at(hits, part, condition.mask(features))
    share = hits / PROBE_PER_COMPONENT  # (k,) acceptance of each component
    plain = float(mix.weights @ share)
    if spec.where_proposal == "reject" or plain <= 0:
        return ClassProposal(c, plain, plain, comp.size, None)
    tilt = mix.weights * np.maximum(share, FLOOR * plain)
    tilt /= tilt.sum()
    return ClassProposal(c, plain, float(tilt @ share), comp.size, mix.with_weights(tilt))


_PLANS: dict[tuple, WherePlan] = {}  # (bundle sha256, spec) -> plan, kept for the life of the process


def _cached_plan(gen, spec) -> WherePlan:
    key = (gen.bundle.sha256, spec)
    if key not in _PLANS:
        if len(_PLANS) >= 8:
            _PLANS.pop(next(iter(_PLANS)))
        condition = condition_for(gen, spec.where)
        _PLANS[key] = WherePlan(condition, {c: _estimate(gen, spec, condition, c) for c, _ in spec.counts})
    return _PLANS[key]


def where_plan(gen, spec) -> WherePlan:
    """The condition and each class's proposal, made once per process (a pure function of bundle and spec).

    Refuses, before any row is written, a condition no training row of a class meets (the bundle's training
    summary), and, for bundles without one, a class whose probe found no row meeting it.
    """
    condition = condition_for(gen, spec.where)
    summary = gen.bundle.json.get("summary")
    bad = impossible(condition, summary, gen.classes, [c for c, _ in spec.counts])
    if bad:
        raise ConditionError("; ".join(bad))
    plan = _cached_plan(gen, spec)
    if not summary:
        empty = [p for p in plan.classes.values() if p.plain <= 0]
        if empty:
            names = ", ".join(repr(str(gen.classes[p.class_index])) for p in empty)
            raise ConditionError(f"no decoded row of class {names} in {empty[0].probe_rows:,} probe rows has "
                                 f"{condition} (this bundle has no training summary to tell rare from impossible)")
    return plan


def where_chunk(gen, spec, class_index: int, n: int, rng: np.random.Generator, schema_of) -> tuple[pa.Table, int]:
    """(``n`` rows of the class meeting the condition, rows decoded for them), drawn from ``rng`` alone."""
    plan = _cached_plan(gen, spec)
    proposal = plan.classes[class_index]
    accept = max(proposal.proposal, 1e-4)
    batch = max(1, getattr(gen, "batch_size", 1))
    budget = max(MIN_DRAW_BUDGET, int(200 * n / accept))
    parts, have, drawn = [], 0, 0
    while have < n:
        want = min(math.ceil((n - have) / accept * OVERSAMPLE), 64 * batch)
        m = -(-want // batch) * batch  # whole decoder batches
        kept, mask = gen.sample_where(class_index, m, rng, plan.condition, sampler=spec.sampler,
                                      temperature=spec.temperature, mixture=proposal.mixture)
        if kept.num_rows > n - have:
            kept = kept.slice(0, n - have)
            m = int(np.flatnonzero(mask)[kept.num_rows - 1]) + 1  # rows up to the last one kept
        drawn += m
        have += kept.num_rows
        if kept.num_rows:
            parts.append(schema_of(kept))
        if have < n and drawn > budget:
            raise ConditionError(f"--where {plan.condition}: only {have} of {drawn:,} decoded rows of class "
                                 f"{str(gen.classes[class_index])!r} met it; the model rarely makes such rows")
    return (parts[0] if len(parts) == 1 else pa.concat_tables(parts)), drawn
