r"""The Fashion-MNIST feature network behind the Fréchet Classifier Distance.

The Inception network of FID cannot be had offline here, and it was trained
on colour ImageNet photos anyway. Recognised practice for small grayscale
data is a Fréchet distance on the features of a classifier trained on that
data set (TF-GAN's `mnist_frechet_distance`; the LeNet variant of Bińkowski
et al., "Demystifying MMD GANs", ICLR 2018). We call it the **Fréchet
Classifier Distance (FCD)**, never FID: values from different feature
networks are not comparable.

The network is a LeNet (conv 32 5×5 → max-pool 2 → conv 64 5×5 → max-pool 2
→ dense 128 → dense 10, ReLU, VALID convolutions) on the 32×32 zero-padded
images our models produce; the 128 post-ReLU activations of the dense-128
layer are the features. It is trained on the 60,000 Fashion-MNIST training
images with a fixed seed, and its weights ship in the package
(`hatebm_jax/assets/fashion_mnist_lenet.npz`, 1 MB). Rebuild them with

  python -m hatebm_jax.evaluation.classifier --output=hatebm_jax/assets/fashion_mnist_lenet.npz

which prints the test accuracy (stored in the file too).
"""

import hashlib
import os
from typing import Optional

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
from etils import epath
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hatebm_jax import data
from hatebm_jax.infra import progress as progress_lib

FEATURE_NET = 'fashion-mnist-lenet-v1'
PREPROCESSING = (
    'uint8 [N, 32, 32, 1], 28x28 zero-padded to 32x32, ' 'x / 127.5 - 1'
)
IMAGE_SHAPE = (32, 32, 1)
NUM_FEATURES = 128
DEFAULT_WEIGHTS = (
    epath.resource_path('hatebm_jax') / 'assets' / ('fashion_mnist_lenet.npz')
)
# Training recipe of the shipped weights.
SEED, EPOCHS, BATCH_SIZE, LEARNING_RATE = 0, 3, 128, 1e-3


class LeNet(nnx.Module):
  """LeNet on [B, 32, 32, 1] float images in [-1, 1]."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(1, 32, (5, 5), padding='VALID', rngs=rngs)
    self.conv2 = nnx.Conv(32, 64, (5, 5), padding='VALID', rngs=rngs)
    self.dense1 = nnx.Linear(5 * 5 * 64, NUM_FEATURES, rngs=rngs)
    self.dense2 = nnx.Linear(NUM_FEATURES, 10, rngs=rngs)

  def features(self, x: jax.Array) -> jax.Array:
    """[B, 32, 32, 1] -> penultimate activations [B, 128] (≥ 0)."""
    pool = lambda h: nnx.max_pool(h, (2, 2), strides=(2, 2))
    h = pool(nnx.relu(self.conv1(x)))  # 28 -> 14
    h = pool(nnx.relu(self.conv2(h)))  # 10 -> 5
    return nnx.relu(self.dense1(h.reshape(h.shape[0], -1)))

  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, 32, 32, 1] -> class logits [B, 10]."""
    return self.dense2(self.features(x))


def _graphdef():
  return nnx.split(nnx.eval_shape(lambda: LeNet(nnx.Rngs(0))))[0]


def _check_images(images: np.ndarray) -> None:
  if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
    raise ValueError(
        f'FCD features need uint8 images [N, 32, 32, 1] (the '
        f'padded Fashion-MNIST layout); got {images.dtype} '
        f'{images.shape}.'
    )


