"""OOD scoring: MNIST loading, controls, AUROC, batched energies."""

import gzip
import os
import pickle

import numpy as np
import pytest

from hatebm_jax.evaluation import ood


def test_mnist_test_split_is_the_real_one():
  images = ood.load_mnist('test')
  assert images.shape == (10_000, 32, 32, 1) and images.dtype == np.uint8
  assert images[:, :2].max() == 0 and images[:, :, -2:].max() == 0  # padding
  # The standard MNIST test-set mean pixel: 0.1325 (of 28x28, in [0, 1]),
  # published to four digits, hence ±5·10⁻⁴.
  assert images[:, 2:30, 2:30].mean() / 255 == pytest.approx(0.1325, abs=5e-4)
  assert len(ood.load_mnist('train')) == 50_000
  with pytest.raises(ValueError, match="split='val'"):
    ood.load_mnist('val')


def test_unpickler_refuses_anything_but_arrays(tmp_path):
  payload = pickle.dumps(os.system)
  with pytest.raises(pickle.UnpicklingError, match='not allowed'):
    ood._NumpyOnlyUnpickler(  # pylint: disable=protected-access
        gzip.io.BytesIO(payload)
    ).load()


def test_controls():
  noise = ood.control_images('uniform_noise', 500, (32, 32, 1))
  assert noise.shape == (500, 32, 32, 1) and noise.dtype == np.uint8
  assert noise.min() == 0 and noise.max() == 255
  # 512,000 uniform levels 0..255 (std 73.9): standard error 0.10, so ±1.0
  # is 10 standard errors (and the seed is fixed).
  assert noise.mean() == pytest.approx(127.5, abs=1.0)
  const = ood.control_images('constant', 50, (32, 32, 3))
  flat = const.reshape(50, -1)
  assert np.all(flat == flat[:, :1]) and len(np.unique(flat[:, 0])) > 30
  with pytest.raises(ValueError, match="kind='blank'"):
    ood.control_images('blank', 1, (32, 32, 1))


def test_auroc_values():
  rng = np.random.default_rng(0)
  # Standard error of the AUROC of two equal distributions with n = m = 5000:
  # sqrt((n + m + 1) / (12 n m)) = 0.0058, so ±0.02 is 3.5 of them.
  same = ood.auroc(rng.standard_normal(5000), rng.standard_normal(5000))
  assert same == pytest.approx(0.5, abs=0.02)
  assert ood.auroc([0.0, 1.0], [2.0, 3.0]) == 1.0  # OOD has higher energy
  assert ood.auroc([2.0, 3.0], [0.0, 1.0]) == 0.0
  # Shifted Gaussians: AUROC = Φ(d / √2) = 0.76025 for d = 1; with 20,000 a
  # side its standard error is below 0.003, so ±0.01 is over 3 of them.
  shifted = ood.auroc(
      rng.standard_normal(20_000), 1.0 + rng.standard_normal(20_000)
  )
  assert shifted == pytest.approx(0.7602, abs=0.01)
  with pytest.raises(ValueError, match='non-finite'):
    ood.auroc([0.0, np.nan], [1.0])
  with pytest.raises(ValueError, match='both sides'):
    ood.auroc([], [1.0])


def test_energy_scores_do_not_depend_on_batching():
  images = ood.control_images('uniform_noise', 23, (32, 32, 1))
  energy = lambda x: (x**2).sum(axis=(1, 2, 3))
  a = ood.energy_scores(energy, images, batch_size=5)
  b = ood.energy_scores(energy, images, batch_size=500)
  expected = ((images.astype(np.float64) * 2 / 255 - 1) ** 2).sum((1, 2, 3))
  # float32 sums of 1024 squares against a float64 reference: pairwise
  # summation bounds the relative round-off by about log2(1024) · 2⁻²⁴ = 6·10⁻⁷
  # plus the float32 rounding of the input scaling; 10⁻⁵ holds both.
  np.testing.assert_allclose(a, expected, rtol=1e-5)
  np.testing.assert_array_equal(a, b)


def test_unknown_or_unfit_sets():
  with pytest.raises(ValueError, match="Unknown OOD set 'lsun'"):
    ood.ood_images('lsun', 10, (32, 32, 3))
  with pytest.raises(ValueError, match='MNIST is grayscale'):
    ood.ood_images('mnist', 10, (32, 32, 3))
  with pytest.raises(FileNotFoundError, match='svhn_cropped.*not prepared'):
    ood.ood_images('svhn_cropped', 10, (32, 32, 3), data_dir='/nonexistent')


@pytest.mark.parametrize('name', ['svhn_cropped', 'cifar100', 'celeb_a'])
def test_paper_ood_sets_through_tfds(name):
  """CIFAR-10's OOD sets (paper Table 3) come out as 32x32 uint8 test images."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  with tfds.testing.mock_data(num_examples=7):
    images = ood.ood_images(name, 5, (32, 32, 3))
  assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
  assert images.std() > 3  # pixel content (mock noise, smoothed by the resize)
