"""The training loop of every mode: jit once, log, plot, checkpoint.

`train_and_evaluate(config, workdir)` is what `python -m hatebm_jax.main`
calls. Rerunning it on the same workdir resumes from the newest checkpoint,
bit for bit as if never stopped; Ctrl-C or SIGTERM makes it save the
current step and return; a diverging run stops (or rolls back) at the step
where non-finite or exploding values appear (`hatebm_jax.divergence`).
"""

import itertools
import json
import os
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
from hatebm_jax import divergence
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

  def poll(self, step: int, checkpointer: checkpoint.Checkpointer) -> None:
    """Multi-process jobs: sets `requested` at the step all processes
    stop at after any of them got SIGTERM (Orbax's preemption check on
    JAX's preemption service; call after every step)."""
    if (jax.process_count() > 1 and self.requested is None and
        checkpointer.reached_preemption(step)):
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


def jit_train_step(model, mesh: jax.sharding.Mesh, shardings: Any,
                   max_energy: float = float('inf')):
  """`model.train_step` and the divergence guard as one program over `mesh`.

  (state, global batch [B, S, S, C] split on 'data', health record) ->
  (state, replicated scalar metrics, health record); the input state and
  record are donated. Call (and lower) it inside `jax.set_mesh(mesh)`,
  which lets the replay bank run in `shard_map`.

  Args:
    model: a model of `hatebm_jax.modes`.
    mesh: the device mesh.
    shardings: the state's shardings (`parallel.state_shardings`).
    max_energy: `config.divergence_max_energy` (see `divergence.update`).
  """
  def step(state, images, health):
    state, metrics = model.train_step(state, images)
    return state, metrics, divergence.update(health, state, metrics,
                                             max_energy)

  replicated = parallel.replicated(mesh)
  return jax.jit(
      step, in_shardings=(shardings, parallel.batch_sharding(mesh),
                          replicated),
      out_shardings=(shardings, replicated, replicated), donate_argnums=(0, 2))


def init_health(model, config, abstract: Any, mesh: jax.sharding.Mesh):
  """A healthy divergence record for `model`'s step, replicated on `mesh`,
  and the names of the quantities it checks (metrics first)."""
  images = getattr(model, 'images_per_step', config.batch_size)
  batch = jax.ShapeDtypeStruct((images,) + tuple(config.image_dims),
                               np.float32)
  metric_names = sorted(jax.eval_shape(model.train_step, abstract, batch)[1])
  names = divergence.quantity_names(metric_names, abstract)
  health = jax.device_put(divergence.init(len(metric_names), len(names)),
                          parallel.replicated(mesh))
  return health, names, len(metric_names)


ROLLBACK_FILE = 'rollbacks.json'
ROLLBACK_SALT = 0x5EED  # rollback n continues with fold_in(rng, SALT + n)


def _read_rollbacks(workdir: epath.Path) -> list[dict]:
  """The rollbacks recorded in `<workdir>/rollbacks.json` ([] if none).

  Raises:
    ValueError: when the file is not a list of rollback records.
  """
  path = workdir / ROLLBACK_FILE
  if not path.exists():
    return []
  try:
    record = json.loads(path.read_text())
    if not all('lr_factor' in r and 'restored_step' in r for r in record):
      raise ValueError('entries without lr_factor / restored_step')
  except (ValueError, TypeError) as e:
    raise ValueError(f'{path} is damaged ({e}); it lists the rollbacks of '
                     'this run: fix or delete it (deleting restores the '
                     'learning rates of the config).') from e
  return record


def _write_rollbacks(workdir: epath.Path, rollbacks: list[dict]) -> None:
  """Writes the record atomically (a temporary file, then a rename)."""
  temporary = workdir / (ROLLBACK_FILE + '.tmp')
  temporary.write_text(json.dumps(rollbacks, indent=1))
  temporary.replace(workdir / ROLLBACK_FILE)


