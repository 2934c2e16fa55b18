"""Serving trained models: restoring a run (checkpoint or exported file),
sampler settings, drawing samples and paths, the exported-file format, its
storage (local, gs://, https://) and the `Pretrained` user API."""
