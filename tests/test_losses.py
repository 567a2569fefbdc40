"""The SRRGAN losses: hand-computed values, and the perceptual loss on random VGG19 weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from srrgan_jax import losses
from srrgan_jax import perceptual
from srrgan_jax import weights


# Jitted once for the module: XLA:CPU compiles of VGG19 dominate this file's runtime.
perceptual_loss = jax.jit(losses.perceptual_loss, static_argnums=(3, 4))
vgg19_features = jax.jit(perceptual.vgg19_features, static_argnums=2)


@pytest.fixture(scope='module')
def config(tmp_path_factory):
  """Tiny config naming a random VGG19 file directly (the config-field lookup path)."""
  path = weights.write_random_weights(tmp_path_factory.mktemp('w'), [weights.VGG19_FILE])[0]
  config = tiny.get_config()
  config.weights.vgg19_file = str(path)
  return config


@pytest.fixture
def images():
  rng = np.random.default_rng(0)
  pred = jnp.asarray(rng.uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
  target = jnp.asarray(rng.uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
  return pred, target


def test_pixel_mae():
  pred = jnp.array([[[[0.5, -1.0, 0.0]]]])
  target = jnp.array([[[[0.0, 1.0, 0.25]]]])
  np.testing.assert_allclose(losses.pixel_mae(pred, target), (0.5 + 2.0 + 0.25) / 3)


def test_lsgan_losses_match_hand_computed_values():
  real = jnp.array([0.9, 1.5, 0.3, 0.9]).reshape(1, 2, 2, 1)  # PatchGAN logit maps.
  fake = jnp.array([0.0, 0.5, -0.5, 1.0]).reshape(1, 2, 2, 1)
  # (real - 0.9)^2 = 0, .36, .36, 0 -> .18;  fake^2 = 0, .25, .25, 1 -> .375.
  np.testing.assert_allclose(losses.lsgan_discriminator_loss(real, fake), 0.5 * (0.18 + 0.375),
                             rtol=1e-6)
  # Without smoothing: (real - 1)^2 = .01, .25, .49, .01 -> .19.
  np.testing.assert_allclose(losses.lsgan_discriminator_loss(real, fake, real_label=1.0),
                             0.5 * (0.19 + 0.375), rtol=1e-6)
  # (fake - 1)^2 = 1, .25, 2.25, 0 -> .875.
  np.testing.assert_allclose(losses.lsgan_generator_loss(fake), 0.875, rtol=1e-6)
  assert tiny.get_config().loss.real_label == 0.9


def test_perceptual_loss_is_the_weighted_sum_of_layer_maes(config, images):
  params = perceptual.load_vgg19_params(config)
  pred, target = images
  layers, layer_weights = config.loss.perceptual_layers, config.loss.perceptual_layer_weights
  assert layer_weights == (0.303, 0.303, 0.242, 0.151)
  loss = perceptual_loss(params, pred, target, layers, layer_weights)
  fp, ft = vgg19_features(params, pred, layers), vgg19_features(params, target, layers)
  expected = sum(w * jnp.mean(jnp.abs(fp[l] - ft[l])) for l, w in zip(layers, layer_weights))
  assert float(loss) > 0
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(perceptual_loss(params, pred, pred, layers, layer_weights), 0.0,
                             atol=0)
  with pytest.raises(ValueError, match='3 perceptual layers but 4 weights'):
    losses.perceptual_loss(params, pred, target, layers[:3], layer_weights)


def test_perceptual_loss_gradients_reach_the_input_not_the_vgg(config, images):
  params = perceptual.load_vgg19_params(config)
  pred, target = images
  params_grad, pred_grad = jax.jit(jax.grad(losses.perceptual_loss, argnums=(0, 1)))(
      params, pred, target)
  assert np.all(np.isfinite(pred_grad)) and float(jnp.max(jnp.abs(pred_grad))) > 0
  for leaf in jax.tree_util.tree_leaves(params_grad):
    assert not np.any(leaf)