def _mismatch_error(workdir, latest, checkpointer, abstract, config):
  """ValueError listing the config keys and state entries that differ
  from the checkpoint at `latest`, or None if it fits."""
  lines = config_base.state_mismatches(checkpointer.restore_config(latest),
                                       config)
  entries = checkpointer.structure_mismatches(abstract, latest)
  if not lines and not entries:
    return None
  shown = entries[:20] + ([f'... and {len(entries) - 20} more entries']
                          if len(entries) > 20 else [])
  return ValueError(
      f'{workdir} holds checkpoints (latest: step {latest}) of a run whose '
      'state does not fit this config; nothing was changed in it.\n'
      + ('Config keys that differ:\n  ' + '\n  '.join(lines) + '\n'
         if lines else '')
      + (f'State entries that differ ({len(entries)}):\n  ' +
         '\n  '.join(shown) + '\n' if entries else '')
      + 'Use a new --workdir, or the values the run was started with.')


def _checked_workdir(workdir: str) -> epath.Path:
  """The workdir as an absolute path (local) or gs:// path, created.

  Raises:
    ValueError: for an empty path, or a workdir or checkpoints folder that
      is a file.
  """
  if not str(workdir).strip():
    raise ValueError(f'--workdir={workdir!r} is empty: give a folder (local '
                     'or gs://) for checkpoints, events and grids.')
  path = epath.Path(workdir)
  if '://' not in str(workdir):
    path = epath.Path(os.path.abspath(workdir))  # Orbax needs absolute paths
  for folder in (path, path / 'checkpoints'):
    if folder.exists() and not folder.is_dir():
      raise ValueError(f'{folder} is a file, not a folder: --workdir must be '
                       'a folder (new, or of an earlier run).')
  path.mkdir(parents=True, exist_ok=True)
  return path


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> Optional[dict[str, float]]:
  """Trains (or resumes) the model of `config.mode` in `workdir`.

  Modes (`hatebm_jax.modes`): 'synthesis' (tandem Hat EBM), 'joint' (Hat EBM
  over a frozen pretrained generator), 'sngan', 'autoencoder'.

  Writes `<workdir>/checkpoints/<step>` (Orbax), TensorBoard events,
  `<workdir>/samples/step_<step>.png` grids of X = G(z) + y, G(z) and 5·y,
  and `<workdir>/rollbacks.json` if the divergence guard rolled back.

  Resuming is exact: the state (networks, optimiser states, replay bank,
  RNG key) after N steps is the same, bit for bit on CPU, whether or not
  the run was stopped and resumed on the way (randomness is a function of
  (seed, step), data batches of the step).

  Args:
    config: an experiment config (see hatebm_jax/config_base.py).
    workdir: output folder, local or gs://; created if missing.

  Returns:
    The metrics logged last (host floats), or None if the run had already
    reached `num_training_steps`.

  Raises:
    ValueError: for an invalid config, before any compute, or for a workdir
      whose checkpoints do not fit the config (listing the differences).
    IOError: when the newest checkpoint cannot be read (it names the
      older ones).
    FileNotFoundError: for missing training data or pretrained generator.
    FloatingPointError: when training diverges (config.on_divergence
      'stop', or after max_rollbacks rollbacks); the message names the
      step, the quantities and the last good checkpoint.
  """
  config_base.validate(config)
  mesh = parallel.make_mesh(config.num_devices)
  parallel.check_divisible('batch_size', config.batch_size, mesh)
  workdir = _checked_workdir(workdir)
  checkpointer = checkpoint.Checkpointer(str(workdir), config.max_to_keep)
  try:
    return _train(config, workdir, mesh, checkpointer)
  finally:
    checkpointer.close()


