"""What every evaluator shares: its settings, the samples it scores, the
data's reference features (cached), its base class.

An evaluator (`Evaluator`) computes one metric of a run. It is built once
from the run's config and the evaluation `Settings` (loading its feature
network and the data's reference statistics then), and called on a
`Samples`: one run's parameters, whose images are drawn once per source and
shared by every evaluator of that call. The training loop (every
`config.eval_freq` steps) and `python -m hatebm_jax.evaluate` build the same
evaluators from the registry in `hatebm_jax.evaluators` and call them the
same way, so a number logged during training and one computed offline from
the same checkpoint, with the same settings, are the same number.

Reference features of data splits are cached as .npz in $HATEBM_CACHE_DIR
(default ~/.cache/hatebm_jax), keyed by the feature network's identity and a
hash of the very images, so a different network, split or data folder never
reuses a stale entry.
"""

import abc
import dataclasses
import functools
import hashlib
import os
import time
from typing import Any, ClassVar, Optional

import ml_collections
import numpy as np

from hatebm_jax import data
from hatebm_jax.evaluation import classifier
from hatebm_jax.evaluation import frechet
from hatebm_jax.evaluation import inception
from hatebm_jax.evaluation import kid as kid_lib
from hatebm_jax.modes import base
from hatebm_jax.serving import draw
from hatebm_jax.serving import run as run_lib

# Seed of the latents and chain noise of evaluation during training: the
# same at every step, so successive values differ only by the parameters.
TRAINING_SEED = 12345
# Images per Inception batch (299x299 inputs: memory, not speed, sets it).
INCEPTION_BATCH = 100
REFERENCE_NAMES = {'fashion_mnist': 'Fashion-MNIST'}
MAX_CACHED_FEATURES = 10_000  # reference features kept for KID


