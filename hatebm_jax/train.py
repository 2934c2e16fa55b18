"""The training loop of every mode: set up, restore, step, log, save.

`train_and_evaluate(config, workdir)` is what `python -m hatebm_jax.main`
calls. It reads top to bottom in sections:

1. set-up: the config checks, the device mesh, the workdir, the rollback
   record (`infra.rollback`), the mode (`hatebm_jax.modes`), the state's
   shapes and shardings, and a compiled step (`Program`);
2. restore: the newest checkpoint, or a new state;
3. the step loop, run in *segments*: each ends `DONE`, `STOPPED` (Ctrl-C /
   SIGTERM, after saving) or `DIVERGED` (the divergence guard fired at a
   log or save step; nothing was saved), and a diverged segment is
   followed by a new one from the last good checkpoint when the rollback
   policy allows, else by an error;
4. outputs at their steps (`Outputs`): scalars, sample grids, and the
   evaluators of `config.eval_metrics` (`hatebm_jax.evaluators`: FCD, KID,
   FID, test loss);
5. saving: every `checkpoint_freq` steps, at the end and when stopping.

Rerunning on the same workdir resumes from the newest checkpoint, bit for
bit as if never stopped.
"""

import dataclasses
import enum
import itertools
import os
import signal
import tempfile
import threading
import time
from typing import Any, Callable, Iterator, Optional

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from hatebm_jax import config_base
from hatebm_jax import data
from hatebm_jax import evaluators
from hatebm_jax import modes
from hatebm_jax import validation
from hatebm_jax import visualize
from hatebm_jax.infra import checkpoint
from hatebm_jax.infra import divergence
from hatebm_jax.infra import parallel
from hatebm_jax.infra import remote
from hatebm_jax.infra import rollback
from hatebm_jax.models import layers
from hatebm_jax.modes import base
from hatebm_jax.serving import run as run_lib

PLOT_SEED = 12345  # fixed latents and noise, so grids are comparable


# ---------------------------------------------------------------------------
# The compiled step.


def make_guard(
    mode: base.Mode, abstract: Any, max_energy: float
) -> divergence.Guard:
  """The divergence guard of `mode`'s step: its metrics (from the step's
  shapes, no compute) and the state fields it checks.

  Args:
    mode: the training program.
    abstract: its state as `jax.ShapeDtypeStruct`s (`mode.abstract_state`).
    max_energy: `config.divergence_max_energy`, the bound on |mean H(x±)|
      (inf checks finiteness only).

  Returns:
    A `divergence.Guard` over the step's metrics (sorted by name) and the
    fields `base.checked_fields` names (networks, optimiser states, the
    replay bank).
  """
  batch = jax.ShapeDtypeStruct(
      (mode.images_per_step,) + tuple(mode.image_shape), np.float32
  )
  metric_names = jax.eval_shape(mode.train_step, abstract, batch)[1]
  return divergence.Guard(
      tuple(sorted(metric_names)), base.checked_fields(abstract), max_energy
  )


def jit_train_step(
    mode: base.Mode,
    mesh: jax.sharding.Mesh,
    shardings: Any,
    guard: divergence.Guard,
) -> Callable:
  """`mode.train_step` and the divergence guard as one program over `mesh`.

  (state, global batch [images_per_step, S, S, C] split on 'data', health
  record) -> (state, replicated scalar metrics, health record); the input
  state and record are donated. Call (and lower) it inside
  `jax.set_mesh(mesh)`, which lets the replay bank run in `shard_map`.

  Args:
    mode: a `hatebm_jax.modes` mode.
    mesh: the device mesh.
    shardings: the state's shardings (`modes.base.shardings`).
    guard: `make_guard(...)` of this mode.
  """

  def step(state, images, health):
    state, metrics = mode.train_step(state, images)
    return state, metrics, guard.update(health, state, metrics)

  replicated = parallel.replicated(mesh)
  return jax.jit(
      step,
      in_shardings=(shardings, parallel.batch_sharding(mesh), replicated),
      out_shardings=(shardings, replicated, replicated),
      donate_argnums=(0, 2),
  )


