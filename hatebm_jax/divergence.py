"""Divergence guard: notices non-finite or exploding values at their step.

Every training step also updates a tiny replicated *health* record on the
device (no host sync): the first step at which any logged metric (energies,
losses, gradient norms, sample norms) is NaN or ±inf, any |mean energy H(x)|
exceeds `config.divergence_max_energy`, or any parameter, optimiser moment
or replay-bank entry (the stored negative samples) stops being finite,
together with which quantities failed and the metric values of that step.
The training loop reads the record only at its logging and checkpoint
steps, so a diverged state is never saved and the report names the step
where the trouble began.
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


def quantity_names(metric_names: list[str], state: Any) -> list[str]:
  """Names of the checked quantities: the sorted metrics, then the state's
  fields that hold floats ('hat_params', 'bank', ...)."""
  fields = [f.name for f in dataclasses.fields(state)
            if f.name not in ('step', 'rng')]
  return sorted(metric_names) + fields


def init(num_metrics: int, num_quantities: int) -> dict[str, jax.Array]:
  """A healthy record: {'step': int32 [] = -1, 'failed': bool [Q],
  'values': float32 [M]} (Q quantities, M metrics)."""
  return {'step': jnp.array(HEALTHY, jnp.int32),
          'failed': jnp.zeros((num_quantities,), bool),
          'values': jnp.zeros((num_metrics,), jnp.float32)}


def _all_finite(tree: Any) -> jax.Array:
  leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.stack(leaves).all() if leaves else jnp.array(True)


def update(health: dict[str, jax.Array], state: Any,
           metrics: dict[str, jax.Array],
           max_energy: float) -> dict[str, jax.Array]:
  """Records the first unhealthy step (jittable, traced into the step).

  Args:
    health: the record from `init` or the previous step.
    state: the training state after the step (`state.step` = steps done).
    metrics: the step's scalar metrics.
    max_energy: bound on |mean H(x±)| (`config.divergence_max_energy`;
      inf checks finiteness only).

  Returns:
    The record, unchanged if it already holds a failure or the step is
    healthy.
  """
  names = sorted(metrics)
  values = jnp.stack([jnp.asarray(metrics[k], jnp.float32) for k in names])
  bound = jnp.array([max_energy if k in ENERGY_METRICS else jnp.inf
                     for k in names], jnp.float32)
  metric_bad = ~jnp.isfinite(values) | (jnp.abs(values) > bound)
  fields = quantity_names(names, state)[len(names):]
  field_bad = jnp.stack([~_all_finite(getattr(state, f)) for f in fields])
  failed = jnp.concatenate([metric_bad, field_bad])
  first = (health['step'] == HEALTHY) & failed.any()
  return {'step': jnp.where(first, state.step.astype(jnp.int32),
                            health['step']),
          'failed': jnp.where(first, failed, health['failed']),
          'values': jnp.where(first, values, health['values'])}


@dataclasses.dataclass(frozen=True)
class Divergence:
  """A failure read back from the record: step and what went wrong."""
  step: int
  problems: tuple[str, ...]

  def __str__(self):
    return f'step {self.step}: ' + ', '.join(self.problems)


def read(health: dict[str, Any], names: list[str], num_metrics: int,
         max_energy: float) -> Optional[Divergence]:
  """The recorded failure (host values), or None if the run is healthy.

  Args:
    health: the record as host numpy arrays.
    names: `quantity_names(...)` of the step.
    num_metrics: how many of `names` are metrics.
    max_energy: the bound used (for the message).
  """
  step = int(health['step'])
  if step == HEALTHY:
    return None
  problems = []
  for i, name in enumerate(names):
    if not health['failed'][i]:
      continue
    if i < num_metrics:
      value = float(health['values'][i])
      problems.append(f'{name}={value:.6g}' + (
          f' (|{name}| > divergence_max_energy={max_energy:g})'
          if np.isfinite(value) else ''))
    else:
      problems.append(f'{name} holds non-finite values')
  return Divergence(step, tuple(problems))
