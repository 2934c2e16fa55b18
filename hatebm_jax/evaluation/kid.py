"""Kernel Inception/Classifier Distance (KID) between two feature sets.

Unbiased estimate of the squared MMD with the cubic polynomial kernel
k(x, y) = (x·y / D + 1)³ of Bińkowski et al., "Demystifying MMD GANs"
(ICLR 2018), averaged over random subsets as in their reference code. Unlike
the Fréchet distance it is unbiased for small N, so it is reported beside it.
Like the Fréchet distance, values are only comparable for one feature
network and preprocessing.
"""

import numpy as np


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased MMD² of x [m, D] and y [n, D] under (x·y/D + 1)³.

  Raises:
    ValueError: for mismatched dimensions or fewer than 2 rows.
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
    raise ValueError(
        f'features must be [m, D] and [n, D]; got {x.shape} and ' f'{y.shape}.'
    )
  m, n = len(x), len(y)
  if m < 2 or n < 2:
    raise ValueError(f'need at least 2 rows on each side; got {m} and {n}.')
  d = x.shape[1]
  k_xx = (x @ x.T / d + 1.0) ** 3
  k_yy = (y @ y.T / d + 1.0) ** 3
  k_xy = (x @ y.T / d + 1.0) ** 3
  return float(
      (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
      + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
      - 2.0 * k_xy.mean()
  )


def kernel_distance(
    x: np.ndarray,
    y: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
  """KID: mean and standard deviation of MMD² over random subsets.

  Args:
    x, y: features [m, D] and [n, D].
    num_subsets: number of subset pairs drawn (100 in the reference code).
    subset_size: rows per subset, capped at min(m, n) (1000 in the
      reference code).
    seed: subset sampling seed.

  Returns:
    (mean, std) of the subset estimates, in kernel units (often ×1e3 in
    papers).

  Raises:
    ValueError: see `polynomial_mmd2`; num_subsets < 1.
  """
  if num_subsets < 1:
    raise ValueError(f'num_subsets={num_subsets} must be >= 1.')
  size = min(subset_size, len(x), len(y))
  rng = np.random.default_rng(seed)
  values = [
      polynomial_mmd2(
          x[rng.choice(len(x), size, replace=False)],
          y[rng.choice(len(y), size, replace=False)],
      )
      for _ in range(num_subsets)
  ]
  return float(np.mean(values)), float(np.std(values))
