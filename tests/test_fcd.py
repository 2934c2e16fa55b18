"""The Fashion-MNIST LeNet behind FCD, and FCD / KID on real images.

Uses the full Fashion-MNIST (Debian's dataset-fashion-mnist, installed by the
README's test command): FCD needs many more images than its 128 features.
"""

import numpy as np
import pytest

from hatebm_jax.evaluation import classifier
from hatebm_jax import data
from hatebm_jax.evaluation import frechet
from hatebm_jax.evaluation import kid
from hatebm_jax.serving import draw
from conftest import DATA_DIR

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def net():
  return classifier.FeatureNetwork.load()


@pytest.fixture(scope='module')
def fmnist(net):
  train_images, _ = data.load_fashion_mnist('train')
  test_images, test_labels = data.load_fashion_mnist('test')
  return dict(
      train=train_images,
      test=test_images,
      labels=test_labels,
      train_features=net.features(train_images),
      test_features=net.features(test_images),
  )


def _stats(net, features):
  return frechet.feature_stats(features, net.name, net.preprocessing)


def test_shipped_weights_reach_their_recorded_test_accuracy(net, fmnist):
  accuracy = np.mean(net.predict(fmnist['test']) == fmnist['labels'])
  assert accuracy == pytest.approx(net.test_accuracy, abs=1e-9)
  assert accuracy == pytest.approx(0.904, abs=1e-9)
  assert net.name == 'fashion-mnist-lenet-v1:518cf2f04005'
  assert fmnist['test_features'].shape == (10_000, classifier.NUM_FEATURES)
  assert fmnist['test_features'].min() >= 0.0  # post-ReLU


def test_fcd_test_vs_train_is_small(net, fmnist):
  fcd = frechet.frechet_distance(
      _stats(net, fmnist['test_features']),
      _stats(net, fmnist['train_features']),
  )
  assert 0.0 < fcd < 1.0


def test_fcd_grows_strictly_with_pixel_noise(net, fmnist):
  train = _stats(net, fmnist['train_features'])
  rng = np.random.default_rng(0)
  clean = data.to_float(fmnist['test'])
  values = [
      frechet.frechet_distance(_stats(net, net.features(fmnist['test'])), train)
  ]
  for sigma in (0.05, 0.1, 0.2, 0.4):
    noisy = draw.to_uint8(clean + sigma * rng.standard_normal(clean.shape))
    values.append(
        frechet.frechet_distance(_stats(net, net.features(noisy)), train)
    )
  assert all(a < b for a, b in zip(values, values[1:])), values
  assert values[-1] > 50 * values[0], values


def test_distances_of_a_set_with_itself(net, fmnist):
  stats = _stats(net, fmnist['test_features'])
  assert abs(frechet.frechet_distance(stats, stats)) < 1e-6
  # KID: subsets of 1,000 drawn independently from the same 10,000 images.
  mean, std = kid.kernel_distance(
      fmnist['test_features'], fmnist['test_features']
  )
  assert abs(mean) < 3 * std / np.sqrt(100) + 0.05 * std, (mean, std)
  # and far from it for another distribution
  noise = net.features(
      np.random.default_rng(0).integers(
          0, 256, (2000, 32, 32, 1), dtype=np.uint8
      )
  )
  other, _ = kid.kernel_distance(noise, fmnist['test_features'])
  assert other > 100 * std


def test_training_is_deterministic_and_learns():
  images, labels = data.load_fashion_mnist('train', DATA_DIR)
  test_images, test_labels = data.load_fashion_mnist('test', DATA_DIR)
  kwargs = dict(
      images=images[:1024], labels=labels[:1024], epochs=2, batch_size=64
  )
  a = classifier.train_classifier(**kwargs)
  b = classifier.train_classifier(**kwargs)
  for layer in a:
    for leaf in a[layer]:
      np.testing.assert_array_equal(a[layer][leaf], b[layer][leaf])
  net = classifier.FeatureNetwork(a, 'test', float('nan'))
  assert np.mean(net.predict(test_images) == test_labels) > 0.6  # chance 0.1


def test_bad_inputs(net, tmp_path):
  with pytest.raises(ValueError, match=r'uint8 images \[N, 32, 32, 1\]'):
    net.features(np.zeros((4, 32, 32, 1), np.float32))
  with pytest.raises(ValueError, match='uint8 images'):
    net.features(np.zeros((4, 28, 28, 1), np.uint8))
  with pytest.raises(
      FileNotFoundError, match='python -m hatebm_jax.evaluation.classifier'
  ):
    classifier.FeatureNetwork.load(str(tmp_path / 'missing.npz'))
