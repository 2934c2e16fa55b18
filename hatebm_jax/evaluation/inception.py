"""FID Inception-v3 (pool_3, 2048 features) in Flax, with pytorch-fid's weights.

FID (Heusel et al. 2017) is defined by the TF1 Inception graph
`inception-2015-12-05`; pytorch-fid (Seitzer) carries those weights over to
PyTorch as `pt_inception-2015-12-05-6726825d.pth`, with the graph's small
differences from torchvision's Inception-v3 (average pools that do not count
padding in the 35×35, 17×17 and first 8×8 blocks; a max pool in the last
block). This module is a layer-for-layer Flax NNX port of that network:

  uint8 [N, H, W, C] -> /255 -> bilinear resize to 299×299 (half-pixel
  centres, no antialiasing, i.e. torch `align_corners=False`) -> 2x − 1 ->
  Inception-v3 up to Mixed_7c -> global average pool -> [N, 2048].

Grayscale images (C = 1) are repeated to three channels. The official Hat EBM
code fed uint8 images to the TF graph (docs/official_release.md §6.2);
pytorch-fid's port is "close but not bit-identical because of the resize", so
FIDs from it are comparable to pytorch-fid's, and close to TTUR's.

Weights are never downloaded: the user passes the path of the `.pth` file
(from the pytorch-fid GitHub release). Reading it needs PyTorch once
(`pip install torch`); the converted Flax parameters are cached as `.npz`
(in $HATEBM_CACHE_DIR, default ~/.cache/hatebm_jax) and can be passed
directly afterwards, e.g. on TPU hosts without PyTorch.
"""

import hashlib
import os
import subprocess
import sys
import tempfile
import warnings
import zipfile
from typing import Optional, Sequence

from etils import epath
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from hatebm_jax.infra import cache
from hatebm_jax.infra import progress as progress_lib

WEIGHTS_FILE = 'pt_inception-2015-12-05-6726825d.pth'
WEIGHTS_URL = (
    'https://github.com/mseitzer/pytorch-fid/releases/download/'
    f'fid_weights/{WEIGHTS_FILE}'
)
WEIGHTS_SHA256_PREFIX = '6726825d'  # torch-hub convention: in the file name
FEATURE_NET = 'inception-v3-pool3-pytorch-fid'
PREPROCESSING = (
    'uint8 -> /255 -> bilinear 299x299 (align_corners=False, '
    'no antialias) -> 2x-1; grayscale repeated to RGB'
)
INPUT_SIZE = 299
NUM_FEATURES = 2048
BN_EPSILON = 1e-3  # torchvision BasicConv2d


cache_dir = cache.cache_dir  # $HATEBM_CACHE_DIR, default ~/.cache/hatebm_jax


class BasicConv2d(nnx.Module):
  """Convolution without bias, inference batch norm (ε = 1e-3), ReLU."""

  def __init__(
      self,
      in_channels: int,
      out_channels: int,
      kernel: Sequence[int],
      rngs: nnx.Rngs,
      stride: int = 1,
      padding: Sequence[int] = (0, 0),
  ):
    pad_h, pad_w = padding
    self.conv = nnx.Conv(
        in_channels,
        out_channels,
        tuple(kernel),
        strides=stride,
        padding=((pad_h, pad_h), (pad_w, pad_w)),
        use_bias=False,
        rngs=rngs,
    )
    self.bn = nnx.BatchNorm(
        out_channels, use_running_average=True, epsilon=BN_EPSILON, rngs=rngs
    )

  def __call__(self, x):
    return nnx.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x):
  """3×3 stride-1 average over the valid pixels (count_include_pad=False)."""
  return nnx.avg_pool(
      x,
      (3, 3),
      strides=(1, 1),
      padding=((1, 1), (1, 1)),
      count_include_pad=False,
  )


def _max_pool_3x3(x, stride=2, pad=0):
  return nnx.max_pool(
      x, (3, 3), strides=(stride, stride), padding=((pad, pad), (pad, pad))
  )


