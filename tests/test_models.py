"""Networks: exact parameter counts (docs/official_release.md §1.6), layers, initialisers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hatebm_jax import models
from hatebm_jax.models import generator
from hatebm_jax.models import hat
from hatebm_jax.models import layers


def _counts(build):
  net = models.functionalize(build, 'net')
  params, frozen = jax.eval_shape(net.init, jax.random.PRNGKey(0))
  return layers.count_params(params), layers.count_params(frozen)


# (image size, ngf, trainable params, frozen BN statistics),
# docs/official_release.md §1.6.
HAT_COUNTS = [
    (32, 256, 4_204_800),
    (64, 1024, 19_542_720),
    (128, 1024, 38_419_136),
    (128, 2048, 153_654_656),
]
GEN_COUNTS = [
    (32, 256, 4_276_739, 3_584),
    (64, 1024, 12_220_675, 5_888),
    (128, 1024, 32_150_787, 9_984),
    (128, 2048, 124_340_739, 19_968),
]


@pytest.mark.parametrize('size,ngf,expected', HAT_COUNTS)
def test_hat_network_parameter_count(size, ngf, expected):
  trainable, frozen = _counts(lambda r: hat.HatNetwork(size, 3, ngf, r))
  assert (trainable, frozen) == (expected, 0)


@pytest.mark.parametrize('size,ngf,expected,expected_frozen', GEN_COUNTS)
def test_generator_parameter_count(size, ngf, expected, expected_frozen):
  trainable, frozen = _counts(
      lambda r: generator.SNGANGenerator(size, 3, ngf, 128, 2.0, r)
  )
  assert (trainable, frozen) == (expected, expected_frozen)


@pytest.mark.parametrize(
    'size',
    [
        32,
        pytest.param(64, marks=pytest.mark.slow),
        pytest.param(128, marks=pytest.mark.slow),
    ],
)
def test_output_shapes_and_range(size):
  ngf = 32
  h = hat.HatNetwork(size, 1, ngf, nnx.Rngs(0))
  g = generator.SNGANGenerator(size, 1, ngf, 16, 2.0, nnx.Rngs(1))
  z = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (2, 16))
  x = g(z)
  assert x.shape == (2, size, size, 1)
  assert float(jnp.max(jnp.abs(x))) < 2.0
  assert h(x).shape == (2,)


def test_generator_output_scale_is_gen_factor_tanh():
  g1 = generator.SNGANGenerator(32, 3, 16, 8, 1.0, nnx.Rngs(0))
  g2 = generator.SNGANGenerator(32, 3, 16, 8, 2.0, nnx.Rngs(0))
  z = jax.random.normal(jax.random.PRNGKey(1), (3, 8))
  # The same float32 network; only the output scale differs: exact up to
  # the rounding of one multiply.
  np.testing.assert_allclose(2.0 * g1(z), g2(z), rtol=1e-6)


def test_initialisers_are_keras_defaults():
  h = hat.HatNetwork(32, 3, 64, nnx.Rngs(0))
  kernel = np.asarray(h.block1.conv2.kernel[...])  # 3x3, 64 -> 64
  limit = np.sqrt(6.0 / (9 * 64 + 9 * 64))  # glorot-uniform
  assert np.abs(kernel).max() <= limit
  assert np.abs(kernel).max() > 0.95 * limit
  # The std of 36,864 uniform draws: its standard error is 0.4%, so 5%
  # is a loose, seed-independent bound.
  np.testing.assert_allclose(kernel.std(), limit / np.sqrt(3), rtol=0.05)
  assert np.all(np.asarray(h.block1.conv2.bias[...]) == 0)
  assert h.head.bias is None  # the hat network's last layer has no bias


def test_batch_norm_is_frozen_affine_map():
  """BN is gamma * x / sqrt(1 + 1e-3) + beta with stored stats (docs/official_release.md §0.1)."""
  bn = layers.frozen_batch_norm(4, nnx.Rngs(0))
  bn.scale[...] = jnp.array([1.0, 2.0, -1.0, 0.5])
  bn.bias[...] = jnp.array([0.0, 1.0, 0.5, -2.0])
  x = jax.random.normal(jax.random.PRNGKey(0), (5, 3, 3, 4)) * 7 + 3
  expected = bn.scale[...] * x / np.sqrt(1.001) + bn.bias[...]
  # x up to ~30 in float32: BN's fused scale and shift round to ~2e-6.
  np.testing.assert_allclose(bn(x), expected, rtol=1e-5, atol=1e-5)
  # The statistics do not move when the layer is used.
  np.testing.assert_array_equal(bn.mean[...], 0.0)
  np.testing.assert_array_equal(bn.var[...], 1.0)


def test_upsampling_matches_keras_bilinear():
  tf = pytest.importorskip('tensorflow')
  x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)
  expected = tf.keras.layers.UpSampling2D(interpolation='bilinear')(x)
  # Keras and JAX weight the same 4 neighbours with float32 arithmetic in
  # another order: a few ulps of |x| <= 4.
  np.testing.assert_allclose(
      layers.upsample_2x(jnp.asarray(x)), np.asarray(expected), atol=1e-5
  )


def test_generator_input_is_channel_major():
  """Dense output viewed as (ngf, 4, 4) then NHWC (docs/official_release.md §1.4)."""
  g = generator.SNGANGenerator(32, 1, 8, 4, 2.0, nnx.Rngs(0))
  z = jax.random.normal(jax.random.PRNGKey(3), (1, 4))
  flat = np.asarray(g.dense(z))[0]
  captured = {}

  def spy(self, x):
    captured.setdefault('x', x)  # the first block's input
    return original(self, x)

  original = generator.GenBlock.__call__
  generator.GenBlock.__call__ = spy
  try:
    g(z)
  finally:
    generator.GenBlock.__call__ = original
  # A reshape moves values without arithmetic; rtol only covers the
  # dense layer's two evaluations.
  np.testing.assert_allclose(
      np.asarray(captured['x'])[0, 1, 2, 3], flat[3 * 16 + 1 * 4 + 2], rtol=1e-6
  )


@pytest.mark.parametrize(
    'size,ngf,message',
    [
        (48, 256, 'image size 48'),
        (64, 100, 'multiple of 16'),
        (32, 0, 'must be positive'),
    ],
)
def test_bad_architectures_are_rejected(size, ngf, message):
  with pytest.raises(ValueError, match=message):
    hat.hat_architecture(size, ngf)
  with pytest.raises(ValueError, match=message):
    generator.generator_architecture(size, ngf)


def test_functional_apply_matches_module():
  build = lambda r: generator.SNGANGenerator(32, 3, 16, 8, 2.0, r)
  net = models.functionalize(build, 'gen')
  params, frozen = net.init(jax.random.PRNGKey(0))
  module = build(nnx.Rngs(jax.random.PRNGKey(0)))
  z = jax.random.normal(jax.random.PRNGKey(1), (2, 8))
  # The same parameters through merge/split and the module itself: the
  # same float32 program up to fusion.
  np.testing.assert_allclose(net.apply(params, frozen, z), module(z), rtol=1e-6)
  frozen_names = {
      path[-1].key
      for path, _ in jax.tree_util.tree_flatten_with_path(frozen)[0]
  }
  assert frozen_names == {'mean', 'var'}  # only BN statistics are frozen


@pytest.mark.parametrize(
    'channels', [pytest.param(1, marks=pytest.mark.slow), 3]
)
def test_patch_stem_is_the_same_convolution(channels):
  """The hat network's first convolution as one product over gathered 3x3
  neighbourhoods (`stem_conv='patches'`, what TPUs run) against XLA's
  convolution: the same parameters, and the same 9·C products per output,
  summed in another order. Energies and input gradients (the Langevin
  drift) agree to float32 round-off of a 9·C-term sum (≤ 9·3·2⁻²⁴·‖terms‖
  relative, ~1.6e-6; 1e-5 allowed) and parameter gradients too."""
  make = lambda stem: hat.HatNetwork(32, channels, 16, nnx.Rngs(0), stem=stem)
  conv, patches = make('conv'), make('patches')
  assert type(conv.block1.conv1) is nnx.Conv
  assert type(patches.block1.conv1) is layers.PatchConv
  state = nnx.state(conv, nnx.Param)
  assert jax.tree.all(
      jax.tree.map(np.array_equal, state, nnx.state(patches, nnx.Param))
  )
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, channels))

  def energy_and_grads(net):
    graph, params = nnx.split(net, nnx.Param)
    energy = lambda p, x: nnx.merge(graph, p)(x).sum()
    return (
        nnx.merge(graph, params)(x),
        jax.grad(energy, argnums=1)(params, x),
        jax.grad(energy)(params, x),
    )

  ref, got = energy_and_grads(conv), energy_and_grads(patches)
  for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
    scale = float(jnp.max(jnp.abs(a)))
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * scale)


def test_stem_conv_is_chosen_by_backend_and_image_size():
  """'auto': patches only on a TPU and from 128 px, where the TPU compiler
  estimates them faster; an explicit choice is kept."""
  config = models.config_base.get_base_config()
  config.stem_conv = 'auto'
  assert models.stem_conv(config) == 'conv'  # this CPU
  for size, platform, stem in (
      (128, 'tpu', 'patches'),
      (64, 'tpu', 'conv'),
      (32, 'tpu', 'conv'),
      (128, 'gpu', 'conv'),
      (128, 'cpu', 'conv'),
  ):
    config.image_dims = [size, size, 3]
    assert models.stem_conv(config, platform) == stem, (size, platform)
  config.stem_conv = 'patches'
  assert models.stem_conv(config) == 'patches'
  with pytest.raises(ValueError, match=r"stem_conv='im2col': choose one of"):
    hat.HatNetwork(32, 3, 16, nnx.Rngs(0), stem='im2col')
