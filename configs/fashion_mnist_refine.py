r"""Joint Hat EBM refining the Fashion-MNIST SN-GAN: stage 2, for this CPU.

  python -m hatebm_jax.main --config=configs/fashion_mnist_refine.py \
      --workdir=/tmp/hatebm_fmnist_refine \
      --config.gen_weights=/tmp/hatebm_fmnist_sngan

A narrow hat network over the frozen generator of a
configs/fashion_mnist_sngan.py run, trained with short joint chains (about 10
minutes on 2 cores). The chain is the quick start's noise-matched one (ε = 0.01,
T = 4e-6: drift factor ε²/2T = 12.5 on ∇_y H) with the same factor on ∇_z H (ε_z
= 0.01), the CelebA refine run's latent factor. The official CIFAR-10 value
(ε_z²/2T = 1.25e-2) barely moves z in 10 steps; a factor of 312 (ε_z = 0.05) or
50 let z run off to norms of 1e6 within 500 updates, since the latent drift is
unclipped and z has no prior (docs/official_release.md §3). Even at 12.5 z
starts to run off by 2,000 updates at lr 5e-5, hence the short run with a
learning-rate drop (settings compared on a GPU).
"""

from hatebm_jax import config_base


def get_config():
  c = config_base.get_base_config()
  c.exp_name = 'fashion_mnist_refine'
  c.mode = 'joint'
  c.data_type = 'fashion_mnist'
  c.image_dims = (32, 32, 1)
  c.ebm_ngf = 32
  c.gen_ngf = 32
  c.gen_factor = 1.0
  c.batch_size = 32
  c.num_training_steps = 1000
  c.ebm_lr_info = ((5e-5, 0), (1e-5, 600))
  c.update_latents = True
  c.mcmc_steps = 10
  c.epsilon = 1e-2
  c.epsilon_latent = 1e-2
  c.mcmc_temp = 4e-6
  c.data_epsilon = 3e-2
  c.plot_freq = 250
  c.checkpoint_freq = 250
  c.eval_freq = 500
  c.eval_num_samples = 2000
  return c
