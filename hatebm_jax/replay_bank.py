"""The replay bank of tandem training: past (X, Z) pairs that teach G.

A fixed-size bank of negative samples X = G_t(z) + y_K and their latents z,
held as device arrays inside the training state. Each generator update reads
B pairs drawn without replacement, fits G(z') to X', and then those same
slots are overwritten with the current iteration's pairs, so a pair is never
used in the iteration that made it (paper Sec. 3.4; facts §0.9, §4.1).
"""

from typing import Callable, NamedTuple

import jax


class ReplayBank(NamedTuple):
  """Stored (X, Z) pairs.

  Attributes:
    images: X [N, H, W, C] float32, unclipped (facts §8 #14).
    latents: Z [N, *latent_shape] float32.
  """
  images: jax.Array
  latents: jax.Array

  @property
  def size(self) -> int:
    return self.images.shape[0]


def bank_size(persistent_size: int, batch_size: int) -> int:
  """Bank size rounded down to a multiple of the batch (facts §0.9, §4.1).

  10,000 with batch 128 gives 9,984 as in the official code.

  Raises:
    ValueError: when fewer than one batch of pairs would remain.
  """
  size = batch_size * (persistent_size // batch_size)
  if size < batch_size:
    raise ValueError(f'persistent_size={persistent_size} must be at least '
                     f'batch_size={batch_size}: the bank gives one batch of '
                     'generator targets per step.')
  return size


def init_bank(generate: Callable[[jax.Array], jax.Array], key: jax.Array,
              size: int, latent_shape: tuple[int, ...],
              batch_size: int) -> ReplayBank:
  """A bank of initial generator samples, Z ~ N(0, I), X = G_0(Z).

  Args:
    generate: z [b, *latent_shape] -> G(z) [b, H, W, C].
    key: PRNG key for the latents.
    size: N, a multiple of `batch_size` (see `bank_size`).
    latent_shape: shape of one latent, e.g. (128,).
    batch_size: chunk size for evaluating G (memory bound).

  Returns:
    The bank, no residual added (facts §4.1).
  """
  latents = jax.random.normal(key, (size,) + tuple(latent_shape))
  images = jax.lax.map(generate, latents.reshape(
      (size // batch_size, batch_size) + tuple(latent_shape)))
  return ReplayBank(images.reshape((size,) + images.shape[2:]), latents)


def draw_slots(key: jax.Array, size: int, batch_size: int) -> jax.Array:
  """B distinct slot indices, uniform without replacement: int32 [B]."""
  return jax.random.choice(key, size, (batch_size,), replace=False)


def read(bank: ReplayBank, slots: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The pairs (X', Z') stored at `slots` [B]."""
  return bank.images[slots], bank.latents[slots]


def write(bank: ReplayBank, slots: jax.Array, images: jax.Array,
          latents: jax.Array) -> ReplayBank:
  """A bank whose `slots` hold the new pairs (functional update)."""
  return ReplayBank(bank.images.at[slots].set(images),
                    bank.latents.at[slots].set(latents))
