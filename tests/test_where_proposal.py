"""The latent proposal of --where (augment.batch.where): exact on the cells it keeps, dropped mass bounded.

A stand-in generator whose "decoder" returns the first latent coordinate as column x makes every component's
and every cell's acceptance of ``x > T`` known in closed form (normal tails), so the proposal's choices are
checked against the truth rather than against another estimate.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import chi2, kstest, norm

from augment.batch import where
from augment.conditions import parse_where
from augment.sampler import GaussianMixture

T = 2.0
SCHEMA = pa.schema([("x", pa.float64())])
CONDITION = parse_where([f"x > {T}"], SCHEMA)


class FakeGen:
    """What augment.batch.where uses of a Generator, for one class whose rows are x = z[:, 0]."""

    batch_size = 8192

    def __init__(self, mix: GaussianMixture):
        self.mixture = SimpleNamespace(mixtures=[mix])

    def decode(self, z, labels, rng, temperature=1.0, columns=None):
        return pa.table({"x": z[:, 0].astype(np.float64)})

    def sample_where(self, class_index, n, rng, condition, *, sampler="mixture", temperature=1.0, mixture=None):
        table = self.decode((mixture or self.mixture.mixtures[0]).sample(n, rng, temperature), None, rng)
        mask = condition.mask(table)
        return table.filter(pa.array(mask)), mask


def spec(seed: int, proposal: str = "latent"):
    return SimpleNamespace(seed=seed, sampler="mixture", temperature=1.0, where_proposal=proposal)


def mixture(means, weights) -> GaussianMixture:
    means = np.asarray(means, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    mu = np.stack([means, np.zeros_like(means)], 1)  # a second latent coordinate the rows do not show
    return GaussianMixture(w / w.sum(), mu, scales=np.ones_like(mu))


def truth(mix: GaussianMixture) -> np.ndarray:
    """Each component's exact acceptance of x > T."""
    return norm.sf(T - mix.means[:, 0])


def spread(seed: int = 0, k: int = 50) -> GaussianMixture:
    rng = np.random.default_rng(seed)
    return mixture(np.linspace(-4, 4, k), rng.dirichlet(np.ones(k)))


def cell_truth(mix: GaussianMixture, directions: np.ndarray, x: np.ndarray | None = None, grid: int = 200):
    """Each cell's exact acceptance of x > T (or, with ``x`` (g,), P(T < X <= x) per cell, (cells, g)).

    In cell (j, r) the row is x = m_j + e_0 where e ~ N(0, I) has e . u in slice r; e_0 = u_0 t + s sqrt(1 - u_0^2)
    with t the part along u (a normal restricted to the slice, integrated on its quantile midpoints) and s an
    independent standard normal."""
    k, R = mix.means.shape[0], where.STRATA
    out = []
    for j in range(k):
        u0 = float(directions[j, 0])
        rest = np.sqrt(max(1 - u0 * u0, 1e-18))
        for r in range(R):
            t = norm.ppf((r + (np.arange(grid) + 0.5) / grid) / R)  # (grid,)
            above = norm.sf((T - mix.means[j, 0] - u0 * t) / rest)  # P(x > T | t)
            if x is None:
                out.append(above.mean())
            else:
                below = norm.cdf((x[:, None] - mix.means[j, 0] - u0 * t[None, :]) / rest)  # P(x' <= x | t)
                out.append(np.clip(below - (1 - above)[None, :], 0, None).mean(1))
    return np.asarray(out)


def test_kept_cells_keep_their_prior_mass_and_the_dropped_mass_is_bounded():
    mix = spread()
    p = where._estimate(FakeGen(mix), spec(0), CONDITION, 0)
    kept = np.asarray(p.kept)
    R = where.STRATA
    assert p.components == 50 and p.cells == 50 * R and 0 < kept.size < 50 * R
    mass = np.repeat(mix.weights, R) / R  # every cell holds 1 / STRATA of its component
    np.testing.assert_array_equal(p.mixture.cells, kept)
    np.testing.assert_allclose(p.mixture.weights, mass[kept] / mass[kept].sum(), rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(p.mixture.directions, axis=1), 1.0)
    a = cell_truth(mix, p.mixture.directions)
    plain = float(mass @ a)
    assert plain == pytest.approx(float(mix.weights @ truth(mix)), rel=1e-3)  # the cells tile the components
    dropped = np.setdiff1d(np.arange(50 * R), kept)
    true_dropped = float(mass[dropped] @ a[dropped]) / plain
    assert true_dropped <= p.dropped_bound <= where.EPS and p.dropped_share <= p.dropped_bound
    assert p.kept_weight == pytest.approx(mass[kept].sum())
    exact = float(mass[kept] @ a[kept]) / mass[kept].sum()  # A (1 - delta) / W_K
    assert p.proposal == pytest.approx(exact, rel=0.1) and p.plain == pytest.approx(plain, rel=0.1)
    whole = where.candidates(mix.weights, truth(mix), plain=plain)  # the best of whole components, from the truth
    best_whole = (plain - mix.weights[whole] @ truth(mix)[whole]) / (1 - mix.weights[whole].sum())
    assert exact > 3 * plain and exact > 1.3 * best_whole  # concentrated: dropping pays, slicing more so


