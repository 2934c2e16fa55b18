"""Training batches of a TFDS set prepared as ArrayRecord, through grain.

Random access: resuming costs O(1) reads, and the iterator state is saved
with every checkpoint. Batches are the same pure function of (seed, step)
as on the tf.data path, with the same preprocessing (`tfds_prep`).
"""

from typing import Any, Optional

import numpy as np

from hatebm_jax.data import images as images_lib
from hatebm_jax.data import tfds_prep

# Batches a grain stream can index: far more than any run takes.
GRAIN_STREAM_BATCHES = 2**40


def grain_seed(seed: int) -> int:
  """The grain shuffle seed of a run seed, in [0, 2^32 − 2^20): grain seeds
  epoch e with (shuffle seed + e), so hashing keeps run seeds s and s + 1
  from sharing epochs."""
  state = np.random.SeedSequence(
      [seed, tfds_prep.EXAMPLE_ORDER]
  ).generate_state(1)
  return int(state[0]) % (2**32 - 2**20)


def array_record_reader(
    name: str,
    data_dir: Optional[str],
    split: str,
    image_size: int,
    random_crop: bool,
    seed: int = 0,
):
  """(source, prepare) of a split prepared as ArrayRecord.

  `source` is its `tfds.data_source` (random access, images left encoded);
  `prepare(encoded string [n], positions int64 [n])` decodes and transforms
  n images in one TF call, with the same ops as the tf.data path
  (`tfds_prep.tfds_preprocess`; tf.map_fn runs them image by image), and returns
  float32 [n, S, S, C] in [-1, 1].
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  source = tfds.data_source(
      name,
      split=split,
      data_dir=data_dir or None,
      download=False,
      decoders={'image': tfds.decode.SkipDecoding()},
  )
  image_feature = source.dataset_info.features['image']
  transform = tfds_prep.tfds_preprocess(name, image_size, random_crop, seed)
  shape = (image_size, image_size, images_lib.IMAGE_DIMS[name][2])

  @tf.function(
      input_signature=[
          tf.TensorSpec([None], tf.string),
          tf.TensorSpec([None], tf.int64),
      ]
  )
  def prepare(encoded, positions):
    return tf.map_fn(
        lambda e: transform(
            {'image': image_feature.decode_example(e[0])}, e[1]
        ),
        (encoded, positions),
        fn_output_signature=tf.TensorSpec(shape, tf.float32),
    )

  # Traced here, once: reader threads calling the tf.function for the
  # first time at once would each trace it.
  return source, prepare.get_concrete_function()


def grain_batches(
    name: str,
    data_dir: Optional[str],
    batch_size: int,
    image_size: int,
    random_crop: bool,
    seed: int,
    rows: Optional[slice] = None,
    start_step: int = 0,
    state: Optional[dict[str, Any]] = None,
    num_threads: int = 8,
):
  """Endless shuffled batches of an ArrayRecord TFDS data set, through grain.

  The stream concatenates epochs e = 0, 1, ... of the N training examples,
  each a permutation by grain's index shuffle seeded by (seed, e); batch t
  is stream positions [tB, (t+1)B), crossing epoch boundaries. Each example
  is decoded and transformed as the tf.data path does (the same TF ops:
  `tfds_prep.tfds_preprocess`, the ImageNet crop seeded by (seed, position)), so the
  two paths differ only in the order of the examples. Every batch is a
  function of (seed, t) and is read by random access (`tfds.data_source`):
  opening the stream at any step reads only that step's examples. In a
  multi-process job each process reads only its `rows` of every global
  batch, so the global batches do not depend on the process count.

  Args:
    name: 'cifar10', 'celeb_a' or 'imagenet2012', prepared as ArrayRecord.
    data_dir: the TFDS data_dir (local or gs://); None for TFDS' default.
    batch_size: B, the global batch.
    image_size: S (32, 64 or 128).
    random_crop: ImageNet training crop (docs/official_release.md §2).
    seed: seed of the shuffle and the crops.
    rows: which rows of each global batch this process reads (a slice of
      range(B)); all when None.
    start_step: the step of the first batch, ≥ 0.
    state: the state saved from such an iterator at `start_step`
      (`get_state()`, {'next_index': start_step}): the stream continues
      from it.
    num_threads: batches read and decoded in parallel (threads; TF ops
      release the GIL).

  Returns:
    A grain `DatasetIterator` of float32 [rows, S, S, 3] in [-1, 1] (batch
    `start_step` first), with `get_state()` / `set_state()`.

  Raises:
    FileNotFoundError: when the data set is not prepared in `data_dir`.
    ValueError: for a data set prepared in another format (naming it and
      how to rebuild it), a negative `start_step`, a `state` of another
      step or a split smaller than B.
  """
  import grain  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if start_step < 0:
    raise ValueError(f'start_step={start_step} must be >= 0.')
  file_format = tfds_prep.tfds_file_format(name, data_dir)
  if file_format != 'array_record':
    raise ValueError(
        f'data_loader=grain needs {name} prepared as ArrayRecord, but '
        f'data_dir={data_dir or "~/tensorflow_datasets"!r} holds it as '
        f'{file_format}: rebuild it with `tfds build {name} '
        '--file_format=array_record`, or set --config.data_loader=tf_data.'
    )
  if state is not None and state.get('next_index') != start_step:
    raise ValueError(
        f'the saved data iterator state {state} does not belong to step '
        f'{start_step} (it should hold next_index={start_step}): the '
        'checkpoint is damaged.'
    )
  rows = rows or slice(0, batch_size)
  source, prepare = array_record_reader(
      name, data_dir, 'train', image_size, random_crop, seed
  )
  if len(source) < batch_size:
    raise ValueError(
        f'the train split of {name} holds {len(source)} examples, fewer '
        f'than batch_size={batch_size}.'
    )
  examples = grain.MapDataset.source(source).shuffle(seed=grain_seed(seed))

  def batch(step: int) -> np.ndarray:
    first = step * batch_size
    positions = np.arange(first + rows.start, first + rows.stop)
    encoded = [examples[int(p)]['image'] for p in positions]
    return prepare(tf.constant(encoded), tf.constant(positions)).numpy()

  stream = grain.MapDataset.range(GRAIN_STREAM_BATCHES).map(batch)
  iterator = iter(
      stream.to_iter_dataset(
          grain.ReadOptions(
              num_threads=num_threads, prefetch_buffer_size=2 * num_threads
          )
      )
  )
  iterator.set_state(state or {'next_index': start_step})
  return iterator
