"""Data: Fashion-MNIST IDX files, stateless batches, TFDS preprocessing,
and exactly resumable TFDS streams on small real TFDS files."""

import itertools
import time

import numpy as np
import pytest

from hatebm_jax import data
from conftest import DATA_DIR, load_config, tiny_config

TFDS_EXAMPLES = 300  # per split of the on-disk fixture; not a multiple of B
TFDS_SHARDS = 7
TFDS_BATCH = 32


def test_fashion_mnist_slice_is_read_and_padded():
  images, labels = data.load_fashion_mnist('train', DATA_DIR)
  assert images.shape == (2000, 32, 32, 1) and images.dtype == np.uint8
  assert labels.shape == (2000,) and set(labels.tolist()) == set(range(10))
  # 2-pixel black border from the 28 -> 32 padding, content inside.
  assert images[:, :2].max() == 0 and images[:, :, -2:].max() == 0
  assert images[:, 2:30, 2:30].max() == 255
  x = data.to_float(images[:4])
  assert x.dtype == np.float32 and x.min() == -1.0 and x.max() == 1.0
  test_images, _ = data.load_fashion_mnist('test', DATA_DIR)
  assert test_images.shape == (500, 32, 32, 1)


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
  with pytest.raises(
      FileNotFoundError, match='apt-get install -y ' 'dataset-fashion-mnist'
  ):
    data.load_fashion_mnist('train', str(tmp_path))
  with pytest.raises(ValueError, match="split='valid'"):
    data.load_fashion_mnist('valid', DATA_DIR)


def test_batches_are_a_function_of_the_step():
  images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
  batches = data.ArrayBatches(images, 4, seed=3)
  first = [batches.batch(t) for t in range(5)]
  resumed = data.ArrayBatches(images, 4, seed=3).iterate(2)
  for t in range(2, 5):
    np.testing.assert_array_equal(next(resumed), first[t])
  # Each epoch is a permutation: steps 0-1 and half of 2 cover every image.
  seen = np.concatenate([b.ravel() for b in first])[:10]
  np.testing.assert_array_equal(
      np.sort(np.round((seen + 1) * 127.5)), np.arange(10)
  )
  other = data.ArrayBatches(images, 4, seed=4).batch(0)
  assert not np.array_equal(other, first[0])


def test_train_batches_check_data_type_and_shape():
  with pytest.raises(ValueError, match="data_type='svhn'"):
    data.train_batches(tiny_config(data_type='svhn'), 0)
  with pytest.raises(ValueError, match=r'image_dims=\(32, 32, 3\)'):
    data.train_batches(tiny_config(image_dims=(32, 32, 3)), 0)
  batch = next(data.train_batches(tiny_config(), 0))
  assert batch.shape == (8, 32, 32, 1)


@pytest.mark.parametrize(
    'name,size,random_crop',
    [
        ('cifar10', 32, False),
        ('celeb_a', 64, False),
        ('imagenet2012', 128, True),
        ('imagenet2012', 128, False),
    ],
)
def test_tfds_preprocessing_on_mock_data(name, size, random_crop):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  with tfds.testing.mock_data(num_examples=8):
    batches = data.tfds_batches(name, None, 4, size, random_crop, seed=0)
    batch = next(batches)
  assert batch.shape == (4, size, size, 3) and batch.dtype == np.float32
  assert batch.min() >= -1.0 - 1e-5 and batch.max() <= 1.0 + 1e-5
  assert batch.std() > 0.1  # real pixel content, not a constant


def test_celeba_crop_is_the_centre_square():
  """218x178 -> rows 20..198 -> 64x64, antialiased (docs/official_release.md §2)."""
  tf = pytest.importorskip('tensorflow')
  image = np.zeros((218, 178, 3), np.uint8)
  image[20:198] = 255  # the centre square is white, the rest black
  out = data.tfds_prep.tfds_preprocess('celeb_a', 64, False)({'image': image})
  # A white square resized with antialiasing: the filter weights sum to 1
  # in float32, so the output is 1 up to their rounding.
  np.testing.assert_allclose(out.numpy(), 1.0, atol=1e-5)
  del tf


