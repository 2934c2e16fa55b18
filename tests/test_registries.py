"""A new mode or a new network is its own code plus one registry line: the
config rules, the dispatch and training follow from the registries alone."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hatebm_jax import models
from hatebm_jax import modes
from hatebm_jax import train
from hatebm_jax import validation
from hatebm_jax.infra import checkpoint
from hatebm_jax.models import spec
from hatebm_jax.modes import synthesis
from hatebm_jax.serving import run as run_lib
from conftest import tiny_config


class ToyMode(synthesis.SynthesisMode):
  """A fifth mode, written in test code: synthesis under another name."""

  options = ()  # reads none of the synthesis-only keys


def test_a_fifth_mode_trains_from_its_registry_line(
    tmp_path, monkeypatch, tiny_run
):
  """Registered as 'toy', the mode validates, trains, checkpoints and
  restores; its run equals the synthesis run it copies (the session's
  `tiny_run`) bit for bit: the same step code, reached through the
  registry."""
  with pytest.raises(ValueError, match=r"mode='toy' is invalid: choose one of"):
    validation.validate(tiny_config(mode='toy'))
  monkeypatch.setitem(modes.MODES, 'toy', ToyMode)
  config = tiny_config(mode='toy')
  validation.validate(config)
  assert isinstance(modes.build(config), ToyMode)
  # Keys only synthesis reads are refused for it, as for any other mode.
  with pytest.raises(
      ValueError, match=r"hat_ema_decay=0.5 is invalid: only 'synthesis' runs"
  ):
    validation.validate(tiny_config(mode='toy', hat_ema_decay=0.5))
  train.train_and_evaluate(config, str(tmp_path / 'toy'))
  toy = run_lib.load_run(str(tmp_path / 'toy'))
  reference = run_lib.load_run(str(tiny_run))  # tiny_config() in synthesis
  assert isinstance(toy.mode, ToyMode) and toy.config.mode == 'toy'
  for a, b in zip(jax.tree.leaves(toy.state), jax.tree.leaves(reference.state)):
    np.testing.assert_array_equal(a, b)


class LinearHat(nnx.Module):
  """A toy hat network: H(x) = w·vec(x) + b."""

  def __init__(self, size: int, channels: int, rngs: nnx.Rngs):
    self.head = nnx.Linear(size * size * channels, 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.head(x.reshape(x.shape[0], -1).astype(jnp.float32))[:, 0]


LINEAR_HAT = spec.Network(
    role='hat',
    build=lambda config, rngs: LinearHat(
        config.image_dims[0], config.image_dims[2], rngs
    ),
    describe=lambda config: 'linear hat network',
    image_sizes=(32,),
)


@pytest.mark.slow
def test_a_new_network_trains_from_its_registry_line(tmp_path, monkeypatch):
  """Registered as 'linear_hat', the network is valid where its entry says
  (hat role, 32 px), is built by `create_hat_network` and trains: its
  parameters are exactly 32·32·1 weights and a bias, and the weights move
  (the bias gets no gradient: it adds the same to H(x⁺) and H(x⁻))."""
  monkeypatch.setitem(models.NETWORKS, 'linear_hat', LINEAR_HAT)
  config = tiny_config(ebm_type='linear_hat', num_training_steps=2)
  validation.validate(config)
  with pytest.raises(ValueError, match=r"gen_type='linear_hat' is invalid"):
    validation.validate(tiny_config(gen_type='linear_hat'))
  too_large = tiny_config(
      ebm_type='linear_hat', data_type='celeb_a', image_dims=(64, 64, 3)
  )
  with pytest.raises(ValueError, match=r"'linear_hat' takes images of side"):
    validation.validate(too_large)
  hat = models.create_hat_network(config)
  assert hat.name == 'linear hat network'
  params, _ = hat.init(jax.random.PRNGKey(0))
  assert sum(p.size for p in jax.tree.leaves(params)) == 32 * 32 + 1
  train.train_and_evaluate(config, str(tmp_path))
  ckpt = checkpoint.Checkpointer(str(tmp_path), read_only=True)
  try:
    saved = ckpt.restore_config(2)
  finally:
    ckpt.close()
  assert saved['ebm_type'] == 'linear_hat'
  initial = modes.build(config).init(jax.random.PRNGKey(config.seed))
  before = initial.hat_params['head']
  after = run_lib.load_run(str(tmp_path)).state.hat_params['head']
  assert after['kernel'].shape == (32 * 32, 1)
  assert np.abs(after['kernel'] - before['kernel']).max() > 0
  np.testing.assert_array_equal(after['bias'], before['bias'])
