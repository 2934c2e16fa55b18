"""What every data source yields, and the shape each data set is trained at.

Images are float32 [B, S, S, C] in [-1, 1], x = 2·(u/255) − 1 for uint8
pixels u, scaled before any resize (docs/official_release.md §2).
"""

import numpy as np

# Image shape [S, S, C] that each data set is trained at
# (docs/official_release.md §2, §9.1).
IMAGE_DIMS = {
    'fashion_mnist': (32, 32, 1),
    'cifar10': (32, 32, 3),
    'celeb_a': (64, 64, 3),
    'imagenet2012': (128, 128, 3),
}
TFDS_DATASETS = ('cifar10', 'celeb_a', 'imagenet2012')
TFDS_DATASETS = ('cifar10', 'celeb_a', 'imagenet2012')


def to_float(images: np.ndarray) -> np.ndarray:
  """uint8 pixels [..] in [0, 255] -> float32 in [-1, 1] (docs/official_release.md §2)."""
  return images.astype(np.float32) * (2.0 / 255.0) - 1.0
