"""hatebm_jax: Hat EBM (Hill et al., NeurIPS 2022) in JAX and Flax.

`hatebm_jax.load_pretrained(path)` loads an exported model (see
`hatebm_jax.serving.pretrained`); it is imported on first use. Importing
the package applies the XLA:CPU settings of the command-line entry points
(`infra.xla_flags`) when JAX has not yet started its backends, so that the
API draws the same samples as `python -m hatebm_jax.sample`.

The package, by layer (imports point down):

  main, sample, evaluate, export, aot   the commands (cli: their flags)
  train                                 the training loop
  evaluation/                           FCD, FID, KID, OOD AUROC
  serving/                              trained runs: restore, sample, export
  modes/                                what config.mode trains (contract)
  hat_ebm/, models/                     the paper's machinery; the networks
  config_base, data, optim, visualize   configs, images, optimisers, grids
  infra/                                mesh, checkpoints, guard, processes
"""

from hatebm_jax.infra import xla_flags as _xla_flags

_xla_flags.apply()  # before JAX starts its backends


def __getattr__(name):
  if name == 'load_pretrained':
    from hatebm_jax.serving import pretrained  # pylint: disable=g-import-not-at-top

    return pretrained.load_pretrained
  raise AttributeError(f'module hatebm_jax has no attribute {name!r}')
