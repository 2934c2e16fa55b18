"""Sample-quality and OOD numbers of a run (library, no flags).

Reference features of data splits are cached as .npz in $HATEBM_CACHE_DIR
(default ~/.cache/hatebm_jax), keyed by the feature network's identity, so
that a different network or preprocessing is never mixed in.
"""

import functools
import hashlib
import os
from typing import Optional, Sequence

from absl import logging
import jax
import numpy as np

from hatebm_jax.evaluation import classifier
from hatebm_jax import data
from hatebm_jax.evaluation import frechet
from hatebm_jax.evaluation import inception
from hatebm_jax.evaluation import kid
from hatebm_jax.evaluation import ood
from hatebm_jax.serving import draw
from hatebm_jax.serving import run as run_lib

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


def distance_metrics(
    net,
    images: np.ndarray,
    reference: tuple[frechet.FeatureStats, np.ndarray],
    batch_size: int = 500,
    kid_seed: int = 0,
    progress: str = '',
) -> dict:
  """Fréchet distance and KID of uint8 images against a reference; with
  `progress`, a line starting with it at each tenth of the features.

  Returns:
    {'frechet': float, 'kid': mean, 'kid_std': std} in feature units.
  """
  features = net.features(images, batch_size, progress=progress)
  stats = frechet.feature_stats(features, net.name, net.preprocessing)
  ref_stats, ref_features = reference
  kid_mean, kid_std = kid.kernel_distance(features, ref_features, seed=kid_seed)
  return {
      'frechet': frechet.frechet_distance(stats, ref_stats),
      'kid': kid_mean,
      'kid_std': kid_std,
  }


def ood_metrics(
    run: run_lib.Run,
    data_dir: Optional[str],
    ood_sets: Sequence[str],
    num: int,
    batch_size: int = 500,
    seed: int = 0,
) -> dict:
  """AUROC of H(x) for the run's test split against each OOD set.

  Returns:
    {'in_distribution': str, 'num_in': int, 'auroc': {set: float},
     'num_ood': {set: int}, 'mean_energy': {set or 'in': float}}.
  """
  config = run.config
  shape = tuple(config.image_dims)
  in_images = data.eval_images(
      config.data_type, data_dir, 'test', shape[0], num
  )
  energy = jax.jit(functools.partial(run.mode.energy, run.state.hat_params))
  scores_in = ood.energy_scores(energy, in_images, batch_size)
  result = {
      'in_distribution': f'{config.data_type} test',
      'num_in': len(in_images),
      'auroc': {},
      'num_ood': {},
      'mean_energy': {'in': float(scores_in.mean())},
  }
  for name in ood_sets:
    images = ood.ood_images(name, num, shape, data_dir, seed)
    scores = ood.energy_scores(energy, images, batch_size)
    result['auroc'][name] = ood.auroc(scores_in, scores)
    result['num_ood'][name] = len(images)
    result['mean_energy'][name] = float(scores.mean())
    logging.info(
        'OOD %s: AUROC %.3f over %d images (%d of %d sets)',
        name,
        result['auroc'][name],
        len(images),
        len(result['auroc']),
        len(ood_sets),
    )
  return result


FCD_SEED = 12345  # latents of training-time FCD: the same at every step


class TrainingFCD:
  """FCD (and KID) of a run's samples to Fashion-MNIST test, during training.

  Loads the LeNet and the cached test-split reference once; each call draws
  `config.fcd_num_samples` samples with the training sampler from the same
  latents and noise, so successive values differ only by the parameters.
  """

  def __init__(self, config, mode):
    self.config, self.mode = config, mode
    self.net = classifier.FeatureNetwork.load()
    self.reference = reference_features(
        self.net,
        'fashion_mnist',
        config.data_dir or None,
        'test',
        config.image_dims[0],
        10_000,
    )
    self.batch_size = min(500, config.fcd_num_samples)

  def __call__(self, state) -> dict[str, float]:
    """{'fcd': ..., 'kid': ...} of the samples of `state`'s parameters."""
    run = run_lib.Run(
        config=self.config, mode=self.mode, state=state, step=int(state.step)
    )
    images = draw.draw_images(
        run, self.config.fcd_num_samples, self.batch_size, FCD_SEED
    )
    d = distance_metrics(self.net, images, self.reference, self.batch_size)
    return {'fcd': d['frechet'], 'kid': d['kid']}
