"""Conditional sampling (``--where``): a latent proposal per class, and chunks whose every row meets the condition.

Plain rejection decodes 1 / A rows per row kept, A the share of a class's decoded rows meeting the condition.
Write the class's latent mixture as cells c (below) of prior mass v_c and acceptance a_c, so A = sum_c v_c a_c:
the model's exact conditional puts the share v_c a_c / A of its rows in cell c. The ``latent`` proposal keeps
that exactly in the cells it draws and drops only cells that together carry a bounded share of it:

1. Cells. ``PROBE_PER_COMPONENT`` rows decoded from each component j give its direction u_j (in its whitened
   coordinates eps, z = m_j + L_j eps: from the mean of its draws to the mean of those meeting the condition)
   and cut it into ``STRATA`` slices of equal mass along u_j: v_c = w_j / STRATA. A cell is drawn exactly: the
   part of eps across u_j is independent of the part along it, which is replaced by a standard normal
   restricted to the slice (by its quantile, ``ndtri``). The direction is chosen from data, but any direction
   gives an exact partition, so exactness does not depend on it; only the gain does.
2. Candidates. ``PROBE_PER_CELL`` rows per cell estimate a_c; in ascending order, the run of cells whose
   estimated share of the conditional mass is at most ``EPS`` that leaves the highest acceptance (and raises
   it by ``MIN_GAIN`` at least: no bias is spent for nothing).
3. Certificate. A third probe, on its own stream, decodes rows from the candidates in proportion to their mass
   (n_c = ceil(N v_c / V_D), so every probe row stands for at most V_D / N of the mass); the longest run of
   candidates whose dropped mass, bounded above at 95% (a Poisson upper limit on their hit count times the
   largest mass one of their probe rows stands for), is at most ``EPS`` * A is dropped. This probe is what makes
   the bound honest: the candidates were chosen for having few hits in the cell probe (a cell with 0 hits in 128
   rows may still hold 2%, and the luckiest of 400 bias a bound computed on the same rows low), while the
   certifying probe's hits are independent of that choice. tests/test_where_proposal.py builds that trap.
4. Draws. Cells of the kept set K with their prior mass renormalised (v_c / V_K), decode, reject the misses.

The rows kept then follow the model's conditional restricted to K exactly, and their total-variation distance
to the full conditional is the dropped share delta = sum_{c not in K} v_c a_c / A <= ``EPS`` (at 95%, up to the
noise of the estimate of A, about 1 / sqrt(its hits)); the acceptance is A (1 - delta) / V_K. For a given set
of cells nothing exact does better: a scheme drawing cell c with any probability q_c and thinning each hit by
(v_c / q_c) / M, M = max_K v_c / q_c, to restore the conditional, accepts sum_K v_c a_c / M, and M >= V_K since
sum_K q_c = 1; equality at q proportional to v. What is left to choose is how much mass to give up (``EPS``) and
how finely to cut (``STRATA``). On bank, dropping whole components only (a first version of this module)
raised the acceptance 1.03-1.15x on the speed benchmark's conditions, slices of 8 1.27-2.26x
(benchmarks/bench_where.py, docs/generate.md).
Tilting the component weights towards acceptance without thinning (w_j a_j, what this module did before) was
faster but biased: its component shares were w_j a_j^2, and it missed the fidelity goals. ``reject`` (plain
rejection, K = all) is exact; a condition the latent does not decide, or a rare one the probes cannot
certify, keeps every cell (plain rejection, the same rows as ``reject``).

5. Categorical clauses (``augment.gate``): each draw from cell c is kept with p(z) / M_c, p(z) the chance its
   row meets them (from the logits, no draw), M_c >= p over the cell (an envelope: 1.5 x the largest p of its
   probe rows, raised until a probe of its own finds it clips at most ``CLIP_EPS`` of the mass), and cell c is
   drawn at v_c M_c: exact where M_c bounds p, and a cell whose best z makes the clauses unlikely is drawn
   that much less often. Without an envelope (``reject``, the prior) M_c = 1: the same rows in law as drawing
   and testing the values.

``--condition-on`` (``native_for``): where the bundle has latent mixtures per value of a column the condition
tests (per category, or per quantile bin of a number, fitted to the training rows holding it), the plan draws
from the mixture of the allowed values instead of the class's. A categorical column's values are then drawn
from the allowed ones (nothing to reject); a number column's clauses are still tested (its bins straddle a
bound). The other clauses get the cells above over that mixture, where it meets them less than half the time.

All probes are seeded from the job seed and the class alone, so every process finds the same plan, and the
plan (cells kept, the estimates, the bound) goes into ``--dry-run`` and the manifest.

Chunk k of a shard holds exactly its planned rows: it draws from its own stream (``chunk_rng``) until enough
rows meet the condition, so chunks stay independent (decode lanes still apply) and the bytes do not depend on
the engine or the workers.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from augment import arrays
from augment.columns.types import is_temporal, to_physical
from augment.conditions import Condition, ConditionError, impossible, parse_where
from augment.draws import standard_normal
from augment.sampler import GaussianMixture

__all__ = ["WherePlan", "ClassProposal", "where_plan", "where_chunk", "condition_for", "PROBE_PER_COMPONENT",
           "STRATA", "EPS", "CellMixture", "draw_cells", "ndtri", "poisson_upper", "candidates", "certify_rows",
           "certified", "NativeMixture", "native_for", "allowed_bins", "spill", "envelope", "clipped_share"]

PROBE_PER_COMPONENT = 256  # decoded rows per mixture component: its acceptance and its direction
STRATA = 8  # cells per component: equal-mass slices of its draws along its direction
PROBE_PER_CELL = 128  # decoded rows per cell to estimate its acceptance
PROBE_PRIOR_ROWS = 16_384  # rows of the prior sampler's probe (no components to weigh)
EPS = 0.02  # the most of a class's conditional mass the latent proposal may drop (95% upper bound)
ALPHA = 0.05  # the bound on the dropped mass holds with probability 1 - ALPHA
MIN_GAIN = 1.05  # drop cells only if that raises the acceptance this much (no bias spent for nothing)
CERTIFY_ROWS = (4_096, 131_072)  # certifying probe rows: 60 V_D / (EPS A) (0 hits use 5% of the bound), within
OVERSAMPLE = 1.15  # draw this much more than the estimate says a chunk needs (fewer top-up rounds)
MIN_DRAW_BUDGET = 2_000_000  # a chunk gives up after max(this, 200 x its rows / estimate) rows decoded
SAFETY = 1.5  # the envelope M_c of a cell: this times the largest p(z) of its probe rows ...
FLOOR = 0.01  # ... and at least this (a cell whose probe rows never met the clauses is still drawn)
CLIP_ROWS = 32  # rows per kept cell of the probe that measures what the envelope clips
NATIVE_CELLS_BELOW = 0.5  # a native mixture gets cells only where its draws meet the other clauses less often
CLIP_EPS = 0.01  # the envelope is raised (x2) until it clips at most this share of the gated mass


@dataclass(frozen=True)
class ClassProposal:
    """One class's estimates: the acceptance of plain draws, of the proposal, and the proposal to draw from.

    ``kept``: the latent cells (j * STRATA + r: stratum r of component j) the proposal draws from, each with its
    prior mass; ``dropped_share`` / ``dropped_bound``: the estimated share of the class's conditional rows in the
    other cells and its 95% upper bound (the total-variation distance to the model's conditional).
    """

    class_index: int
    plain: float  # estimated share of plain draws meeting the condition
    proposal: float  # estimated share of proposal draws meeting it
    probe_rows: int
    mixture: object | None = field(default=None, repr=False)  # CellMixture to draw from (None: plain)
    components: int = 0  # components of the class's mixture (0: no mixture, the prior sampler)
    kept: tuple[int, ...] = ()
    kept_weight: float = 1.0  # W_K, the plain mixture's mass on the kept cells
    dropped_share: float = 0.0
    dropped_bound: float = 0.0
    envelope_mass: float = 1.0  # sum_K v_c M_c / W_K: 1 without an envelope (the categorical clauses' bound)
    clipped_share: float = 0.0  # the share of the conditional mass the envelope clips (its probe's estimate)
    native: str | None = None  # the --condition-on column whose own mixture the proposal draws from
    native_share: float = 0.0  # the share of the class's training rows holding its allowed values

    @property
    def cells(self) -> int:
        return self.components * STRATA

    def to_json(self, classes: list) -> dict:
        out = {"class": str(classes[self.class_index]), "estimated_plain": round(self.plain, 6),
               "estimated_proposal": round(self.proposal, 6), "probe_rows": self.probe_rows}
        if self.native is not None:
            out.update(native=self.native, native_share=round(self.native_share, 6))
        if self.components:
            out.update(components=self.components, cells=self.cells, cells_kept=len(self.kept),
                       kept_weight=round(self.kept_weight, 6), dropped_share=round(self.dropped_share, 6),
                       dropped_share_bound=round(self.dropped_bound, 6))
            if self.envelope_mass < 1.0:
                out.update(envelope_mass=round(self.envelope_mass, 6), clipped_share=round(self.clipped_share, 6))
        return out


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


def _probe_rng(seed: int, class_index: int, kind: int = 2) -> np.random.Generator:
    # key kinds 2 (first probe) and 3 (certifying probe): never one of the shard (0) or source-shard (1) streams
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(kind, class_index))))


@functools.lru_cache(maxsize=4096)
def poisson_upper(hits: int, alpha: float = ALPHA) -> float:
    """The one-sided 1 - alpha upper limit of a Poisson mean after ``hits`` events: the mean m whose
    P(X <= hits; m) = alpha (exact, by bisection; -ln(alpha) for 0 hits)."""
    if hits == 0:
        return -math.log(alpha)
    if hits > 100:  # Wilson-Hilferty, within 0.001% there
        k, z = hits + 1, 1.6448536269514722 if alpha == 0.05 else _z(alpha)
        return k * (1 - 1 / (9 * k) + z / (3 * math.sqrt(k))) ** 3

    def cdf(m: float) -> float:
        terms = [i * math.log(m) - m - math.lgamma(i + 1) for i in range(hits + 1)]
        top = max(terms)
        return math.exp(top) * math.fsum(math.exp(t - top) for t in terms)

    lo, hi = float(hits), hits + 10.0 * math.sqrt(hits + 1) + 10.0
    for _ in range(60):  # the bracket shrinks below 1e-15 of its width
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) > alpha else (lo, mid)
    return hi


def _z(alpha: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(1 - alpha)


def candidates(weights: np.ndarray, share: np.ndarray, eps: float = EPS, plain: float | None = None) -> np.ndarray:
    """The cells the estimates say may go: in ascending order of estimated acceptance ``share``, the run whose
    estimated share of the conditional mass (of ``plain``, by default weights @ share) is at most ``eps`` that
    leaves the highest acceptance."""
    plain = float(weights @ share) if plain is None else plain
    order = np.lexsort((np.arange(share.size), share))  # ascending acceptance, ties by index
    mass = np.concatenate([[0.0], np.cumsum(weights[order] * share[order])])
    weight = np.concatenate([[0.0], np.cumsum(weights[order])])
    best, best_ratio = 0, plain
    for m in range(1, share.size):  # at least one cell stays
        if mass[m] > eps * plain:
            break
        ratio = (plain - mass[m]) / max(1.0 - weight[m], 1e-300)
        if ratio > best_ratio:
            best, best_ratio = m, ratio
    return order[:best] if best_ratio >= MIN_GAIN * plain else order[:0]


def certify_rows(weights: np.ndarray, drop: np.ndarray, plain: float, eps: float = EPS) -> np.ndarray:
    """Rows of the certifying probe per candidate (in the order of ``drop``): N in proportion to the weights."""
    w = weights[drop]
    total = math.ceil(60 * w.sum() / max(eps * plain, 1e-300))
    total = min(max(total, CERTIFY_ROWS[0]), CERTIFY_ROWS[1])
    return np.maximum(1, np.ceil(total * w / w.sum())).astype(np.int64)


def certified(weights: np.ndarray, drop: np.ndarray, rows: np.ndarray, hits: np.ndarray, plain: float,
              eps: float = EPS, alpha: float = ALPHA) -> tuple[int, float, float]:
    """(how many of the candidates ``drop`` may go, their estimated dropped mass, its 1 - alpha upper bound).

    Candidate i carries w_i a_i of the mass; ``hits[i]`` of its ``rows[i]`` certifying rows met the condition.
    The mass of the first m is sum c_i (rows_i a_i) <= max c_i * Lambda with c_i = w_i / rows_i, and Lambda (the
    expected hits of those rows) is below the Poisson upper limit of their hit count: that product is the bound.
    The longest run of candidates whose bound is at most ``eps`` * plain goes.
    """
    c = weights[drop] / rows
    top, total = np.maximum.accumulate(c), np.cumsum(hits)

    def bound(m: int) -> float:  # nondecreasing in m, so the longest run is found by bisection
        return float(top[m - 1]) * poisson_upper(int(total[m - 1]), alpha)

    lo, hi = 0, drop.size  # bound(lo) fits (lo = 0: nothing dropped); find the largest m that does
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if bound(mid) <= eps * plain else (lo, mid - 1)
    if lo == 0:
        return 0, 0.0, 0.0
    return lo, float(c[:lo] @ hits[:lo]), bound(lo)


def ndtri(p: np.ndarray, q: np.ndarray | None = None) -> np.ndarray:
    """The standard normal quantile of ``p`` (float64; Acklam's rational approximation, relative error below
    1.2e-9); ``q`` = 1 - p computed without cancellation, where the caller has it (the upper tail)."""
    p = np.asarray(p, dtype=np.float64)
    q = 1.0 - p if q is None else np.asarray(q, dtype=np.float64)
    low = np.minimum(p, q).clip(1e-300, 0.5)
    x = np.empty_like(low)
    tail = low < 0.02425
    t = np.sqrt(-2.0 * np.log(low[tail]))
    x[tail] = ((((((-7.784894002430293e-03 * t - 3.223964580411365e-01) * t - 2.400758277161838e+00) * t
                 - 2.549732539343734e+00) * t + 4.374664141464968e+00) * t + 2.938163982698783e+00)
               / ((((7.784695709041462e-03 * t + 3.224671290700398e-01) * t + 2.445134137142996e+00) * t
                   + 3.754408661907416e+00) * t + 1.0))
    s = low[~tail] - 0.5
    r = s * s
    x[~tail] = (((((((-3.969683028665376e+01 * r + 2.209460984245205e+02) * r - 2.759285104469687e+02) * r
                   + 1.383577518672690e+02) * r - 3.066479806614716e+01) * r + 2.506628277459239e+00) * s)
                / (((((-5.447609879822406e+01 * r + 1.615858368580409e+02) * r - 1.556989798598866e+02) * r
                     + 6.680131188771972e+01) * r - 1.328068155288572e+01) * r + 1.0))
    return np.where(p <= q, x, -x)


def draw_cells(mix, directions: np.ndarray | None, comp: np.ndarray, stratum: np.ndarray | None,
               rng: np.random.Generator, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(z, eps): one draw from each (component, stratum) cell, ``stratum`` None for the whole component.

    z = m_j + T L_j eps with eps ~ N(0, I) restricted to the cell: the slice STRATA ** -1 of the standard normal
    mass along the unit ``directions[j]`` (the part of eps across it is independent of the part along it, so
    replacing the part along it by a normal truncated to the slice, by its quantile, is exact).
    """
    n, d = len(comp), mix.means.shape[1]
    eps = standard_normal(rng, (n, d))
    if stratum is not None:
        u = directions.astype(np.float32)[comp]
        uni = rng.random(n)
        along = ndtri((stratum + uni) / STRATA, (STRATA - stratum - uni) / STRATA).astype(np.float32)
        eps += (along - np.einsum("nd,nd->n", eps, u))[:, None] * u
    return mix.transform(comp, eps * np.float32(temperature)), eps


@dataclass(frozen=True, eq=False)
class CellMixture:
    """The latent proposal: the kept cells of a class's mixture, each drawn with its prior mass w_j / STRATA
    (renormalised over the cells kept), or, with ``bounds`` (an envelope M_c per kept cell on the chance that a
    row decoded there meets the condition's categorical clauses), with w_j / STRATA * M_c: the generator then
    accepts a draw from cell c with p(z) / M_c (``augment.gate``). ``sample_bounded`` is what it calls."""

    mix: GaussianMixture
    directions: np.ndarray  # (k, d) one unit vector per component, in its whitened coordinates
    cells: np.ndarray  # (m,) kept cells, j * STRATA + r, ascending
    bounds: np.ndarray | None = None  # (m,) M_c of each kept cell, or None (no envelope: M_c = 1)
    forced: tuple = ()  # columns the mixture answers (a native one): drawn from their allowed values, not tested

    @property
    def weights(self) -> np.ndarray:
        w = self.mix.weights[self.cells // STRATA]
        if self.bounds is not None:
            w = w * self.bounds
        return w / w.sum()

    @functools.cached_property
    def _cum(self) -> np.ndarray:
        return np.cumsum(self.weights)

    def sample(self, n: int, rng: np.random.Generator, temperature: float = 1.0) -> np.ndarray:
        return self.sample_bounded(n, rng, temperature)[0]

    def sample_bounded(self, n: int, rng: np.random.Generator, temperature: float = 1.0):
        """(z (n, d), the bound M of each draw's cell (n,), or 1.0 without an envelope)."""
        pick = np.searchsorted(self._cum, rng.random(n), side="right").clip(0, self.cells.size - 1)
        cell = self.cells[pick]
        z = draw_cells(self.mix, self.directions, cell // STRATA, cell % STRATA, rng, temperature)[0]
        return z, (1.0 if self.bounds is None else self.bounds[pick])


@dataclass(frozen=True, eq=False)
class NativeMixture:
    """A ``--condition-on`` proposal: the mixture of the allowed values of ``forced`` columns, drawn whole."""

    mix: GaussianMixture
    forced: tuple

    def sample(self, n: int, rng: np.random.Generator, temperature: float = 1.0) -> np.ndarray:
        return self.mix.sample(n, rng, temperature)

    def sample_bounded(self, n: int, rng: np.random.Generator, temperature: float = 1.0):
        return self.sample(n, rng, temperature), 1.0


def _probe(gen, spec, condition: Condition, c: int, mix, comp: np.ndarray, rng, directions=None,
           stratum=None, keep_eps: bool = False, gate=None):
    """(hits, whitened draws if asked, the gate's p(z) if given) of one decoded row from each cell (``comp``,
    ``stratum``)."""
    hits = np.zeros(comp.size, dtype=bool)
    eps = np.empty((comp.size, mix.means.shape[1]), np.float32) if keep_eps else None
    gated = np.empty(comp.size) if gate is not None else None
    for start in range(0, comp.size, gen.batch_size):
        part = slice(start, start + gen.batch_size)
        z, e = draw_cells(mix, directions, comp[part], None if stratum is None else stratum[part], rng,
                          spec.temperature)
        labels = np.full(z.shape[0], c, dtype=np.int64)
        if gate is None:
            features = gen.decode(z, labels, rng, spec.temperature, columns=condition.columns)  # tested alone
        else:
            params = gen.params(z, labels)
            gated[part] = gate.prob(params, spec.temperature)
            features = pa.table(gen.codec.inverse_columns(params, rng, spec.temperature, condition.columns))
        hits[part] = condition.mask(features)
        if keep_eps:
            eps[part] = e
    return hits, eps, gated


def envelope(cells: np.ndarray, gated: np.ndarray, n_cells: int, safety: float = SAFETY) -> np.ndarray:
    """(n_cells,) M_c: ``safety`` times the largest p(z) the probe rows of each cell had, within [FLOOR, 1]."""
    top = np.zeros(n_cells)
    np.maximum.at(top, cells, gated)
    return np.clip(safety * top, FLOOR, 1.0)


def clipped_share(cells: np.ndarray, gated: np.ndarray, bounds: np.ndarray, v: np.ndarray) -> float:
    """The share of the gated conditional mass an envelope loses where p(z) > M_c, from probe rows ``cells``
    (drawn at the cells' prior mass within each): sum_c v_c E_c (p - M_c)+ / sum_c v_c E_c p."""
    n = np.bincount(cells, minlength=v.size).clip(1)
    over = np.bincount(cells, np.maximum(gated - bounds[cells], 0.0), v.size) / n
    mean = np.bincount(cells, gated, v.size) / n
    total = float(v @ mean)
    return float(v @ over) / total if total > 0 else 0.0


def directions_of(comp: np.ndarray, eps: np.ndarray, hits: np.ndarray, k: int) -> np.ndarray:
    """(k, d): per component, the unit vector from the mean of its whitened draws to the mean of those that hit
    (the first axis where there is no such difference: no hit, or all hits)."""
    d = eps.shape[1]
    out = np.zeros((k, d))
    out[:, 0] = 1.0
    for j in range(k):
        mine = comp == j
        h = hits[mine]
        if h.any() and not h.all():
            v = eps[mine][h].astype(np.float64).mean(0) - eps[mine].astype(np.float64).mean(0)
            norm = float(np.linalg.norm(v))
            if norm > 1e-12:
                out[j] = v / norm
    return out


def _estimate(gen, spec, condition: Condition, c: int) -> ClassProposal:
    rng = _probe_rng(spec.seed, c)
    if spec.sampler != "mixture":
        table = gen.sample(c, PROBE_PRIOR_ROWS, rng, sampler=spec.sampler, temperature=spec.temperature)
        share = float(condition.mask(table).mean())
        return ClassProposal(c, share, share, PROBE_PRIOR_ROWS, None)
    native = native_for(gen, condition, c) if spec.where_proposal != "reject" else None
    if native is None:
        return _cells(gen, spec, condition, c, gen.mixture.mixtures[c], rng)
    column, mix, share, answered = native
    forced = (column,) if answered else ()
    rest = Condition(tuple(cl for cl in condition.clauses if cl.column not in forced))
    whole = NativeMixture(mix, forced)
    if not rest.clauses:  # every row the native mixture gives meets the condition
        return ClassProposal(c, 1.0, 1.0, 0, whole, native=column, native_share=share)
    # the native mixture mostly meets the other clauses already: the cells could at most double the acceptance
    # (in practice 1.15x on bank), for 1,152 probe rows per component (2 s for `age >= 47`'s 404) and a share
    # of the mass dropped, so they are used only where it is low
    z = mix.sample(PROBE_PRIOR_ROWS, rng, spec.temperature)
    table = gen.decode(z, np.full(PROBE_PRIOR_ROWS, c, dtype=np.int64), rng, spec.temperature, columns=rest.columns)
    quick = float(rest.mask(table).mean())
    if quick >= NATIVE_CELLS_BELOW:
        return ClassProposal(c, quick, quick, PROBE_PRIOR_ROWS, whole, native=column, native_share=share)
    p = _cells(gen, spec, rest, c, mix, rng, forced=forced)
    return dataclasses.replace(p, mixture=p.mixture or whole, native=column, native_share=share,
                               probe_rows=p.probe_rows + PROBE_PRIOR_ROWS)


def native_for(gen, condition: Condition, c: int) -> tuple[str, GaussianMixture, float, bool] | None:
    """(column, the mixture of its allowed values, their share of the class's training rows, whether the
    column's clauses are answered by it) for the most selective ``--condition-on`` column the condition tests,
    or None. A column qualifies when every allowed value (category, or bin of a number column) that class
    ``c``'s training rows hold has a mixture of its own (one held by fewer than NATIVE_MIN_ROWS rows has none,
    and the cells answer the condition instead). A categorical column's values are then drawn from the allowed
    ones (answered); a bin may hold values on both sides of a bound, so a number column's clauses stay tested."""
    if not hasattr(gen, "native"):
        return None
    gate = gen.gate(condition) if hasattr(gen, "gate") else None
    allowed_of = {g.col.name: g.allowed for g in (gate.gated if gate is not None else ())}
    best = None
    for name in condition.columns:
        found = gen.native(name, c)
        if found is None:
            continue
        if found.kind == "bins":
            allowed = spill(allowed_bins([cl for cl in condition.clauses if cl.column == name], found.edges,
                                         found.non_finite))
        else:
            allowed = allowed_of[name]
        values = [int(v) for v in np.flatnonzero(allowed[:found.rows.size] & (found.rows[:allowed.size] > 0))]
        if not values or any(v not in found.mixtures for v in values):
            continue
        share = float(found.rows[values].sum()) / max(int(found.rows.sum()), 1)
        if best is None or share < best[2]:
            best = (name, values, share, found)
    if best is None:
        return None
    name, values, share, found = best
    parts = [found.mixtures[v] for v in values]
    weights = np.concatenate([m.weights * found.rows[v] for m, v in zip(parts, values)])
    mix = GaussianMixture(weights / weights.sum(), np.concatenate([m.means for m in parts]),
                          cholesky=np.concatenate([m.cholesky for m in parts]))  # training writes full ones
    return name, mix, share, found.kind == "categories"


def allowed_bins(clauses, edges: np.ndarray, non_finite: bool = True) -> np.ndarray:
    """(bins + 1,) bool: the bins of a number column (and, last, its nulls and non-finite values) that may hold a
    value meeting every clause. A bin is tested at its ends, at the clauses' values inside it and half-way
    between them, so a bin that holds such values is never left out; the last index (nulls, NaN, infinities)
    is kept for null tests, and where the column has ``non_finite`` values unless a null test rules it out (a
    NaN meets ``!=``; keeping it costs draws, not rows)."""
    bins = edges.size - 1
    out = np.zeros(bins + 1, dtype=bool)
    out[bins] = all(cl.op == "is null" for cl in clauses) or (
        non_finite and not any(cl.op in ("is null", "is not null") for cl in clauses))
    if any(cl.op == "is null" for cl in clauses):
        return out
    tests = [(cl.op, [physical(v) for v in cl.values]) for cl in clauses]  # in the bins' unit, once
    values = [v for _, vs in tests for v in vs]
    for i in range(bins):
        lo, hi = float(edges[i]), float(edges[i + 1])
        last = i == bins - 1
        top = hi if last or hi == lo else float(np.nextafter(hi, -np.inf))  # [lo, hi), the last bin [lo, hi]
        pts = np.unique([lo, top] + [v for v in values if lo <= v <= top])
        pts = np.concatenate([pts, (pts[1:] + pts[:-1]) / 2])
        out[i] = bool(np.all([_holds(op, vs, pts) for op, vs in tests], axis=0).any())
    return out


def spill(allowed: np.ndarray) -> np.ndarray:
    """``allowed`` bins and the finite bin next to each end of every run of them: the decoder spills a value
    across a bound (rows of age 57-58 decode to 59 and over too), so drawing only from the bins past a bound
    leaves out draws that meet it, and the rows kept crowd away from it (bank ``age >= 59``: that column's
    shape 0.89 from the bins past 59 alone, 0.97 with the bin below; docs/generate.md)."""
    finite = allowed[:-1]
    out = allowed.copy()
    out[:-1] = finite | np.r_[finite[1:], False] | np.r_[False, finite[:-1]]
    return out


def physical(value: pa.Scalar) -> float:
    """A clause value in the unit the bins are in (``to_physical``: a number, or a date's days, a timestamp's
    ticks in local wall time), made from text as the clause's in-set is (``pa.array`` would import pandas)."""
    if is_temporal(value.type):
        arr = arrays.from_list([value.cast(pa.string()).as_py()], pa.string()).cast(value.type)
        return float(to_physical(arr)[0][0])
    return float(value.cast(pa.float64()).as_py())


_NUMPY_COMPARE = {"=": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal, ">": np.greater,
                  ">=": np.greater_equal}


def _holds(op: str, values: list[float], x: np.ndarray) -> np.ndarray:
    """Whether the physical values ``x`` meet clause ``op`` on ``values`` (already physical)."""
    if op == "is not null":
        return np.ones(x.size, dtype=bool)
    if op == "in":
        return np.isin(x, values)
    return _NUMPY_COMPARE[op](x, values[0])


def _cells(gen, spec, condition: Condition, c: int, mix: GaussianMixture, rng, forced: tuple = ()) -> ClassProposal:
    """The cell proposal over ``mix`` (the class's mixture, or a native one with its ``forced`` columns)."""
    w, k = mix.weights, len(mix.weights)
    comp = np.repeat(np.arange(k), PROBE_PER_COMPONENT)
    hits1, eps, _ = _probe(gen, spec, condition, c, mix, comp, rng, keep_eps=spec.where_proposal != "reject")
    share = np.bincount(comp, hits1, k) / PROBE_PER_COMPONENT  # (k,) acceptance a_j
    plain = float(w @ share)
    full = ClassProposal(c, plain, plain, comp.size, None, k, tuple(range(k * STRATA)))
    if spec.where_proposal == "reject" or plain <= 0:
        return full
    gate = gen.gate(condition) if hasattr(gen, "gate") else None
    # the cells: STRATA slices of each component along its direction, each of prior mass w_j / STRATA
    directions = directions_of(comp, eps, hits1, k)
    n_cells = k * STRATA
    cells = np.repeat(np.arange(n_cells), PROBE_PER_CELL)
    hits2, _, gated2 = _probe(gen, spec, condition, c, mix, cells // STRATA, _probe_rng(spec.seed, c, 3),
                              directions, cells % STRATA, gate=gate)
    v = np.repeat(w, STRATA) / STRATA  # (k STRATA,) prior mass of each cell
    cell_share = np.bincount(cells, hits2, n_cells) / PROBE_PER_CELL
    # both probes are unbiased for a_j; pooled, by rows
    per_comp = (np.bincount(comp, hits1, k) + np.bincount(cells // STRATA, hits2, k)) \
        / (PROBE_PER_COMPONENT + STRATA * PROBE_PER_CELL)
    plain = float(w @ per_comp)
    probed = comp.size + cells.size
    full = ClassProposal(c, plain, plain, probed, None, k, tuple(range(n_cells)))
    m, mass, bound = 0, 0.0, 0.0
    drop = candidates(v, cell_share, plain=plain)
    if drop.size:
        rows = certify_rows(v, drop, plain)
        which = np.repeat(drop, rows)
        hits3, _, _ = _probe(gen, spec, condition, c, mix, which // STRATA, _probe_rng(spec.seed, c, 4),
                             directions, which % STRATA)
        hits3 = np.bincount(np.repeat(np.arange(drop.size), rows), hits3, drop.size)
        m, mass, bound = certified(v, drop, rows, hits3, plain)
        probed += int(rows.sum())
    kept = np.setdiff1d(np.arange(n_cells), drop[:m])  # ascending cell order
    w_kept = float(v[kept].sum())
    if m == 0 or (plain - mass) / w_kept < MIN_GAIN * plain:
        kept, m, mass, bound, w_kept = np.arange(n_cells), 0, 0.0, 0.0, 1.0
    dropped = dict(kept=tuple(int(j) for j in kept), kept_weight=w_kept, dropped_share=mass / plain,
                   dropped_bound=bound / plain)
    cut = (plain - mass) / w_kept  # the acceptance of the kept cells at their prior mass
    if gate is not None:
        # the envelope: cell c drawn at v_c M_c, its draws accepted with p(z) / M_c; raised where a probe of
        # its own (at the prior mass within each kept cell) finds it clips more than CLIP_EPS of the mass
        bounds = envelope(cells, gated2, n_cells)[kept]
        check = np.repeat(np.arange(kept.size), CLIP_ROWS)
        _, _, gated4 = _probe(gen, spec, condition, c, mix, kept[check] // STRATA, _probe_rng(spec.seed, c, 5),
                              directions, kept[check] % STRATA, gate=gate)
        probed += check.size
        clipped = clipped_share(check, gated4, bounds, v[kept])
        while clipped > CLIP_EPS and bounds.min() < 1.0:
            bounds = np.minimum(2.0 * bounds, 1.0)
            clipped = clipped_share(check, gated4, bounds, v[kept])
        spread = float(v[kept] @ bounds) / w_kept  # the envelope's mass, relative to the kept cells'
        if cut / spread >= MIN_GAIN * cut:
            return ClassProposal(c, plain, cut / spread, probed, CellMixture(mix, directions, kept, bounds, forced), k,
                                 envelope_mass=spread, clipped_share=clipped, **dropped)
    if m == 0:
        return dataclasses.replace(full, probe_rows=probed)
    return ClassProposal(c, plain, cut, probed, CellMixture(mix, directions, kept, None, forced), k, **dropped)


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