class InceptionA(nnx.Module):
  """35×35 block (pytorch-fid's FIDInceptionA)."""

  def __init__(self, cin: int, pool_features: int, rngs: nnx.Rngs):
    self.branch1x1 = BasicConv2d(cin, 64, (1, 1), rngs)
    self.branch5x5_1 = BasicConv2d(cin, 48, (1, 1), rngs)
    self.branch5x5_2 = BasicConv2d(48, 64, (5, 5), rngs, padding=(2, 2))
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, (1, 1), rngs)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, (3, 3), rngs, padding=(1, 1))
    self.branch3x3dbl_3 = BasicConv2d(96, 96, (3, 3), rngs, padding=(1, 1))
    self.branch_pool = BasicConv2d(cin, pool_features, (1, 1), rngs)

  def __call__(self, x):
    return jnp.concatenate(
        [
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool_3x3(x)),
        ],
        axis=-1,
    )


class InceptionB(nnx.Module):
  """35×35 -> 17×17 reduction."""

  def __init__(self, cin: int, rngs: nnx.Rngs):
    self.branch3x3 = BasicConv2d(cin, 384, (3, 3), rngs, stride=2)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, (1, 1), rngs)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, (3, 3), rngs, padding=(1, 1))
    self.branch3x3dbl_3 = BasicConv2d(96, 96, (3, 3), rngs, stride=2)

  def __call__(self, x):
    return jnp.concatenate(
        [
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            _max_pool_3x3(x),
        ],
        axis=-1,
    )


class InceptionC(nnx.Module):
  """17×17 block with factorised 7×7 convolutions (FIDInceptionC)."""

  def __init__(self, cin: int, c7: int, rngs: nnx.Rngs):
    row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))
    self.branch1x1 = BasicConv2d(cin, 192, (1, 1), rngs)
    self.branch7x7_1 = BasicConv2d(cin, c7, (1, 1), rngs)
    self.branch7x7_2 = BasicConv2d(c7, c7, row[0], rngs, padding=row[1])
    self.branch7x7_3 = BasicConv2d(c7, 192, col[0], rngs, padding=col[1])
    self.branch7x7dbl_1 = BasicConv2d(cin, c7, (1, 1), rngs)
    self.branch7x7dbl_2 = BasicConv2d(c7, c7, col[0], rngs, padding=col[1])
    self.branch7x7dbl_3 = BasicConv2d(c7, c7, row[0], rngs, padding=row[1])
    self.branch7x7dbl_4 = BasicConv2d(c7, c7, col[0], rngs, padding=col[1])
    self.branch7x7dbl_5 = BasicConv2d(c7, 192, row[0], rngs, padding=row[1])
    self.branch_pool = BasicConv2d(cin, 192, (1, 1), rngs)

  def __call__(self, x):
    dbl = self.branch7x7dbl_1(x)
    for layer in (
        self.branch7x7dbl_2,
        self.branch7x7dbl_3,
        self.branch7x7dbl_4,
        self.branch7x7dbl_5,
    ):
      dbl = layer(dbl)
    return jnp.concatenate(
        [
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            dbl,
            self.branch_pool(_avg_pool_3x3(x)),
        ],
        axis=-1,
    )


class InceptionD(nnx.Module):
  """17×17 -> 8×8 reduction."""

  def __init__(self, cin: int, rngs: nnx.Rngs):
    self.branch3x3_1 = BasicConv2d(cin, 192, (1, 1), rngs)
    self.branch3x3_2 = BasicConv2d(192, 320, (3, 3), rngs, stride=2)
    self.branch7x7x3_1 = BasicConv2d(cin, 192, (1, 1), rngs)
    self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), rngs, padding=(0, 3))
    self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), rngs, padding=(3, 0))
    self.branch7x7x3_4 = BasicConv2d(192, 192, (3, 3), rngs, stride=2)

  def __call__(self, x):
    b7 = self.branch7x7x3_1(x)
    for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
      b7 = layer(b7)
    return jnp.concatenate(
        [self.branch3x3_2(self.branch3x3_1(x)), b7, _max_pool_3x3(x)], axis=-1
    )


