"""Issue-4 pieces: autoencoder nets, spectral norm, SN-GAN and DDLS, joint
training over a frozen generator, and loading that generator."""

import os

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hatebm_jax import config_base
from hatebm_jax.modes import sngan
from hatebm_jax import modes
from hatebm_jax.modes import joint
from hatebm_jax.serving import run as run_lib
from hatebm_jax import train
from hatebm_jax.models import autoencoder
from hatebm_jax.models import discriminator
from conftest import DATA_DIR, load_config

TINY = dict(data_dir=DATA_DIR, num_training_steps=2, info_freq=1,
            plot_freq=2, checkpoint_freq=2, num_plot=4, fcd_freq=0)


def stage_config(name, **overrides):
  c = load_config(name)
  for key, value in {**TINY, **overrides}.items():
    c[key] = value
  return c


SNGAN = dict(gen_ngf=16, disc_ndf=16, batch_size=8, n_dis=2, ddls_steps=3)
AE = dict(gen_ngf=8, inf_ngf=8, batch_size=8)


def test_encoder_latents_lie_on_the_sphere():
  enc = autoencoder.Encoder(1, 8, nnx.Rngs(0))
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 32, 32, 1))
  z = enc(x)
  assert z.shape == (3, 16, 16, 1)
  np.testing.assert_allclose(jnp.linalg.norm(z.reshape(3, -1), axis=1),
                             16.0, rtol=1e-5)  # √m, m = 256


def test_spectral_norm_reaches_unit_singular_values():
  d = discriminator.SNGANDiscriminator(32, 1, 16, nnx.Rngs(0))
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 1))
  for _ in range(60):  # power iterations, one per call
    d(x)
  kernels = {}
  for path, value in nnx.to_flat_state(nnx.state(d, nnx.Param)):
    if path[-1] == 'kernel':
      kernels[path] = np.asarray(value[...])
  sigmas = {path[:-2]: float(value[...]) for path, value in
            nnx.to_flat_state(nnx.state(d, nnx.BatchStat))
            if path[-1] == ('kernel', 'sigma')}
  assert len(kernels) == 11 and len(sigmas) == 11  # 10 convs + head
  for path, kernel in kernels.items():
    # The stored kernel is W/σ after a call; its top singular value is ~1.
    top = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]),
                        compute_uv=False)[0]
    assert top == pytest.approx(1.0, abs=2e-2), path


def test_sngan_step_updates_both_networks_and_running_statistics():
  config = stage_config('fashion_mnist_sngan', **SNGAN)
  model = modes.build(config)
  state = model.init(jax.random.PRNGKey(0))
  x = jax.random.uniform(jax.random.PRNGKey(1),
                         (model.images_per_step, 32, 32, 1), minval=-1)
  new, metrics = jax.jit(model.train_step)(state, x)
  assert all(np.isfinite(float(v)) for v in metrics.values())
  changed = lambda a, b: any(not np.array_equal(u, v) for u, v in zip(
      jax.tree.leaves(a), jax.tree.leaves(b)))
  assert changed(state.gen_params, new.gen_params)
  assert changed(state.disc_params, new.disc_params)
  assert changed(state.gen_frozen, new.gen_frozen)  # BN running means
  assert changed(state.disc_stats, new.disc_stats)  # power iteration
  # Hinge loss of D: 0 when real ≥ 1 and fake ≤ −1.
  assert float(sngan.hinge_losses(jnp.array([1.5, 2.0]),
                                jnp.array([-3.0, -1.0]))) == 0.0


def test_ddls_lowers_the_energy_without_noise():
  config = stage_config('fashion_mnist_sngan', **SNGAN)
  model = modes.build(config)
  state = model.init(jax.random.PRNGKey(0))
  z0 = 2.0 * jax.random.normal(jax.random.PRNGKey(3), (6, 128))
  cfg = sngan.DDLSConfig(num_steps=20, step_size=0.3, use_noise=False)
  z = model.ddls_sample(state, z0, jax.random.PRNGKey(4), cfg)
  before, after = model.ddls_energy(state, z0), model.ddls_energy(state, z)
  assert np.all(np.asarray(after) < np.asarray(before))
  # U = −D(G(z)) + ½‖z‖²: the prior part pulls the oversized z inwards.
  assert float(jnp.linalg.norm(z, axis=1).mean()) < float(
      jnp.linalg.norm(z0, axis=1).mean())


