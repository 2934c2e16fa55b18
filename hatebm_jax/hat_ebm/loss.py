"""The maximum-likelihood update of the hat network (paper eq. 8).

Every Hat EBM mode (synthesis and joint) trains its hat network H with
this one update: the loss (mean H(x⁺) − mean H(x⁻)) / T on positive
samples x⁺ (data + noise) and negative samples x⁻ (the Langevin chain's
states), a constant of the update (docs/official_release.md §4.1, §4.2).

An optional energy penalty α·(mean H(x⁺)² + mean H(x⁻)²) / T
(`energy_l2`, an extension that is off by default; docs/quality.md) anchors
the energies at 0: with chains started from noise, it holds those easy
negatives' energies near 1/(2α) instead of letting maximum likelihood push
them up without bound.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from hatebm_jax.infra import parallel

Params = Any


def hat_update(
    optimizer: optax.GradientTransformation,
    energy_fn: Callable[[Params, jax.Array], jax.Array],
    hat_params: Params,
    opt_state: optax.OptState,
    x_pos: jax.Array,
    x_neg: jax.Array,
    temperature: float,
    energy_l2: float = 0.0,
) -> tuple[Params, optax.OptState, dict[str, jax.Array]]:
  """One maximum-likelihood update of the hat network (eq. 8).

  The loss (mean H(x⁺) − mean H(x⁻)) / T is evaluated in one pass of H
  over the pairs (x⁺_b, x⁻_b) interleaved, so that a batch split over
  devices stays where it is (no all-to-all); x⁻ is a constant (no gradient
  reaches the chain or G).

  Args:
    optimizer: the hat network's optax transformation.
    energy_fn: (params, images [N, S, S, C]) -> energies [N].
    hat_params, opt_state: current θ and optimiser state.
    x_pos: positive samples [B, S, S, C] float32 (data + noise).
    x_neg: negative samples [B, S, S, C] float32 (G(z) + y_K).
    temperature: T > 0.
    energy_l2: α ≥ 0, weight of the penalty α·(mean H(x⁺)² + mean H(x⁻)²)
      / T, the means over the batch of squared energies. A negative that
      no positive is near settles at H = 1/(2α). 0: eq. 8 exactly (the
      official loss).

  Returns:
    (θ', opt_state', metrics): 'ebm_loss' ((mean H(x⁺) − mean H(x⁻)) / T,
    the official "Energy Diff", without the penalty), 'energy_pos',
    'energy_neg' (means of H), 'hat_grad_norm' (global norm of the gradient before any clipping).
  """
  batch = x_pos.shape[0]
  x_neg = jax.lax.stop_gradient(x_neg)

  def loss_fn(params):
    energies = energy_fn(params, parallel.interleave(x_pos, x_neg))
    energies = energies.reshape(batch, 2)
    e_pos, e_neg = energies[:, 0].mean(), energies[:, 1].mean()
    gap = (e_pos - e_neg) / temperature
    if not energy_l2:
      return gap, (gap, e_pos, e_neg)
    penalty = 2 * energy_l2 * jnp.mean(jnp.square(energies)) / temperature
    return gap + penalty, (gap, e_pos, e_neg)

  (_, (loss, e_pos, e_neg)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      hat_params
  )
  updates, opt_state = optimizer.update(grads, opt_state, hat_params)
  return (
      optax.apply_updates(hat_params, updates),
      opt_state,
      {
          'ebm_loss': loss,
          'energy_pos': e_pos,
          'energy_neg': e_neg,
          'hat_grad_norm': optax.tree.norm(grads),
      },
  )
