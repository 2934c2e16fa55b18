"""Fréchet distance between Gaussian fits of feature sets (FID, FCD).

The distance between N(μ₁, Σ₁) and N(μ₂, Σ₂) is

    ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2}),

computed as the TTUR / pytorch-fid code does: unbiased covariances
(`np.cov(rowvar=False)`), `scipy.linalg.sqrtm` of the product, a 1e-6 diagonal
offset when the root is not finite, and an error when its imaginary part is not
negligible (docs/official_release.md §6.2). Statistics carry the name of the
feature network and of the preprocessing that made them; values from different
feature networks are not comparable, so comparing them is refused.
"""

import dataclasses
import warnings

from etils import epath
import numpy as np
import scipy.linalg

OFFSET = 1e-6
MAX_IMAGINARY = 1e-3


@dataclasses.dataclass(frozen=True)
class FeatureStats:
  """Gaussian fit of a feature set.

  Attributes:
    mean: μ [D], float64.
    cov: unbiased covariance Σ [D, D], float64.
    num_samples: N, the number of feature vectors.
    feature_net: identity of the feature network, e.g.
      'inception-v3-pool3-pytorch-fid' or 'fashion-mnist-lenet-v1'.
    preprocessing: how images became network inputs, e.g.
      'uint8, resize 299 bilinear'.
  """

  mean: np.ndarray
  cov: np.ndarray
  num_samples: int
  feature_net: str
  preprocessing: str

  def save(self, path: str) -> None:
    """Writes the statistics as an .npz (local path or gs://)."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open('wb') as f:
      np.savez(
          f,
          mean=self.mean,
          cov=self.cov,
          num_samples=self.num_samples,
          feature_net=self.feature_net,
          preprocessing=self.preprocessing,
      )

  @classmethod
  def load(cls, path: str) -> 'FeatureStats':
    """Reads statistics written by `save`.

    Raises:
      FileNotFoundError: when the file does not exist.
      ValueError: when it lacks one of the five fields.
    """
    path = epath.Path(path)
    if not path.exists():
      raise FileNotFoundError(f'No feature statistics at {path}.')
    with path.open('rb') as f:
      data = np.load(f, allow_pickle=False)
      missing = {
          'mean',
          'cov',
          'num_samples',
          'feature_net',
          'preprocessing',
      } - set(data.files)
      if missing:
        raise ValueError(
            f'{path} is not a statistics file: it lacks ' f'{sorted(missing)}.'
        )
      return cls(
          mean=data['mean'],
          cov=data['cov'],
          num_samples=int(data['num_samples']),
          feature_net=str(data['feature_net']),
          preprocessing=str(data['preprocessing']),
      )


def feature_stats(
    features: np.ndarray, feature_net: str, preprocessing: str
) -> FeatureStats:
  """Mean and unbiased covariance of features [N, D] (docs/official_release.md §6.2).

  Args:
    features: [N, D] feature vectors, one row per image.
    feature_net: identity of the network that made them.
    preprocessing: how the images were prepared for it.

  Returns:
    The statistics, in float64.

  Raises:
    ValueError: for a non-2-D array, fewer than 2 rows or non-finite values.
  Warns:
    UserWarning: when N ≤ D, so the covariance is rank-deficient and the
      distance is biased (the FID convention wants N ≫ D, e.g. 50k for 2048).
  """
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(
        f'features must be [N, D] with N >= 2; got shape ' f'{features.shape}.'
    )
  if not np.all(np.isfinite(features)):
    raise ValueError('features contain non-finite values.')
  n, d = features.shape
  if n <= d:
    warnings.warn(
        f'{n} samples of {d}-dimensional features: the covariance '
        f'has rank at most {n - 1} < {d}, so the Fréchet distance '
        'is strongly biased; use many more samples than dimensions.',
        stacklevel=2,
    )
  return FeatureStats(
      mean=features.mean(axis=0),
      cov=np.cov(features, rowvar=False),
      num_samples=n,
      feature_net=feature_net,
      preprocessing=preprocessing,
  )


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
  """Fréchet distance between two Gaussian fits, ≥ 0 (in feature units²).

  Raises:
    ValueError: when the statistics come from different feature networks or
      preprocessing, have different dimensions, or the matrix square root
      has an imaginary part above 1e-3.
  """
  if (a.feature_net, a.preprocessing) != (b.feature_net, b.preprocessing):
    raise ValueError(
        'Refusing to compare statistics of different feature pipelines: '
        f'({a.feature_net!r}, {a.preprocessing!r}) vs ({b.feature_net!r}, '
        f'{b.preprocessing!r}).'
    )
  if a.mean.shape != b.mean.shape or a.cov.shape != b.cov.shape:
    raise ValueError(
        f'Feature dimensions differ: mean {a.mean.shape} / cov '
        f'{a.cov.shape} vs mean {b.mean.shape} / cov '
        f'{b.cov.shape}.'
    )
  diff = a.mean - b.mean
  with warnings.catch_warnings():
    # Singular covariances (e.g. a feature that is always 0 after a ReLU)
    # make sqrtm warn; the finite-offset fallback and the imaginary-part
    # check below are the safeguards that decide.
    warnings.simplefilter('ignore', scipy.linalg.LinAlgWarning)
    root = scipy.linalg.sqrtm(a.cov @ b.cov)
    if not np.all(np.isfinite(root)):
      offset = OFFSET * np.eye(a.cov.shape[0])
      root = scipy.linalg.sqrtm((a.cov + offset) @ (b.cov + offset))
  if np.iscomplexobj(root):
    imaginary = np.max(np.abs(np.diagonal(root).imag))
    if imaginary > MAX_IMAGINARY:
      raise ValueError(
          f'Matrix square root has an imaginary component of '
          f'{imaginary:.3g} (> {MAX_IMAGINARY}).'
      )
    root = root.real
  return float(
      diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2.0 * np.trace(root)
  )