def test_ddls_step_matches_its_formula_and_unrolling_changes_nothing():
  config = stage_config('fashion_mnist_sngan', **SNGAN)
  model = modes.build(config)
  state = model.init(jax.random.PRNGKey(0))
  z0 = jax.random.normal(jax.random.PRNGKey(3), (4, 128))
  key = jax.random.PRNGKey(5)
  eps = 0.2
  one = model.ddls_sample(state, z0, key, sngan.DDLSConfig(1, eps))
  grad = jax.grad(lambda z: jnp.sum(model.ddls_energy(state, z)))(z0)
  step_key = jax.random.split(key, 1)[0]
  noise = jnp.stack([jax.random.normal(jax.random.fold_in(step_key, i),
                                       z0.shape[1:]) for i in range(4)])
  np.testing.assert_allclose(one, z0 - 0.5 * eps**2 * grad + eps * noise,
                             rtol=1e-5, atol=1e-5)
  rolled, unrolled = (model.ddls_sample(state, z0, key, sngan.DDLSConfig(
      5, eps, unroll=u)) for u in (1, True))
  np.testing.assert_allclose(rolled, unrolled, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope='module')
def generator_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp('stages')
  train.train_and_evaluate(stage_config('fashion_mnist_sngan', **SNGAN),
                           str(root / 'sngan'))
  train.train_and_evaluate(stage_config('fashion_mnist_ae', **AE),
                           str(root / 'ae'))
  return root


@pytest.mark.parametrize('name,source,gen', [
    ('fashion_mnist_refine', 'sngan', dict(gen_ngf=16)),
    ('fashion_mnist_retrofit', 'ae', dict(gen_ngf=8))])
def test_joint_training_never_changes_the_generator(generator_runs, tmp_path,
                                                    name, source, gen):
  """Through the real loop, stopped after 2 steps and resumed to 3: the hat
  network moves every step, z moves in the chain, the generator's
  parameters and statistics stay bit for bit those of its run."""
  config = stage_config(name, ebm_ngf=8, batch_size=8, mcmc_steps=2,
                        checkpoint_freq=1, max_to_keep=3,
                        gen_weights=str(generator_runs / source), **gen)
  gen_params, gen_frozen = joint.load_generator(config)
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert metrics['latent_drift_norm'] > 0
  config.num_training_steps = 3
  train.train_and_evaluate(config, str(tmp_path))
  runs = [run_lib.load_run(str(tmp_path), step) for step in (1, 2, 3)]
  for before, after in zip(runs, runs[1:]):
    for a, b in zip(jax.tree.leaves(before.state.hat_params),
                    jax.tree.leaves(after.state.hat_params)):
      assert not np.array_equal(a, b)
  for run in runs:
    for a, b in zip(jax.tree.leaves((gen_params, gen_frozen)),
                    jax.tree.leaves((run.state.gen_params,
                                     run.state.gen_frozen))):
      np.testing.assert_array_equal(a, b)  # bitwise


def test_generator_loading_errors(generator_runs, tmp_path):
  config = stage_config('fashion_mnist_refine', gen_weights=str(tmp_path))
  with pytest.raises(FileNotFoundError, match='holds no checkpoint.*sngan'):
    joint.load_generator(config)
  config.gen_weights = str(generator_runs / 'sngan')  # gen_ngf 16
  assert config.gen_ngf != 16
  with pytest.raises(ValueError, match='gen_ngf: generator run 16, this '
                     f'config {config.gen_ngf}'):
    joint.load_generator(config)
  retro = stage_config('fashion_mnist_retrofit', gen_ngf=16,
                       gen_weights=str(generator_runs / 'sngan'))
  with pytest.raises(ValueError, match='gen_type'):
    joint.load_generator(retro)


