"""Moving averages of the weights (`optim.ema_update`, `base.for_sampling`):
what they average, that training never reads them, and that sampling,
export and `sample_weights` use them as documented."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from hatebm_jax import config_base
from hatebm_jax import optim
from hatebm_jax import train
from hatebm_jax import validation
from hatebm_jax.infra import checkpoint
from hatebm_jax.modes import base
from hatebm_jax.modes import synthesis
from hatebm_jax.serving import pretrained
from hatebm_jax.serving import run as run_lib


def test_decay_warms_up_to_its_target():
  got = [float(optim.ema_decay_at(0.999, t)) for t in (0, 1, 8, 10_000)]
  np.testing.assert_allclose(got, [0.1, 2 / 11, 0.5, 0.999], rtol=1e-6)
  assert float(optim.ema_decay_at(0.0, 5)) == 0.0  # decay 0: the weights


def test_update_is_the_weighted_sum():
  average = {'w': jnp.array([1.0, 2.0])}
  params = {'w': jnp.array([3.0, 6.0])}
  new = optim.ema_update(average, params, 0.9, 100)  # d = 0.9 at t = 100
  np.testing.assert_allclose(new['w'], [1.2, 2.4], rtol=1e-6)


def _train(config, steps):
  mode = synthesis.SynthesisMode.from_config(config)
  state = jax.jit(mode.init)(jax.random.PRNGKey(config.seed))
  step = jax.jit(mode.train_step)
  images = jax.random.uniform(
      jax.random.PRNGKey(3), (steps, config.batch_size, 32, 32, 1), minval=-1
  )
  history = [state]
  for t in range(steps):
    state, _ = step(state, images[t])
    history.append(state)
  return history


@pytest.mark.slow
def test_averages_follow_the_weights_and_never_feed_back():
  steps = 4
  raw = _train(tiny_config(), steps)
  kept = _train(tiny_config(gen_ema_decay=0.99, hat_ema_decay=0.9), steps)
  assert raw[-1].gen_params_ema is None and raw[-1].hat_params_ema is None
  # Training reads no average: the trained weights are the same bits.
  for a, b in zip(
      jax.tree.leaves(base.for_sampling(raw[-1], 'raw')),
      jax.tree.leaves(base.for_sampling(kept[-1], 'raw')),
  ):
    np.testing.assert_array_equal(a, b)
  # The average, recomputed step by step in float64 from the weights
  # after each update. The step computes the same sums in float32 (one
  # multiply-add per update and leaf), so the two differ by a few float32
  # roundings of weights of order 1: 1e-6 absolute.
  for name, decay in (('gen_params', 0.99), ('hat_params', 0.9)):
    want = jax.tree.map(
        lambda w: np.asarray(w, np.float64), getattr(kept[0], name)
    )
    for t in range(steps):
      d = min(decay, (1 + t) / (10 + t))
      want = jax.tree.map(
          lambda a, w: d * a + (1 - d) * np.asarray(w, np.float64),
          want,
          getattr(kept[t + 1], name),
      )
    got = getattr(kept[-1], name + '_ema')
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(got), jax.tree.leaves(getattr(kept[-1], name))
        )
    )


def test_for_sampling_swaps_in_the_averages():
  state = _train(tiny_config(gen_ema_decay=0.99), 2)[-1]
  assert base.averages(state) == {'gen_params': 'gen_params_ema'}
  ema = base.for_sampling(state, 'ema')
  assert ema.gen_params is state.gen_params_ema and ema.gen_params_ema is None
  assert ema.hat_params is state.hat_params  # no hat average kept
  raw = base.for_sampling(state, 'raw')
  assert raw.gen_params is state.gen_params and raw.gen_params_ema is None
  with pytest.raises(ValueError, match=r"weights='mean'.*\('ema', 'raw'\)"):
    base.for_sampling(state, 'mean')


@pytest.mark.parametrize(
    'key, message',
    [
        ('gen_ema_decay', "only 'synthesis' runs read it; set it to 0.0"),
        ('noise_init_fraction', "only 'synthesis' runs read it; set it to 0.0"),
    ],
)
def test_synthesis_only_options(key, message):
  c = config_base.get_base_config()
  c.mode, c.gen_type, c[key] = 'sngan', 'gen_sngan', 0.5
  with pytest.raises(ValueError, match=message):
    validation.validate(c)


@pytest.mark.slow
def test_runs_and_exports_sample_with_the_chosen_weights(tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(gen_ema_decay=0.9), workdir)
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  mode = synthesis.SynthesisMode.from_config(tiny_config(gen_ema_decay=0.9))
  train_state = ckpt.restore(mode.abstract_state(0), ckpt.all_steps()[-1])
  ckpt.close()

  ema = run_lib.load_run(workdir).state
  raw = run_lib.load_run(workdir, sample_weights='raw').state
  for a, b in zip(
      jax.tree.leaves(ema.gen_params),
      jax.tree.leaves(train_state.gen_params_ema),
  ):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(
      jax.tree.leaves(raw.gen_params), jax.tree.leaves(train_state.gen_params)
  ):
    np.testing.assert_array_equal(a, b)

  path = str(tmp_path / 'ema.hatebm')
  run_lib.export(workdir, path)
  exported = run_lib.load_run(path).state
  for a, b in zip(
      jax.tree.leaves(exported.gen_params), jax.tree.leaves(ema.gen_params)
  ):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match=r"holds the 'ema' weights only"):
    run_lib.load_run(path, sample_weights='raw')
  model = pretrained.load_pretrained(path)
  with pytest.raises(ValueError, match='chosen when a model is loaded'):
    model.sample(2, sample_weights='raw')
