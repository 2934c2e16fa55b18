"""Training images: the embedded Fashion-MNIST default and TFDS data sets.

Every source yields float32 batches [B, S, S, C] in [-1, 1], x = 2·(u/255) − 1
for uint8 pixels u, scaled before any resize (docs/official_release.md §2).

* `fashion_mnist` (the CPU default) is read from the standard IDX files that
  Debian's `dataset-fashion-mnist` package installs, padded 28 -> 32 with
  background (black) pixels. Batches are a pure function of (seed, step), so
  a resumed run sees exactly the batches it would have seen.
* `cifar10`, `celeb_a` and `imagenet2012` come from a TFDS `data_dir` that the
  user prepared (local path or gs://); nothing is ever downloaded. Their
  training batches are a pure function of (seed, step) too: epoch e of the
  stream is a file and example shuffle seeded by (seed, e), and the ImageNet
  random crop is seeded by the example's position in the stream, so resuming
  at step t yields bit for bit the batches of an uninterrupted run (it reads,
  without decoding, up to one epoch of records to get there). A data set
  prepared as ArrayRecord (`tfds build --file_format=array_record`) is read
  through grain instead (`grain_batches`): random access, so resuming costs
  O(1) reads, and the iterator state is saved with every checkpoint.
"""

import gzip
import os
import struct
from typing import Any, Iterator, Optional

import jax
import numpy as np

from hatebm_jax.infra import parallel

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
# Image shape [S, S, C] that each data set is trained at
# (docs/official_release.md §2, §9.1).
IMAGE_DIMS = {
    'fashion_mnist': (32, 32, 1),
    'cifar10': (32, 32, 3),
    'celeb_a': (64, 64, 3),
    'imagenet2012': (128, 128, 3),
}
TFDS_DATASETS = ('cifar10', 'celeb_a', 'imagenet2012')
SHUFFLE_BUFFER = 10_000  # docs/official_release.md §2
# Salts that keep the random streams derived from one seed apart.
_FILE_ORDER, _EXAMPLE_ORDER, _CROP = 0, 1, 2
# Batches a grain stream can index: far more than any run takes.
_GRAIN_STREAM_BATCHES = 2**40


def to_float(images: np.ndarray) -> np.ndarray:
  """uint8 pixels [..] in [0, 255] -> float32 in [-1, 1] (docs/official_release.md §2)."""
  return images.astype(np.float32) * (2.0 / 255.0) - 1.0


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
    return to_float(self.images[index[self.rows]])

  def iterate(self, start_step: int) -> Iterator[np.ndarray]:
    step = start_step
    while True:
      yield self.batch(step)
      step += 1


def _derived_seed(seed: int, salt: int, index):
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


def _tfds_preprocess(
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
          x, (image_size, image_size, 3), _derived_seed(seed, _CROP, position)
      )
    # CelebA (178x218 -> 178 square) and ImageNet for evaluation.
    return resize(center_square(x), image_size, image_size)

  return transform


class _ArrayRecordData(ValueError):
  """tf.data was asked to read a data set prepared as ArrayRecord."""


def _tfds_load(name: str, split: str, data_dir: Optional[str], **kwargs):
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
    raise _not_prepared(name, data_dir) from e
  except NotImplementedError as e:  # tfds.load of ArrayRecord files
    raise _ArrayRecordData(
        f'data_loader=tf_data needs {name} prepared as TFRecord, but '
        f'data_dir={data_dir or "~/tensorflow_datasets"!r} holds it as '
        'array_record: set --config.data_loader=auto (or grain), or rebuild '
        f'it with `tfds build {name}`.'
    ) from e