def reference_features(
    net,
    data_type: str,
    data_dir: Optional[str],
    split: str,
    image_size: int,
    num: int,
    batch_size: int = 500,
    progress: bool = False,
) -> tuple[frechet.FeatureStats, np.ndarray]:
  """Statistics and (up to 10,000) features of a data split, cached.

  Args:
    net: a feature network with `name`, `preprocessing` and
      `features(uint8 images) -> [N, D]` (LeNet or Inception).
    data_type: the run's data set ('fashion_mnist', 'cifar10', ...).
    data_dir: its folder / TFDS data_dir (None for the default).
    split: 'train' or 'test'.
    image_size: S.
    num: number of reference images (fewer if the split is smaller).
    batch_size: images per feature batch.
    progress: log progress lines (with an ETA) while computing the
      features of an entry that is not cached yet.

  Returns:
    (FeatureStats of all images, features [min(N, 10,000), D] float32).

  Raises:
    FileNotFoundError: when the data are missing.
  """
  images = data.eval_images(data_type, data_dir, split, image_size, num)
  # The key holds the network's identity and a hash of the very images, so
  # another data folder, split or count never reuses a stale entry.
  digest = hashlib.sha256(images.tobytes()).hexdigest()[:16]
  tag = f'{net.name}_{data_type}_{split}_{len(images)}_{digest}'
  path = inception.cache_dir() / 'reference' / f"{tag.replace(':', '-')}.npz"
  if path.exists():
    stats = frechet.FeatureStats.load(str(path))
    with path.open('rb') as f:
      features = np.load(f, allow_pickle=False)['features']
    return stats, features
  features = net.features(
      images,
      batch_size,
      progress=(
          f'{net.name} features of {len(images):,} {data_type} {split} '
          'images (cached for next time)'
          if progress
          else ''
      ),
  )
  stats = frechet.feature_stats(features, net.name, net.preprocessing)
  path.parent.mkdir(parents=True, exist_ok=True)
  # A name of this process's own, replaced over the entry: runs that compute
  # the same entry at once each write whole files of the same content.
  tmp = path.parent / f'.{path.name}.{os.getpid()}.tmp'
  with tmp.open('wb') as f:
    np.savez(
        f,
        mean=stats.mean,
        cov=stats.cov,
        num_samples=stats.num_samples,
        feature_net=stats.feature_net,
        preprocessing=stats.preprocessing,
        features=features[:MAX_CACHED_FEATURES].astype(np.float32),
    )
  tmp.replace(path)
  return stats, features[:MAX_CACHED_FEATURES]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
  """How an evaluation is run; the same fields for every evaluator.

  Attributes:
    num_samples: samples drawn per source (≥ 2).
    batch_size: chains per sampling call and images per feature batch (≥ 2;
      Inception batches hold at most `INCEPTION_BATCH`).
    seed: seed of the latents and chain noise (`draw.draw_images`).
    reference_split: the data split samples are compared with ('train' or
      'test').
    num_reference: reference images (≥ 2; fewer if the split is smaller).
    inception_weights: path of pytorch-fid's Inception weights (FID, and
      KID of data sets other than Fashion-MNIST); None when not given.
    ood_sets: OOD sets for `ood`; None for the data set's defaults.
    num_ood: images per OOD set and of the in-distribution test split (≥ 2).
    data_dir: data folder / TFDS data_dir; None for the default.
    progress: log progress lines while sampling and computing features.
  """

  num_samples: int = 10_000
  batch_size: int = 500
  seed: int = 0
  reference_split: str = 'test'
  num_reference: int = 10_000
  inception_weights: Optional[str] = None
  ood_sets: Optional[tuple[str, ...]] = None
  num_ood: int = 10_000
  data_dir: Optional[str] = None
  progress: bool = True

  def __post_init__(self):
    for name in ('num_samples', 'batch_size', 'num_reference', 'num_ood'):
      value = getattr(self, name)
      if not (isinstance(value, int) and value >= 2):
        raise ValueError(f'{name}={value!r} must be >= 2.')
    if self.reference_split not in ('train', 'test'):
      raise ValueError(
          f"reference_split={self.reference_split!r}: choose 'train' or "
          "'test'."
      )

  @classmethod
  def for_training(cls, config: ml_collections.ConfigDict) -> 'Settings':
    """The settings of evaluation during training: `eval_num_samples`
    samples from `TRAINING_SEED`, in batches of at most 500, against 10,000
    images of the test split, without progress lines."""
    return cls(
        num_samples=config.eval_num_samples,
        batch_size=min(500, config.eval_num_samples),
        seed=TRAINING_SEED,
        inception_weights=config.inception_weights or None,
        data_dir=config.data_dir or None,
        progress=False,
    )


class Samples:
  """The images of one run's parameters, drawn once per source and shared.

  `images(source)` draws `settings.num_samples` uint8 images [N, S, S, C]
  the first time a source is asked for; `features(net, source)` computes a
  feature network's features of them once. `seconds` holds each source's
  sampling time.
  """

  def __init__(self, *, run: run_lib.Run, settings: Settings):
    self.run, self.settings = run, settings
    self.seconds: dict[str, float] = {}
    self._images: dict[str, np.ndarray] = {}
    self._features: dict[tuple[str, str], np.ndarray] = {}

  def images(self, source: str) -> np.ndarray:
    if source not in self._images:
      s, start = self.settings, time.time()
      self._images[source] = draw.draw_images(
          self.run,
          s.num_samples,
          s.batch_size,
          s.seed,
          source,
          progress=(
              f'drawing {s.num_samples:,} samples ({source})'
              if s.progress
              else ''
          ),
      )
      self.seconds[source] = round(time.time() - start, 1)
    return self._images[source]

  def features(self, net: Any, source: str) -> np.ndarray:
    key = (net.name, source)
    if key not in self._features:
      what = (
          'Inception'
          if isinstance(net, inception.InceptionFeatures)
          else 'classifier'
      )
      self._features[key] = net.features(
          self.images(source),
          feature_batch(net, self.settings),
          progress=(
              f'{what} features of the {source} samples'
              if self.settings.progress
              else ''
          ),
      )
    return self._features[key]


