"""Small real TFDS data sets on disk, for tests of the TFDS input pipeline.

`tfds.testing.mock_data` bypasses the file reader, so it cannot test file
shuffling or resuming. These builders write sharded TFRecord (or ArrayRecord)
files with the real TFDS writer, under the registered names, versions and features of
'cifar10' and 'imagenet2012', so that `tfds.load(name, data_dir=...,
download=False)` reads them as it reads prepared data. The images are the
committed Fashion-MNIST slice (conftest.DATA_DIR), grey in 3 channels.
"""

import numpy as np
import tensorflow_datasets as tfds

from hatebm_jax import data
from conftest import DATA_DIR


def index_of(images: np.ndarray) -> np.ndarray:
  """Example indices int [N] of float32 CIFAR-10 batches [N, 32, 32, 3] in
  [-1, 1]: `prepare` writes index i into pixels (0, 0) and (0, 1) (red)."""
  pixels = np.round((images[:, 0, :2, 0] + 1.0) * 127.5).astype(np.int64)
  return pixels[:, 0] + 256 * pixels[:, 1]


def prepare(
    data_dir: str,
    num_train: int,
    num_shards: int,
    file_format: str = 'tfrecord',
    source_dir: str = DATA_DIR,
    names: tuple[str, ...] = ('cifar10', 'imagenet2012'),
) -> None:
  """Writes 'cifar10' and 'imagenet2012' 'train' splits into `data_dir`.

  Args:
    data_dir: a TFDS data_dir (a fresh folder).
    num_train: examples per split (at most the source's training images:
      2000 in the committed slice, 60,000 in the full set).
    num_shards: files per split.
    file_format: 'tfrecord' (what `tfds build` writes by default) or
      'array_record' (`tfds build --file_format=array_record`).
    source_dir: the Fashion-MNIST IDX folder the images come from.
    names: which of the two data sets to write.
  """
  images, labels = data.load_fashion_mnist('train', source_dir)
  images = np.repeat(images[:num_train], 3, axis=-1)  # [N, 32, 32, 3]
  labels = labels[:num_train].astype(np.int64)

  class Cifar10(tfds.builder_cls('cifar10'), skip_registration=True):
    """CIFAR-10's builder; example i's image holds i in the black border."""

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples()}

    def _generate_examples(self):  # pylint: disable=arguments-differ
      for i, (image, label) in enumerate(zip(images, labels)):
        image = image.copy()
        image[0, :2, 0] = (i % 256, i // 256)
        yield i, {'id': f'train_{i:05d}', 'image': image, 'label': label}

  class Imagenet2012(tfds.builder_cls('imagenet2012'), skip_registration=True):
    """ImageNet's builder with JPEGs of various sizes (32..60 a side)."""

    name = 'imagenet2012'

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples()}

    def _generate_examples(self):  # pylint: disable=arguments-differ
      for i, (image, label) in enumerate(zip(images, labels)):
        pad = ((0, 4 * (i % 8)), (0, 4 * (i % 7)), (0, 0))
        yield i, {
            'file_name': f'n{i:08d}_0.JPEG',
            'label': label,
            'image': np.pad(image, pad, mode='reflect'),
        }

  config = tfds.download.DownloadConfig(num_shards=num_shards)
  for builder in (Cifar10, Imagenet2012):
    if builder.name not in names:
      continue
    builder(data_dir=data_dir, file_format=file_format).download_and_prepare(
        download_config=config
    )
