"""KID: the unbiased polynomial-kernel MMD² against a direct computation."""

import numpy as np
import pytest

from hatebm_jax.evaluation import kid


def _direct(x, y):
  k = lambda a, b: (a @ b / x.shape[1] + 1.0) ** 3
  m, n = len(x), len(y)
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
  yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j)
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n))
  return xx / (m * (m - 1)) + yy / (n * (n - 1)) - 2 * xy / (m * n)


def test_matches_the_definition():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)) + 0.5
  # The same float64 sums in another order: ~1e-15 relative.
  assert kid.polynomial_mmd2(x, y) == pytest.approx(_direct(x, y), rel=1e-10)


def test_unbiased_near_zero_for_one_distribution_and_positive_for_two():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8))
  same, same_sd = kid.kernel_distance(x, y, num_subsets=20, subset_size=500)
  assert abs(same) < 3 * same_sd + 1e-3
  shifted, _ = kid.kernel_distance(x, y + 1.0, num_subsets=20, subset_size=500)
  assert shifted > 0.1 and shifted > 20 * abs(same)


def test_bad_shapes():
  with pytest.raises(ValueError, match=r'\[m, D\] and \[n, D\]'):
    kid.polynomial_mmd2(np.zeros((3, 2)), np.zeros((3, 4)))
  with pytest.raises(ValueError, match='at least 2 rows'):
    kid.polynomial_mmd2(np.zeros((1, 2)), np.zeros((3, 2)))
  with pytest.raises(ValueError, match='num_subsets=0'):
    kid.kernel_distance(np.zeros((3, 2)), np.zeros((3, 2)), num_subsets=0)
