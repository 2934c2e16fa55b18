r"""Reference features from pytorch-fid's own InceptionV3, for test_inception.

  python tests/pytorch_fid_reference.py <out_dir> <images.npz>

Builds pytorch-fid's FID Inception with random weights (He-scaled
convolutions, batch-norm statistics near (0, 1), so activations stay O(1)
through all 94 layers), saves them as <out_dir>/random_inception.pth, and
writes pool_3 features of each array in images.npz (uint8 NHWC) to
<out_dir>/features.npz. Runs in its own process: the CUDA build of PyTorch
loads Triton's LLVM, which can crash a process that holds JAX's.
"""

import sys

import numpy as np
from pytorch_fid import inception as fid
import torch


def random_state_dict(seed: int) -> dict:
  torch.manual_seed(seed)
  model = fid._inception_v3(  # pylint: disable=protected-access
      num_classes=1008, aux_logits=False, weights=None
  )
  for block, args in [
      ('Mixed_5b', (192, 32)),
      ('Mixed_5c', (256, 64)),
      ('Mixed_5d', (288, 64)),
  ]:
    setattr(model, block, fid.FIDInceptionA(*args))
  for block, c7 in [
      ('Mixed_6b', 128),
      ('Mixed_6c', 160),
      ('Mixed_6d', 160),
      ('Mixed_6e', 192),
  ]:
    setattr(model, block, fid.FIDInceptionC(768, c7))
  model.Mixed_7b = fid.FIDInceptionE_1(1280)
  model.Mixed_7c = fid.FIDInceptionE_2(2048)
  state = {}
  for name, value in model.state_dict().items():
    if name.endswith('conv.weight'):
      value = torch.randn_like(value) * (2.0 / value[0].numel()) ** 0.5
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


def main(out_dir: str, images_path: str) -> None:
  state = random_state_dict(0)
  torch.save(state, f'{out_dir}/random_inception.pth')
  # pytorch-fid's InceptionV3 fetches its weights by URL: hand it ours.
  fid.load_state_dict_from_url = lambda *args, **kwargs: state
  model = fid.InceptionV3([fid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
  features = {}
  with np.load(images_path) as images:
    for key in images.files:
      x = torch.from_numpy(images[key]).permute(0, 3, 1, 2).float() / 255.0
      with torch.no_grad():
        features[key] = model(x)[0][:, :, 0, 0].numpy()
  np.savez(f'{out_dir}/features.npz', **features)


if __name__ == '__main__':
  main(*sys.argv[1:])