def _train(config, workdir, mesh, checkpointer):
  """The body of `train_and_evaluate`."""
  rollbacks = _read_rollbacks(workdir)
  run_config = config
  if rollbacks:  # learning rates lowered by earlier rollbacks stay lowered
    factor = rollbacks[-1]['lr_factor']
    run_config = config_base.scale_learning_rates(config, factor)
    logging.info('%d earlier rollbacks (%s): learning rates x%g.',
                 len(rollbacks), workdir / ROLLBACK_FILE, factor)
  model = modes.build_model(run_config)
  if config.compute_dtype == 'bfloat16' and jax.default_backend() == 'cpu':
    logging.warning('compute_dtype=bfloat16 on CPU: XLA:CPU has no fast '
                    'bfloat16 convolutions, so this runs slower than '
                    'float32 (docs/performance.md).')
  latest = checkpointer.latest_step()
  if jax.process_count() > 1:  # every process resumes from the same step
    latest = int(multihost_utils.broadcast_one_to_all(
        np.int32(-1 if latest is None else latest)))
    latest = None if latest < 0 else latest
  abstract = abstract_state(model, config)
  shardings = parallel.state_shardings(abstract, mesh)
  if latest is not None:
    error = _mismatch_error(workdir, latest, checkpointer, abstract, config)
    if error:
      raise error
  # A new joint run reads its pretrained generator first, and the data
  # before any compute: a missing path or data set fails at once.
  generator = None
  if latest is None:
    generator = modes.init_args(model, config, mesh=mesh)
  images_per_step = getattr(model, 'images_per_step', config.batch_size)
  batches = data.train_batches(config, latest or 0, images_per_step, mesh)
  key = jax.random.PRNGKey(config.seed)

  def load(step):
    """The state at checkpoint `step` (0 without one: a new state), with
    the fresh randomness of a rollback that restarted from it."""
    if step:
      state = checkpointer.restore(
          parallel.with_shardings(abstract, shardings), step)
    else:
      state = jax.jit(model.init, out_shardings=shardings)(
          key, *(generator if generator is not None else
                 modes.init_args(model, config, mesh=mesh)))
    if rollbacks and rollbacks[-1]['restored_step'] == step:
      state = state.replace(rng=jax.device_put(jax.random.fold_in(
          state.rng, ROLLBACK_SALT + len(rollbacks)), shardings.rng))
    return state

  state = load(latest or 0)
  if latest is not None:
    logging.info('Resumed from %s at step %d on %d devices.',
                 checkpointer.directory, latest, mesh.size)
  else:
    logging.info('New %s run in %s on %d devices: %s.', config.mode, workdir,
                 mesh.size, _describe(state))
  start = int(state.step)
  num_steps = config.num_training_steps
  if start >= num_steps:
    logging.info('Step %d already reached num_training_steps=%d: nothing to '
                 'do.', start, num_steps)
    return None

  is_lead = parallel.is_lead()
  writer = metric_writers.create_default_writer(
      str(workdir), just_logging=not is_lead, asynchronous=True)
  if start == 0:
    writer.write_hparams({k: (v if isinstance(v, (int, float, str, bool))
                              else str(v))
                          for k, v in config.to_dict().items()})
  max_energy = config.divergence_max_energy
  train_step = jit_train_step(model, mesh, shardings, max_energy)
  health, names, num_metrics = init_health(model, config, abstract, mesh)
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
  new_report = lambda: periodic_actions.ReportProgress(
      num_train_steps=num_steps, writer=writer, every_steps=config.info_freq)
  report = new_report()

  def diverged():
    """The recorded divergence, if any (a host sync)."""
    return divergence.read(parallel.to_host(health), names, num_metrics,
                           max_energy)

  last_metrics = None
  cpu_processes = jax.process_count() > 1 and jax.default_backend() == 'cpu'
  step = start
  t_start = time.time()
  try:
    with StopRequest() as stop:
      while step < num_steps:
        with (jax.profiler.StepTraceAnnotation('train', step_num=step),
              jax.set_mesh(mesh)):
          state, metrics, health = train_step(
              state, parallel.global_batch(next(batches), mesh), health)
        if cpu_processes:
          # XLA:CPU's cross-process collectives (gloo) can deadlock with
          # several steps in flight (seen: 2 processes x 4 devices hung
          # with ~50 steps queued): keep one step in flight. CPU jobs only.
          jax.block_until_ready(metrics)
        step += 1
        stop.poll(step, checkpointer)
        # Read once: a signal arriving later in this iteration is handled
        # in the next one (never a stop without its checkpoint).
        stopping = stop.requested
        report(step)
        log_now = (step % config.info_freq == 0 or step == num_steps or
                   step == start + 1)
        save_now = (step % config.checkpoint_freq == 0 or step == num_steps
                    or stopping)
        if log_now or save_now:
          failure = diverged()
          if failure:
            checkpointer.wait()
            good = checkpointer.latest_step()
            where = (f'Last good checkpoint: step {good} in '
                     f'{checkpointer.directory}.' if good is not None else
                     'No checkpoint was written yet.')
            if (config.on_divergence == 'stop' or
                len(rollbacks) >= config.max_rollbacks):
              raise FloatingPointError(
                  f'Training diverged at {failure}. {where} ' + (
                      f'{len(rollbacks)} rollbacks were made '
                      f'(max_rollbacks={config.max_rollbacks}).'
                      if config.on_divergence == 'rollback' else
                      'With --config.on_divergence=rollback the run would '
                      'restart from there with fresh randomness.') +
                  ' Rerunning as is repeats this run exactly: change the '
                  'config (e.g. lower the learning rates) or raise '
                  'max_rollbacks.')
            # Roll back: last good checkpoint, fresh randomness, lower lr.
            rollbacks.append({
                'detected_at': failure.step, 'problems': failure.problems,
                'restored_step': good or 0,
                'lr_factor': config.rollback_lr_factor * (
                    rollbacks[-1]['lr_factor'] if rollbacks else 1.0)})
            logging.warning('Training diverged at %s. Rollback %d of %d: '
                            'back to step %d with fresh randomness, learning '
                            'rates x%g.', failure, len(rollbacks),
                            config.max_rollbacks, good or 0,
                            rollbacks[-1]['lr_factor'])
            if is_lead:
              _write_rollbacks(workdir, rollbacks)
            writer.write_scalars(step, {'rollbacks': len(rollbacks)})
            model = modes.build_model(config_base.scale_learning_rates(
                config, rollbacks[-1]['lr_factor']))
            train_step = jit_train_step(model, mesh, shardings, max_energy)
            del state
            state = load(good or 0)
            step = int(state.step)
            health, _, _ = init_health(model, config, abstract, mesh)
            batches = data.train_batches(config, step, images_per_step, mesh)
            report = new_report()
            continue
        if log_now:
          last_metrics = {k: float(v)
                          for k, v in parallel.to_host(metrics).items()}
          writer.write_scalars(step, last_metrics)
        if is_lead and (step % config.plot_freq == 0 or step == num_steps):
          _plot(model, draw_fn, parallel.local_view(state), plot_z,
                jax.random.fold_in(plot_key, 1),
                str(samples_dir / f'step_{step:06d}.png'), step)
          if test_images is not None:
            test_loss = model.test_loss(parallel.local_view(state),
                                        test_images)
            writer.write_scalars(step, {'test_loss': test_loss})
            logging.info('Step %d: test loss %.4f.', step, test_loss)
        if fcd and (step % config.fcd_freq == 0 or step == num_steps):
          scores = fcd(parallel.local_view(state))
          writer.write_scalars(step, scores)
          logging.info('Step %d: FCD %.3f, KID %.4f (%d samples vs '
                       'Fashion-MNIST test).', step, scores['fcd'],
                       scores['kid'], config.fcd_num_samples)
        if save_now:
          checkpointer.save(step, state, config)
        if stopping:
          logging.warning('Stopped by %s at step %d; checkpoint saved in %s. '
                          'Rerun the same command to continue.',
                          stopping, step, checkpointer.directory)
          break
    logging.info('Trained steps %d-%d in %.1f s.', start, step,
                 time.time() - t_start)
  finally:
    writer.flush()
    writer.close()
  return last_metrics