def test_cells_draw_the_normal_restricted_to_their_slice():
    mix = mixture([0.0, 1.0], [1, 1])
    u = np.array([[0.6, 0.8], [1.0, 0.0]])
    rng = np.random.default_rng(3)
    n = 40_000
    for r in (0, 3, where.STRATA - 1):
        z, e = where.draw_cells(mix, u, np.zeros(n, dtype=np.int64), np.full(n, r), rng)
        along = e.astype(np.float64) @ u[0]
        lo, hi = norm.ppf([r / where.STRATA, (r + 1) / where.STRATA])
        assert along.min() >= lo - 1e-5 and along.max() <= hi + 1e-5
        across = e.astype(np.float64) @ np.array([0.8, -0.6])
        assert abs(across.mean()) < 0.03 and abs(across.std() - 1) < 0.03  # untouched, still N(0, 1)
        np.testing.assert_allclose(z, e, atol=1e-6)  # component 0: mean 0, unit scales
    # full covariances (what augment train writes): z = m_j + L_j eps, rows of each component in blocks
    chol = np.array([[[1.0, 0.0], [0.5, 2.0]], [[3.0, 0.0], [-1.0, 0.5]]])
    full = GaussianMixture(np.array([0.5, 0.5]), np.array([[1.0, -1.0], [0.0, 4.0]]), cholesky=chol)
    comp = rng.integers(0, 2, 3000)
    z, e = where.draw_cells(full, u, comp, rng.integers(0, where.STRATA, 3000), rng, temperature=0.5)
    want = np.einsum("nij,nj->ni", chol[comp], 0.5 * e.astype(np.float64)) + full.means[comp]
    np.testing.assert_allclose(z, want, rtol=1e-5, atol=1e-5)
    # every slice of a component drawn as often: the component itself, N(m, I)
    comp = np.ones(n, dtype=np.int64)
    z, _ = where.draw_cells(mix, u, comp, rng.integers(0, where.STRATA, n), rng)
    assert abs((z[:, 0] - 1).mean()) < 0.03 and abs(z[:, 0].std() - 1) < 0.03
    assert kstest(z[:, 0] - 1, "norm").pvalue > 0.001 and kstest(z[:, 1], "norm").pvalue > 0.001


def test_rows_follow_the_conditional_on_the_kept_cells_exactly(monkeypatch):
    mix = spread()
    gen = FakeGen(mix)
    p = where._estimate(gen, spec(0), CONDITION, 0)
    monkeypatch.setattr(where, "_cached_plan", lambda g, s: where.WherePlan(CONDITION, {0: p}))  # no bundle here
    table, drawn = where.where_chunk(gen, spec(0), 0, 20_000, np.random.default_rng(7), lambda t: t)
    x = np.sort(table.column("x").to_numpy())
    assert x.size == 20_000 and x.min() > T and drawn >= x.size / p.proposal * 0.9
    R = where.STRATA
    mass = np.repeat(mix.weights, R) / R
    grid = np.quantile(x, np.linspace(0.005, 0.995, 100))
    inside = cell_truth(mix, p.mixture.directions, grid, grid=100)  # (cells, 100): P(T < x' <= grid)
    a = cell_truth(mix, p.mixture.directions, grid=100)
    empirical = np.searchsorted(x, grid, side="right") / x.size

    def ks(weights):  # the distance of the rows to the conditional under cells weighted by ``weights``
        return float(np.max(np.abs(weights @ inside / (weights @ a) - empirical)))

    on_kept = np.zeros(mass.size)
    on_kept[np.asarray(p.kept)] = mass[np.asarray(p.kept)]
    limit = 1.95 / np.sqrt(x.size)  # the 0.1% critical value of the Kolmogorov-Smirnov distance
    assert ks(on_kept) < limit  # exact on the kept cells
    assert ks(mass) < limit + p.dropped_bound  # within the bound of the model's conditional
    assert ks(mass * np.repeat(truth(mix), R)) > 3 * limit  # components tilted by acceptance (w a^2): told apart


