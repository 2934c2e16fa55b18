"""OOD AUROC: how well the hat network's energy H(x) tells the data's test
split (in-distribution) from each out-of-distribution set.

The AUROC of the scores H(x) (low energy = in-distribution) over the test
split against each OOD set (`hatebm_jax.evaluation.ood`: the sets, their
preprocessing and the data set's defaults). Runs with a hat network only.
"""

import functools
from typing import Optional

from absl import logging
import jax

from hatebm_jax import data
from hatebm_jax.evaluation import ood
from hatebm_jax.evaluators import common


class OODAUROC(common.Evaluator):
  """{'auroc/<set>': AUROC in [0, 1], 'mean_energy/<set or in>': mean H(x),
  'num_ood/<set>': images, 'num_in': test images} per run."""

  name = 'ood'
  per_source = False

  @classmethod
  def check(cls, *, config, capabilities) -> None:
    if not capabilities.energy:
      raise ValueError(
          'ood scores images by the hat network H(x); a '
          f'{config.mode!r} run has none (use a synthesis or joint run).'
      )

  def __init__(self, *, config, settings: common.Settings):
    self.sets = tuple(
        settings.ood_sets
        or ood.DEFAULT_OOD_SETS.get(config.data_type, ood.CONTROLS)
    )
    bad = [s for s in self.sets if s not in ood.ALL_SETS]
    if bad:
      raise ValueError(
          f'ood_sets={",".join(self.sets)!r}: {bad} not allowed; choose '
          f'from {list(ood.ALL_SETS)}.'
      )
    self.settings = settings
    self._energy = {}  # mode id -> jitted H(params, x): compiled once
    self.data_dir = settings.data_dir or config.data_dir or None
    self.in_distribution = f'{config.data_type} test'
    self.in_images = data.eval_images(
        config.data_type,
        self.data_dir,
        'test',
        config.image_dims[0],
        settings.num_ood,
    )

  def __call__(
      self, *, samples: common.Samples, source: Optional[str] = None
  ) -> dict[str, float]:
    del source
    run, s = samples.run, self.settings
    # Parameters are an argument, not constants closed over: a training run
    # evaluating every eval_freq steps compiles H once.
    jitted = self._energy.setdefault(id(run.mode), jax.jit(run.mode.energy))
    energy = functools.partial(jitted, run.state.hat_params)
    scores_in = ood.energy_scores(energy, self.in_images, s.batch_size)
    values = {
        'num_in': len(self.in_images),
        'mean_energy/in': float(scores_in.mean()),
    }
    shape = tuple(run.config.image_dims)
    for i, name in enumerate(self.sets):
      images = ood.ood_images(name, s.num_ood, shape, self.data_dir, s.seed)
      scores = ood.energy_scores(energy, images, s.batch_size)
      values[f'auroc/{name}'] = ood.auroc(scores_in, scores)
      values[f'num_ood/{name}'] = len(images)
      values[f'mean_energy/{name}'] = float(scores.mean())
      logging.info(
          'OOD %s: AUROC %.3f over %d images (%d of %d sets)',
          name,
          values[f'auroc/{name}'],
          len(images),
          i + 1,
          len(self.sets),
      )
    return values

  def info(self) -> dict:
    return {'in_distribution': self.in_distribution, 'sets': list(self.sets)}

  def scalars(self, values: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in values.items() if not k.startswith('num_')}

  def summary(self, values: dict[str, float]) -> str:
    return 'OOD AUROC ' + ', '.join(
        f'{name} {values[f"auroc/{name}"]:.3f}' for name in self.sets
    )
