"""The latent proposal of --where (augment.batch.where): exact on the components it keeps, dropped mass bounded.

A stand-in generator whose "decoder" returns the first latent coordinate as column x makes every component's
acceptance of ``x > T`` known in closed form (a normal tail), so the proposal's choices can be checked against
the truth rather than against another estimate.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import chi2, norm

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

    def decode(self, z, labels, rng, temperature=1.0):
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


def test_kept_components_keep_their_original_weights_and_the_dropped_mass_is_bounded():
    mix = spread()
    p = where._estimate(FakeGen(mix), spec(0), CONDITION, 0)
    kept = np.asarray(p.kept)
    dropped = np.setdiff1d(np.arange(50), kept)
    assert 0 < dropped.size < 50 and p.components == 50
    np.testing.assert_allclose(p.mixture.weights, mix.weights[kept] / mix.weights[kept].sum(), rtol=1e-12)
    np.testing.assert_array_equal(p.mixture.means, mix.means[kept])
    np.testing.assert_array_equal(p.mixture.scales, mix.scales[kept])
    a = truth(mix)
    plain = float(mix.weights @ a)
    true_dropped = float(mix.weights[dropped] @ a[dropped]) / plain
    assert true_dropped <= p.dropped_bound <= where.EPS and p.dropped_share <= p.dropped_bound
    assert a[dropped].max() < a[kept].min()  # the least accepting went (they have no probe hits to tell apart)
    assert p.kept_weight == pytest.approx(mix.weights[kept].sum())
    exact = float(mix.weights[kept] @ a[kept]) / mix.weights[kept].sum()  # A (1 - delta) / W_K
    assert p.proposal == pytest.approx(exact, rel=0.1) and p.plain == pytest.approx(plain, rel=0.1)
    assert exact > 2 * plain  # the condition is concentrated, so dropping pays


def test_rows_follow_the_conditional_on_the_kept_components_exactly(monkeypatch):
    mix = spread()
    gen = FakeGen(mix)
    p = where._estimate(gen, spec(0), CONDITION, 0)
    monkeypatch.setattr(where, "_cached_plan", lambda g, s: where.WherePlan(CONDITION, {0: p}))  # no bundle here
    table, drawn = where.where_chunk(gen, spec(0), 0, 20_000, np.random.default_rng(7), lambda t: t)
    x = np.sort(table.column("x").to_numpy())
    assert x.size == 20_000 and x.min() > T and drawn >= x.size / p.proposal * 0.9
    a = truth(mix)
    kept = np.asarray(p.kept)

    def cdf(weights):  # the exact conditional CDF of x given x > T under components weighted by ``weights``
        inside = norm.cdf(x[None, :] - mix.means[:, :1]) - (1 - a)[:, None]
        return (weights[:, None] * inside).sum(0) / (weights @ a)

    on_kept = np.zeros(50)
    on_kept[kept] = mix.weights[kept]
    empirical = np.arange(1, x.size + 1) / x.size
    ks = lambda f: float(np.max(np.maximum(np.abs(f - empirical), np.abs(f - empirical + 1 / x.size))))  # noqa: E731
    limit = 1.95 / np.sqrt(x.size)  # the 0.1% critical value of the Kolmogorov-Smirnov distance
    assert ks(cdf(on_kept)) < limit  # exact on the kept components
    assert ks(cdf(mix.weights)) < limit + p.dropped_bound  # within the bound of the model's conditional
    assert ks(cdf(mix.weights * a)) > 3 * limit  # tilting by acceptance (shares w a^2) would be told apart


def trap(seed: int) -> GaussianMixture:
    """40 components each holding a_j = 1/256 (a quarter of their probes show no hit) and 10 that hold 30%:
    the components with no hit in the first probe are no emptier than the others."""
    rng = np.random.default_rng(seed)
    a = np.r_[np.full(40, 1 / 256), np.full(10, 0.3)]
    return mixture(T - norm.isf(a), np.r_[rng.uniform(0.8, 1.2, 40) * 2.2, rng.uniform(0.8, 1.2, 10)])


def test_the_bound_holds_where_the_first_probe_is_lucky():
    """Over many seeds the true dropped share exceeds EPS at most about ALPHA of the time (95% bound), where
    judging the candidates on the probe that chose them would exceed it far more often."""
    over = naive_over = 0
    seeds = range(40)
    for seed in seeds:
        mix = trap(seed)
        a, w = truth(mix), mix.weights
        p = where._estimate(FakeGen(mix), spec(seed), CONDITION, 0)
        dropped = np.setdiff1d(np.arange(50), np.asarray(p.kept))
        over += float(w[dropped] @ a[dropped]) / float(w @ a) > where.EPS
        # the same check on the first probe's own hits: its candidates are the components that showed none
        share = where._probe(FakeGen(mix), spec(seed), CONDITION, 0, mix, np.repeat(np.arange(50), 256),
                             where._probe_rng(seed, 0)) / 256
        cand = where.candidates(w, share)
        naive_over += float(w[cand] @ a[cand]) / float(w @ a) > where.EPS
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


def test_reject_and_a_flat_condition_keep_every_component():
    mix = spread()
    p = where._estimate(FakeGen(mix), spec(0, "reject"), CONDITION, 0)
    assert p.mixture is None and p.kept == tuple(range(50)) and p.proposal == p.plain
    flat = mixture(np.full(8, T), np.ones(8))  # every component accepts half
    p = where._estimate(FakeGen(flat), spec(0), CONDITION, 0)
    assert p.mixture is None and p.proposal == p.plain and p.dropped_bound == 0


def test_the_plan_is_a_function_of_the_seed():
    mix = spread()
    a, b = (where._estimate(FakeGen(mix), spec(3), CONDITION, 0) for _ in range(2))
    assert a.kept == b.kept and a.proposal == b.proposal and a.probe_rows == b.probe_rows