def trap(seed: int) -> GaussianMixture:
    """40 components each holding a_j = 1/256 (most of their cells show no hit in a cell probe while holding
    a little) and 10 that hold 30%: the cells with no hit in the probe that chose them are not empty."""
    rng = np.random.default_rng(seed)
    a = np.r_[np.full(40, 1 / 256), np.full(10, 0.3)]
    return mixture(T - norm.isf(a), np.r_[rng.uniform(0.8, 1.2, 40) * 2.2, rng.uniform(0.8, 1.2, 10)])


def first_probes(mix: GaussianMixture, seed: int):
    """(directions, cell acceptances) as the plan's first two probes find them (the same streams)."""
    gen, s, k, R = FakeGen(mix), spec(seed), 50, where.STRATA
    comp = np.repeat(np.arange(k), where.PROBE_PER_COMPONENT)
    hits, eps, _ = where._probe(gen, s, CONDITION, 0, mix, comp, where._probe_rng(seed, 0), keep_eps=True)
    directions = where.directions_of(comp, eps, hits, k)
    cells = np.repeat(np.arange(k * R), where.PROBE_PER_CELL)
    hits2, _, _ = where._probe(gen, s, CONDITION, 0, mix, cells // R, where._probe_rng(seed, 0, 3), directions,
                               cells % R)
    return directions, np.bincount(cells, hits2, k * R) / where.PROBE_PER_CELL


def test_the_bound_holds_where_the_probe_that_chose_the_cells_is_lucky():
    """Over many seeds the true dropped share exceeds EPS at most about ALPHA of the time (a 95% bound), where
    judging the candidates on the probe that chose them would exceed it far more often."""
    over = naive_over = 0
    mass_of = lambda mix: np.repeat(mix.weights, where.STRATA) / where.STRATA  # noqa: E731
    for seed in range(40):
        mix = trap(seed)
        directions, share = first_probes(mix, seed)
        a, v = cell_truth(mix, directions, grid=50), mass_of(mix)
        plain = float(v @ a)
        p = where._estimate(FakeGen(mix), spec(seed), CONDITION, 0)
        assert p.mixture is None or np.array_equal(p.mixture.directions, directions)
        dropped = np.setdiff1d(np.arange(v.size), np.asarray(p.kept))
        over += float(v[dropped] @ a[dropped]) / plain > where.EPS
        cand = where.candidates(v, share, plain=p.plain)  # what would go without the certifying probe
        naive_over += float(v[cand] @ a[cand]) / plain > where.EPS
    assert over <= 5, over  # 40 x 5% = 2 expected; 5 or more has probability 5%
    assert naive_over >= 20, naive_over  # the certificate is what the bound rests on


@pytest.mark.parametrize("hits", [0, 1, 3, 10, 57, 100, 101, 400, 3000])
def test_poisson_upper_limit_is_the_exact_one(hits):
    assert where.poisson_upper(hits) == pytest.approx(chi2.ppf(0.95, 2 * (hits + 1)) / 2, rel=1e-5)


def test_certified_takes_the_longest_run_whose_bound_fits():
    w = np.array([0.1, 0.1, 0.1, 0.7])
    drop = np.array([0, 1, 2])
    rows = np.array([1000, 1000, 1000])
    # bound of the first m: (0.1 / 1000) x upper(hits of the first m); the budget EPS x plain
    plain = 0.1 * 3.0 / 1000 / where.EPS + 1e-12  # exactly room for 0 hits
    assert where.certified(w, drop, rows, np.array([0, 0, 0]), plain)[0] == 3
    assert where.certified(w, drop, rows, np.array([0, 0, 1]), plain)[0] == 2
    assert where.certified(w, drop, rows, np.array([1, 0, 0]), plain) == (0, 0.0, 0.0)
    m, mass, bound = where.certified(w, drop, rows, np.array([0, 0, 0]), plain)
    assert mass == 0 and bound == pytest.approx(0.1 / 1000 * where.poisson_upper(0))


