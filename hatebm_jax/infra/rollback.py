"""What a diverged run does next: stop, or roll back (the rollback policy).

The divergence guard (`divergence`) finds the first bad step; this module
decides what follows, by `config.on_divergence`:

* 'stop': a `FloatingPointError` naming the step, what failed and the last
  good checkpoint;
* 'rollback': restore the last good checkpoint (or start afresh without
  one), draw fresh randomness (the run's key folded with `SALT` + the
  rollback's number) and multiply every learning rate by
  `rollback_lr_factor`, at most `max_rollbacks` times over the workdir's
  life; then stop as above.

Each rollback is recorded in `<workdir>/rollbacks.json` (written
atomically), which a restarted run reads, so that lowered learning rates
stay lowered and the count carries over.
"""

import json
from typing import Any, Optional

from absl import logging
from etils import epath
import jax
import ml_collections

RECORD_FILE = 'rollbacks.json'
SALT = 0x5EED  # rollback n continues with fold_in(rng, SALT + n)
# Learning-rate schedules, [[lr, start_update], ...] (all modes but SN-GAN,
# whose one rate is `gan_lr`).
LR_KEYS = ('ebm_lr_info', 'gen_lr_info', 'inf_lr_info')


def scale_learning_rates(
    config: ml_collections.ConfigDict, factor: float
) -> ml_collections.ConfigDict:
  """A copy of `config` with every learning rate multiplied by `factor`
  (the [lr, start] pairs of `LR_KEYS` and SN-GAN's `gan_lr`)."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key in LR_KEYS:
    config[key] = tuple((lr * factor, start) for lr, start in config[key])
  config.gan_lr = config.gan_lr * factor
  return config


class Policy:
  """The rollbacks of one workdir, and what the next divergence does.

  Attributes:
    records: one dict per rollback so far, oldest first: 'detected_at'
      (step), 'problems' (what failed), 'restored_step', 'lr_factor' (the
      factor on the config's learning rates from then on).
  """

  def __init__(
      self,
      workdir: epath.Path,
      config: ml_collections.ConfigDict,
      write: bool = True,
  ):
    """Reads `<workdir>/rollbacks.json` ([] without one).

    Args:
      workdir: the run's folder.
      config: the run's config (`on_divergence`, `max_rollbacks`,
        `rollback_lr_factor`).
      write: whether this process writes the record (the lead process).

    Raises:
      ValueError: when the file is not a list of rollback records.
    """
    self._path = workdir / RECORD_FILE
    self._config = config
    self._write = write
    self.records = self._read()

  def _read(self) -> list[dict]:
    if not self._path.exists():
      return []
    try:
      records = json.loads(self._path.read_text())
      if not all('lr_factor' in r and 'restored_step' in r for r in records):
        raise ValueError('entries without lr_factor / restored_step')
    except (ValueError, TypeError) as e:
      raise ValueError(
          f'{self._path} is damaged ({e}); it lists the '
          'rollbacks of this run: fix or delete it (deleting '
          'restores the learning rates of the config).'
      ) from e
    if records:
      logging.info(
          '%d earlier rollbacks (%s): learning rates x%g.',
          len(records),
          self._path,
          records[-1]['lr_factor'],
      )
    return records

  @property
  def lr_factor(self) -> float:
    """The factor on every learning rate now (1 without rollbacks)."""
    return self.records[-1]['lr_factor'] if self.records else 1.0

  def training_config(self) -> ml_collections.ConfigDict:
    """The config with the learning rates the run trains with now."""
    if not self.records:
      return self._config
    return scale_learning_rates(self._config, self.lr_factor)

  def fresh_randomness(self, state: Any, step: int, sharding: Any) -> Any:
    """`state` with the fresh key of the last rollback if that rollback
    restarted from `step` (so the rerun of a diverged stretch differs);
    else `state` unchanged.

    Args:
      state: the restored train state (a flax struct with an `rng` key).
      step: the step it was restored at.
      sharding: where the new key goes (the key field's sharding).

    Returns:
      The state, its key folded with `SALT` + the number of rollbacks.
    """
    if not self.records or self.records[-1]['restored_step'] != step:
      return state
    rng = jax.random.fold_in(state.rng, SALT + len(self.records))
    return state.replace(rng=jax.device_put(rng, sharding))

  def after_divergence(
      self, failure: Any, good_step: Optional[int], checkpoints: epath.Path
  ) -> int:
    """Records a rollback after `failure` and returns the step to restart
    from (0: a new state), or raises when the policy says stop.

    Args:
      failure: the `divergence.Divergence` read from the guard.
      good_step: the newest checkpoint's step, None without one.
      checkpoints: the checkpoint folder (for the message).

    Raises:
      FloatingPointError: with `on_divergence='stop'`, or after
        `max_rollbacks` rollbacks; it names the step, the quantities and
        the last good checkpoint.
    """
    config = self._config
    where = (
        f'Last good checkpoint: step {good_step} in {checkpoints}.'
        if good_step is not None
        else 'No checkpoint was written yet.'
    )
    if (
        config.on_divergence == 'stop'
        or len(self.records) >= config.max_rollbacks
    ):
      raise FloatingPointError(
          f'Training diverged at {failure}. {where} '
          + (
              f'{len(self.records)} rollbacks were made '
              f'(max_rollbacks={config.max_rollbacks}).'
              if config.on_divergence == 'rollback'
              else 'With --config.on_divergence=rollback the run would restart '
              'from there with fresh randomness.'
          )
          + ' Rerunning as is repeats this run exactly: change the config '
          '(e.g. lower the learning rates) or raise max_rollbacks.'
      )
    restart = good_step or 0
    self.records.append(
        {
            'detected_at': failure.step,
            'problems': failure.problems,
            'restored_step': restart,
            'lr_factor': config.rollback_lr_factor * self.lr_factor,
        }
    )
    logging.warning(
        'Training diverged at %s. Rollback %d of %d: back to '
        'step %d with fresh randomness, learning rates x%g.',
        failure,
        len(self.records),
        config.max_rollbacks,
        restart,
        self.lr_factor,
    )
    if self._write:
      temporary = self._path.parent / (RECORD_FILE + '.tmp')
      temporary.write_text(json.dumps(self.records, indent=1))
      temporary.replace(self._path)
    return restart
