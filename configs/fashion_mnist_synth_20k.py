r"""The CPU quick start run to 20,000 iterations: the quality-vs-compute curve.

  python -m hatebm_jax.main --config=configs/fashion_mnist_synth_20k.py \
      --workdir=/tmp/hatebm_fmnist_20k

configs/fashion_mnist_synth.py with the same settings up to its last step,
8,800, then continued to 20,000 iterations with both learning rates lowered
at 14,000, and a moving average of the generator kept beside its raw weights
(decay 0.999, a horizon of 1,000 updates; training never reads it, so the
run's raw weights are those of the same config without it). Every 2,000
steps a checkpoint is kept, so that each can be scored afterwards, with the
average (`python -m hatebm_jax.evaluate --step=N`) or the raw weights
(`--sample_weights=raw`). Its curve (eighth round of docs/quality.md): FCD of X
22.6 at step 20,000, 73 minutes on a 2-core Intel Xeon host. The one-hour
frontier of docs/quality.md (tenth round) varies it by flags; its best point
is configs/fashion_mnist_synth_long.py.
"""

from hatebm_jax import config_base


def get_config():
  c = config_base.load_config_file(__file__, 'fashion_mnist_synth')
  c.exp_name = 'fashion_mnist_synth_20k'
  c.num_training_steps = 20000
  # The quick start's schedules, then both rates lower for the last 6,000
  # updates, when the samples change slowly and the noise of batch-8
  # gradients is what limits them.
  c.ebm_lr_info = ((1e-4, 0), (2e-5, 5600), (5e-6, 14000))
  c.gen_lr_info = ((1e-3, 0), (2e-4, 14000))
  c.gen_ema_decay = 0.999
  c.checkpoint_freq = 2000
  # Every checkpoint of the run as configured here (an override of its length
  # or checkpoint_freq keeps this count), and one written on preemption.
  c.max_to_keep = c.num_training_steps // c.checkpoint_freq + 1
  c.plot_freq = 2000
  c.eval_freq = 2000
  c.eval_num_samples = 2000
  return c
