"""Training batches of a TFDS set prepared as TFRecord files, through tf.data.

Epoch e of the stream is a file and example shuffle seeded by (seed, e), and
the ImageNet random crop is seeded by the example's position in the stream,
so resuming at step t yields bit for bit the batches of an uninterrupted run
(it reads, without decoding, up to one epoch of records to get there).
"""

from typing import Iterator, Optional

import numpy as np

from hatebm_jax.data import tfds_prep

SHUFFLE_BUFFER = 10_000  # docs/official_release.md §2


def tfds_batches(
    name: str,
    data_dir: Optional[str],
    batch_size: int,
    image_size: int,
    random_crop: bool,
    seed: int,
    split: str = 'train',
    start_step: int = 0,
) -> Iterator[np.ndarray]:
  """Endless shuffled batches of a prepared TFDS data set from `start_step` on.

  The official shuffle(10,000) -> repeat -> batch pipeline
  (docs/official_release.md §2) made a pure function of (seed, step). The stream
  concatenates epochs e = 0, 1, ... of the N examples of `split`; epoch e reads
  the record files in an order and through a 10,000-example shuffle buffer both
  seeded by (seed, e); the example at position p of the stream is decoded and
  transformed (the ImageNet crop seeded by (seed, p), see `tfds_prep.tfds_preprocess`);
  batch t is positions [tB, (t+1)B), crossing epoch boundaries. File
  interleaving, decoding and batching are deterministic tf.data stages, so the
  batch of a step is the same bit for bit whether the iterator was opened at
  step 0 or at `start_step` (given the same TF global seed, which this code base
  never sets: `tf.data` shuffles mix it in). Opening at `start_step` starts at
  epoch e0 = start_step·B // N and skips start_step·B − e0·N examples of it:
  resuming costs reading (not decoding) up to one epoch of records, about 140 GB
  for ImageNet, 110 MB for CIFAR-10. The shuffle buffer holds encoded images.

  Args:
    name: 'cifar10', 'celeb_a' or 'imagenet2012'.
    data_dir: the TFDS data_dir (local or gs://) where it was prepared;
      None for TFDS' default (~/tensorflow_datasets).
    batch_size: B.
    image_size: S (32, 64 or 128).
    random_crop: ImageNet training crop (docs/official_release.md §2).
    seed: seed of the shuffles and crops.
    split: TFDS split, e.g. 'train' or a `tfds.even_splits` part of it.
    start_step: the training step of the first batch yielded, ≥ 0.

  Yields:
    float32 [B, S, S, 3] in [-1, 1], batch `start_step` first.

  Raises:
    FileNotFoundError: when the data set is not prepared in `data_dir`,
      saying how to prepare it.
    ValueError: for a negative `start_step` or a split whose size is unknown
      or smaller than B.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  if start_step < 0:
    raise ValueError(f'start_step={start_step} must be >= 0.')
  # Opening the split once checks it is prepared and counts its records
  # (the count TFDS asserts while reading; also known under mock_data).
  probe, info = tfds_prep.tfds_load(
      name,
      split,
      data_dir,
      with_info=True,
      read_config=tfds.ReadConfig(try_autocache=False),
  )
  num = int(probe.cardinality())
  if num < batch_size:
    raise ValueError(
        f'split={split!r} of {name} holds {num} examples '
        f'(negative: unknown), fewer than batch_size='
        f'{batch_size}.'
    )
  # Only the image is parsed, and left encoded until after the skip.
  only_image = tfds.decode.PartialDecoding(
      {'image': True}, decoders={'image': tfds.decode.SkipDecoding()}
  )
  transform = tfds_prep.tfds_preprocess(name, image_size, random_crop, seed)

  @tf.autograph.experimental.do_not_convert
  def epoch(e):
    """(position, encoded image) of epoch e, shuffled by (seed, e)."""
    # A seeded file shuffle makes TFDS interleave the files deterministically.
    read_config = tfds.ReadConfig(
        shuffle_seed=tfds_prep.derived_seed(seed, tfds_prep.FILE_ORDER, e)[0],
        shuffle_reshuffle_each_iteration=False,
        try_autocache=False,
        skip_prefetch=True,
    )
    records = tfds_prep.tfds_load(
        name,
        split,
        data_dir,
        shuffle_files=True,
        decoders=only_image,
        read_config=read_config,
    )
    records = records.shuffle(
        SHUFFLE_BUFFER,
        seed=tfds_prep.derived_seed(seed, tfds_prep.EXAMPLE_ORDER, e)[0],
        reshuffle_each_iteration=False,
    )
    return records.enumerate(e * num)

  def prepare(position, example):
    image = info.features['image'].decode_example(example['image'])
    return transform({'image': image}, position)

  start = start_step * batch_size
  first_epoch = start // num
  ds = tf.data.Dataset.counter(first_epoch).flat_map(epoch)
  ds = ds.skip(start - first_epoch * num)
  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=True)
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options).prefetch(tf.data.AUTOTUNE)
  return iter(tfds.as_numpy(ds))
