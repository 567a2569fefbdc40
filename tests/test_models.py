"""Generator and discriminator: reference parameter counts, shapes, SN, dropout, bf16."""

import functools
import math
import pathlib
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from configs import tiny
from srrgan_jax import models
from srrgan_jax.models import __main__ as summary
from srrgan_jax.models import layers

REPO = pathlib.Path(__file__).resolve().parent.parent


def count(tree):
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def abstract_variables(module, shape):
  return jax.eval_shape(lambda k: module.init(k, jnp.zeros(shape)), jax.random.key(0))


def tiny_config(scale=2, compute_dtype='float32'):
  c = tiny.get_config()
  c.scale = scale
  c.model.compute_dtype = compute_dtype
  return c


@functools.lru_cache(maxsize=None)
def tiny_generator(scale=2, compute_dtype='float32'):
  """(jitted apply, variables) of the tiny generator; compiled once per variant."""
  c = tiny_config(scale, compute_dtype)
  gen = models.build_generator(c)
  apply = jax.jit(gen.apply, static_argnames='train')
  return apply, models.init_generator(c, jax.random.key(0))


@functools.lru_cache(maxsize=None)
def tiny_discriminator():
  c = tiny_config()
  return models.build_discriminator(c), models.init_discriminator(c, jax.random.key(0))


def lr_batch(shape=(2, 16, 16, 3), seed=1):
  return jax.random.uniform(jax.random.key(seed), shape, minval=-1.0, maxval=1.0)


def test_full_size_parameter_counts_match_the_reference_network():
  c = default.get_config()
  gen_vars = abstract_variables(models.build_generator(c), (1, 128, 128, 3))
  disc_vars = abstract_variables(models.build_discriminator(c), (1, 256, 256, 3))
  assert set(gen_vars) == {'params'}
  assert count(gen_vars['params']) == 9_753_045
  assert set(disc_vars) == {'params', 'batch_stats'}
  assert count(disc_vars['params']) == 2_763_777
  # u and sigma of the four spectral-normalised convs are state, not parameters.
  assert count(disc_vars['batch_stats']) == (128 + 1) + (256 + 1) + (512 + 1) + (1 + 1)


@pytest.mark.parametrize('scale', [2, 4])
def test_full_size_output_shapes(scale):
  c = default.get_config()
  c.scale = scale
  gen = models.build_generator(c)
  variables = abstract_variables(gen, (1, 128, 128, 3))
  hr = jax.eval_shape(gen.apply, variables, jax.ShapeDtypeStruct((2, 128, 96, 3), jnp.float32))
  assert hr.shape == (2, 128 * scale, 96 * scale, 3) and hr.dtype == jnp.float32
  disc = models.build_discriminator(c)
  dvars = abstract_variables(disc, (1, 256, 256, 3))
  logits = jax.eval_shape(disc.apply, dvars, jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32))
  assert logits.shape == (2, 32, 32, 1) and logits.dtype == jnp.float32


@pytest.mark.parametrize('scale', [2, 4])
def test_tiny_generator_upscales_around_the_bilinear_global_residual(scale):
  apply, variables = tiny_generator(scale)
  lr = lr_batch((2, 16, 24, 3))
  hr = apply(variables, lr)
  assert hr.shape == (2, 16 * scale, 24 * scale, 3) and hr.dtype == jnp.float32
  assert np.all(np.isfinite(hr)) and np.all(np.abs(hr) <= 1.0)
  # With a zero output conv only tanh(bilinear upsampling of the input) is left.
  params = dict(variables['params'])
  params['output_conv'] = jax.tree.map(jnp.zeros_like, params['output_conv'])
  base = jax.image.resize(lr, hr.shape, 'bilinear')
  np.testing.assert_allclose(apply({'params': params}, lr), np.tanh(base), atol=1e-6)


