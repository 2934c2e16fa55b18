"""Evaluation images of a data set: the reference split of FID, FCD and KID
and the in-distribution images of OOD AUROC, uint8, without augmentation."""

from typing import Optional

import numpy as np

from hatebm_jax.data import fashion_mnist
from hatebm_jax.data import grain_input
from hatebm_jax.data import images as images_lib
from hatebm_jax.data import tfds_prep


def tfds_images(
    name: str, data_dir: Optional[str], split: str, image_size: int, num: int
) -> np.ndarray:
  """The first `num` images of a TFDS split, prepared for evaluation.

  The official evaluation transform (docs/official_release.md §2, §6.1):
  CIFAR-sized sets as they are, others centre-cropped to a square and resized
  (bilinear, antialiased) to `image_size`; no random crop, no shuffling, no data
  noise; then uint8 round(255(x+1)/2) (docs/official_release.md §6.1). Read
  with tf.data from TFRecord files, by random access from ArrayRecord ones
  (`grain_input.array_record_reader`, the same ops).

  Args:
    name: a TFDS name ('cifar10', 'celeb_a', 'imagenet2012',
      'svhn_cropped', 'cifar100', ...) with an 'image' feature.
    data_dir: the TFDS data_dir; None for TFDS' default.
    split: e.g. 'train' or 'test'.
    image_size: output side S.
    num: how many images (fewer if the split is smaller).

  Returns:
    uint8 [≤ num, S, S, 3].

  Raises:
    FileNotFoundError: when the data set is not prepared.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  def to_uint8(x):
    return tf.cast(
        tf.round(255.0 * (tf.clip_by_value(x, -1.0, 1.0) + 1.0) / 2.0), tf.uint8
    )

  try:
    ds = tfds_prep.tfds_load(name, split, data_dir, shuffle_files=False).take(
        num
    )
  except tfds_prep.ArrayRecordData:  # read by random access instead
    source, prepare = grain_input.array_record_reader(
        name, data_dir, split, image_size, random_crop=False
    )
    chunks = []
    for start in range(0, min(num, len(source)), 1000):
      index = range(start, min(num, len(source), start + 1000))
      encoded = tf.constant([source[i]['image'] for i in index])
      positions = tf.zeros([len(index)], tf.int64)  # no crop: unused
      chunks.append(to_uint8(prepare(encoded, positions)).numpy())
    return np.concatenate(chunks)
  transform = tfds_prep.tfds_preprocess(name, image_size, random_crop=False)

  ds = ds.map(
      lambda example: to_uint8(transform(example)),
      num_parallel_calls=tf.data.AUTOTUNE,
  ).batch(1000)
  return np.concatenate(list(tfds.as_numpy(ds)))


def eval_images(
    name: str, data_dir: Optional[str], split: str, image_size: int, num: int
) -> np.ndarray:
  """Reference images of a training data set for FID/FCD, uint8 [≤num,S,S,C].

  Fashion-MNIST from its IDX files (padded to 32), the others through
  `tfds_images`.

  Raises:
    ValueError: for an unknown data set.
    FileNotFoundError: for missing data.
  """
  if name == 'fashion_mnist':
    return fashion_mnist.load_fashion_mnist(split, data_dir)[0][:num]
  if name not in images_lib.TFDS_DATASETS:
    raise ValueError(
        f'data_type={name!r} is unknown; choose one of '
        f'{sorted(images_lib.IMAGE_DIMS)}.'
    )
  return tfds_images(name, data_dir, split, image_size, num)
