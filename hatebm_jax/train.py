"""The training loop of synthesis Hat EBM: jit once, log, plot, checkpoint.

`train_and_evaluate(config, workdir)` is what `python -m hatebm_jax.main`
calls. Rerunning it on the same workdir resumes from the newest checkpoint;
Ctrl-C or SIGTERM makes it save the current step and return.
"""

import itertools
import signal
import threading
import time
from typing import Any, Optional

from absl import logging
from clu import metric_writers
from clu import periodic_actions
from etils import epath
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from hatebm_jax import checkpoint
from hatebm_jax import config_base
from hatebm_jax import data
from hatebm_jax import metrics as metrics_lib
from hatebm_jax import modes
from hatebm_jax import parallel
from hatebm_jax import visualize
from hatebm_jax.models import layers

PLOT_SEED = 12345  # fixed latents and noise, so grids are comparable


class StopRequest:
  """Turns Ctrl-C / SIGTERM into a request to stop after the current step.

  A second Ctrl-C raises KeyboardInterrupt (no checkpoint). Only installed
  on the main thread.
  """

  def __init__(self):
    self.requested = None
    self._previous = {}

  def _handler(self, signum, frame):
    del frame
    if self.requested is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested = signal.Signals(signum).name
    logging.warning('%s received: stopping after the steps already queued '
                    'and saving a checkpoint (press Ctrl-C again to abort '
                    'without saving).', self.requested)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      # In a multi-process job SIGTERM stays with JAX's preemption service,
      # which makes all processes agree on the step to stop at (`poll`).
      signals = ((signal.SIGINT,) if jax.process_count() > 1 else
                 (signal.SIGINT, signal.SIGTERM))
      for sig in signals:
        self._previous[sig] = signal.signal(sig, self._handler)
    return self

  def poll(self, step: int) -> None:
    """Multi-process jobs: sets `requested` at the step all processes
    stop at after any of them got SIGTERM (call after every step)."""
    if (jax.process_count() > 1 and self.requested is None and
        multihost_utils.reached_preemption_sync_point(step)):
      self.requested = 'SIGTERM'
      logging.warning('SIGTERM reached a process of this job: all processes '
                      'stop at step %d and save a checkpoint.', step)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _plot(model, draw_fn, state, z, key, path, step):
  """Grid of the model's own samples: X, G(z), 5·y for Hat EBMs."""
  x_gen, y = jax.device_get(draw_fn(state, z, key, model.SOURCES[0]))
  if model.SOURCES[0] == 'ebm':
    visualize.save_sample_grid(path, x_gen, y, f'step {step}')
  else:
    visualize.save_panels(path, [(f'G(z), step {step}',
                                  visualize.to_display(x_gen))])


def _describe(state) -> str:
  """'hat 66,881 / gen 125,297 params'-style sizes of the networks."""
  sizes = [f'{name[:-7]} {layers.count_params(getattr(state, name)):,}'
           for name in ('hat_params', 'gen_params', 'disc_params',
                        'enc_params') if hasattr(state, name)]
  return ', '.join(sizes) + ' parameters'


def abstract_state(model, config: ml_collections.ConfigDict) -> Any:
  """Shapes and dtypes of the model's training state (no compute)."""
  return jax.eval_shape(model.init, jax.random.PRNGKey(config.seed),
                        *modes.init_args(model, config, abstract=True))


