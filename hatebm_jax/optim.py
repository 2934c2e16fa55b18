"""Optimisers of the official release, built from optax.

Adam (β₁ 0.9, β₂ 0.999, ε 1e-7, the Keras defaults) on a piecewise-constant
learning rate given as `[[lr, start_update], ...]` (`ebm_lr_info`,
`gen_lr_info`), with an optional per-tensor gradient-norm clip for the hat
network (`clip_ebm_grad`, `max_grad_norm`). Source: docs/official_release.md
§4.4. Also an exponential moving average of weights (`ema_update`), which
the official release keeps but never reads; here it is what sampling uses
when a config turns it on (`gen_ema_decay`, `hat_ema_decay`).
"""

import math
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp

import optax


def lr_schedule(lr_info: Sequence[Sequence[float]]) -> optax.Schedule:
  """Piecewise-constant learning rate from `[[lr, start_update], ...]`.

  The rate at update t (0-based count of updates already applied) is the lr
  of the last pair with start_update ≤ t (docs/official_release.md §4.4).

  Raises:
    ValueError: if the list is empty, does not start at update 0, has
      decreasing starts or a non-positive rate.
  """
  try:
    pairs = [(float(lr), int(start)) for lr, start in lr_info]
  except (TypeError, ValueError) as e:
    raise ValueError(
        f'learning-rate info {lr_info!r} must be a list of '
        '[lr, start_update] pairs, e.g. ((1e-4, 0), (1e-5, '
        '1000))'
    ) from e
  if not pairs or pairs[0][1] != 0:
    raise ValueError(
        f'learning-rate info {lr_info!r} must be a non-empty '
        'list of [lr, start_update] pairs starting at update 0.'
    )
  starts = [start for _, start in pairs]
  if starts != sorted(set(starts)):
    raise ValueError(
        f'learning-rate info {lr_info!r}: start updates must '
        'increase strictly.'
    )
  if not all(0 < lr < math.inf for lr, _ in pairs):
    raise ValueError(
        f'learning-rate info {lr_info!r}: rates must be finite ' 'and > 0.'
    )
  # optax multiplies the running rate by the given scale at each boundary.
  boundaries = {
      start: lr / prev_lr for (prev_lr, _), (lr, start) in zip(pairs, pairs[1:])
  }
  return optax.piecewise_constant_schedule(pairs[0][0], boundaries)


def clip_per_tensor(max_norm: float) -> optax.GradientTransformation:
  """Rescales each gradient tensor to L2 norm ≤ max_norm (docs/official_release.md §0.8).

  Not a global-norm clip: every leaf is clipped on its own, TF
  `clip_by_norm` semantics g · c / max(‖g‖, c).
  """

  def clip(g, _):
    norm = jnp.sqrt(jnp.sum(jnp.square(g)))
    return g * (max_norm / jnp.maximum(norm, max_norm))

  return optax.stateless_with_tree_map(clip)


def adam(
    lr_info: Sequence[Sequence[float]], max_grad_norm: Optional[float] = None
) -> optax.GradientTransformation:
  """Keras-default Adam on a piecewise-constant rate, optionally clipped.

  Args:
    lr_info: `[[lr, start_update], ...]`, see `lr_schedule`.
    max_grad_norm: per-tensor clip threshold, or None for no clipping.

  Returns:
    An optax transformation; its update count drives the schedule.
  """
  opt = optax.adam(lr_schedule(lr_info), b1=0.9, b2=0.999, eps=1e-7)
  if max_grad_norm is None:
    return opt
  if not max_grad_norm > 0:
    raise ValueError(f'max_grad_norm={max_grad_norm!r} must be > 0.')
  return optax.chain(clip_per_tensor(max_grad_norm), opt)


def ema_decay_at(decay: float, count: jax.Array) -> jax.Array:
  """The decay of the weight average at update `count` (0-based):
  min(decay, (1 + count) / (10 + count)).

  The warm-up (TF's `ExponentialMovingAverage(num_updates=...)` rule) lets
  the average leave the random initial weights within tens of updates, where
  a fixed 0.999 would keep e^-2 = 14% of them after 2,000 updates; the
  official wrapper (docs/official_release.md §4.4) has no warm-up and is
  never read.

  Args:
    decay: the target decay, in [0, 1).
    count: int32 [], updates already averaged.

  Returns:
    float32 [].
  """
  count = jnp.asarray(count, jnp.float32)
  return jnp.minimum(decay, (1.0 + count) / (10.0 + count))


def ema_update(
    average: Any, params: Any, decay: float, count: jax.Array
) -> Any:
  """One update of an exponential moving average of weights:
  average ← d·average + (1 − d)·params, d = `ema_decay_at(decay, count)`
  (`optax.incremental_update`).

  Args:
    average: the average so far (a pytree like `params`, float32).
    params: the weights after this update.
    decay: the target decay in [0, 1) (`config.gen_ema_decay`,
      `config.hat_ema_decay`).
    count: int32 [], updates averaged before this one (the step).

  Returns:
    The new average, same structure and dtypes.
  """
  return optax.incremental_update(
      params, average, 1.0 - ema_decay_at(decay, count)
  )
