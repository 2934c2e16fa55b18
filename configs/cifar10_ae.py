r"""The deterministic autoencoder of the retrofit experiment (docs/official_release.md §4.3).

  python -m hatebm_jax.main --config=configs/cifar10_ae.py \
      --workdir=gs://BUCKET/hatebm/cifar10_ae \
      --config.data_dir=gs://BUCKET/tensorflow_datasets

Encoder `inf_encoder` (ngf 256) and decoder `gen_decoder` (ngf 256,
gen_factor 2) with the 16x16x1 latent on the sphere of radius 16; latent
noise 0.02; loss 1000·MSE; Adam 1e-4 each; 100 "epochs" of 499 steps at
batch 128 (49,900 updates); test loss every 5 epochs.
"""

from hatebm_jax import config_base


def get_config():
  c = config_base.get_base_config()
  c.exp_name = 'cifar10_ae'
  c.mode = 'autoencoder'
  c.gen_type = 'gen_decoder'
  c.state_dims = (16, 16, 1)
  c.gen_factor = 2.0
  c.inf_ngf = 256
  c.data_epsilon = 2e-2  # the latent noise (docs/official_release.md §8 #11)
  c.gen_lr_info = ((1e-4, 0),)
  c.inf_lr_info = ((1e-4, 0),)
  c.num_training_steps = 49_900
  c.plot_freq = 5 * 499
  c.eval_freq = 5 * 499  # the test loss (and FID, KID with weights)
  c.checkpoint_freq = 5 * 499
  return c