@dataclasses.dataclass(frozen=True)
class Program:
  """What a run trains with: the mode, its state's shapes and shardings,
  the divergence guard and the compiled step (rebuilt when a rollback
  lowers the learning rates).

  Attributes:
    mode: the `hatebm_jax.modes` mode of the config.
    abstract: the training state's shapes and dtypes.
    shardings: the state's shardings on the mesh.
    guard: the divergence guard of the step.
    step: the jitted step (`jit_train_step`).
  """

  mode: base.Mode
  abstract: Any
  shardings: Any
  guard: divergence.Guard
  step: Callable

  @classmethod
  def build(
      cls, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
  ) -> 'Program':
    """The program of `config` over `mesh` (no compute: it compiles at
    its first call or `step.lower(...).compile()`)."""
    mode = modes.build(config)
    abstract = mode.abstract_state(config.seed)
    shardings = base.shardings(abstract, mesh)
    guard = make_guard(mode, abstract, config.divergence_max_energy)
    return cls(
        mode,
        abstract,
        shardings,
        guard,
        jit_train_step(mode, mesh, shardings, guard),
    )

  def fresh_health(self, mesh: jax.sharding.Mesh) -> Any:
    """A healthy guard record, replicated on `mesh`."""
    return jax.device_put(self.guard.init(), parallel.replicated(mesh))


# ---------------------------------------------------------------------------
# Stopping on request.


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
    logging.warning(
        '%s received: stopping after the steps already queued '
        'and saving a checkpoint (press Ctrl-C again to abort '
        'without saving).',
        self.requested,
    )

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      # In a multi-process job SIGTERM stays with JAX's preemption service,
      # which makes all processes agree on the step to stop at (`poll`).
      signals = (
          (signal.SIGINT,)
          if jax.process_count() > 1
          else (signal.SIGINT, signal.SIGTERM)
      )
      for sig in signals:
        self._previous[sig] = signal.signal(sig, self._handler)
    return self

  def poll(self, step: int, checkpointer: checkpoint.Checkpointer) -> None:
    """Multi-process jobs: sets `requested` at the step all processes
    stop at after any of them got SIGTERM (Orbax's preemption check on
    JAX's preemption service; call after every step)."""
    if (
        jax.process_count() > 1
        and self.requested is None
        and checkpointer.reached_preemption(step)
    ):
      self.requested = 'SIGTERM'
      logging.warning(
          'SIGTERM reached a process of this job: all processes '
          'stop at step %d and save a checkpoint.',
          step,
      )

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


# ---------------------------------------------------------------------------
# Outputs: scalars, grids and evaluations at their steps.


