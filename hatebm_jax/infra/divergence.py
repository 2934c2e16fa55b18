"""Divergence guard: notices non-finite or exploding values at their step.

Every training step also updates a tiny replicated *health* record on the
device (no host sync): the first step at which any logged metric (energies,
losses, gradient norms, sample norms) is NaN or ±inf, any |mean energy H(x)|
exceeds `config.divergence_max_energy`, or any parameter, optimiser moment
or replay-bank entry (the stored negative samples) stops being finite,
together with which quantities failed and the metric values of that step.
The training loop reads the record only at its logging and checkpoint
steps, so a diverged state is never saved and the report names the step
where the trouble began. What happens next is the rollback policy's
(`infra.rollback`).
"""

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

# Metrics whose magnitude is bounded by config.divergence_max_energy: the
# mean hat-network energies H(x⁺), H(x⁻) (not divided by T).
ENERGY_METRICS = ('energy_pos', 'energy_neg')
HEALTHY = -1


@dataclasses.dataclass(frozen=True)
class Divergence:
  """A failure read back from the record: step and what went wrong."""

  step: int
  problems: tuple[str, ...]

  def __str__(self):
    return f'step {self.step}: ' + ', '.join(self.problems)


def _all_finite(tree: Any) -> jax.Array:
  leaves = [
      jnp.isfinite(x).all()
      for x in jax.tree.leaves(tree)
      if jnp.issubdtype(x.dtype, jnp.inexact)
  ]
  return jnp.stack(leaves).all() if leaves else jnp.array(True)


@dataclasses.dataclass(frozen=True)
class Guard:
  """The checks of one training step (static: traced into the step).

  Attributes:
    metric_names: the step's scalar metrics, sorted.
    fields: the state fields whose floats must stay finite (networks,
      optimiser states, the replay bank: `modes.base.checked_fields`).
    max_energy: bound on |mean H(x±)| (`config.divergence_max_energy`;
      inf checks finiteness only).
  """

  metric_names: tuple[str, ...]
  fields: tuple[str, ...]
  max_energy: float

  @property
  def names(self) -> tuple[str, ...]:
    """The checked quantities: the metrics, then the state fields."""
    return self.metric_names + self.fields

  def init(self) -> dict[str, jax.Array]:
    """A healthy record: {'step': int32 [] = -1, 'failed': bool [Q],
    'values': float32 [M]} (Q quantities, M metrics)."""
    return {
        'step': jnp.array(HEALTHY, jnp.int32),
        'failed': jnp.zeros((len(self.names),), bool),
        'values': jnp.zeros((len(self.metric_names),), jnp.float32),
    }

  def update(
      self,
      health: dict[str, jax.Array],
      state: Any,
      metrics: dict[str, jax.Array],
  ) -> dict[str, jax.Array]:
    """Records the first unhealthy step (jittable).

    Args:
      health: the record from `init` or the previous step.
      state: the training state after the step (`state.step` = steps
        done).
      metrics: the step's scalar metrics (`metric_names`).

    Returns:
      The record, unchanged if it already holds a failure or the step is
      healthy.
    """
    values = jnp.stack(
        [jnp.asarray(metrics[k], jnp.float32) for k in self.metric_names]
    )
    bound = jnp.array(
        [
            self.max_energy if k in ENERGY_METRICS else jnp.inf
            for k in self.metric_names
        ],
        jnp.float32,
    )
    metric_bad = ~jnp.isfinite(values) | (jnp.abs(values) > bound)
    field_bad = jnp.stack(
        [~_all_finite(getattr(state, f)) for f in self.fields]
    )
    failed = jnp.concatenate([metric_bad, field_bad])
    first = (health['step'] == HEALTHY) & failed.any()
    return {
        'step': jnp.where(first, state.step.astype(jnp.int32), health['step']),
        'failed': jnp.where(first, failed, health['failed']),
        'values': jnp.where(first, values, health['values']),
    }

  def read(self, health: dict[str, Any]) -> Optional[Divergence]:
    """The recorded failure, or None if the run is healthy.

    Args:
      health: the record as host numpy arrays (`parallel.to_host`).

    Returns:
      None, or a `Divergence` with the first failed step and one line per
      failed metric (its value) or state field (non-finite).
    """
    step = int(health['step'])
    if step == HEALTHY:
      return None
    problems = []
    for i, name in enumerate(self.names):
      if not health['failed'][i]:
        continue
      if i < len(self.metric_names):
        value = float(health['values'][i])
        problems.append(
            f'{name}={value:.6g}'
            + (
                f' (|{name}| > divergence_max_energy={self.max_energy:g})'
                if np.isfinite(value)
                else ''
            )
        )
      else:
        problems.append(f'{name} holds non-finite values')
    return Divergence(step, tuple(problems))
