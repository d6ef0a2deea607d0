"""The latent samplers: diagonal (written by augment train) and full-covariance (older bundles) mixtures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from augment.sampler import GaussianMixture, MixtureSampler


def two_blobs(**cov) -> GaussianMixture:
    return GaussianMixture(np.array([0.25, 0.75]), np.array([[-10.0, 0.0], [10.0, 5.0]]), **cov)


def test_diagonal_mixture_draws_each_component_with_its_weight_mean_and_scale():
    mix = two_blobs(scales=np.array([[1.0, 0.1], [2.0, 0.5]]))
    z = mix.sample(40_000, np.random.default_rng(0))
    right = z[:, 0] > 0
    assert z.dtype == np.float32 and abs(right.mean() - 0.75) < 0.01
    np.testing.assert_allclose(z[right].mean(0), [10.0, 5.0], atol=0.05)
    np.testing.assert_allclose(z[right].std(0), [2.0, 0.5], rtol=0.03)
    np.testing.assert_allclose(z[~right].std(0), [1.0, 0.1], rtol=0.03)
    hot = mix.sample(40_000, np.random.default_rng(1), temperature=0.5)
    np.testing.assert_allclose(hot[hot[:, 0] > 0].std(0), [1.0, 0.25], rtol=0.03)


def test_full_covariance_mixture_of_older_bundles_still_samples():
    chol = np.array([[[1.0, 0.0], [0.8, 0.6]], [[2.0, 0.0], [0.0, 0.5]]])
    z = two_blobs(cholesky=chol).sample(40_000, np.random.default_rng(2))
    left = z[z[:, 0] < 0]
    np.testing.assert_allclose(np.cov(left.T), chol[0] @ chol[0].T, atol=0.03)


def test_full_covariance_transform_puts_each_row_through_its_own_component():
    # Setup: 7 components, rows in random component order, more rows of one component than one product takes
    rng = np.random.default_rng(3)
    k, d, n = 7, 4, 1_500
    chol = np.tril(rng.normal(size=(k, d, d))) + 3 * np.eye(d)
    mix = GaussianMixture(np.full(k, 1 / k), rng.normal(0, 5, (k, d)), cholesky=chol)
    comp = np.where(rng.random(n) < 0.5, 2, rng.integers(0, k, n))
    eps = rng.standard_normal((n, d)).astype(np.float32)
    # Run
    z = mix.transform(comp, eps)
    # Assert: row i is m_c + L_c eps_i for its own component c, in the rows' order
    want = mix.means[comp] + np.einsum("nij,nj->ni", chol[comp], eps.astype(np.float64))
    assert z.shape == (n, d) and z.dtype == np.float32
    np.testing.assert_allclose(z, want, rtol=1e-5, atol=1e-4)


def test_log_prob_diagonal_equals_full_with_diagonal_factors_and_json_round_trips():
    scales = np.array([[1.0, 0.1], [2.0, 0.5]])
    diag, full = two_blobs(scales=scales), two_blobs(cholesky=np.stack([np.diag(s) for s in scales]))
    z = np.random.default_rng(3).normal(size=(50, 2)) * 5
    np.testing.assert_allclose(diag.log_prob(z), full.log_prob(z), rtol=1e-10)
    for m in (diag, full):
        back = GaussianMixture.from_json(json.loads(json.dumps(m.to_json())))
        np.testing.assert_allclose(back.log_prob(z), m.log_prob(z))
    with pytest.raises(ValueError, match="either scales"):
        GaussianMixture(np.ones(1), np.zeros((1, 2)))


def test_classify_picks_the_class_whose_mixture_holds_the_point():
    a = {"weights": [1.0], "means": [[-5.0, 0.0]], "scales": [[1.0, 1.0]]}
    b = {"weights": [1.0], "means": [[5.0, 0.0]], "scales": [[1.0, 1.0]]}
    sampler = MixtureSampler.from_json({"covariance": "diag", "classes": [a, b]}, [100, 100])
    assert sampler.classify(np.array([[-4.0, 1.0], [6.0, -1.0], [0.5, 0.0]])).tolist() == [0, 1, 1]


def test_standard_normal_draws_are_normal_seeded_and_shaped():
    from scipy import stats

    from augment.draws import PIECE, standard_normal

    a = standard_normal(np.random.default_rng(3), (PIECE + 7, 3))  # pieces of PIECE values and an odd tail
    b = standard_normal(np.random.default_rng(3), (PIECE + 7, 3))
    assert a.shape == (PIECE + 7, 3) and a.dtype == np.float32 and np.array_equal(a, b)
    x = a.ravel().astype(np.float64)
    assert abs(x.mean()) < 0.02 and abs(x.std() - 1) < 0.02
    assert stats.kstest(x, "norm").pvalue > 1e-3
    assert np.corrcoef(x[:-1], x[1:])[0, 1] < 0.02  # radius and angle halves do not pair up neighbours
    half = standard_normal(np.random.default_rng(3), 40_000, scale=0.5)
    assert half.shape == (40_000,) and abs(half.std() - 0.5) < 0.01
    assert not standard_normal(np.random.default_rng(3), (5, 2), scale=0.0).any()
    assert standard_normal(np.random.default_rng(3), (0, 4)).shape == (0, 4)


def test_sample_categories_in_row_pieces_equals_one_pass_cumsum():
    """Many rows are sampled in pieces with a running sum: the draws are those of one np.cumsum pass."""
    from augment.columns.types import sample_categories

    rng = np.random.default_rng(0)
    for k, temperature in ((1, 1.0), (2, 0.7), (42, 1.0), (300, 1.3)):
        logits = (rng.standard_normal((9_000, k)) * 3).astype(np.float32)
        u = rng.random(9_000)
        cum = np.exp(logits.T / np.float32(temperature) - (logits.T / np.float32(temperature)).max(axis=0))
        cum = np.cumsum(cum.astype(np.float32), axis=0)
        expected = np.minimum((cum < u.astype(np.float32) * cum[-1]).sum(axis=0), k - 1)
        got = sample_categories(logits, u, temperature)
        assert got.shape == (9_000,) and np.mean(got == expected) > 0.999  # float rounding at a boundary aside
    assert np.array_equal(sample_categories(logits, u, 0.0), np.argmax(logits, axis=1))
