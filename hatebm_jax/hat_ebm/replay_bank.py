"""The replay bank of tandem training: past (X, Z) pairs that teach G.

A fixed-size bank of negative samples X = G_t(z) + y_K and their latents z,
held as device arrays inside the training state. Each generator update reads
B stored pairs, fits G(z') to X', and then those same slots are overwritten
with the current iteration's pairs, so a pair is never used in the
iteration that made it (paper Sec. 3.4; docs/official_release.md §0.9, §4.1).

Layout: the N = B·D pairs are kept in B *lanes* of depth D, arrays
[B, D, ...]. Lane b belongs to example b of the global batch: each step
that example reads one slot of its lane, drawn uniformly with a key folded
with b, and writes its new pair there. The B slots of a step are therefore
distinct (sampling without replacement), every slot is replaced with
probability 1/D = B/N per step as in the official bank, and with the lane
axis split over the devices ('data' mesh axis) every read and write is
local to one device (`jax.shard_map`; no gather of the bank, tested on the
compiled HLO), with the same draws on any device count. The official
multi-replica code splits its bank the same way, into R slices of N/R
(docs/official_release.md §5); lanes are the finest such split.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from hatebm_jax import config_base
from hatebm_jax.infra import parallel

# Largest |G(z') − X'| (over one image, pixel units of [-1, 1]) at which a
# stored pair counts as the generator's own output: 100x the float32
# round-off of recomputing G(z') in another batch or device layout (1.1e-6
# measured for the quick start's generator), 10x below the smallest
# Langevin residual of any shipped config (noise ε ≥ 5e-4 per step puts
# max |y_K| over an image above 1e-3).
OWN_OUTPUT_ATOL = 1e-4


class ReplayBank(NamedTuple):
  """Stored (X, Z) pairs, by lane.

  Attributes:
    images: X [B, D, H, W, C] float32, unclipped (docs/official_release.md §8
    #14). latents: Z [B, D, *latent_shape] float32.
  """

  images: jax.Array
  latents: jax.Array

  @property
  def lanes(self) -> int:
    """B, one lane per example of the global batch."""
    return self.images.shape[0]

  @property
  def depth(self) -> int:
    """D, pairs per lane."""
    return self.images.shape[1]

  @property
  def size(self) -> int:
    """N = B·D pairs."""
    return self.lanes * self.depth


def bank_size(persistent_size: int, batch_size: int) -> int:
  """Bank size rounded down to a multiple of the batch (docs/official_release.md §0.9, §4.1).

  10,000 with batch 128 gives 9,984 as in the official code.

  Raises:
    ValueError: when fewer than one batch of pairs would remain.
  """
  config_base.check_bank(persistent_size, batch_size)
  return batch_size * (persistent_size // batch_size)


def init_bank(
    generate: Callable[[jax.Array], jax.Array],
    key: jax.Array,
    lanes: int,
    depth: int,
    latent_shape: tuple[int, ...],
) -> ReplayBank:
  """A bank of initial generator samples, Z ~ N(0, I), X = G_0(Z).

  Lane b's latents are N(0, I) draws from fold_in(key, b), so the bank is
  the same on any device count. G runs on one batch of B latents (one per
  lane) at a time, D times.

  Args:
    generate: z [B, *latent_shape] -> G(z) [B, H, W, C], per example.
    key: PRNG key for the latents.
    lanes: B, the global batch size.
    depth: D = N / B (see `bank_size`).
    latent_shape: shape of one latent, e.g. (128,).

  Returns:
    The bank, images [B, D, H, W, C] and latents [B, D, *latent_shape]; no
    residual added (docs/official_release.md §4.1).
  """
  latents = parallel.per_example_normal(
      key, (lanes, depth) + tuple(latent_shape)
  )
  images = jax.lax.map(generate, jnp.swapaxes(latents, 0, 1))
  return ReplayBank(jnp.swapaxes(images, 0, 1), latents)


def draw_slots(key: jax.Array, lanes: int, depth: int) -> jax.Array:
  """One slot per lane, uniform in [0, D): int32 [B]; lane b's draw uses
  fold_in(key, b) only."""
  return jax.vmap(
      lambda b: jax.random.randint(jax.random.fold_in(key, b), (), 0, depth)
  )(jnp.arange(lanes))


def _per_device(fn, num_inputs: int, num_outputs: int):
  """`fn` over lanes: inside `jax.shard_map` on the 'data' axis of the
  mesh in context (`jax.set_mesh`), so each device touches only its own
  lanes; a plain call when there is no such mesh."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or parallel.DATA_AXIS not in mesh.axis_names:
    return fn
  spec = P(parallel.DATA_AXIS)
  return jax.shard_map(
      fn, in_specs=(spec,) * num_inputs, out_specs=(spec,) * num_outputs
  )


def read(bank: ReplayBank, slots: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The pairs (X' [B, H, W, C], Z' [B, ...]) stored at lane b, slot
  slots[b]."""

  def local(images, latents, slots):
    lane = jnp.arange(slots.shape[0])
    return images[lane, slots], latents[lane, slots]

  return _per_device(local, 3, 2)(bank.images, bank.latents, slots)


def write(
    bank: ReplayBank, slots: jax.Array, images: jax.Array, latents: jax.Array
) -> ReplayBank:
  """A bank whose slot slots[b] of lane b holds (images[b], latents[b])
  (functional update, in place under buffer donation)."""

  def local(bank_images, bank_latents, slots, images, latents):
    lane = jnp.arange(slots.shape[0])
    return (
        bank_images.at[lane, slots].set(images),
        bank_latents.at[lane, slots].set(latents),
    )

  return ReplayBank(
      *_per_device(local, 5, 2)(
          bank.images, bank.latents, slots, images, latents
      )
  )


def fit_residual(x_fit: jax.Array, x_target: jax.Array) -> jax.Array:
  """G(z') − X' for the generator's fit to stored pairs, exactly 0 (and
  with exactly 0 gradient) for pairs whose X' is the generator's own
  output G(z') to within `OWN_OUTPUT_ATOL`.

  The bank starts as G_0(z) with no residual (docs/official_release.md
  §4.1), so until the generator first moves, the pairs of that first fill
  carry no signal: their exact residual is 0, the computed one float32
  round-off (~1e-7), and Adam, which divides each gradient entry by its own
  RMS, would turn an update made only of round-off into a step of ±lr on
  every weight in a direction set by how the hardware rounds. Such pairs
  therefore count as 0, as in exact arithmetic; every pair that holds a
  Langevin sample (residual ≥ 1e-3) or a target G has moved away from is
  fitted as officially (docs/official_release.md §5).

  Args:
    x_fit: G(z') [B, H, W, C], float32 (carries the gradient).
    x_target: the stored X' [B, H, W, C], float32.

  Returns:
    float32 [B, H, W, C].
  """
  residual = x_fit - x_target
  per_pair = jnp.max(
      jnp.abs(jax.lax.stop_gradient(residual)),
      axis=tuple(range(1, residual.ndim)),
  )
  own = (per_pair <= OWN_OUTPUT_ATOL).reshape(
      (-1,) + (1,) * (residual.ndim - 1)
  )
  return jnp.where(own, 0.0, residual)
