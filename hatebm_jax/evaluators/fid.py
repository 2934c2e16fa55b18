"""FID: the Fréchet Inception Distance of samples to the data.

The Fréchet distance between Gaussians fitted to pytorch-fid's Inception-v3
pool_3 features (2048) of the samples and of the reference split
(`hatebm_jax.evaluation.inception`; weights from `inception_weights`, never
downloaded). The paper's protocol (docs/official_release.md §6): 49,920
samples against the training split.
"""

from typing import Optional

from hatebm_jax.evaluation import inception
from hatebm_jax.evaluators import common


class FID(common.Evaluator):
  """{'fid': float ≥ 0} per sample source."""

  name = 'fid'

  def __init__(self, *, config, settings: common.Settings):
    self.net = common.inception_net(settings.inception_weights)
    self.reference = common.Reference(
        net=self.net, config=config, settings=settings
    )

  def __call__(
      self, *, samples: common.Samples, source: Optional[str] = None
  ) -> dict[str, float]:
    return {'fid': self.reference.frechet(samples.features(self.net, source))}

  def info(self) -> dict:
    return {
        'name': self.net.name,
        'preprocessing': inception.PREPROCESSING,
        'num_reference': self.reference.stats.num_samples,
    }

  def summary(self, values: dict[str, float]) -> str:
    return f'FID {values["fid"]:.3f}'