def tfds_images(
    name: str, data_dir: Optional[str], split: str, image_size: int, num: int
) -> np.ndarray:
  """The first `num` images of a TFDS split, prepared for evaluation.

  The official evaluation transform (docs/official_release.md §2, §6.1):
  CIFAR-sized sets as they are, others centre-cropped to a square and resized
  (bilinear, antialiased) to `image_size`; no random crop, no shuffling, no data
  noise; then uint8 round(255(x+1)/2) (docs/official_release.md §6.1). Read
  with tf.data from TFRecord files, by random access from ArrayRecord ones
  (`_array_record_reader`, the same ops).

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
    ds = _tfds_load(name, split, data_dir, shuffle_files=False).take(num)
  except _ArrayRecordData:  # read by random access instead
    source, prepare = _array_record_reader(
        name, data_dir, split, image_size, random_crop=False
    )
    chunks = []
    for start in range(0, min(num, len(source)), 1000):
      index = range(start, min(num, len(source), start + 1000))
      encoded = tf.constant([source[i]['image'] for i in index])
      positions = tf.zeros([len(index)], tf.int64)  # no crop: unused
      chunks.append(to_uint8(prepare(encoded, positions)).numpy())
    return np.concatenate(chunks)
  transform = _tfds_preprocess(name, image_size, random_crop=False)

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
    return load_fashion_mnist(split, data_dir)[0][:num]
  if name not in TFDS_DATASETS:
    raise ValueError(
        f'data_type={name!r} is unknown; choose one of '
        f'{sorted(IMAGE_DIMS)}.'
    )
  return tfds_images(name, data_dir, split, image_size, num)


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
  transformed (the ImageNet crop seeded by (seed, p), see `_tfds_preprocess`);
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
  probe, info = _tfds_load(
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
  transform = _tfds_preprocess(name, image_size, random_crop, seed)

  @tf.autograph.experimental.do_not_convert
  def epoch(e):
    """(position, encoded image) of epoch e, shuffled by (seed, e)."""
    # A seeded file shuffle makes TFDS interleave the files deterministically.
    read_config = tfds.ReadConfig(
        shuffle_seed=_derived_seed(seed, _FILE_ORDER, e)[0],
        shuffle_reshuffle_each_iteration=False,
        try_autocache=False,
        skip_prefetch=True,
    )
    records = _tfds_load(
        name,
        split,
        data_dir,
        shuffle_files=True,
        decoders=only_image,
        read_config=read_config,
    )
    records = records.shuffle(
        SHUFFLE_BUFFER,
        seed=_derived_seed(seed, _EXAMPLE_ORDER, e)[0],
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
    raise _not_prepared(name, data_dir) from e
  if not prepared:
    raise _not_prepared(name, data_dir)
  return builder.info.file_format.value


def _not_prepared(name: str, data_dir: Optional[str]) -> FileNotFoundError:
  where = data_dir or '~/tensorflow_datasets'
  return FileNotFoundError(
      f'TFDS data set {name!r} is not prepared in data_dir={where!r}. '
      'Prepare it once (see README, "Data sets"), e.g. `tfds build '
      f'{name} --data_dir={where} --file_format=array_record` on a machine '
      'with internet access (ImageNet and CelebA need their archives placed '
      'in the manual download folder first), then pass --config.data_dir.'
  )


def _grain_seed(seed: int) -> int:
  """The grain shuffle seed of a run seed, in [0, 2^32 − 2^20): grain seeds
  epoch e with (shuffle seed + e), so hashing keeps run seeds s and s + 1
  from sharing epochs."""
  state = np.random.SeedSequence([seed, _EXAMPLE_ORDER]).generate_state(1)
  return int(state[0]) % (2**32 - 2**20)


def _array_record_reader(
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
  (`_tfds_preprocess`; tf.map_fn runs them image by image), and returns
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
  transform = _tfds_preprocess(name, image_size, random_crop, seed)
  shape = (image_size, image_size, IMAGE_DIMS[name][2])

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
  `_tfds_preprocess`, the ImageNet crop seeded by (seed, position)), so the
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
  file_format = tfds_file_format(name, data_dir)
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
  source, prepare = _array_record_reader(
      name, data_dir, 'train', image_size, random_crop, seed
  )
  if len(source) < batch_size:
    raise ValueError(
        f'the train split of {name} holds {len(source)} examples, fewer '
        f'than batch_size={batch_size}.'
    )
  examples = grain.MapDataset.source(source).shuffle(seed=_grain_seed(seed))

  def batch(step: int) -> np.ndarray:
    first = step * batch_size
    positions = np.arange(first + rows.start, first + rows.stop)
    encoded = [examples[int(p)]['image'] for p in positions]
    return prepare(tf.constant(encoded), tf.constant(positions)).numpy()

  stream = grain.MapDataset.range(_GRAIN_STREAM_BATCHES).map(batch)
  iterator = iter(
      stream.to_iter_dataset(
          grain.ReadOptions(
              num_threads=num_threads, prefetch_buffer_size=2 * num_threads
          )
      )
  )
  iterator.set_state(state or {'next_index': start_step})
  return iterator


def data_loader(config) -> str:
  """The loader of `config.data_type`: 'array' (Fashion-MNIST in memory),
  'grain' or 'tf_data' (`config.data_loader`; 'auto' is grain for a TFDS set
  prepared as ArrayRecord, else tf.data).

  Raises:
    FileNotFoundError: for a TFDS set that is not prepared (when 'auto' has
      to look).
  """
  if config.data_type == 'fashion_mnist':
    return 'array'
  if config.data_loader != 'auto':
    return config.data_loader
  prepared_as = tfds_file_format(config.data_type, config.data_dir or None)
  return 'grain' if prepared_as == 'array_record' else 'tf_data'


def train_batches(
    config,
    start_step: int,
    batch_size: Optional[int] = None,
    mesh: Optional[jax.sharding.Mesh] = None,
    state: Optional[dict[str, Any]] = None,
) -> Iterator[np.ndarray]:
  """Training batches of `config.data_type` from step `start_step` on.

  The batch of each step is a function of (config.seed, step) only, so a run
  resumed at `start_step` sees the batches an uninterrupted run would have
  (`ArrayBatches`, `grain_batches`, `tfds_batches`; on the tf.data path
  resuming reads up to one epoch of records first, on the others nothing).
  `batch_size` overrides `config.batch_size` (an SN-GAN step takes n_dis·B
  images). In a job of P processes each process gets only its rows of each
  global batch (B/P, `parallel.process_rows` of `mesh`): Fashion-MNIST and
  grain pick them out of the same global stream; on the tf.data path a TFDS
  set is read as P even splits of its training split, one per process
  (`tfds.even_splits`), each its own stream of B/P-example batches.

  Args:
    config: the run's config (data_type, data_dir, data_loader, seed, ...).
    start_step: the training step of the first batch, ≥ 0.
    batch_size: images per step; `config.batch_size` when None.
    mesh: the run's device mesh (which rows this process reads).
    state: grain only: the iterator state saved with the checkpoint of
      `start_step` (`Checkpointer.restore_data_state`); ignored by the
      other loaders, whose position is the step itself.

  Returns:
    An iterator of float32 [B/P, S, S, C] in [-1, 1], batch `start_step`
    first; on the grain path a grain `DatasetIterator` (`get_state()`).

  Raises:
    ValueError: for an unknown data set or an `image_dims` it is not
      trained at, or data_loader='grain' on data not prepared as
      ArrayRecord.
    FileNotFoundError: for missing data.
  """
  name = config.data_type
  batch_size = batch_size or config.batch_size
  if name not in IMAGE_DIMS:
    raise ValueError(
        f'data_type={name!r} is unknown; choose one of '
        f'{sorted(IMAGE_DIMS)}.'
    )
  if tuple(config.image_dims) != IMAGE_DIMS[name]:
    raise ValueError(
        f'image_dims={tuple(config.image_dims)} does not match '
        f'{name}, which is trained at {IMAGE_DIMS[name]}.'
    )
  rows = parallel.process_rows(batch_size, mesh)
  loader = data_loader(config)
  if loader == 'array':
    images, _ = load_fashion_mnist('train', config.data_dir or None)
    return ArrayBatches(images, batch_size, config.seed, rows).iterate(
        start_step
    )
  if loader == 'grain':
    return grain_batches(
        name,
        config.data_dir or None,
        batch_size,
        config.image_dims[0],
        config.random_crop,
        seed=config.seed,
        rows=rows,
        start_step=start_step,
        state=state,
        num_threads=config.data_threads,
    )
  split = 'train'
  if jax.process_count() > 1:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    split = tfds.even_splits('train', n=jax.process_count())[
        jax.process_index()
    ]
  return tfds_batches(
      name,
      config.data_dir or None,
      rows.stop - rows.start,
      config.image_dims[0],
      config.random_crop,
      seed=config.seed,
      split=split,
      start_step=start_step,
  )
