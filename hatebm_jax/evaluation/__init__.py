"""Evaluation: Fréchet distances (FCD, FID), KID, the feature networks
(Fashion-MNIST LeNet, Inception-v3) and OOD detection by H(x)."""