class Outputs:
  """Everything a run writes besides checkpoints (lead process only;
  the others log scalars to the console)."""

  def __init__(
      self,
      config: ml_collections.ConfigDict,
      workdir: epath.Path,
      mode: base.Mode,
      start: int,
  ):
    self.config, self.mode = config, mode
    self.is_lead = parallel.is_lead()
    self.samples_dir = workdir / 'samples'
    # clu's writers and actions import TensorFlow (seconds): only here, so
    # that compiling a step (`hatebm_jax.compiled`) does not.
    from clu import metric_writers  # pylint: disable=g-import-not-at-top

    self.writer = metric_writers.create_default_writer(
        str(workdir), just_logging=not self.is_lead, asynchronous=True
    )
    if start == 0:
      self.writer.write_hparams(
          {
              k: (v if isinstance(v, (int, float, str, bool)) else str(v))
              for k, v in config.to_dict().items()
          }
      )
    self.last_metrics = None
    self._draw = jax.jit(mode.draw, static_argnums=3)
    self._plot_key = jax.random.PRNGKey(PLOT_SEED)
    self._plot_z = config.init_scale_latent * jax.random.normal(
        jax.random.fold_in(self._plot_key, 0),
        (config.num_plot,) + tuple(mode.latent_shape),
    )
    self._evaluators, self._eval_settings = [], None
    names, note = evaluators.for_training(config, mode.capabilities)
    if self.is_lead:
      if note:
        logging.warning(note)
      self._eval_settings = evaluators.Settings.for_training(config)
      self._evaluators = evaluators.build(
          names,
          config=config,
          capabilities=mode.capabilities,
          settings=self._eval_settings,
      )
    self._hooks = []
    self._workdir = workdir
    self._shown_data = start > 0  # data.png: only for a run from step 0

  def restart(
      self, batches: Iterator[np.ndarray], start: int
  ) -> Iterator[np.ndarray]:
    """Starts a segment at `start`: a fresh progress report (and, with
    `profile_steps`, a profiler trace of that many steps from `start` + 10
    on, into <workdir>/plugins/profile for TensorBoard's Profile tab); for a
    run that begins at step 0, a grid of its first training batch (once).
    Returns the batches."""
    from clu import periodic_actions  # pylint: disable=g-import-not-at-top

    self._hooks = [
        periodic_actions.ReportProgress(
            num_train_steps=self.config.num_training_steps,
            writer=self.writer,
            every_steps=self.config.info_freq,
        )
    ]
    profile = self.config.profile_steps
    if profile and self.is_lead:
      # 10 steps in (past compilation and warm-up), earlier in a short run.
      last = self.config.num_training_steps
      first = max(start + 1, min(start + 10, last - profile))
      if first + profile > last:
        logging.warning(
            'profile_steps=%d: only %d steps remain (from step %d to %d), '
            'too few to trace after the first one: no profile is written.',
            profile,
            last - start,
            start,
            last,
        )
      self._hooks.append(
          periodic_actions.Profile(
              logdir=str(self._workdir),
              num_profile_steps=profile,
              profile_duration_ms=None,
              first_profile=first,
              every_steps=None,
              every_secs=None,
          )
      )
    if self.is_lead and start == 0 and not self._shown_data:
      self._shown_data = True
      first = next(batches)
      pixels = visualize.save_panels(
          str(self.samples_dir / 'data.png'),
          [
              (
                  'training data',
                  visualize.to_display(first[: self.config.num_plot]),
              )
          ],
      )
      visualize.write_image(self.writer, 0, 'training_data', pixels)
      batches = itertools.chain([first], batches)
    return batches

  def log(self, step: int, metrics: dict[str, jax.Array]) -> None:
    """Writes the step's scalar metrics (a host sync)."""
    self.last_metrics = {
        k: float(v) for k, v in parallel.to_host(metrics).items()
    }
    self.writer.write_scalars(step, self.last_metrics)

  def report(self, step: int) -> None:
    """After training step `step`: progress lines (steps/s, ETA) and the
    profiler's start and stop."""
    for hook in self._hooks:
      hook(step)

  def periodic(self, step: int, state: Any) -> None:
    """Grids every `plot_freq` steps, the evaluators of `eval_metrics`
    (`hatebm_jax.evaluators.for_training`) every `eval_freq` steps, and
    both at the last step; with the weights sampling uses
    (`config.sample_weights`)."""
    config, last = self.config, step == self.config.num_training_steps
    if not self.is_lead:
      return
    plot = step % config.plot_freq == 0 or last
    evaluate = self._evaluators and (step % config.eval_freq == 0 or last)
    if not (plot or evaluate):
      return
    view = base.for_sampling(
        parallel.local_view(state, base.sharded_fields(state)),
        config.sample_weights,
    )
    if plot:
      self._plot(view, step)
    if evaluate:
      self._evaluate(view, step)

  def _evaluate(self, state: Any, step: int) -> None:
    """Runs the training evaluators on the mode's own samples: each per-run
    metric gets its scalars and a log line, the sample metrics one of each
    together."""
    run = run_lib.Run(
        config=self.config, mode=self.mode, state=state, step=step
    )
    samples = evaluators.Samples(run=run, settings=self._eval_settings)
    source = self.mode.capabilities.sources[0]
    scalars, parts, references = {}, [], []
    for evaluator in self._evaluators:
      values = evaluator(samples=samples, source=source)
      if evaluator.per_source:
        scalars.update(evaluator.scalars(values))
        parts.append(evaluator.summary(values))
        if evaluator.reference:
          references.append(evaluator.reference.description)
      else:
        self.writer.write_scalars(step, evaluator.scalars(values))
        logging.info('Step %d: %s.', step, evaluator.summary(values))
    if parts:
      self.writer.write_scalars(step, scalars)
      logging.info(
          'Step %d: %s (%d samples%s).',
          step,
          ', '.join(parts),
          self._eval_settings.num_samples,
          f' vs {references[0]}' if references else '',
      )

  def _plot(self, state: Any, step: int) -> None:
    """Grid of the mode's own samples: X, G(z), 5·y for Hat EBMs."""
    source = self.mode.capabilities.sources[0]
    x_gen, y = jax.device_get(
        self._draw(
            state, self._plot_z, jax.random.fold_in(self._plot_key, 1), source
        )
    )
    path = str(self.samples_dir / f'step_{step:06d}.png')
    if source == 'ebm':
      pixels = visualize.save_sample_grid(path, x_gen, y, f'step {step}')
    else:
      pixels = visualize.save_panels(
          path, [(f'G(z), step {step}', visualize.to_display(x_gen))]
      )
    visualize.write_image(self.writer, step, 'samples', pixels)

  def close(self) -> None:
    self.writer.flush()
    self.writer.close()


