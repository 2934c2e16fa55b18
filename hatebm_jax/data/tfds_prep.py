"""TFDS data sets as prepared once by the user: reading without downloads,
the official preprocessing, and the file format they were prepared in.

`cifar10`, `celeb_a` and `imagenet2012` come from a TFDS `data_dir` (local
or gs://); nothing is ever downloaded, and an unprepared set is an error that
says how to prepare it. Random ops are stateless, seeded by (seed, salt,
index) (`derived_seed`), so streams built on them are pure functions of the
run's seed and the step.
"""

from typing import Optional

# Salts that keep the random streams derived from one seed apart.
FILE_ORDER, EXAMPLE_ORDER, CROP = 0, 1, 2


def derived_seed(seed: int, salt: int, index):
  """Random int64 [2], a function of (seed, salt, index): seeds of stateless
  TF ops and (either element) of `tf.data` shuffles."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  # fold_in alone gives [f(seed, salt), index]: hash it into both elements.
  key = tf.random.experimental.stateless_fold_in(
      tf.constant([seed, salt], tf.int64), tf.cast(index, tf.int64)
  )
  return tf.random.stateless_uniform(
      [2], key, minval=None, maxval=None, dtype=tf.int64
  )


def tfds_preprocess(
    name: str, image_size: int, random_crop: bool, seed: int = 0
):
  """The official per-image transform of a TFDS data set (docs/official_release.md §2).

  Returns `transform(example, position=0)`: example['image'] uint8
  [H, W, 3] -> float32 [S, S, 3] in [-1, 1] (CIFAR-10 stays 32x32). All of
  it is deterministic: the ImageNet training crop is drawn by a stateless op
  seeded by (seed, position), `position` being the example's index in the
  training stream (int64 scalar).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def resize(x, height, width):
    return tf.image.resize(x, (height, width), 'bilinear', antialias=True)

  def center_square(x):
    shape = tf.shape(x)
    side = tf.minimum(shape[0], shape[1])
    top = (shape[0] - side) // 2
    left = (shape[1] - side) // 2
    return x[top : top + side, left : left + side]

  def transform(example, position=0):
    x = tf.cast(example['image'], tf.float32) * (2.0 / 255.0) - 1.0
    if name == 'cifar10':
      return x
    if name == 'imagenet2012' and random_crop:
      # Short side to exactly S, long side scaled alike (truncated, at least
      # S), then a uniform random S x S crop; no flip (docs/official_release.md §2, §8 #10).
      shape = tf.cast(tf.shape(x)[:2], tf.float32)
      scale = image_size / tf.reduce_min(shape)
      new = tf.maximum(tf.cast(shape * scale, tf.int32), image_size)
      new = tf.where(shape <= tf.reduce_min(shape), image_size, new)
      x = resize(x, new[0], new[1])
      return tf.image.stateless_random_crop(
          x, (image_size, image_size, 3), derived_seed(seed, CROP, position)
      )
    # CelebA (178x218 -> 178 square) and ImageNet for evaluation.
    return resize(center_square(x), image_size, image_size)

  return transform


class ArrayRecordData(ValueError):
  """tf.data was asked to read a data set prepared as ArrayRecord."""


def tfds_load(name: str, split: str, data_dir: Optional[str], **kwargs):
  """`tfds.load` without downloads; a clear error for unprepared data."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    return tfds.load(
        name, split=split, data_dir=data_dir or None, download=False, **kwargs
    )
  except (
      AssertionError,
      FileNotFoundError,
      tfds.core.registered.DatasetNotFoundError,
  ) as e:
    raise not_prepared(name, data_dir) from e
  except NotImplementedError as e:  # tfds.load of ArrayRecord files
    raise ArrayRecordData(
        f'data_loader=tf_data needs {name} prepared as TFRecord, but '
        f'data_dir={data_dir or "~/tensorflow_datasets"!r} holds it as '
        'array_record: set --config.data_loader=auto (or grain), or rebuild '
        f'it with `tfds build {name}`.'
    ) from e


def tfds_file_format(name: str, data_dir: Optional[str]) -> str:
  """How a TFDS data set was prepared: 'array_record', 'tfrecord', ...

  Read from the prepared data set's metadata (`dataset_info.json`), without
  opening its records.

  Raises:
    FileNotFoundError: when the data set is not prepared in `data_dir`,
      saying how to prepare it.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
    prepared = builder.is_prepared()
  except (AssertionError, tfds.core.registered.DatasetNotFoundError) as e:
    raise not_prepared(name, data_dir) from e
  if not prepared:
    raise not_prepared(name, data_dir)
  return builder.info.file_format.value


def not_prepared(name: str, data_dir: Optional[str]) -> FileNotFoundError:
  where = data_dir or '~/tensorflow_datasets'
  return FileNotFoundError(
      f'TFDS data set {name!r} is not prepared in data_dir={where!r}. '
      'Prepare it once (docs/training.md, "Data sets"), e.g. `tfds build '
      f'{name} --data_dir={where} --file_format=array_record` on a machine '
      'with internet access (ImageNet and CelebA need their archives placed '
      'in the manual download folder first), then pass --config.data_dir.'
  )
