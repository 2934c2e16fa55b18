r"""The retrofit autoencoder on Fashion-MNIST: stage 1 of retrofit, for this CPU.

  python -m hatebm_jax.main --config=configs/fashion_mnist_ae.py \
      --workdir=/tmp/hatebm_fmnist_ae

Encoder and decoder of configs/cifar10_ae.py (16x16x1 latent on the sphere
of radius 16, latent noise 0.02, loss 1000·MSE), narrow and grayscale.
"""

from hatebm_jax import config_base


def get_config():
  c = config_base.get_base_config()
  c.exp_name = 'fashion_mnist_ae'
  c.mode = 'autoencoder'
  c.data_type = 'fashion_mnist'
  c.image_dims = (32, 32, 1)
  c.gen_type = 'gen_decoder'
  c.state_dims = (16, 16, 1)
  c.gen_ngf = 32
  c.inf_ngf = 32
  c.gen_factor = 2.0
  c.data_epsilon = 2e-2  # the latent noise (docs/official_release.md §8 #11)
  c.gen_lr_info = ((1e-3, 0),)
  c.inf_lr_info = ((1e-3, 0),)
  c.batch_size = 64
  c.num_training_steps = 2000
  c.plot_freq = 500
  c.eval_freq = 500  # the test loss
  c.eval_metrics = 'test_loss'
  c.checkpoint_freq = 500
  return c