# ---------------------------------------------------------------------------
# The step loop, in segments.


class Outcome(enum.Enum):
  """How a run segment ended (`Segment.outcome`)."""

  DONE = 'done'  # num_training_steps reached
  STOPPED = 'stopped'  # Ctrl-C / SIGTERM: saved and stopped
  DIVERGED = 'diverged'  # the guard fired; nothing saved since


@dataclasses.dataclass
class Segment:
  """How a stretch of steps ended, and where."""

  outcome: Outcome
  step: int
  failure: Optional[divergence.Divergence] = None


class _Trainer:
  """The set-up of one `train_and_evaluate` call, and its sections."""

  def __init__(self, config, workdir, mesh, checkpointer):
    self.config, self.workdir = config, workdir
    self.mesh, self.checkpointer = mesh, checkpointer
    self.policy = rollback.Policy(workdir, config, write=parallel.is_lead())
    self.program = Program.build(self.policy.training_config(), mesh)
    # Shapes and layout stay across rollbacks (only learning rates change).
    self.abstract = self.program.abstract
    self.shardings = self.program.shardings
    self.init_args = None  # inputs of `mode.init` beyond the key, once read
    self.first_step = 0  # the step this call started (or resumed) from

  def latest_step(self) -> Optional[int]:
    """The step to resume from (the same for every process), or None."""
    latest = self.checkpointer.latest_step()
    if jax.process_count() > 1:
      latest = int(
          multihost_utils.broadcast_one_to_all(
              np.int32(-1 if latest is None else latest)
          )
      )
      latest = None if latest < 0 else latest
    if latest is not None:
      self._check_fits(latest)
    return latest

  def _check_fits(self, latest: int) -> None:
    """Raises ValueError listing the config keys and state entries that
    differ from the checkpoint at `latest`."""
    lines = config_base.state_mismatches(
        self.checkpointer.restore_config(latest), self.config
    )
    entries = self.checkpointer.structure_mismatches(self.abstract, latest)
    if not lines and not entries:
      return
    shown = entries[:20] + (
        [f'... and {len(entries) - 20} more entries']
        if len(entries) > 20
        else []
    )
    raise ValueError(
        f'{self.workdir} holds checkpoints (latest: step {latest}) of a run '
        'whose state does not fit this config; nothing was changed in it. '
        + (f'Config keys that differ: {"; ".join(lines)}. ' if lines else '')
        + (
            f'State entries that differ ({len(entries)}): '
            f'{"; ".join(shown)}. '
            if entries
            else ''
        )
        + 'Use a new --workdir, or the values the run was started with.'
    )

  def load(self, step: int) -> Any:
    """The state at checkpoint `step`, or a new one for step 0 (from
    `init_args`, read on first use, so that a joint run reads its
    pretrained generator once), with a rollback's fresh randomness."""
    mode = self.program.mode
    if step:
      state = self.checkpointer.restore(
          parallel.with_shardings(self.abstract, self.shardings), step
      )
    else:
      if self.init_args is None:
        self.init_args = mode.init_args(self.config, self.mesh)
      state = jax.jit(mode.init, out_shardings=self.shardings)(
          jax.random.PRNGKey(self.config.seed), *self.init_args
      )
    return self.policy.fresh_randomness(state, step, self.shardings.rng)

  def batches(self, step: int) -> Iterator[np.ndarray]:
    """This process's training batches from `step` on (on the grain path
    from the iterator state saved with checkpoint `step`, where it holds
    one)."""
    state = self.checkpointer.restore_data_state(step) if step else None
    return data.train_batches(
        self.config,
        step,
        self.program.mode.images_per_step,
        self.mesh,
        state=state,
    )

  def segment(
      self,
      state: Any,
      start: int,
      batches: Iterator[np.ndarray],
      outputs: Outputs,
      stop: StopRequest,
  ) -> tuple[Any, Segment]:
    """Steps from `start` until the run is done, stopped or diverged."""
    config, checkpointer = self.config, self.checkpointer
    program = self.program
    num_steps = config.num_training_steps
    # The grain iterator (before `restart` wraps it): its state goes into
    # every checkpoint.
    data_iterator = batches if hasattr(batches, 'get_state') else None
    batches = outputs.restart(batches, start)
    health = program.fresh_health(self.mesh)
    # XLA:CPU's cross-process collectives (gloo) can deadlock with several
    # steps in flight (seen: 2 processes x 4 devices hung with ~50 steps
    # queued): CPU multi-process jobs keep one step in flight.
    one_in_flight = jax.process_count() > 1 and jax.default_backend() == 'cpu'
    step = start
    while step < num_steps:
      with (
          jax.profiler.StepTraceAnnotation('train', step_num=step),
          jax.set_mesh(self.mesh),
      ):
        state, metrics, health = program.step(
            state, parallel.global_batch(next(batches), self.mesh), health
        )
      if one_in_flight:
        jax.block_until_ready(metrics)
      step += 1
      stop.poll(step, checkpointer)
      # Read once: a signal arriving later in this iteration is handled in
      # the next one (never a stop without its checkpoint).
      stopping = stop.requested
      outputs.report(step)
      log_now = (
          step % config.info_freq == 0
          or step == num_steps
          or step == self.first_step + 1
      )
      save_now = (
          step % config.checkpoint_freq == 0 or step == num_steps or stopping
      )
      if log_now or save_now:
        failure = program.guard.read(parallel.to_host(health))
        if failure:
          return state, Segment(Outcome.DIVERGED, step, failure)
      if log_now:
        outputs.log(step, metrics)
      outputs.periodic(step, state)
      if save_now:
        checkpointer.save(
            step,
            state,
            config,
            data_state=data_iterator.get_state() if data_iterator else None,
        )
      if stopping:
        logging.warning(
            'Stopped by %s at step %d; checkpoint saved in %s. '
            'Rerun the same command to continue.',
            stopping,
            step,
            checkpointer.directory,
        )
        return state, Segment(Outcome.STOPPED, step)
    return state, Segment(Outcome.DONE, step)

  def roll_back(self, segment: Segment, outputs: Outputs) -> int:
    """After a diverged segment: the step to restart from, with the
    program of the lowered learning rates (or FloatingPointError)."""
    self.checkpointer.wait()
    good = self.checkpointer.latest_step()
    restart = self.policy.after_divergence(
        segment.failure, good, self.checkpointer.directory
    )
    outputs.writer.write_scalars(
        segment.step, {'rollbacks': len(self.policy.records)}
    )
    self.program = Program.build(self.policy.training_config(), self.mesh)
    return restart