def test_imagenet_training_crop_keeps_scale():
  """Short side resized to exactly 128, then a random 128 crop."""
  image = np.zeros((256, 384, 3), np.uint8)
  image[:, :192] = 255  # left half white
  out = data.tfds_prep.tfds_preprocess('imagenet2012', 128, True)(
      {'image': image}
  )
  assert out.shape == (128, 128, 3)
  # Resized to 128x192 with the white/black edge at column 96: a 128-wide
  # crop holds both, edge anywhere in 32..96.
  row = out.numpy()[64, :, 0]
  assert row.max() > 0.99 and row.min() < -0.99


def test_missing_tfds_dataset_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="'cifar10' is not prepared"):
    next(data.tfds_batches('cifar10', str(tmp_path), 4, 32, False, 0))


def test_imagenet_crop_is_seeded_by_position():
  """The training crop is a window of the resized image drawn by a stateless
  op: a function of (seed, position), varying with both."""
  tf = pytest.importorskip('tensorflow')
  image = np.random.default_rng(0).integers(0, 256, (256, 384, 3), np.uint8)
  resized = tf.image.resize(
      data.to_float(image), (128, 192), 'bilinear', antialias=True
  ).numpy()
  crop = data.tfds_prep.tfds_preprocess('imagenet2012', 128, True, seed=3)
  crops = [crop({'image': image}, p).numpy() for p in range(8)]
  for p, out in enumerate(crops):
    np.testing.assert_array_equal(crop({'image': image}, p).numpy(), out)
    assert any(
        np.allclose(out, resized[:, o : o + 128], atol=1e-5) for o in range(65)
    )
  assert len({out.tobytes() for out in crops}) > 1
  other = data.tfds_prep.tfds_preprocess('imagenet2012', 128, True, seed=4)
  assert any(
      not np.array_equal(other({'image': image}, p).numpy(), out)
      for p, out in enumerate(crops)
  )


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  """A TFDS data_dir with 'cifar10' and 'imagenet2012' train splits of
  TFDS_EXAMPLES examples in TFDS_SHARDS TFRecord files each."""
  pytest.importorskip('tensorflow_datasets')
  import tfds_fixture  # pylint: disable=g-import-not-at-top

  path = str(tmp_path_factory.mktemp('tfds'))
  start = time.time()
  tfds_fixture.prepare(path, TFDS_EXAMPLES, TFDS_SHARDS)
  print(f'TFDS fixture written in {time.time() - start:.1f} s')
  return path


def _tfds_stream(name, data_dir, start_step, steps, seed=5, **kwargs):
  """Batches start_step .. start_step + steps - 1 of `data.tfds_batches`."""
  size = data.IMAGE_DIMS[name][0]
  batches = data.tfds_batches(
      name,
      data_dir,
      TFDS_BATCH,
      size,
      name == 'imagenet2012',
      seed,
      start_step=start_step,
      **kwargs,
  )
  return list(itertools.islice(batches, steps))


