"""Data: Fashion-MNIST IDX files, stateless batches, TFDS preprocessing."""

import numpy as np
import pytest

from hatebm_jax import data
from conftest import DATA_DIR, tiny_config


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
  with pytest.raises(FileNotFoundError, match='apt-get install -y '
                     'dataset-fashion-mnist'):
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
  np.testing.assert_array_equal(np.sort(np.round((seen + 1) * 127.5)),
                                np.arange(10))
  other = data.ArrayBatches(images, 4, seed=4).batch(0)
  assert not np.array_equal(other, first[0])


def test_train_batches_check_data_type_and_shape():
  with pytest.raises(ValueError, match="data_type='svhn'"):
    data.train_batches(tiny_config(data_type='svhn'), 0)
  with pytest.raises(ValueError, match=r'image_dims=\(32, 32, 3\)'):
    data.train_batches(tiny_config(image_dims=(32, 32, 3)), 0)
  batch = next(data.train_batches(tiny_config(), 0))
  assert batch.shape == (8, 32, 32, 1)


@pytest.mark.parametrize('name,size,random_crop', [
    ('cifar10', 32, False), ('celeb_a', 64, False),
    ('imagenet2012', 128, True), ('imagenet2012', 128, False)])
def test_tfds_preprocessing_on_mock_data(name, size, random_crop):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=8):
    batches = data.tfds_batches(name, None, 4, size, random_crop, seed=0)
    batch = next(batches)
  assert batch.shape == (4, size, size, 3) and batch.dtype == np.float32
  assert batch.min() >= -1.0 - 1e-5 and batch.max() <= 1.0 + 1e-5
  assert batch.std() > 0.1  # real pixel content, not a constant


def test_celeba_crop_is_the_centre_square():
  """218x178 -> rows 20..198 -> 64x64, antialiased (facts §2)."""
  tf = pytest.importorskip('tensorflow')
  image = np.zeros((218, 178, 3), np.uint8)
  image[20:198] = 255  # the centre square is white, the rest black
  out = data._tfds_preprocess('celeb_a', 64, False)({'image': image})
  np.testing.assert_allclose(out.numpy(), 1.0, atol=1e-5)
  del tf


def test_imagenet_training_crop_keeps_scale():
  """Short side resized to exactly 128, then a random 128 crop."""
  image = np.zeros((256, 384, 3), np.uint8)
  image[:, :192] = 255  # left half white
  out = data._tfds_preprocess('imagenet2012', 128, True)({'image': image})
  assert out.shape == (128, 128, 3)
  # Resized to 128x192 with the white/black edge at column 96: a 128-wide
  # crop holds both, edge anywhere in 32..96.
  row = out.numpy()[64, :, 0]
  assert row.max() > 0.99 and row.min() < -0.99


def test_missing_tfds_dataset_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="'cifar10' is not prepared"):
    next(data.tfds_batches('cifar10', str(tmp_path), 4, 32, False, 0))
