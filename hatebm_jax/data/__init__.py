"""Training and evaluation images, one idea per module.

* `images`: what every source yields (float32 [B, S, S, C] in [-1, 1]) and
  the shape each data set is trained at;
* `fashion_mnist`: the embedded CPU default, read from the IDX files of
  Debian's `dataset-fashion-mnist`, batches in memory (`ArrayBatches`);
* `tfds_prep`: TFDS sets (`cifar10`, `celeb_a`, `imagenet2012`) from a
  `data_dir` the user prepared once (nothing is downloaded), with the
  official preprocessing;
* `tf_data`: their training stream from TFRecord files;
* `grain_input`: their training stream from ArrayRecord files, by random
  access (resuming costs O(1) reads);
* `evaluation`: the reference images of FID, FCD, KID and OOD AUROC.

Every training stream is a pure function of (seed, step), so a resumed run
sees bit for bit the batches of an uninterrupted one. This module holds the
data keys' rules (`check_config`) and picks the stream (`train_batches`).
"""

from typing import Any, Iterator, Optional

import jax
import ml_collections
import numpy as np

from hatebm_jax import config_base
from hatebm_jax.data import evaluation
from hatebm_jax.data import fashion_mnist
from hatebm_jax.data import grain_input
from hatebm_jax.data import images
from hatebm_jax.data import tf_data
from hatebm_jax.data import tfds_prep
from hatebm_jax.infra import parallel

# The names the rest of the package uses.
IMAGE_DIMS = images.IMAGE_DIMS
TFDS_DATASETS = images.TFDS_DATASETS
to_float = images.to_float
FASHION_MNIST_CLASSES = fashion_mnist.FASHION_MNIST_CLASSES
ArrayBatches = fashion_mnist.ArrayBatches
load_fashion_mnist = fashion_mnist.load_fashion_mnist
fashion_mnist_dir = fashion_mnist.fashion_mnist_dir
eval_images = evaluation.eval_images
tfds_images = evaluation.tfds_images
tfds_batches = tf_data.tfds_batches
grain_batches = grain_input.grain_batches
tfds_file_format = tfds_prep.tfds_file_format


def check_config(config: ml_collections.ConfigDict) -> None:
  """The data keys' rules across keys: a known `data_type`, trained at
  `image_dims`.

  Raises:
    ValueError: naming the key, its value and what is allowed.
  """
  if config.data_type not in IMAGE_DIMS:
    raise config_base.invalid(
        'data_type', config.data_type, f'choose one of {sorted(IMAGE_DIMS)}'
    )
  if tuple(config.image_dims) != IMAGE_DIMS[config.data_type]:
    raise config_base.invalid(
        'image_dims',
        tuple(config.image_dims),
        f'{config.data_type} is trained at {IMAGE_DIMS[config.data_type]}',
    )


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
  prepared_as = tfds_prep.tfds_file_format(
      config.data_type, config.data_dir or None
  )
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
  check_config(config)
  name = config.data_type
  batch_size = batch_size or config.batch_size
  rows = parallel.process_rows(batch_size, mesh)
  loader = data_loader(config)
  if loader == 'array':
    images, _ = fashion_mnist.load_fashion_mnist(
        'train', config.data_dir or None
    )
    return fashion_mnist.ArrayBatches(
        images, batch_size, config.seed, rows
    ).iterate(start_step)
  if loader == 'grain':
    return grain_input.grain_batches(
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
  return tf_data.tfds_batches(
      name,
      config.data_dir or None,
      rows.stop - rows.start,
      config.image_dims[0],
      config.random_crop,
      seed=config.seed,
      split=split,
      start_step=start_step,
  )