def feature_batch(net: Any, settings: Settings) -> int:
  if isinstance(net, inception.InceptionFeatures):
    return min(settings.batch_size, INCEPTION_BATCH)
  return settings.batch_size


@functools.lru_cache(maxsize=None)
def lenet() -> classifier.FeatureNetwork:
  """The shipped Fashion-MNIST LeNet (FCD and KID), loaded once."""
  return classifier.FeatureNetwork.load()


@functools.lru_cache(maxsize=None)
def inception_net(path: Optional[str]) -> inception.InceptionFeatures:
  """pytorch-fid's Inception at `path`, loaded once per path.

  Raises:
    FileNotFoundError: when `path` is None or missing, saying where to get
      the weights.
  """
  return inception.InceptionFeatures.load(path)


def data_network(config, settings: Settings) -> Any:
  """The feature network of a run's data set: the LeNet for Fashion-MNIST,
  Inception (`settings.inception_weights`) for the others."""
  if config.data_type == 'fashion_mnist':
    return lenet()
  return inception_net(settings.inception_weights)


class Reference:
  """Statistics and (up to 10,000) features of the reference split of a
  run's data set on a feature network, computed once and cached on disk
  (`reference_features`)."""

  def __init__(self, *, net: Any, config, settings: Settings):
    self.net = net
    self.stats, self.features = reference_features(
        net,
        config.data_type,
        settings.data_dir or config.data_dir or None,
        settings.reference_split,
        config.image_dims[0],
        settings.num_reference,
        feature_batch(net, settings),
        progress=settings.progress,
    )
    name = REFERENCE_NAMES.get(config.data_type, config.data_type)
    self.description = f'{name} {settings.reference_split}'

  def frechet(self, features: np.ndarray) -> float:
    stats = frechet.feature_stats(
        features, self.net.name, self.net.preprocessing
    )
    return frechet.frechet_distance(stats, self.stats)

  def kid(self, features: np.ndarray) -> tuple[float, float]:
    return kid_lib.kernel_distance(features, self.features, seed=0)


class Evaluator(abc.ABC):
  """One metric of a run.

  Subclasses set `name` (its registry key) and `per_source` (True: a value
  per sample source, from `samples.images(source)`; False: one value per
  run, from `samples.run`), and may refuse runs in `check`.
  """

  name: ClassVar[str]
  per_source: ClassVar[bool] = True
  # The data's reference features the samples are compared with, if any.
  reference: Optional['Reference'] = None

  @classmethod
  def check(
      cls, *, config: ml_collections.ConfigDict, capabilities: base.Capabilities
  ) -> None:
    """Raises ValueError, naming the metric and what it needs, when it
    cannot evaluate runs of this config. Called before any compute."""
    del config, capabilities

  @abc.abstractmethod
  def __init__(self, *, config: ml_collections.ConfigDict, settings: Settings):
    """Loads what every call needs (networks, reference statistics)."""

  @abc.abstractmethod
  def __call__(
      self, *, samples: Samples, source: Optional[str] = None
  ) -> dict[str, float]:
    """The metric's named values: for `source`'s images (`per_source`), or
    for the run (`source` None)."""

  def info(self) -> dict[str, Any]:
    """What the values depend on besides the run: feature network,
    reference; written beside them."""
    return {}

  def scalars(self, values: dict[str, float]) -> dict[str, float]:
    """The values logged to TensorBoard during training (all of them
    unless a metric says otherwise)."""
    return values

  def summary(self, values: dict[str, float]) -> str:
    """The values in a log line, e.g. 'FCD 27.812'."""
    return ', '.join(f'{k} {v:.4g}' for k, v in values.items())
