"""The embedded default data set: Fashion-MNIST from Debian's IDX files.

`dataset-fashion-mnist` installs the standard IDX files; images are padded
28 -> 32 with background (black) pixels. `ArrayBatches` makes the training
stream in memory, each batch a pure function of (seed, step), so a resumed
run sees exactly the batches it would have seen.
"""

import gzip
import os
import struct
from typing import Iterator, Optional

import numpy as np

from hatebm_jax.data import images as images_lib

FASHION_MNIST_DIRS = ('/usr/share/datasets/fashion-mnist',)
FASHION_MNIST_FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
FASHION_MNIST_CLASSES = (
    'T-shirt/top',
    'Trouser',
    'Pullover',
    'Dress',
    'Coat',
    'Sandal',
    'Shirt',
    'Sneaker',
    'Bag',
    'Ankle boot',
)


def _read_idx(path: str) -> np.ndarray:
  """Reads a gzipped IDX file (the MNIST format) into a uint8 array."""
  with gzip.open(path, 'rb') as f:
    data = f.read()
  zero, dtype_code, ndim = struct.unpack('>HBB', data[:4])
  if zero != 0 or dtype_code != 0x08:
    raise ValueError(f'{path} is not a uint8 IDX file (header {data[:4]!r}).')
  shape = struct.unpack('>' + 'I' * ndim, data[4 : 4 + 4 * ndim])
  array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if array.size != int(np.prod(shape)):
    raise ValueError(
        f'{path}: header says {shape}, file holds {array.size} ' 'values.'
    )
  return array.reshape(shape)


def fashion_mnist_dir(data_dir: Optional[str] = None) -> str:
  """The folder holding the Fashion-MNIST IDX files.

  Looks only in `data_dir` if given, else only in $HATEBM_FASHION_MNIST_DIR
  if set, else in Debian's /usr/share/datasets/fashion-mnist.

  Raises:
    FileNotFoundError: naming the folders tried and how to install the data.
  """
  env = os.environ.get('HATEBM_FASHION_MNIST_DIR')
  if data_dir:
    candidates = (data_dir,)
  elif env:
    candidates = (env,)
  else:
    candidates = FASHION_MNIST_DIRS
  needed = FASHION_MNIST_FILES['train'][0]
  for directory in candidates:
    if os.path.exists(os.path.join(directory, needed)):
      return directory
  raise FileNotFoundError(
      f'Fashion-MNIST not found (looked for {needed} in {list(candidates)}). '
      'Install it with `apt-get install -y dataset-fashion-mnist` (files land '
      'in /usr/share/datasets/fashion-mnist), or point '
      '--config.data_dir / $HATEBM_FASHION_MNIST_DIR at a folder with the '
      'standard IDX files.'
  )


def load_fashion_mnist(
    split: str = 'train', data_dir: Optional[str] = None, pad_to: int = 32
) -> tuple[np.ndarray, np.ndarray]:
  """Fashion-MNIST images and labels.

  Args:
    split: 'train' (60,000 images) or 'test' (10,000).
    data_dir: folder with the IDX files; see `fashion_mnist_dir`.
    pad_to: output side; the 28x28 images are padded with zeros (black,
      i.e. -1 after scaling) centred, 28 -> 32 by default.

  Returns:
    (images uint8 [N, pad_to, pad_to, 1], labels uint8 [N] in 0..9).

  Raises:
    ValueError: for an unknown split or pad_to < 28.
    FileNotFoundError: see `fashion_mnist_dir`.
  """
  if split not in FASHION_MNIST_FILES:
    raise ValueError(
        f'split={split!r}; Fashion-MNIST has ' f'{sorted(FASHION_MNIST_FILES)}.'
    )
  if pad_to < 28:
    raise ValueError(f'pad_to={pad_to} must be >= 28.')
  directory = fashion_mnist_dir(data_dir)
  image_file, label_file = FASHION_MNIST_FILES[split]
  images = _read_idx(os.path.join(directory, image_file))
  labels = _read_idx(os.path.join(directory, label_file))
  before = (pad_to - 28) // 2
  after = pad_to - 28 - before
  images = np.pad(images, ((0, 0), (before, after), (before, after)))
  return images[..., None], labels


class ArrayBatches:
  """Shuffled batches of an in-memory uint8 image array, stateless in step.

  Batch t holds the examples at positions [tB, (t+1)B) of an endless stream
  made of one seeded permutation per epoch, so `batch(t)` is the same
  whether a run got to t directly or was resumed.
  """

  def __init__(
      self,
      images: np.ndarray,
      batch_size: int,
      seed: int,
      rows: Optional[slice] = None,
  ):
    """Args: images uint8 [N, S, S, C]; batch_size B (global); seed;
    rows: which rows of each global batch to return (this process's share
    in a multi-process job, `parallel.process_rows`); all when None."""
    if batch_size > len(images):
      raise ValueError(
          f'batch_size={batch_size} exceeds the {len(images)} '
          'training images.'
      )
    self.images = images
    self.batch_size = batch_size
    self.seed = seed
    self.rows = rows or slice(0, batch_size)
    self._perm_epoch = -1
    self._perm = None

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch != self._perm_epoch:
      rng = np.random.default_rng([self.seed, epoch])
      self._perm = rng.permutation(len(self.images))
      self._perm_epoch = epoch
    return self._perm

  def batch(self, step: int) -> np.ndarray:
    """float32 [rows, S, S, C] in [-1, 1] for training step `step` ≥ 0:
    the `rows` of global batch `step`."""
    n = len(self.images)
    positions = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
    index = np.empty(self.batch_size, np.int64)
    for epoch in np.unique(positions // n):
      mask = positions // n == epoch
      index[mask] = self._permutation(int(epoch))[positions[mask] % n]
    return images_lib.to_float(self.images[index[self.rows]])

  def iterate(self, start_step: int) -> Iterator[np.ndarray]:
    step = start_step
    while True:
      yield self.batch(step)
      step += 1
