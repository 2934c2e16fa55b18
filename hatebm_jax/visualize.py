"""PNG grids of samples, as in the paper's Figure 3.

Images are clipped to [-1, 1] and mapped to [0, 1] for display only
(docs/official_release.md §4.5, §8 #14). Residuals are shown magnified, 5·y, on
a grey background where y = 0 is mid-grey (paper Fig. 3).
"""

import io
import math
from typing import Optional, Sequence

from etils import epath
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
import PIL.Image

RESIDUAL_MAGNIFICATION = 5.0


def to_display(images: np.ndarray) -> np.ndarray:
  """[-1, 1] images (any range) -> clipped [0, 1], same shape."""
  return (np.clip(np.asarray(images, np.float32), -1.0, 1.0) + 1.0) / 2.0


def tile(
    images: np.ndarray, columns: Optional[int] = None, pad: int = 1
) -> np.ndarray:
  """Tiles [N, H, W, C] display images in [0, 1] into one [h, w, C] image."""
  n, h, w, c = images.shape
  columns = columns or int(math.ceil(math.sqrt(n)))
  rows = int(math.ceil(n / columns))
  grid = np.ones(
      (rows * (h + pad) + pad, columns * (w + pad) + pad, c), np.float32
  )
  for i in range(n):
    r, col = divmod(i, columns)
    top, left = pad + r * (h + pad), pad + col * (w + pad)
    grid[top : top + h, left : left + w] = images[i]
  return grid


def _show(ax, image: np.ndarray, title: str) -> None:
  if image.shape[-1] == 1:
    ax.imshow(
        image[..., 0], cmap='gray', vmin=0.0, vmax=1.0, interpolation='nearest'
    )
  else:
    ax.imshow(image, interpolation='nearest')
  ax.set_title(title, fontsize=10)
  ax.axis('off')


def save_panels(
    path: str,
    panels: Sequence[tuple[str, np.ndarray]],
    suptitle: str = '',
    columns: Optional[int] = None,
) -> np.ndarray:
  """Saves titled image grids side by side as one PNG (local or gs://).

  Args:
    path: output .png path.
    panels: (title, display images [N, H, W, C] in [0, 1]) pairs.
    suptitle: a title over all panels.
    columns: images per grid row; about √N when None.

  Returns:
    The PNG's pixels, uint8 [h, w, 3] (for TensorBoard: `write_image`).
  """
  grids = [(title, tile(images, columns)) for title, images in panels]
  aspect = max(grid.shape[0] / grid.shape[1] for _, grid in grids)
  fig, axes = plt.subplots(
      1, len(grids), figsize=(4 * len(grids), 4 * aspect + 0.6)
  )
  axes = np.atleast_1d(axes)
  for ax, (title, grid) in zip(axes, grids):
    _show(ax, grid, title)
  if suptitle:
    fig.suptitle(suptitle)
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=150)
  plt.close(fig)
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(buffer.getvalue())
  buffer.seek(0)
  return np.asarray(PIL.Image.open(buffer).convert('RGB'))


def write_image(writer, step: int, tag: str, pixels: np.ndarray) -> None:
  """Writes a PNG's pixels (uint8 [h, w, 3], from `save_panels`) to a clu
  metric writer: TensorBoard's Images tab shows the same picture as the
  PNG, under `tag`, at `step`."""
  writer.write_images(step, {tag: pixels[None]})


def save_sample_grid(
    path: str, x_gen: np.ndarray, y: np.ndarray, suptitle: str = ''
) -> np.ndarray:
  """Saves the Figure-3 view of conditional samples.

  Args:
    path: output .png path.
    x_gen: G(z) [N, H, W, C], unclipped.
    y: residuals y_K [N, H, W, C].
    suptitle: a title, e.g. the step.

  Returns:
    The PNG's pixels, uint8 [h, w, 3].
  """
  x_gen, y = np.asarray(x_gen), np.asarray(y)
  return save_panels(
      path,
      [
          ('X = G(z) + y', to_display(x_gen + y)),
          ('G(z)', to_display(x_gen)),
          (
              f'{RESIDUAL_MAGNIFICATION:g}·y (grey = 0)',
              to_display(RESIDUAL_MAGNIFICATION * y),
          ),
      ],
      suptitle,
  )