def jit_train_step(model, mesh: jax.sharding.Mesh, shardings: Any):
  """`model.train_step` as one program over `mesh`.

  (state, global batch [B, S, S, C] split on 'data') -> (state, replicated
  scalar metrics); the input state is donated. Call (and lower) it inside
  `jax.set_mesh(mesh)`, which lets the replay bank run in `shard_map`.
  """
  return jax.jit(
      model.train_step, in_shardings=(shardings, parallel.batch_sharding(mesh)),
      out_shardings=(shardings, parallel.replicated(mesh)), donate_argnums=0)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> Optional[dict[str, float]]:
  """Trains (or resumes) the model of `config.mode` in `workdir`.

  Modes (`hatebm_jax.modes`): 'synthesis' (tandem Hat EBM), 'joint' (Hat EBM
  over a frozen pretrained generator), 'sngan', 'autoencoder'.

  Writes `<workdir>/checkpoints/<step>` (Orbax), TensorBoard events and
  `<workdir>/samples/step_<step>.png` grids of X = G(z) + y, G(z) and 5·y.

  Args:
    config: an experiment config (see hatebm_jax/config_base.py).
    workdir: output folder, local or gs://; created if missing.

  Returns:
    The metrics logged last (host floats), or None if the run had already
    reached `num_training_steps`.

  Raises:
    ValueError: for an invalid config, before any compute, or for a workdir
      whose checkpoints were made with other network or bank shapes.
    FileNotFoundError: for missing training data.
    FloatingPointError: when a logged metric is not finite; the message
      names the step, the quantity and the last checkpoint.
  """
  config_base.validate(config)
  mesh = parallel.make_mesh(config.num_devices)
  parallel.check_divisible('batch_size', config.batch_size, mesh)
  model = modes.build_model(config)
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  checkpointer = checkpoint.Checkpointer(str(workdir), config.max_to_keep)
  key = jax.random.PRNGKey(config.seed)
  latest = checkpointer.latest_step()
  if jax.process_count() > 1:  # every process resumes from the same step
    latest = int(multihost_utils.broadcast_one_to_all(
        np.int32(-1 if latest is None else latest)))
    latest = None if latest < 0 else latest
  # Open the data before any compute, so a missing data set fails at once.
  images_per_step = getattr(model, 'images_per_step', config.batch_size)
  batches = data.train_batches(config, latest or 0, images_per_step, mesh)
  abstract = abstract_state(model, config)
  shardings = parallel.state_shardings(abstract, mesh)

  if latest is not None:
    mismatches = config_base.state_mismatches(
        checkpointer.restore_config(latest), config)
    if mismatches:
      checkpointer.close()
      raise ValueError(
          f'{workdir} holds checkpoints (latest: step {latest}) of a run whose '
          'state does not fit this config:\n  ' + '\n  '.join(mismatches) +
          '\nUse a new --workdir, or the values the run was started with.')
    state = checkpointer.restore(parallel.with_shardings(abstract, shardings),
                                 latest)
    logging.info('Resumed from %s at step %d on %d devices.',
                 checkpointer.directory, latest, mesh.size)
  else:
    state = jax.jit(model.init, out_shardings=shardings)(
        key, *modes.init_args(model, config, mesh=mesh))
    logging.info('New %s run in %s on %d devices: %s.', config.mode, workdir,
                 mesh.size, _describe(state))
  start = int(state.step)
  num_steps = config.num_training_steps
  if start >= num_steps:
    logging.info('Step %d already reached num_training_steps=%d: nothing to '
                 'do.', start, num_steps)
    checkpointer.close()
    return None

  is_lead = parallel.is_lead()
  writer = metric_writers.create_default_writer(
      str(workdir), just_logging=not is_lead, asynchronous=True)
  if start == 0:
    writer.write_hparams({k: (v if isinstance(v, (int, float, str, bool))
                              else str(v))
                          for k, v in config.to_dict().items()})
  train_step = jit_train_step(model, mesh, shardings)
  draw_fn = jax.jit(model.draw, static_argnums=3)
  plot_key = jax.random.PRNGKey(PLOT_SEED)
  plot_z = config.init_scale_latent * jax.random.normal(
      jax.random.fold_in(plot_key, 0), (config.num_plot,) + model.latent_shape)
  samples_dir = workdir / 'samples'
  if is_lead and start == 0:
    first = next(batches)
    batches = itertools.chain([first], batches)
    visualize.save_panels(str(samples_dir / 'data.png'), [
        ('training data', visualize.to_display(first[:config.num_plot]))])
  fcd = (metrics_lib.TrainingFCD(config, model)
         if is_lead and config.fcd_freq else None)
  test_images = None
  if is_lead and hasattr(model, 'test_loss'):  # autoencoder: facts §4.3
    test_images = data.to_float(data.eval_images(
        config.data_type, config.data_dir or None, 'test',
        config.image_dims[0], 10_000))
  report = periodic_actions.ReportProgress(
      num_train_steps=num_steps, writer=writer, every_steps=config.info_freq)

  last_metrics = None
  cpu_processes = jax.process_count() > 1 and jax.default_backend() == 'cpu'
  step = start
  t_start = time.time()
  with StopRequest() as stop:
    while step < num_steps:
      with (jax.profiler.StepTraceAnnotation('train', step_num=step),
            jax.set_mesh(mesh)):
        state, metrics = train_step(
            state, parallel.global_batch(next(batches), mesh))
      if cpu_processes:
        # XLA:CPU's cross-process collectives (gloo) can deadlock with
        # several steps in flight (seen: 2 processes x 4 devices hung with
        # ~50 steps queued): keep one step in flight. CPU jobs only.
        jax.block_until_ready(metrics)
      step += 1
      stop.poll(step)
      report(step)
      if step % config.info_freq == 0 or step == num_steps or step == start + 1:
        last_metrics = {k: float(v)
                        for k, v in parallel.to_host(metrics).items()}
        for name, value in last_metrics.items():
          if not np.isfinite(value):
            checkpointer.close()
            good = checkpointer.latest_step()
            raise FloatingPointError(
                f'{name}={value} at step {step}: training diverged. ' +
                (f'Last good checkpoint: step {good} in '
                 f'{checkpointer.directory}.' if good is not None else
                 'No checkpoint was written yet.'))
        writer.write_scalars(step, last_metrics)
      if is_lead and (step % config.plot_freq == 0 or step == num_steps):
        _plot(model, draw_fn, parallel.local_view(state), plot_z,
              jax.random.fold_in(plot_key, 1),
              str(samples_dir / f'step_{step:06d}.png'), step)
        if test_images is not None:
          test_loss = model.test_loss(parallel.local_view(state), test_images)
          writer.write_scalars(step, {'test_loss': test_loss})
          logging.info('Step %d: test loss %.4f.', step, test_loss)
      if fcd and (step % config.fcd_freq == 0 or step == num_steps):
        scores = fcd(parallel.local_view(state))
        writer.write_scalars(step, scores)
        logging.info('Step %d: FCD %.3f, KID %.4f (%d samples vs '
                     'Fashion-MNIST test).', step, scores['fcd'],
                     scores['kid'], config.fcd_num_samples)
      if (step % config.checkpoint_freq == 0 or step == num_steps
          or stop.requested):
        checkpointer.save(step, state, config)
      if stop.requested:
        logging.warning('Stopped by %s at step %d; checkpoint saved in %s. '
                        'Rerun the same command to continue.', stop.requested,
                        step, checkpointer.directory)
        break
  logging.info('Trained steps %d-%d in %.1f s.', start, step,
               time.time() - t_start)
  writer.flush()
  writer.close()
  checkpointer.close()
  return last_metrics
