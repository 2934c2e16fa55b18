r"""SN-GAN on CIFAR-10 32x32: the generator that refinement builds on.

  python -m hatebm_jax.main --config=configs/cifar10_sngan.py \
      --workdir=gs://BUCKET/hatebm/cifar10_sngan \
      --config.data_dir=gs://BUCKET/tensorflow_datasets

The Mimicry recipe the paper's pretrained SN-GAN came from
(docs/official_release.md §8 #9): hinge loss, Adam 2e-4 with β = (0, 0.9), batch
64, 5 discriminator steps per generator step, 100k generator steps with linear
learning-rate decay; generator `gen_sngan` (ngf 256, gen_factor 1),
discriminator ndf 128.
"""

from hatebm_jax import config_base


def get_config():
  c = config_base.get_base_config()
  c.exp_name = 'cifar10_sngan'
  c.mode = 'sngan'
  c.gen_factor = 1.0
  c.batch_size = 64
  c.num_training_steps = 100_000
  c.disc_ndf = 128
  c.gan_lr = 2e-4
  c.gan_beta1, c.gan_beta2 = 0.0, 0.9
  c.n_dis = 5
  c.plot_freq = 5000
  c.checkpoint_freq = 5000
  return c
