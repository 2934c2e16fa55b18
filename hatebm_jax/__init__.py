"""hatebm_jax: Hat EBM (Hill et al., NeurIPS 2022) in JAX and Flax.

`hatebm_jax.load_pretrained(path)` loads an exported model (see
`hatebm_jax.pretrained`); it is imported on first use, so that entry points
can set XLA flags before JAX starts.
"""


def __getattr__(name):
  if name == 'load_pretrained':
    from hatebm_jax import pretrained  # pylint: disable=g-import-not-at-top
    return pretrained.load_pretrained
  raise AttributeError(f'module hatebm_jax has no attribute {name!r}')
