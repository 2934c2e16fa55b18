"""hatebm_jax: Hat EBM (Hill et al., NeurIPS 2022) in JAX and Flax."""
