"""The Flax FID Inception against pytorch-fid's own model, same random weights.

pytorch-fid runs in a subprocess (tests/pytorch_fid_reference.py): PyTorch's
CUDA build and JAX must not share a process.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from hatebm_jax.evaluation import inception
from conftest import ROOT, random_inception_weights

SIZES = (32, 64)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """(path of random .pth weights, {size: images}, {size: features})."""
  out = tmp_path_factory.mktemp('inception')
  rng = np.random.default_rng(0)
  images = {
      f's{size}': rng.integers(0, 256, (3, size, size, 3), np.uint8)
      for size in SIZES
  }
  np.savez(out / 'images.npz', **images)
  proc = subprocess.run(
      [
          sys.executable,
          os.path.join(ROOT, 'tests', 'pytorch_fid_reference.py'),
          str(out),
          str(out / 'images.npz'),
      ],
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  features = dict(np.load(out / 'features.npz'))
  return str(out / 'random_inception.pth'), images, features


@pytest.fixture
def net(reference, tmp_path, monkeypatch):
  """The network with pytorch-fid's random weights, converted from .pth."""
  monkeypatch.setenv('HATEBM_CACHE_DIR', str(tmp_path))
  with pytest.warns(UserWarning, match='not the standard FID weights'):
    return inception.InceptionFeatures.load(reference[0])


@pytest.fixture(scope='module')
def numpy_net(tmp_path_factory):
  """The network with numpy's random weights from an .npz (no PyTorch)."""
  path = tmp_path_factory.mktemp('weights') / 'random.npz'
  return inception.InceptionFeatures.load(random_inception_weights(path))


@pytest.mark.slow
@pytest.mark.parametrize('size', SIZES)
def test_features_match_pytorch_fid(reference, net, tmp_path, size):
  _, images, features = reference
  expected = features[f's{size}']
  ours = net.features(images[f's{size}'])
  assert ours.shape == expected.shape == (3, inception.NUM_FEATURES)
  assert np.abs(expected).max() > 0.1  # the random net is not degenerate
  assert np.std(expected, axis=0).mean() > 1e-3  # features differ by image
  # Ours (XLA) and PyTorch's both run float32 but sum each convolution in
  # their own order: round-off of 2⁻²⁴ per addition over ~ 3·3·768 terms and
  # ~ 50 layers (batch norm renormalises between them) gives relative
  # differences of order 10⁻⁶ to 10⁻⁵; 10⁻⁴ holds that, while a wrong padding,
  # pooling or weight layout changes features by O(1).
  relative = np.linalg.norm(ours - expected) / np.linalg.norm(expected)
  assert relative <= 1e-4, relative
  np.testing.assert_allclose(
      ours, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max()
  )

  # The conversion is cached once and reused (no PyTorch needed for it).
  cached = list(tmp_path.glob('fid_inception_*.npz'))
  assert len(cached) == 1
  again = inception.InceptionFeatures.load(str(cached[0]))
  assert again.name == net.name
  np.testing.assert_array_equal(again.features(images[f's{size}']), ours)


def test_grayscale_is_repeated_to_rgb(numpy_net):
  net = numpy_net
  gray = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 1), np.uint8)
  # Same values, but two compiled programs (1 and 3 input channels): XLA may
  # fuse the repeat into the first convolution and sum its terms in another
  # order, so float32 round-off (2⁻²⁴ relative) may differ; 10⁻⁶ holds that.
  np.testing.assert_allclose(
      net.features(gray), net.features(np.repeat(gray, 3, axis=-1)), rtol=1e-6
  )


def test_missing_weights_say_where_to_get_them(tmp_path):
  with pytest.raises(
      FileNotFoundError,
      match='pt_inception-2015-12-05-'
      '6726825d.pth.*never downloaded.*github.com/mseitzer',
  ):
    inception.InceptionFeatures.load(str(tmp_path / 'nope.pth'))
  with pytest.raises(FileNotFoundError, match='--inception_weights'):
    inception.InceptionFeatures.load(None)


def test_wrong_files_are_refused(tmp_path, monkeypatch):
  monkeypatch.setenv('HATEBM_CACHE_DIR', str(tmp_path))
  with pytest.raises(ValueError, match='Not an FID Inception-v3 state dict'):
    inception.convert_torch_state_dict(
        {'Conv2d_1a_3x3.conv.weight': np.zeros((32, 3, 3, 3))}
    )
  bogus = tmp_path / 'bogus.pth'
  bogus.write_bytes(b'not a torch file')
  with (
      pytest.warns(UserWarning),
      pytest.raises(
          ValueError, match='Could not read .*bogus.pth as a PyTorch state dict'
      ) as error,
  ):
    inception.InceptionFeatures.load(str(bogus))
  # One line: the reason (the last line of PyTorch's error), not its traceback.
  assert '\n' not in str(error.value) and 'Traceback' not in str(error.value)
  broken = tmp_path / 'broken.npz'
  broken.write_bytes(b'PK not a zip archive')
  with pytest.raises(
      ValueError, match='broken.npz is not a readable .npz of converted'
  ):
    inception.InceptionFeatures.load(str(broken))


def test_bad_images_are_refused(numpy_net):
  net = numpy_net
  with pytest.raises(ValueError, match='uint8 images'):
    net.features(np.zeros((2, 32, 32, 3), np.float32))