class InceptionE(nnx.Module):
  """8×8 block; pytorch-fid's E_1 pools by average, E_2 by maximum."""

  def __init__(self, cin: int, pool: str, rngs: nnx.Rngs):
    self.pool = pool
    self.branch1x1 = BasicConv2d(cin, 320, (1, 1), rngs)
    self.branch3x3_1 = BasicConv2d(cin, 384, (1, 1), rngs)
    self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), rngs, padding=(0, 1))
    self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), rngs, padding=(1, 0))
    self.branch3x3dbl_1 = BasicConv2d(cin, 448, (1, 1), rngs)
    self.branch3x3dbl_2 = BasicConv2d(448, 384, (3, 3), rngs, padding=(1, 1))
    self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), rngs, padding=(0, 1))
    self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), rngs, padding=(1, 0))
    self.branch_pool = BasicConv2d(cin, 192, (1, 1), rngs)

  def __call__(self, x):
    b3 = self.branch3x3_1(x)
    dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    pooled = (
        _avg_pool_3x3(x)
        if self.pool == 'avg'
        else _max_pool_3x3(x, stride=1, pad=1)
    )
    return jnp.concatenate(
        [
            self.branch1x1(x),
            self.branch3x3_2a(b3),
            self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(dbl),
            self.branch3x3dbl_3b(dbl),
            self.branch_pool(pooled),
        ],
        axis=-1,
    )


class FIDInceptionV3(nnx.Module):
  """[B, 299, 299, 3] in [-1, 1] -> pool_3 features [B, 2048] (≥ 0)."""

  def __init__(self, rngs: nnx.Rngs):
    self.Conv2d_1a_3x3 = BasicConv2d(3, 32, (3, 3), rngs, stride=2)
    self.Conv2d_2a_3x3 = BasicConv2d(32, 32, (3, 3), rngs)
    self.Conv2d_2b_3x3 = BasicConv2d(32, 64, (3, 3), rngs, padding=(1, 1))
    self.Conv2d_3b_1x1 = BasicConv2d(64, 80, (1, 1), rngs)
    self.Conv2d_4a_3x3 = BasicConv2d(80, 192, (3, 3), rngs)
    self.Mixed_5b = InceptionA(192, 32, rngs)
    self.Mixed_5c = InceptionA(256, 64, rngs)
    self.Mixed_5d = InceptionA(288, 64, rngs)
    self.Mixed_6a = InceptionB(288, rngs)
    self.Mixed_6b = InceptionC(768, 128, rngs)
    self.Mixed_6c = InceptionC(768, 160, rngs)
    self.Mixed_6d = InceptionC(768, 160, rngs)
    self.Mixed_6e = InceptionC(768, 192, rngs)
    self.Mixed_7a = InceptionD(768, rngs)
    self.Mixed_7b = InceptionE(1280, 'avg', rngs)
    self.Mixed_7c = InceptionE(2048, 'max', rngs)

  def __call__(self, x):
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = _max_pool_3x3(x)
    x = _max_pool_3x3(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
    for block in (
        self.Mixed_5b,
        self.Mixed_5c,
        self.Mixed_5d,
        self.Mixed_6a,
        self.Mixed_6b,
        self.Mixed_6c,
        self.Mixed_6d,
        self.Mixed_6e,
        self.Mixed_7a,
        self.Mixed_7b,
        self.Mixed_7c,
    ):
      x = block(x)
    return x.mean(axis=(1, 2))


def preprocess(images: jax.Array) -> jax.Array:
  """uint8 [B, H, W, C∈{1,3}] -> float32 [B, 299, 299, 3] in [-1, 1].

  The same operations, in the same order, as pytorch-fid: x/255, bilinear
  resize with half-pixel centres and no antialiasing, then 2x − 1.
  """
  x = images.astype(jnp.float32) / 255.0
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  x = jax.image.resize(
      x,
      (x.shape[0], INPUT_SIZE, INPUT_SIZE, 3),
      method='linear',
      antialias=False,
  )
  return 2.0 * x - 1.0


def _graphdef():
  return nnx.split(nnx.eval_shape(lambda: FIDInceptionV3(nnx.Rngs(0))))[0]


def convert_torch_state_dict(state_dict: dict) -> dict:
  """pytorch-fid / torchvision Inception state dict -> our flat parameters.

  Conv weights go from OIHW to HWIO; batch norm weight/bias/running_mean/
  running_var become scale/bias/mean/var. The 1008-way `fc` classifier and
  `num_batches_tracked` counters are not part of pool_3 and are dropped.

  Args:
    state_dict: name -> NumPy array.

  Returns:
    '/'-joined parameter paths (e.g. 'Mixed_5b/branch1x1/conv/kernel') ->
    float32 numpy arrays.

  Raises:
    ValueError: when a parameter of the network is missing or has the wrong
      shape.
  """
  renames = {
      'weight': 'scale',
      'bias': 'bias',
      'running_mean': 'mean',
      'running_var': 'var',
  }
  flat = {}
  for name, value in state_dict.items():
    parts = name.split('.')
    if parts[0] in ('fc', 'AuxLogits') or parts[-1] == 'num_batches_tracked':
      continue
    value = np.asarray(value, np.float32)
    if parts[-2] == 'conv':
      flat['/'.join(parts[:-1] + ['kernel'])] = value.transpose(2, 3, 1, 0)
    else:
      flat['/'.join(parts[:-1] + [renames[parts[-1]]])] = value
  expected = _expected_shapes()
  missing = sorted(set(expected) - set(flat))
  wrong = sorted(
      k for k in set(expected) & set(flat) if flat[k].shape != expected[k]
  )
  if missing or wrong:
    raise ValueError(
        'Not an FID Inception-v3 state dict: missing '
        f'{missing[:5]}{"..." if len(missing) > 5 else ""} ({len(missing)}), '
        f'wrong shapes {[(k, flat[k].shape, expected[k]) for k in wrong[:5]]}.'
    )
  return {k: flat[k] for k in expected}


def _expected_shapes() -> dict:
  state = nnx.split(nnx.eval_shape(lambda: FIDInceptionV3(nnx.Rngs(0))))[1]
  flat = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(state))[0]
  return {
      '/'.join(str(k.key) for k in path): tuple(leaf.shape)
      for path, leaf in flat
  }