TWO_EPOCHS = -(-2 * TFDS_EXAMPLES // TFDS_BATCH)  # batches


def _two_shuffled_epochs(stream):
  """Example indices of cifar10 batches covering two epochs, checked to be
  two different permutations of the split, neither the identity."""
  import tfds_fixture  # pylint: disable=g-import-not-at-top

  n = TFDS_EXAMPLES
  index = tfds_fixture.index_of(np.concatenate(stream))
  for epoch in (index[:n], index[n : 2 * n]):
    np.testing.assert_array_equal(np.sort(epoch), np.arange(n))
  assert not np.array_equal(index[:n], np.arange(n))
  assert not np.array_equal(index[:n], index[n : 2 * n])
  return index


def _check_batches(name, batches):
  """float32 [B, S, S, 3] batches in [-1, 1] (up to the resize's overshoot)."""
  size = data.IMAGE_DIMS[name][0]
  assert batches[0].shape == (TFDS_BATCH, size, size, 3)
  assert batches[0].dtype == np.float32
  assert min(b.min() for b in batches) >= -1.0 - 1e-5
  assert max(b.max() for b in batches) <= 1.0 + 1e-5


@pytest.mark.parametrize('buffer', [data.tf_data.SHUFFLE_BUFFER, 16])
@pytest.mark.parametrize(
    'name,steps,starts',
    [
        # Epochs end within steps 9, 18 (positions 300, 600): 8 and 18 cross
        # a boundary, 21 starts inside epoch 2; 11 starts inside epoch 1.
        ('cifar10', 25, (8, 18, 21)),
        ('imagenet2012', 13, (9, 11)),
    ],
)
def test_tfds_resume_equals_straight(
    tfds_dir, monkeypatch, buffer, name, steps, starts
):
  """Opened at step t, the stream yields bit for bit the batches t, t+1, ...
  of a stream opened at 0, with the official shuffle buffer (a full shuffle
  of this small split) and a small one (order set by the file order)."""
  monkeypatch.setattr(data.tf_data, 'SHUFFLE_BUFFER', buffer)
  start = time.time()
  straight = _tfds_stream(name, tfds_dir, 0, steps)
  for t0 in starts:
    resumed = _tfds_stream(name, tfds_dir, t0, steps - t0)
    for t, batch in enumerate(resumed, t0):
      np.testing.assert_array_equal(batch, straight[t], err_msg=f'step {t}')
  _check_batches(name, straight)
  print(
      f'{name}: {steps} + {sum(steps - t for t in starts)} batches in '
      f'{time.time() - start:.1f} s'
  )


@pytest.mark.parametrize('buffer', [data.tf_data.SHUFFLE_BUFFER, 16])
def test_tfds_stream_is_a_seeded_shuffle(tfds_dir, monkeypatch, buffer):
  """Each epoch is a permutation of the split, different per epoch and per
  seed, the same for the same seed; even splits partition the split."""
  import tfds_fixture  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  monkeypatch.setattr(data.tf_data, 'SHUFFLE_BUFFER', buffer)
  n, steps = TFDS_EXAMPLES, TWO_EPOCHS
  stream = _tfds_stream('cifar10', tfds_dir, 0, steps)
  index = _two_shuffled_epochs(stream)
  again = _tfds_stream('cifar10', tfds_dir, 0, steps)
  for a, b in zip(stream, again):
    np.testing.assert_array_equal(a, b)
  other = _tfds_stream('cifar10', tfds_dir, 0, steps, seed=6)
  other_index = tfds_fixture.index_of(np.concatenate(other))
  np.testing.assert_array_equal(np.sort(other_index[:n]), np.arange(n))
  assert not np.array_equal(other_index[:n], index[:n])
  # The split of each of 2 processes: disjoint halves, each shuffled whole.
  halves = [
      tfds_fixture.index_of(
          np.concatenate(
              _tfds_stream(
                  'cifar10', tfds_dir, 0, n // 2 // TFDS_BATCH + 1, split=split
              )
          )
      )[: n // 2]
      for split in tfds.even_splits('train', n=2)
  ]
  np.testing.assert_array_equal(np.sort(np.concatenate(halves)), np.arange(n))


def test_tfds_stream_checks_its_arguments(tfds_dir):
  with pytest.raises(ValueError, match='start_step=-1'):
    next(data.tfds_batches('cifar10', tfds_dir, 4, 32, False, 0, start_step=-1))
  with pytest.raises(ValueError, match=f'holds {TFDS_EXAMPLES} examples'):
    next(
        data.tfds_batches('cifar10', tfds_dir, TFDS_EXAMPLES + 1, 32, False, 0)
    )


def test_train_batches_resume_tfds(tfds_dir):
  """What the training loop calls: a cifar10 config resumed at step t."""
  config = load_config('cifar10_synth')
  config.data_dir = tfds_dir
  config.batch_size = TFDS_BATCH
  straight = list(itertools.islice(data.train_batches(config, 0), 12))
  resumed = list(itertools.islice(data.train_batches(config, 8), 4))
  for t, batch in enumerate(resumed, 8):
    np.testing.assert_array_equal(batch, straight[t])
  np.testing.assert_array_equal(
      straight[0], _tfds_stream('cifar10', tfds_dir, 0, 1, seed=config.seed)[0]
  )
  assert straight[0].shape == (TFDS_BATCH, 32, 32, 3)


# ---------------------------------------------------------------------------
# The grain path: the same splits written as ArrayRecord.


@pytest.fixture(scope='module')
def array_record_dir(tmp_path_factory):
  """A TFDS data_dir like `tfds_dir`, prepared as ArrayRecord."""
  import tfds_fixture  # pylint: disable=g-import-not-at-top

  path = str(tmp_path_factory.mktemp('array_record'))
  tfds_fixture.prepare(path, TFDS_EXAMPLES, TFDS_SHARDS, 'array_record')
  return path


def _grain_stream(name, data_dir, start_step, steps, seed=5, **kwargs):
  """Batches start_step .. start_step + steps - 1 of `data.grain_batches`."""
  size = data.IMAGE_DIMS[name][0]
  kwargs.setdefault('random_crop', name == 'imagenet2012')
  batches = data.grain_batches(
      name,
      data_dir,
      TFDS_BATCH,
      size,
      seed=seed,
      start_step=start_step,
      **kwargs,
  )
  return list(itertools.islice(batches, steps))


@pytest.mark.parametrize(
    'name,steps,starts',
    [('cifar10', 25, (8, 18, 21)), ('imagenet2012', 13, (9, 11))],
)
def test_grain_resume_equals_straight(array_record_dir, name, steps, starts):
  """Opened at step t, or from the state saved at t, the grain stream yields
  bit for bit the batches t, t+1, ... of a stream opened at 0 (epoch
  boundaries at positions 300 and 600 are crossed as in the tf.data test)."""
  straight_iter = data.grain_batches(
      name,
      array_record_dir,
      TFDS_BATCH,
      data.IMAGE_DIMS[name][0],
      name == 'imagenet2012',
      seed=5,
  )
  straight, states = [], []
  for _ in range(steps):
    states.append(straight_iter.get_state())
    straight.append(next(straight_iter))
  assert states[3] == {'next_index': 3}
  for t0 in starts:
    resumed = _grain_stream(name, array_record_dir, t0, steps - t0)
    from_state = _grain_stream(
        name, array_record_dir, t0, steps - t0, state=states[t0]
    )
    for t, (a, b) in enumerate(zip(resumed, from_state), t0):
      np.testing.assert_array_equal(a, straight[t], err_msg=f'step {t}')
      np.testing.assert_array_equal(b, straight[t], err_msg=f'step {t}')
  _check_batches(name, straight)


def test_grain_stream_is_a_seeded_shuffle_of_the_tf_data_images(
    array_record_dir, tfds_dir
):
  """Each epoch is a permutation of the split, other per epoch and seed;
  rows of 2 processes make up the global batches; each example comes out
  exactly as the tf.data path prepares it (same bytes, same TF ops)."""
  import tfds_fixture  # pylint: disable=g-import-not-at-top

  n, steps = TFDS_EXAMPLES, TWO_EPOCHS
  stream = _grain_stream('cifar10', array_record_dir, 0, steps)
  index = _two_shuffled_epochs(stream)
  other = tfds_fixture.index_of(
      np.concatenate(_grain_stream('cifar10', array_record_dir, 0, 10, seed=6))
  )
  assert not np.array_equal(other[:n], index[:n])
  half = TFDS_BATCH // 2
  parts = [
      _grain_stream('cifar10', array_record_dir, 0, 3, rows=rows)
      for rows in (slice(0, half), slice(half, TFDS_BATCH))
  ]
  for t in range(3):
    np.testing.assert_array_equal(
        np.concatenate([parts[0][t], parts[1][t]]), stream[t]
    )
  # Each example as the tf.data path prepares it (ImageNet with its
  # evaluation transform: the training crop is seeded by the position in
  # the stream, which the two paths order differently).
  for name in ('cifar10', 'imagenet2012'):
    size, epoch = data.IMAGE_DIMS[name][0], n // TFDS_BATCH
    streams = [
        data.grain_batches(name, array_record_dir, TFDS_BATCH, size, False, 5),
        data.tfds_batches(name, tfds_dir, TFDS_BATCH, size, False, 5),
    ]
    grain_images, tf_images = [
        {x.tobytes() for x in np.concatenate(list(itertools.islice(s, epoch)))}
        for s in streams
    ]
    # 288 of the 300 examples from each: at least 276 shared, if every
    # example comes out of both paths alike.
    assert len(grain_images) == len(tf_images) == epoch * TFDS_BATCH
    assert len(grain_images & tf_images) >= 2 * epoch * TFDS_BATCH - n, name


def test_grain_checks_its_arguments(array_record_dir, tfds_dir):
  with pytest.raises(ValueError, match='start_step=-1'):
    data.grain_batches(
        'cifar10', array_record_dir, 4, 32, False, 0, start_step=-1
    )
  with pytest.raises(ValueError, match=f'holds {TFDS_EXAMPLES} examples'):
    data.grain_batches(
        'cifar10', array_record_dir, TFDS_EXAMPLES + 1, 32, False, 0
    )
  with pytest.raises(ValueError, match='does not belong to step 4'):
    data.grain_batches(
        'cifar10',
        array_record_dir,
        4,
        32,
        False,
        0,
        start_step=4,
        state={'next_index': 3},
    )
  with pytest.raises(ValueError, match='tfrecord.*--file_format=array_record'):
    data.grain_batches('cifar10', tfds_dir, 4, 32, False, 0)
  with pytest.raises(FileNotFoundError, match='not prepared'):
    data.grain_batches('celeb_a', tfds_dir, 4, 64, False, 0)


def test_auto_loader_follows_the_prepared_format(array_record_dir, tfds_dir):
  config = load_config('cifar10_synth')
  assert config.data_loader == 'auto'
  config.data_dir = array_record_dir
  assert data.data_loader(config) == 'grain'
  config.data_dir = tfds_dir
  assert data.data_loader(config) == 'tf_data'
  config.data_loader = 'grain'
  with pytest.raises(ValueError, match='holds it as tfrecord'):
    data.train_batches(config, 0)
  config.data_dir, config.data_loader = array_record_dir, 'tf_data'
  with pytest.raises(ValueError, match='holds it as array_record'):
    data.train_batches(config, 0)
  assert data.data_loader(tiny_config()) == 'array'


@pytest.mark.slow
def test_training_on_grain_saves_the_iterator_and_resumes_bitwise(
    array_record_dir, tmp_path
):
  """A cifar10 run read through grain: every checkpoint holds the iterator
  state of its step, and a run stopped at step 2 and resumed from it ends
  bit for bit where an uninterrupted run does."""
  import json  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top

  from hatebm_jax import train  # pylint: disable=g-import-not-at-top
  from hatebm_jax.infra import checkpoint  # pylint: disable=g-import-not-at-top
  from hatebm_jax.modes import synthesis  # pylint: disable=g-import-not-at-top

  def config(**overrides):
    return tiny_config(
        data_type='cifar10',
        image_dims=(32, 32, 3),
        data_dir=array_record_dir,
        data_threads=2,
        eval_freq=0,
        **overrides,
    )

  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  train.train_and_evaluate(config(checkpoint_freq=100), str(straight))
  train.train_and_evaluate(config(num_training_steps=2), str(resumed))
  saved = resumed / 'checkpoints' / '2' / 'data' / 'process_0-of-1.json'
  assert json.loads(saved.read_text()) == {'next_index': 2}
  train.train_and_evaluate(config(checkpoint_freq=100), str(resumed))
  states = []
  for workdir in (straight, resumed):
    model = synthesis.SynthesisMode.from_config(config())
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    ckpt = checkpoint.Checkpointer(str(workdir))
    try:
      assert ckpt.latest_step() == 4
      assert ckpt.restore_data_state(4) == {'next_index': 4}
      states.append(jax.tree.leaves(ckpt.restore(abstract)))
    finally:
      ckpt.close()
  assert len(states[0]) == len(states[1]) > 10
  for a, b in zip(*states):
    np.testing.assert_array_equal(a, b)


def test_evaluation_images_of_arrayrecord_data_are_those_of_tfrecord(
    array_record_dir, tfds_dir
):
  """`tfds_images` (FID references) reads an ArrayRecord data_dir too: the
  same uint8 images as from the TFRecord one."""
  for name, size in (('cifar10', 32), ('imagenet2012', 128)):
    a = data.tfds_images(name, array_record_dir, 'train', size, 100)
    b = data.tfds_images(name, tfds_dir, 'train', size, TFDS_EXAMPLES)
    assert a.shape == (100, size, size, 3) and a.dtype == np.uint8
    assert {x.tobytes() for x in a} <= {x.tobytes() for x in b}, name
