"""Fréchet distance core: analytic values, guards, cached statistics."""

import numpy as np
import pytest

from hatebm_jax.evaluation import frechet


def _stats(mean, cov, net='net', prep='prep', n=100):
  return frechet.FeatureStats(
      np.asarray(mean, float), np.asarray(cov, float), n, net, prep
  )


def test_diagonal_gaussians_match_closed_form():
  m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 0.25])
  expected = np.sum((m1 - m2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
  got = frechet.frechet_distance(
      _stats(m1, np.diag(s1)), _stats(m2, np.diag(s2))
  )
  # float64 sqrtm of diagonal matrices: exact up to float64 round-off.
  assert got == pytest.approx(expected, rel=1e-10)  # 5 + 2 = 7


def test_rotated_covariances_match_closed_form():
  """For commuting Σ, tr((Σ₁Σ₂)^½) = Σ √(λ₁λ₂) in the shared eigenbasis."""
  q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))
  l1, l2 = np.array([1.0, 2.0, 3.0, 4.0]), np.array([4.0, 0.5, 3.0, 1.0])
  a = _stats(np.zeros(4), q @ np.diag(l1) @ q.T)
  b = _stats(np.ones(4), q @ np.diag(l2) @ q.T)
  expected = 4.0 + np.sum(l1 + l2 - 2 * np.sqrt(l1 * l2))
  # sqrtm of a product of commuting 4x4 float64 matrices (Schur method):
  # ~1e-14 relative, far inside 1e-8.
  assert frechet.frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_stats_use_unbiased_covariance_over_samples():
  x = np.random.default_rng(1).normal(size=(500, 3)) * [1.0, 2.0, 3.0]
  s = frechet.feature_stats(x, 'net', 'prep')
  np.testing.assert_allclose(s.mean, x.mean(0))
  centred = x - x.mean(0)
  np.testing.assert_allclose(s.cov, centred.T @ centred / 499)
  assert s.num_samples == 500
  # tr(2Σ − 2(ΣΣ)^½) of a 500-sample covariance: float64 round-off.
  assert frechet.frechet_distance(s, s) == pytest.approx(0.0, abs=1e-8)


def test_too_few_samples_warns_and_one_sample_fails():
  x = np.random.default_rng(2).normal(size=(5, 8))
  with pytest.warns(UserWarning, match='rank at most 4 < 8'):
    frechet.feature_stats(x, 'net', 'prep')
  with pytest.raises(ValueError, match=r'N >= 2'):
    frechet.feature_stats(x[:1], 'net', 'prep')
  with pytest.raises(ValueError, match='non-finite'):
    frechet.feature_stats(np.full((3, 2), np.nan), 'net', 'prep')


def test_singular_covariances_give_the_exact_distance():
  a = _stats(np.zeros(3), np.diag([1.0, 0.0, 0.0]))
  b = _stats(np.zeros(3), np.diag([0.0, 1.0, 0.0]))
  # The product is 0, whose root is finite: no offset is needed. sqrtm of
  # a singular matrix is less accurate than of a regular one, hence 1e-4;
  # the 1e-6 diagonal offset, wrongly applied, would shift it by ~4e-3.
  assert frechet.frechet_distance(a, b) == pytest.approx(2.0, abs=1e-4)


def test_mismatches_are_refused():
  a = _stats(np.zeros(2), np.eye(2))
  with pytest.raises(ValueError, match='dimensions differ'):
    frechet.frechet_distance(a, _stats(np.zeros(3), np.eye(3)))
  with pytest.raises(ValueError, match='different feature pipelines'):
    frechet.frechet_distance(a, _stats(np.zeros(2), np.eye(2), net='other'))
  with pytest.raises(ValueError, match='different feature pipelines'):
    frechet.frechet_distance(a, _stats(np.zeros(2), np.eye(2), prep='x'))


def test_statistics_round_trip_through_npz(tmp_path):
  s = frechet.feature_stats(
      np.random.default_rng(3).normal(size=(20, 4)), 'lenet', 'pad 32, [-1, 1]'
  )
  s.save(str(tmp_path / 'ref.npz'))
  t = frechet.FeatureStats.load(str(tmp_path / 'ref.npz'))
  np.testing.assert_array_equal(t.mean, s.mean)
  np.testing.assert_array_equal(t.cov, s.cov)
  assert (t.num_samples, t.feature_net, t.preprocessing) == (
      20,
      'lenet',
      'pad 32, [-1, 1]',
  )
  with pytest.raises(FileNotFoundError, match='No feature statistics'):
    frechet.FeatureStats.load(str(tmp_path / 'missing.npz'))
  np.savez(tmp_path / 'bad.npz', mean=s.mean)
  with pytest.raises(ValueError, match='lacks'):
    frechet.FeatureStats.load(str(tmp_path / 'bad.npz'))
