"""The Flax FID Inception against pytorch-fid's own model, same random weights."""

import numpy as np
import pytest
# Test-only dependencies (requirements-test.txt); a missing one fails loudly.
from pytorch_fid import inception as pytorch_fid_inception
import torch

from hatebm_jax import inception


def _random_state_dict(seed):
  """Random weights for every tensor of pytorch-fid's FID Inception.

  He-scaled convolutions and batch-norm statistics near (0, 1) keep the
  activations O(1) through all 94 layers, so the comparison is meaningful.
  """
  torch.manual_seed(seed)
  model = pytorch_fid_inception._inception_v3(  # pylint: disable=protected-access
      num_classes=1008, aux_logits=False, weights=None)
  for block, args in [('Mixed_5b', (192, 32)), ('Mixed_5c', (256, 64)),
                      ('Mixed_5d', (288, 64))]:
    setattr(model, block, pytorch_fid_inception.FIDInceptionA(*args))
  for block, c7 in [('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160),
                    ('Mixed_6e', 192)]:
    setattr(model, block, pytorch_fid_inception.FIDInceptionC(768, c7))
  model.Mixed_7b = pytorch_fid_inception.FIDInceptionE_1(1280)
  model.Mixed_7c = pytorch_fid_inception.FIDInceptionE_2(2048)
  state = {}
  for name, value in model.state_dict().items():
    if name.endswith('conv.weight'):
      fan_in = value[0].numel()
      value = torch.randn_like(value) * (2.0 / fan_in) ** 0.5
    elif name.endswith('bn.weight'):
      value = 0.5 + torch.rand_like(value)
    elif name.endswith(('bn.bias', 'running_mean')):
      value = 0.2 * torch.randn_like(value)
    elif name.endswith('running_var'):
      value = 0.5 + torch.rand_like(value)
    elif name.startswith('fc.'):
      value = 0.01 * torch.randn_like(value)
    state[name] = value
  return state


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
  """(state dict, path of it saved as a .pth file)."""
  state = _random_state_dict(0)
  path = tmp_path_factory.mktemp('inception') / 'random_inception.pth'
  torch.save(state, path)
  return state, str(path)


def _pytorch_fid_features(state, images):
  """pool_3 features from pytorch-fid's InceptionV3, given our state dict."""
  original = pytorch_fid_inception.load_state_dict_from_url
  pytorch_fid_inception.load_state_dict_from_url = lambda *a, **k: state
  try:
    model = pytorch_fid_inception.InceptionV3([3]).eval()
  finally:
    pytorch_fid_inception.load_state_dict_from_url = original
  x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
  with torch.no_grad():
    return model(x)[0].squeeze(-1).squeeze(-1).numpy()


@pytest.mark.parametrize('size', [32, 64])
def test_features_match_pytorch_fid(weights, tmp_path, monkeypatch, size):
  monkeypatch.setenv('HATEBM_CACHE_DIR', str(tmp_path))
  state, path = weights
  rng = np.random.default_rng(size)
  images = rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8)
  reference = _pytorch_fid_features(state, images)
  with pytest.warns(UserWarning, match='not the standard FID weights'):
    net = inception.InceptionFeatures.load(path)
  ours = net.features(images)
  assert ours.shape == (3, inception.NUM_FEATURES)
  assert np.abs(reference).max() > 0.1  # the random net is not degenerate
  assert np.std(reference, axis=0).mean() > 1e-3  # features differ by image
  relative = np.linalg.norm(ours - reference) / np.linalg.norm(reference)
  print(f"size {size}: relative L2 difference {relative:.2e}")
  assert relative <= 1e-4, relative
  np.testing.assert_allclose(ours, reference, rtol=1e-4,
                             atol=1e-4 * np.abs(reference).max())

  # The conversion is cached once and reused (no PyTorch needed for it).
  cached = list(tmp_path.glob('fid_inception_*.npz'))
  assert len(cached) == 1
  again = inception.InceptionFeatures.load(str(cached[0]))
  assert again.name == net.name
  np.testing.assert_array_equal(again.features(images), ours)


def test_grayscale_is_repeated_to_rgb(weights, tmp_path, monkeypatch):
  monkeypatch.setenv('HATEBM_CACHE_DIR', str(tmp_path))
  with pytest.warns(UserWarning):
    net = inception.InceptionFeatures.load(weights[1])
  gray = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 1), np.uint8)
  np.testing.assert_allclose(net.features(gray),
                             net.features(np.repeat(gray, 3, axis=-1)),
                             rtol=1e-6)


def test_missing_weights_say_where_to_get_them(tmp_path):
  with pytest.raises(FileNotFoundError, match='pt_inception-2015-12-05-'
                     '6726825d.pth.*never downloaded.*github.com/mseitzer'):
    inception.InceptionFeatures.load(str(tmp_path / 'nope.pth'))
  with pytest.raises(FileNotFoundError, match='--inception_weights'):
    inception.InceptionFeatures.load(None)


def test_wrong_state_dict_is_refused():
  with pytest.raises(ValueError, match='Not an FID Inception-v3 state dict'):
    inception.convert_torch_state_dict(
        {'Conv2d_1a_3x3.conv.weight': np.zeros((32, 3, 3, 3))})


def test_bad_images_are_refused(weights, tmp_path, monkeypatch):
  monkeypatch.setenv('HATEBM_CACHE_DIR', str(tmp_path))
  with pytest.warns(UserWarning):
    net = inception.InceptionFeatures.load(weights[1])
  with pytest.raises(ValueError, match='uint8 images'):
    net.features(np.zeros((2, 32, 32, 3), np.float32))