class FeatureNetwork:
  """A trained LeNet as a feature extractor for FCD and KID.

  Attributes:
    name: identity written into feature statistics,
      '<FEATURE_NET>:<first 12 hex digits of the weights' SHA-256>', so that
      statistics from other weights are refused.
    preprocessing: how images become inputs (`PREPROCESSING`).
    test_accuracy: Fashion-MNIST test accuracy stored with the weights.
  """

  def __init__(self, params: dict, name: str, test_accuracy: float):
    self.params = params
    self.name = name
    self.preprocessing = PREPROCESSING
    self.test_accuracy = test_accuracy
    graphdef = _graphdef()
    self._features = jax.jit(lambda p, x: nnx.merge(graphdef, p).features(x))
    self._logits = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))

  @classmethod
  def load(cls, path: Optional[str] = None) -> 'FeatureNetwork':
    """Loads weights written by `save_weights` (default: the shipped ones).

    Raises:
      FileNotFoundError: naming the path and how to rebuild the weights.
    """
    path = epath.Path(path or DEFAULT_WEIGHTS)
    if not path.exists():
      raise FileNotFoundError(
          f'No FCD classifier weights at {path}. Rebuild them with `python '
          '-m hatebm_jax.evaluation.classifier --output=<path>` (about 5 minutes on 2 '
          'CPU cores).'
      )
    raw = path.read_bytes()
    with path.open('rb') as f:
      arrays = dict(np.load(f, allow_pickle=False))
    accuracy = float(arrays.pop('test_accuracy'))
    params = {}
    for key, value in arrays.items():
      layer, leaf = key.split('/')
      params.setdefault(layer, {})[leaf] = jnp.asarray(value)
    digest = hashlib.sha256(raw).hexdigest()[:12]
    return cls(params, f'{FEATURE_NET}:{digest}', accuracy)

  def _batches(self, fn, images, batch_size, progress=''):
    _check_images(images)
    outputs = []
    report = progress_lib.Progress(progress, len(images)) if progress else None
    for start in range(0, len(images), batch_size):
      chunk = data.to_float(images[start : start + batch_size])
      size = len(chunk)
      if size < batch_size:  # pad so that one shape compiles once
        chunk = np.concatenate(
            [chunk, np.zeros((batch_size - size,) + IMAGE_SHAPE, np.float32)]
        )
      outputs.append(np.asarray(fn(self.params, chunk))[:size])
      if report:
        report.update(start + size)
    return np.concatenate(outputs)

  def features(
      self, images: np.ndarray, batch_size: int = 500, progress: str = ''
  ) -> np.ndarray:
    """Penultimate features [N, 128] float32 of uint8 images [N, 32, 32, 1];
    with `progress`, a line starting with it at each tenth of the images.

    Raises:
      ValueError: for another dtype or shape.
    """
    return self._batches(self._features, images, batch_size, progress)

  def predict(self, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Predicted classes [N] (int) of uint8 images [N, 32, 32, 1]."""
    return self._batches(self._logits, images, batch_size).argmax(-1)


def train_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    seed: int = SEED,
    epochs: int = EPOCHS,
    batch_size: int = BATCH_SIZE,
    learning_rate: float = LEARNING_RATE,
) -> dict:
  """Trains the LeNet with Adam on softmax cross-entropy.

  Deterministic on one machine for a given seed: initialisation from
  `PRNGKey(seed)`, shuffles from `np.random.default_rng(seed)`; the last
  partial batch of each epoch is dropped.

  Args:
    images: uint8 [N, 32, 32, 1].
    labels: integer classes [N] in 0..9.
    seed, epochs, batch_size, learning_rate: the recipe.

  Returns:
    The trained parameters (a nested dict of arrays).
  """
  _check_images(images)
  graphdef, params = nnx.split(LeNet(nnx.Rngs(seed)))
  params = nnx.to_pure_dict(params)
  optimizer = optax.adam(learning_rate)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    def loss_fn(p):
      logits = nnx.merge(graphdef, p)(x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(seed)
  for epoch in range(epochs):
    order = rng.permutation(len(images))
    for start in range(0, len(images) - batch_size + 1, batch_size):
      idx = order[start : start + batch_size]
      params, opt_state, loss = step(
          params,
          opt_state,
          data.to_float(images[idx]),
          labels[idx].astype(np.int32),
      )
    logging.info('epoch %d: last batch loss %.4f', epoch + 1, float(loss))
  return params


def save_weights(path: str, params: dict, test_accuracy: float) -> None:
  """Writes parameters and test accuracy as one .npz (local or gs://)."""
  arrays = {
      f'{layer}/{leaf}': np.asarray(value)
      for layer, leaves in params.items()
      for leaf, value in leaves.items()
  }
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open('wb') as f:
    np.savez(f, test_accuracy=np.float64(test_accuracy), **arrays)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  output, data_dir = flags.FLAGS.output, flags.FLAGS.data_dir
  train_images, train_labels = data.load_fashion_mnist('train', data_dir)
  test_images, test_labels = data.load_fashion_mnist('test', data_dir)
  params = train_classifier(train_images, train_labels)
  net = FeatureNetwork(params, FEATURE_NET, float('nan'))
  accuracy = float(np.mean(net.predict(test_images) == test_labels))
  save_weights(output, params, accuracy)
  net = FeatureNetwork.load(output)
  print(
      f'{net.name}: Fashion-MNIST test accuracy {accuracy:.4f} '
      f'({len(test_images)} images); weights in {output}'
  )


if __name__ == '__main__':
  # Defined here, not at import, so that other entry points can import this.
  flags.DEFINE_string(
      'output', str(DEFAULT_WEIGHTS), 'Where to write the weights (.npz).'
  )
  flags.DEFINE_string(
      'data_dir',
      None,
      'Fashion-MNIST IDX folder (default: ' 'Debian dataset-fashion-mnist).',
  )
  app.run(main)
