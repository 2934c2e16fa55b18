"""What the metrics are computed from: the feature networks (Fashion-MNIST
LeNet, Inception-v3), Fréchet distances, KID, and the OOD sets and AUROC.
The metrics themselves, as run in training and by `evaluate`, are the
evaluators of `hatebm_jax.evaluators`."""
