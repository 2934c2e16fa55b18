"""FCD: the Fréchet Classifier Distance of samples to Fashion-MNIST.

The Fréchet distance between Gaussians fitted to the 128 features of the
shipped Fashion-MNIST LeNet (`hatebm_jax.evaluation.classifier`) of the
samples and of the reference split. Fashion-MNIST runs only; it is not FID
and its values are not comparable with FIDs.
"""

from typing import Optional

from hatebm_jax.evaluators import common


class FCD(common.Evaluator):
  """{'fcd': float ≥ 0} per sample source (feature units squared)."""

  name = 'fcd'

  @classmethod
  def check(cls, *, config, capabilities) -> None:
    del capabilities
    if config.data_type != 'fashion_mnist':
      raise ValueError(
          'fcd uses a classifier trained on Fashion-MNIST; this run is '
          f'{config.data_type!r}: use fid (with inception_weights) instead.'
      )

  def __init__(self, *, config, settings: common.Settings):
    self.net = common.lenet()
    self.reference = common.Reference(
        net=self.net, config=config, settings=settings
    )

  def __call__(
      self, *, samples: common.Samples, source: Optional[str] = None
  ) -> dict[str, float]:
    features = samples.features(self.net, source)
    return {'fcd': self.reference.frechet(features)}

  def info(self) -> dict:
    return {
        'name': self.net.name,
        'preprocessing': self.net.preprocessing,
        'test_accuracy': self.net.test_accuracy,
        'num_reference': self.reference.stats.num_samples,
    }

  def summary(self, values: dict[str, float]) -> str:
    return f'FCD {values["fcd"]:.3f}'