def test_clip_output_and_zero_init_start_exactly_at_bilinear():
  config = tiny_config()
  config.model.output_activation = 'clip'
  config.model.zero_init_output = True
  model = models.build_generator(config)
  lr = lr_batch((2, 16, 16, 3)) * 1.5  # Some inputs beyond [-1, 1]: clipped, not squashed.
  variables = models.init_generator(config, jax.random.key(1), lr.shape)
  assert not np.any(variables['params']['output_conv']['kernel'])
  hr = jax.jit(model.apply)(variables, lr)
  base = jax.image.resize(lr, hr.shape, 'bilinear')
  np.testing.assert_allclose(hr, np.clip(base, -1, 1), atol=1e-6)
  assert np.abs(hr).max() == 1.0
  # The output conv still learns: its kernel gets a nonzero gradient from step 0.
  grads = jax.jit(jax.grad(lambda p: jnp.mean(jnp.abs(model.apply({'params': p}, lr) - 0.3))))(
      variables['params'])
  assert np.abs(grads['output_conv']['kernel']).max() > 0


def test_unknown_output_activation_is_refused():
  config = tiny_config()
  config.model.output_activation = 'sigmoid'
  with pytest.raises(ValueError, match=r"model.output_activation .*'sigmoid'"):
    models.build_generator(config)


def test_keras_default_initialisers():
  params = tiny_generator()[1]['params']
  kernel = params['encoder_0']['conv']['kernel']  # 3x3, 8 -> 8.
  fan_in, fan_out = 9 * 8, 9 * 8
  assert np.abs(kernel).max() <= math.sqrt(6 / (fan_in + fan_out))
  assert np.all(params['stem']['bias'] == 0)
  assert np.all(params['head_0']['norm']['scale'] == 1)
  assert np.all(params['head_0']['norm']['bias'] == 0)
  assert 'bias' not in params['head_0']['conv']
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  dparams = tiny_discriminator()[1]['params']
  for name in ('conv_0', 'conv_2'):  # Plain and spectral-normalised kernels alike.
    assert np.std(dparams[name]['kernel']) == pytest.approx(0.02, rel=0.1)
  assert np.all(dparams['conv_4']['bias'] == 0)


def test_depth_to_space_matches_tensorflow_dcr_order():
  # Example of the tf.nn.depth_to_space documentation.
  x = jnp.arange(1, 13, dtype=jnp.float32).reshape(1, 1, 1, 12)
  expected = np.array([[[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]]], np.float32)
  np.testing.assert_array_equal(layers.depth_to_space(x, 2), expected)
  # The general rule on a bigger input, scale 4.
  b, c = 4, 2
  x = np.random.default_rng(0).normal(size=(2, 3, 5, b * b * c)).astype(np.float32)
  y = np.asarray(layers.depth_to_space(jnp.asarray(x), b))
  assert y.shape == (2, 12, 20, c)
  for h, w, i, j, ch in [(0, 0, 0, 0, 0), (2, 4, 3, 1, 1), (1, 3, 2, 3, 0)]:
    np.testing.assert_array_equal(y[:, h * b + i, w * b + j, ch], x[:, h, w, (i * b + j) * c + ch])


def test_spatial_dropout_drops_whole_channels_only_in_training():
  module = layers.SpatialDropout(rate=0.5)
  x = jnp.ones((4, 6, 6, 32))
  out = module.apply({}, x, train=True, rngs={'dropout': jax.random.key(0)})
  per_channel = out[:, :1, :1, :]
  np.testing.assert_array_equal(out, jnp.broadcast_to(per_channel, out.shape))
  assert set(np.unique(per_channel).tolist()) == {0.0, 2.0}  # Kept channels rescaled.
  np.testing.assert_array_equal(module.apply({}, x, train=False), x)


def test_generator_dropout_needs_an_rng_and_eval_is_deterministic():
  apply, variables = tiny_generator()
  lr = lr_batch()
  eval1 = apply(variables, lr, train=False)
  np.testing.assert_array_equal(eval1, apply(variables, lr))
  with pytest.raises(flax.errors.InvalidRngError):
    apply(variables, lr, train=True)
  # 'rbg' keys only to keep the compile short on CPU; any key type works.
  train = lambda seed: apply(variables, lr, train=True,
                             rngs={'dropout': jax.random.key(seed, impl='rbg')})
  np.testing.assert_array_equal(train(1), train(1))
  assert not np.allclose(train(1), train(2))
  assert not np.allclose(train(1), eval1)