def _unflatten(flat: dict) -> dict:
  tree = {}
  for key, value in flat.items():
    *parents, leaf = key.split('/')
    node = tree
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = jnp.asarray(value)
  return tree


def _read_torch_file(path: epath.Path) -> dict:
  """name -> array of a PyTorch state dict, read in a subprocess (see
  `hatebm_jax.evaluation.torch_weights` for why)."""
  with tempfile.TemporaryDirectory() as tmp:
    local = os.path.join(tmp, 'weights.pth')
    out = os.path.join(tmp, 'weights.npz')
    with open(local, 'wb') as f:
      f.write(path.read_bytes())
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'hatebm_jax.evaluation.torch_weights',
            local,
            out,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
      if 'NO_TORCH' in proc.stderr:
        raise ImportError(
            f'Reading {path} (a PyTorch file) needs PyTorch once: `pip '
            'install torch` (CPU is enough), or pass the converted .npz '
            'made on another machine.'
        )
      reason = (proc.stderr.strip().splitlines() or ['no message'])[-1]
      raise ValueError(
          f'Could not read {path} as a PyTorch state dict ({reason[:300]}); '
          f"pass pytorch-fid's {WEIGHTS_FILE} ({WEIGHTS_URL}) or its "
          'converted .npz.'
      )
    with open(out, 'rb') as f:
      return dict(np.load(f, allow_pickle=False))