def test_candidates_stop_at_the_budget_and_where_dropping_stops_paying():
    w = np.full(5, 0.2)
    share = np.array([0.5, 0.0, 0.001, 0.4, 0.0])  # plain 0.1802
    cand = where.candidates(w, share, eps=0.01)
    assert list(cand) == [1, 4, 2]  # by acceptance, ties by index; the next (0.4) is over the budget
    assert list(where.candidates(w, share, eps=1.0)) == [1, 4, 2, 3]  # one component always stays
    assert where.candidates(np.array([0.5, 0.5]), np.array([0.2, 0.2])).size == 0  # nothing to gain
    # dropping the first would raise the acceptance 2.4%, under MIN_GAIN: no bias is spent on that
    assert where.candidates(np.array([0.5, 0.5]), np.array([0.2, 0.21]), eps=1.0).size == 0
    assert list(where.candidates(np.array([0.5, 0.5]), np.array([0.01, 0.21]), eps=1.0)) == [0]


def test_reject_keeps_every_cell_and_slicing_finds_what_components_hide():
    mix = spread()
    p = where._estimate(FakeGen(mix), spec(0, "reject"), CONDITION, 0)
    assert p.mixture is None and p.kept == tuple(range(50 * where.STRATA)) and p.proposal == p.plain
    sliced = mixture(np.full(8, T), np.ones(8))  # every component accepts half: its lower slices none of it
    p = where._estimate(FakeGen(sliced), spec(0), CONDITION, 0)
    assert p.proposal > 1.7 * p.plain and p.dropped_bound <= where.EPS and p.mixture is not None  # at most 2x


class NoiseGen(FakeGen):
    def decode(self, z, labels, rng, temperature=1.0, columns=None):  # rows that do not depend on z: no cell is any better
        return pa.table({"x": T + rng.standard_normal(z.shape[0])})


def test_a_condition_the_latent_does_not_decide_keeps_every_cell():
    p = where._estimate(NoiseGen(spread()), spec(0), CONDITION, 0)
    assert p.mixture is None and p.proposal == p.plain and p.dropped_bound == 0
    assert p.plain == pytest.approx(0.5, abs=0.02)


def test_the_plan_is_a_function_of_the_seed():
    mix = spread()
    a, b = (where._estimate(FakeGen(mix), spec(3), CONDITION, 0) for _ in range(2))
    assert a.kept == b.kept and a.proposal == b.proposal and a.probe_rows == b.probe_rows


def test_dry_run_and_manifest_state_the_cells_kept_and_the_bound():
    from augment.batch.run import describe_where

    p = where._estimate(FakeGen(spread()), spec(0), CONDITION, 0)
    line = describe_where(SimpleNamespace(classes=["no"]), spec(0), where.WherePlan(CONDITION, {0: p}))
    assert f"estimated acceptance {p.proposal:.2%} (plain draws {p.plain:.2%}" in line
    assert f"{len(p.kept)} of 400 latent cells, dropping at most {p.dropped_bound:.2%} of the conditional rows" in line
    entry = p.to_json(["no"])
    assert entry["cells"] == 400 and entry["cells_kept"] == len(p.kept) < 400 and entry["components"] == 50
    assert 0 < entry["dropped_share"] <= entry["dropped_share_bound"] <= where.EPS
    assert entry["kept_weight"] == pytest.approx(p.kept_weight, abs=1e-6) and entry["probe_rows"] == p.probe_rows


# ---------------------------------------------------------------------------------------------- the envelope
BINS = np.linspace(-4.0, 4.0, 21)  # column d reports the bin of z_0 (20 bins, the ends open)


def logit_a(z0):
    """Column c is "a" with probability sigmoid(this): 0.002 at z_0 = -4, 0.05 at 0, 0.4 at 4 (never likely)."""
    return -3.0 + 0.65 * np.clip(z0, -6.0, 4.0)



