"""The test loss: a mode's training loss on the data's test split, where
the mode defines one (`Capabilities.test_loss`: the autoencoder's
loss_factor·MSE reconstruction loss, without latent noise)."""

from typing import Optional

from hatebm_jax import data
from hatebm_jax.evaluators import common

NUM_TEST = 10_000  # test images (fewer if the split is smaller)


class TestLoss(common.Evaluator):
  """{'test_loss': float} per run, over `NUM_TEST` test images."""

  name = 'test_loss'
  per_source = False

  @classmethod
  def check(cls, *, config, capabilities) -> None:
    if not capabilities.test_loss:
      raise ValueError(
          f'test_loss: a {config.mode!r} run has no test loss (the '
          "'autoencoder' mode has one)."
      )

  def __init__(self, *, config, settings: common.Settings):
    self.images = data.to_float(
        data.eval_images(
            config.data_type,
            settings.data_dir or config.data_dir or None,
            'test',
            config.image_dims[0],
            NUM_TEST,
        )
    )

  def __call__(
      self, *, samples: common.Samples, source: Optional[str] = None
  ) -> dict[str, float]:
    del source
    run = samples.run
    return {'test_loss': run.mode.test_loss(run.state, self.images)}

  def summary(self, values: dict[str, float]) -> str:
    return f'test loss {values["test_loss"]:.4f}'