class InceptionFeatures:
  """The FID feature extractor: uint8 images -> pool_3 features.

  Attributes:
    name: '<FEATURE_NET>:<first 12 hex digits of the weights' SHA-256>'.
    preprocessing: `PREPROCESSING`.
  """

  def __init__(self, flat_params: dict, name: str):
    self.name = name
    self.preprocessing = PREPROCESSING
    self.params = _unflatten(flat_params)
    graphdef = _graphdef()
    self._apply = jax.jit(lambda p, x: nnx.merge(graphdef, p)(preprocess(x)))

  @classmethod
  def load(cls, path: Optional[str]) -> 'InceptionFeatures':
    """Loads pytorch-fid's `.pth` (needs PyTorch) or a converted `.npz`.

    A `.pth` is converted once; the result is cached as
    `<cache_dir>/fid_inception_<sha12>.npz` and reused on later calls.

    Raises:
      FileNotFoundError: when `path` is None or missing, saying where to
        get the file (nothing is downloaded).
      ImportError: for a `.pth` when PyTorch is not installed.
      ValueError: for a file that is not this network.
    Warns:
      UserWarning: when the SHA-256 of a `.pth` does not start with
        6726825d, i.e. it is not the standard FID weights.
    """
    if not path or not epath.Path(path).exists():
      raise FileNotFoundError(
          f'FID needs the Inception weights file {WEIGHTS_FILE} (pytorch-fid), '
          f'which is never downloaded here; got {path!r}. Download it once '
          f'from {WEIGHTS_URL} and pass its path with --inception_weights=... '
          '(or a converted .npz from the cache of an earlier run).'
      )
    path = epath.Path(path)
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if path.suffix == '.npz':
      try:
        with path.open('rb') as f:
          stored = dict(np.load(f, allow_pickle=False))
      except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(
            f'{path} is not a readable .npz of converted Inception weights '
            f"({type(e).__name__}: {e}); pass pytorch-fid's {WEIGHTS_FILE} "
            f'({WEIGHTS_URL}) to convert it again.'
        ) from e
      source = str(stored.pop('__source_sha256__', digest))
      return cls(stored, f'{FEATURE_NET}:{source[:12]}')
    if not digest.startswith(WEIGHTS_SHA256_PREFIX):
      warnings.warn(
          f'{path} has SHA-256 {digest[:12]}..., not the standard '
          f'FID weights ({WEIGHTS_SHA256_PREFIX}...): FIDs from it '
          'are not comparable with published ones.',
          stacklevel=2,
      )
    cached = cache_dir() / f'fid_inception_{digest[:12]}.npz'
    if cached.exists():
      with cached.open('rb') as f:
        stored = dict(np.load(f, allow_pickle=False))
      stored.pop('__source_sha256__', None)
      return cls(stored, f'{FEATURE_NET}:{digest[:12]}')
    state_dict = _read_torch_file(path)
    flat = convert_torch_state_dict(state_dict)
    cached.parent.mkdir(parents=True, exist_ok=True)
    # Atomic, and safe for processes converting at once: each writes a name
    # of its own and replaces the entry with the same content.
    tmp = cached.parent / f'.{cached.name}.{os.getpid()}.tmp'
    with tmp.open('wb') as f:
      np.savez(f, __source_sha256__=digest, **flat)
    tmp.replace(cached)
    return cls(flat, f'{FEATURE_NET}:{digest[:12]}')

  def features(
      self, images: np.ndarray, batch_size: int = 100, progress: str = ''
  ) -> np.ndarray:
    """pool_3 features [N, 2048] float32 of uint8 images [N, H, W, 1 or 3];
    with `progress`, a line starting with it at each tenth of the images
    (`infra.progress`).

    Raises:
      ValueError: for another dtype or layout.
    """
    images = np.asarray(images)
    if (
        images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[-1] not in (1, 3)
    ):
      raise ValueError(
          f'FID features need uint8 images [N, H, W, 1 or 3]; '
          f'got {images.dtype} {images.shape}.'
      )
    outputs = []
    report = progress_lib.Progress(progress, len(images)) if progress else None
    for start in range(0, len(images), batch_size):
      chunk = images[start : start + batch_size]
      size = len(chunk)
      if size < batch_size and len(images) > batch_size:
        chunk = np.concatenate(
            [chunk, np.zeros((batch_size - size,) + chunk.shape[1:], np.uint8)]
        )
      outputs.append(np.asarray(self._apply(self.params, chunk))[:size])
      if report:
        report.update(start + size)
    return np.concatenate(outputs)