class GatedGen:
    """A real codec (categorical c, a / b, and d, 20 bins) over a stand-in decoder whose logits are known
    functions of z, with ``Generator.sample_where`` itself: the envelope's rows are checked against the truth."""

    batch_size = block_rows = 8192

    def __init__(self, mix: GaussianMixture):
        from augment.codec import Codec

        d = [f"bin{i:02d}" for i in range(20)]
        table = pa.table({"c": ["a", "b"] * 20, "d": d * 2, "label": ["no"] * 40})
        self.codec = Codec.fit(table, label="label", rare_min_rows=1)
        self.mixture = SimpleNamespace(mixtures=[mix])
        self.output_schema = self.codec.feature_schema

    def params(self, z, labels):
        out = np.zeros((z.shape[0], self.codec.output_dim), np.float32)
        out[:, self.codec.output_slice("c").start] = logit_a(z[:, 0])  # of "a" over "b"
        b = np.clip(np.searchsorted(BINS, z[:, 0]) - 1, 0, 19)
        out[np.arange(z.shape[0]), self.codec.output_slice("d").start + b] = 60.0  # d is z_0's bin, surely
        return out

    def decode(self, z, labels, rng, temperature=1.0, columns=None):
        return pa.table(self.codec.inverse_columns(self.params(z, labels), rng, temperature, columns))

    def gate(self, condition, forced=()):
        from augment.gate import gate_for

        return gate_for(self.codec, condition, forced)

    def _check(self, *args):
        pass

    def _latent(self, class_index, m, rng, sampler, temperature, mixture):
        return (mixture or self.mixture.mixtures[0]).sample(m, rng, temperature)

    def _assemble(self, features, labels, mode):
        return features

    def sample_where(self, *args, **kwargs):
        from augment.generator import Generator

        return Generator.sample_where(self, *args, **kwargs)


def bin_truth(mix: GaussianMixture, cells: np.ndarray, directions: np.ndarray, n: int = 4_000_000) -> np.ndarray:
    """The share of each bin of z_0 under the conditional on c = "a" restricted to ``cells`` at their prior mass
    (Monte Carlo: z drawn from the cells, weighted by P(c = a | z))."""
    rng = np.random.default_rng(123)
    w = mix.weights[cells // where.STRATA]
    cell = cells[rng.choice(cells.size, n, p=w / w.sum())]
    z, _ = where.draw_cells(mix, directions, cell // where.STRATA, cell % where.STRATA, rng)
    p = 1 / (1 + np.exp(-logit_a(z[:, 0].astype(np.float64))))
    b = np.clip(np.searchsorted(BINS, z[:, 0]) - 1, 0, 19)
    out = np.bincount(b, p, 20)
    return out / out.sum()


def test_the_envelope_keeps_the_conditional_and_spends_far_fewer_draws(monkeypatch):
    condition = parse_where(["c = a"], pa.schema([("c", pa.string()), ("d", pa.string())]))
    mix = spread(1)
    gen = GatedGen(mix)
    p = where._estimate(gen, spec(0), condition, 0)
    assert p.mixture is not None and p.mixture.bounds is not None
    assert p.envelope_mass < 0.5 and p.clipped_share <= where.CLIP_EPS
    assert p.proposal > 2 * p.plain / p.kept_weight  # what the cells alone would give, bettered by the envelope
    monkeypatch.setattr(where, "_cached_plan", lambda g, s: where.WherePlan(condition, {0: p}))
    table, drawn = where.where_chunk(gen, spec(0), 0, 30_000, np.random.default_rng(7), lambda t: t)
    assert table.num_rows == 30_000 and set(table.column("c").to_pylist()) == {"a"}
    assert drawn < 1.5 * table.num_rows / p.proposal  # the estimate is what the draws cost
    got = np.bincount([int(v[3:]) for v in table.column("d").to_pylist()], minlength=20)
    want = bin_truth(mix, p.mixture.cells, p.mixture.directions) * table.num_rows
    live = want > 5
    stat = float((((got - want) ** 2)[live] / want[live]).sum())
    assert chi2.sf(stat, live.sum() - 1) > 0.001, (got, want.round())  # the model's conditional on the kept cells
    # the same cells drawn at v_c M_c but accepted with p(z) alone (no division by M_c) are told apart
    class Unthinned(where.CellMixture):
        def sample_bounded(self, n, rng, temperature=1.0):
            return super().sample_bounded(n, rng, temperature)[0], 1.0

    broken = Unthinned(mix, p.mixture.directions, p.mixture.cells, p.mixture.bounds)
    monkeypatch.setattr(where, "_cached_plan", lambda g, s: where.WherePlan(
        condition, {0: dataclasses.replace(p, mixture=broken)}))
    table, _ = where.where_chunk(gen, spec(0), 0, 30_000, np.random.default_rng(7), lambda t: t)
    got = np.bincount([int(v[3:]) for v in table.column("d").to_pylist()], minlength=20)
    stat = float((((got - want) ** 2)[live] / want[live]).sum())
    assert chi2.sf(stat, live.sum() - 1) < 1e-6
