r"""Reads a PyTorch state dict into a NumPy .npz, in a process of its own.

  python -m hatebm_jax.evaluation.torch_weights <weights.pth> <out.npz>

`inception.InceptionFeatures.load` runs this as a subprocess: a CUDA build of
PyTorch loads Triton's LLVM, which can crash a process that has already
loaded JAX's and TensorFlow's. This module imports only NumPy and PyTorch.
"""

import sys

import numpy as np


def main(argv: list[str]) -> None:
  if len(argv) != 3:
    raise SystemExit(
        f'usage: python -m hatebm_jax.evaluation.torch_weights <in.pth> '
        f'<out.npz>; got {argv[1:]}'
    )
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise SystemExit(
        'NO_TORCH: reading a .pth file needs PyTorch: '
        '`pip install torch` (CPU is enough).'
    ) from None
  state = torch.load(argv[1], map_location='cpu', weights_only=True)
  arrays = {name: value.detach().cpu().numpy() for name, value in state.items()}
  with open(argv[2], 'wb') as f:
    np.savez(f, **arrays)


if __name__ == '__main__':
  main(sys.argv)