# ---------------------------------------------------------------------------
# The entry point.


def _checked_workdir(workdir: str) -> epath.Path:
  """The workdir as an absolute path (local) or gs:// path; nothing is
  created (`_create_workdir` does, once every check has passed).

  Raises:
    ValueError: for an empty path, or a workdir or checkpoints folder that
      is a file.
  """
  if not str(workdir).strip():
    raise ValueError(
        f'--workdir={workdir!r} is empty: give a folder (local '
        'or gs://) for checkpoints, events and grids.'
    )
  path = epath.Path(workdir)
  if '://' not in str(workdir):
    path = epath.Path(os.path.abspath(workdir))  # Orbax needs absolute paths
  for folder in (path, path / 'checkpoints'):
    if folder.exists() and not folder.is_dir():
      raise ValueError(
          f'{folder} is a file, not a folder: --workdir must be '
          'a folder (new, or of an earlier run).'
      )
  return path


def _create_workdir(path: epath.Path) -> None:
  """Creates the workdir (local or gs://) and, for a local one, checks
  that it and its checkpoints folder take new files (a probe file, at
  once deleted).

  Raises:
    PermissionError: naming the folder that cannot be written.
  """
  try:
    path.mkdir(parents=True, exist_ok=True)
    if '://' in str(path):
      return
    for folder in (path, path / 'checkpoints'):
      if folder.exists():
        with tempfile.TemporaryFile(dir=folder, prefix='.hatebm_probe_'):
          pass
  except OSError as e:
    raise PermissionError(
        f'--workdir={path} cannot be written ({type(e).__name__}: '
        f'{e.strerror or e}): a run writes its checkpoints, TensorBoard '
        'events and grids there. Make it writable, or copy the run to a '
        'writable folder and continue there.'
    ) from e


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str
) -> Optional[dict[str, float]]:
  """Trains (or resumes) the mode of `config.mode` in `workdir`.

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
  # --- Set-up: checks before any compute or any file is written: the
  # config, the mesh, the workdir, its checkpoints, the data and a joint
  # run's pretrained generator.
  validation.validate(config)
  evaluators.check_config(config, modes.lookup(config.mode).capabilities)
  mesh = parallel.make_mesh(config.num_devices)
  parallel.check_divisible('batch_size', config.batch_size, mesh)
  remote.check_reachable(workdir, config.data_dir, config.gen_weights)
  workdir = _checked_workdir(workdir)
  # Creates nothing: the checkpoints folder appears at the first save.
  checkpointer = checkpoint.Checkpointer(str(workdir), config.max_to_keep)
  try:
    if config.compute_dtype == 'bfloat16' and jax.default_backend() == 'cpu':
      logging.warning(
          'compute_dtype=bfloat16 on CPU: XLA:CPU has no fast '
          'bfloat16 convolutions, so this runs slower than '
          'float32 (docs/performance.md).'
      )
    trainer = _Trainer(config, workdir, mesh, checkpointer)
    latest = trainer.latest_step()
    # A new joint run reads its pretrained generator first, and the data
    # before any compute: a missing path or data set fails at once.
    if latest is None:
      trainer.init_args = trainer.program.mode.init_args(config, mesh)
    trainer.first_step = latest or 0
    batches = trainer.batches(latest or 0)
    _create_workdir(workdir)

    # --- Restore or initialise.
    state = trainer.load(latest or 0)
    start = int(state.step)
    if latest is not None:
      logging.info(
          'Resumed from %s at step %d on %d devices.',
          checkpointer.directory,
          latest,
          mesh.size,
      )
    else:
      logging.info(
          'New %s run in %s on %d devices: %s.',
          config.mode,
          workdir,
          mesh.size,
          _describe(state),
      )
    if start >= config.num_training_steps:
      logging.info(
          'Step %d already reached num_training_steps=%d: nothing ' 'to do.',
          start,
          config.num_training_steps,
      )
      return None
    return _run(trainer, state, start, batches)
  finally:
    checkpointer.close()


def _run(
    trainer: _Trainer, state: Any, start: int, batches: Iterator[np.ndarray]
) -> Optional[dict[str, float]]:
  """The step loop: segments until done or stopped, rolling back after a
  divergence while the policy allows."""
  outputs = Outputs(
      trainer.config, trainer.workdir, trainer.program.mode, start
  )
  first, t_start = start, time.time()
  try:
    with StopRequest() as stop:
      while True:
        state, segment = trainer.segment(state, start, batches, outputs, stop)
        if segment.outcome is not Outcome.DIVERGED:
          break
        restart = trainer.roll_back(segment, outputs)
        del state  # free its buffers before the restore
        state = trainer.load(restart)
        start = int(state.step)
        batches = trainer.batches(start)
    logging.info(
        'Trained steps %d-%d in %.1f s.',
        first,
        segment.step,
        time.time() - t_start,
    )
  finally:
    outputs.close()
  return outputs.last_metrics


def _describe(state: Any) -> str:
  """'hat 66,881 / gen 125,297 params'-style sizes of the networks."""
  sizes = [
      f'{name.removesuffix("_params")} {layers.count_params(value):,}'
      for name, value in base.network_fields(state).items()
      if name.endswith('_params')
  ]
  return ', '.join(sizes) + ' parameters'
