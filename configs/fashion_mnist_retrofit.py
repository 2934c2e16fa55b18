r"""Joint Hat EBM retrofitting the Fashion-MNIST decoder: stage 2, for this CPU.

  python -m hatebm_jax.main --config=configs/fashion_mnist_retrofit.py \
      --workdir=/tmp/hatebm_fmnist_retrofit \
      --config.gen_weights=/tmp/hatebm_fmnist_ae

A narrow hat network over the frozen decoder of a configs/fashion_mnist_ae.py
run; z ~ N(0, I_256) is not projected (docs/official_release.md §1.5). Chain
settings as in configs/fashion_mnist_refine.py (ε = ε_z = 0.01, T = 4e-6), and
no residual prior (τ = 0); at lr 1e-4 the energies ran off after ~1,500 updates,
at 5e-5 they stayed stable to 2,000 (compared on a GPU).
"""

from hatebm_jax import config_base


def get_config():
  c = config_base.get_base_config()
  c.exp_name = 'fashion_mnist_retrofit'
  c.mode = 'joint'
  c.data_type = 'fashion_mnist'
  c.image_dims = (32, 32, 1)
  c.gen_type = 'gen_decoder'
  c.state_dims = (16, 16, 1)
  c.ebm_ngf = 32
  c.gen_ngf = 32
  c.gen_factor = 2.0
  c.batch_size = 32
  c.num_training_steps = 1000
  c.ebm_lr_info = ((5e-5, 0), (1e-5, 800))
  c.update_latents = True
  c.mcmc_steps = 10
  c.epsilon = 1e-2
  c.epsilon_latent = 1e-2
  c.mcmc_temp = 4e-6
  c.tau_res = 0.0
  c.data_epsilon = 3e-2
  c.plot_freq = 250
  c.checkpoint_freq = 250
  c.eval_freq = 500
  c.eval_num_samples = 2000
  return c