def test_bfloat16_compute_keeps_float32_params_and_output():
  apply32, variables = tiny_generator()
  gen16 = models.build_generator(tiny_config(compute_dtype='bfloat16'))
  variables16 = abstract_variables(gen16, (1, 16, 16, 3))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables16))
  lr = lr_batch()
  out32 = apply32(variables, lr)
  out16 = jax.jit(gen16.apply)(variables, lr)
  assert out16.dtype == jnp.float32
  jaxpr = str(jax.make_jaxpr(gen16.apply)(variables, lr))
  assert 'conv_general_dilated' in jaxpr and 'bf16[2,16,16,8]' in jaxpr
  # Stated tolerance: bf16 keeps ~3 significant digits; on the [-1, 1] outputs of
  # the tiny net the mean error stays below 1e-2 and the worst pixel below 0.1.
  err = np.abs(np.asarray(out16) - np.asarray(out32))
  assert err.mean() < 1e-2 and err.max() < 0.1


def test_spectral_norm_state_updates_only_in_training_and_reaches_unit_norm():
  disc, variables = tiny_discriminator()
  assert set(variables['batch_stats']) == {'conv_1', 'conv_2', 'conv_3', 'conv_4'}
  hr = lr_batch((2, 32, 32, 3))
  logits = disc.apply(variables, hr, train=False)
  assert logits.shape == (2, 4, 4, 1) and logits.dtype == jnp.float32
  _, unchanged = disc.apply(variables, hr, train=False, mutable=['batch_stats'])
  jax.tree.map(np.testing.assert_array_equal, unchanged['batch_stats'],
               variables['batch_stats'])

  def largest_singular_value_after_normalisation(variables, name):
    kernel = variables['params'][name]['kernel']
    sigma = variables['batch_stats'][name]['sigma']
    return np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0] / sigma

  update = jax.jit(lambda v: disc.apply(v, hr, train=True, mutable=['batch_stats'])[1])
  first = {'params': variables['params'], **update(variables)}
  # One power iteration from a random u underestimates the largest singular value.
  assert largest_singular_value_after_normalisation(first, 'conv_1') > 1.05
  for _ in range(60):  # One power iteration per training step.
    variables = {'params': variables['params'], **update(variables)}
  for name in ('conv_1', 'conv_2', 'conv_3', 'conv_4'):
    assert largest_singular_value_after_normalisation(variables, name) == pytest.approx(
        1.0, abs=5e-3), name


@pytest.mark.parametrize('shape, fix', [
    ((1, 20, 16, 3), 'multiple of 8'),
    ((1, 16, 12, 3), 'multiple of 8'),
    ((1, 16, 16, 1), 'RGB'),
    ((1, 16, 16, 4), 'RGB'),
    ((16, 16, 3), 'RGB'),
])
def test_bad_generator_inputs_raise_a_clear_error(shape, fix):
  apply, variables = tiny_generator()
  with pytest.raises(ValueError, match=fix) as info:
    apply(variables, jnp.zeros(shape))
  assert str(shape) in str(info.value)


def test_inconsistent_config_is_rejected():
  c = tiny_config()
  c.model.decoder_channels = (16, 8)
  with pytest.raises(ValueError, match='decoder_channels'):
    models.build_generator(c)
  c = tiny_config(compute_dtype='bf16')
  with pytest.raises(ValueError, match='model.compute_dtype'):
    models.build_generator(c)


def test_summary_lists_blocks_and_reference_totals():
  text = summary.model_summaries(default.get_config())
  assert 'Total trainable params: 9,753,045' in text
  assert 'Total trainable params: 2,763,777' in text
  assert 'bottleneck_4' in text and 'decoder_2' in text and 'conv_4' in text
  assert '(1, 256, 256, 3)' in text and '(1, 32, 32, 1)' in text


def test_summary_command_runs():
  result = subprocess.run(
      [sys.executable, '-m', 'srrgan_jax.models', '--config', 'configs/tiny.py',
       '--config.scale=4'], cwd=REPO, capture_output=True, text=True, timeout=120,
      check=True)
  assert 'Generator x4' in result.stdout and '(1, 32, 32, 3)' in result.stdout
  assert 'Discriminator' in result.stdout
