"""KID: the Kernel Inception Distance of samples to the data (Bińkowski et
al. 2018), on the feature network of the run's data set.

The unbiased MMD² with the cubic polynomial kernel between the features of
the samples and of (up to 10,000) reference images, averaged over subsets
(`hatebm_jax.evaluation.kid`). The features are the Fashion-MNIST LeNet's
for Fashion-MNIST runs, and Inception's pool_3 (as for FID, so it needs
`inception_weights`) for the other data sets.
"""

from typing import Optional

from hatebm_jax.evaluators import common


class KID(common.Evaluator):
  """{'kid': mean, 'kid_std': its std over subsets} per sample source."""

  name = 'kid'

  def __init__(self, *, config, settings: common.Settings):
    self.net = common.data_network(config, settings)
    self.reference = common.Reference(
        net=self.net, config=config, settings=settings
    )

  def __call__(
      self, *, samples: common.Samples, source: Optional[str] = None
  ) -> dict[str, float]:
    mean, std = self.reference.kid(samples.features(self.net, source))
    return {'kid': mean, 'kid_std': std}

  def info(self) -> dict:
    return {
        'name': self.net.name,
        'preprocessing': self.net.preprocessing,
        'num_reference': len(self.reference.features),
    }

  def scalars(self, values: dict[str, float]) -> dict[str, float]:
    return {'kid': values['kid']}

  def summary(self, values: dict[str, float]) -> str:
    return f'KID {values["kid"]:.4f}'
