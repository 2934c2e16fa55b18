"""Infrastructure: device mesh and shardings, checkpoints, the divergence
guard and rollback policy, process set-up and XLA flags.

Importing this package imports nothing else, so that entry points can set
XLA flags (`xla_flags`) before JAX starts.
"""