def test_missing_generator_path_fails_before_any_compute(tmp_path):
  missing = tmp_path / 'no_such_run'
  config = stage_config('fashion_mnist_refine', gen_weights=str(missing))
  with pytest.raises(FileNotFoundError, match=f"gen_weights='{missing}' "
                     'holds no checkpoint. Train the generator first'):
    train.train_and_evaluate(config, str(tmp_path / 'refine'))
  assert not missing.exists()  # nothing created at the bad path
  assert not os.listdir(tmp_path / 'refine' / 'checkpoints')


def test_joint_config_checks():
  c = stage_config('fashion_mnist_refine')
  c.gen_weights = ''
  with pytest.raises(ValueError, match="config.gen_weights=''"):
    config_base.validate(c)
  c.gen_weights = '/x'
  c.update_latents = False
  with pytest.raises(ValueError, match='update_latents=False'):
    config_base.validate(c)
  ae = stage_config('fashion_mnist_ae')
  ae.state_dims = (128,)
  with pytest.raises(ValueError, match='gen_decoder'):
    config_base.validate(ae)


@pytest.mark.parametrize('name,sizes', [('fashion_mnist_sngan', SNGAN),
                                        ('fashion_mnist_ae', AE)])
def test_generator_stages_resume_bitwise(tmp_path, name, sizes):
  import shutil  # pylint: disable=g-import-not-at-top
  from hatebm_jax.serving import run as run_lib  # pylint: disable=g-import-not-at-top
  config = stage_config(name, **dict(sizes, num_training_steps=3))
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  train.train_and_evaluate(config, str(straight))  # checkpoints 2 and 3
  # A run stopped after step 2: the same workdir without checkpoint 3.
  shutil.copytree(straight, resumed)
  shutil.rmtree(resumed / 'checkpoints' / '3')
  assert run_lib.load_run(str(resumed)).step == 2
  train.train_and_evaluate(config, str(resumed))  # the rerun: step 3
  a, b = (run_lib.load_run(str(d)) for d in (straight, resumed))
  assert a.step == b.step == 3
  as_array = lambda x: np.asarray(jax.random.key_data(x) if jnp.issubdtype(
      x.dtype, jax.dtypes.prng_key) else x)
  for u, v in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state)):
    np.testing.assert_array_equal(as_array(u), as_array(v))


def test_joint_resume_bitwise(generator_runs, tmp_path):
  """A refine run of 4 steps equals 2 steps, stopped, and 2 more."""
  from hatebm_jax.serving import run as run_lib  # pylint: disable=g-import-not-at-top
  config = stage_config('fashion_mnist_refine', ebm_ngf=8, batch_size=8,
                        mcmc_steps=2, gen_ngf=16, num_training_steps=4,
                        checkpoint_freq=100,
                        gen_weights=str(generator_runs / 'sngan'))
  train.train_and_evaluate(config, str(tmp_path / 'straight'))
  config.num_training_steps = 2
  train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  config.num_training_steps = 4
  train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  a, b = (run_lib.load_run(str(tmp_path / d)) for d in ('straight',
                                                        'resumed'))
  assert a.step == b.step == 4
  leaves_a, leaves_b = jax.tree.leaves(a.state), jax.tree.leaves(b.state)
  assert len(leaves_a) == len(leaves_b) > 10
  for u, v in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize('source_run,sources,sampler_key', [
    ('sngan', 'generator,ddls', 'num_steps'), ('ae', 'generator', None)])
def test_evaluation_of_generator_runs(generator_runs, tmp_path, source_run,
                                      sources, sampler_key):
  from hatebm_jax import evaluate  # pylint: disable=g-import-not-at-top
  result = evaluate.evaluate(
      str(generator_runs / source_run), 'fcd,kid', sources,
      output=str(tmp_path / 'm.json'), num_samples=100, batch_size=50,
      num_reference=500, data_dir=DATA_DIR,
      **({'ddls_steps': 2} if source_run == 'sngan' else {}))
  assert set(result['samples']) == set(sources.split(','))
  for numbers in result['samples'].values():
    assert numbers['fcd'] > 0 and np.isfinite(numbers['kid'])
  if sampler_key:
    assert result['sampler'][sampler_key] == 2  # the override
  else:
    assert result['sampler'] is None
