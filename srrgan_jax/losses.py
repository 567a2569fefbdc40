"""The SRRGAN losses: pixel MAE, VGG19 perceptual, LSGAN. All pure.

Images are NHWC in the model's [-1,1] space; every loss returns a float32 scalar.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from srrgan_jax import perceptual

DEFAULT_PERCEPTUAL_LAYERS = ('block2_conv2', 'block3_conv4', 'block4_conv4', 'block5_conv4')
DEFAULT_PERCEPTUAL_WEIGHTS = (0.303, 0.303, 0.242, 0.151)


def pixel_mae(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean absolute error over all pixels and channels."""
  return jnp.mean(jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32)))


def perceptual_loss(vgg_params, pred: jax.Array, target: jax.Array,
                    layers: Sequence[str] = DEFAULT_PERCEPTUAL_LAYERS,
                    layer_weights: Sequence[float] = DEFAULT_PERCEPTUAL_WEIGHTS) -> jax.Array:
  """sum_i w_i * mean|VGG19_i(pred) - VGG19_i(target)| over post-ReLU layers.

  Prediction and target go through the VGG separately, so that only the
  prediction's pass is differentiated (one shared batch of 2B would pull the
  backward pass through the target rows too).
  """
  if pred.shape != target.shape:
    raise ValueError(f'pred {pred.shape} and target {target.shape} differ in shape')
  return perceptual_loss_to_features(vgg_params, pred,
                                     target_features(vgg_params, target, layers),
                                     layers, layer_weights)


def _check_layer_weights(layers, layer_weights) -> None:
  if len(layers) != len(layer_weights):
    raise ValueError(f'{len(layers)} perceptual layers but {len(layer_weights)} weights '
                     '(config.loss.perceptual_layers / perceptual_layer_weights)')


def target_features(vgg_params, target: jax.Array, layers: Sequence[str]) -> dict:
  """The VGG19 features of the targets that `perceptual_loss_to_features` compares with.

  Computed once per batch, they serve every prediction of that batch (all
  members of a population).
  """
  return perceptual.vgg19_features(vgg_params, jax.lax.stop_gradient(target), layers)


def perceptual_loss_to_features(vgg_params, pred: jax.Array, features: dict,
                                layers: Sequence[str] = DEFAULT_PERCEPTUAL_LAYERS,
                                layer_weights: Sequence[float] = DEFAULT_PERCEPTUAL_WEIGHTS
                                ) -> jax.Array:
  """`perceptual_loss` of `pred` against targets given by their `target_features`."""
  _check_layer_weights(layers, layer_weights)
  pred_features = perceptual.vgg19_features(vgg_params, pred, layers)
  total = jnp.zeros((), jnp.float32)
  for layer, weight in zip(layers, layer_weights):
    total += weight * jnp.mean(jnp.abs(pred_features[layer] - features[layer]))
  return total


def lsgan_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array,
                             real_label: float = 0.9) -> jax.Array:
  """0.5 * (mean((D(real) - real_label)^2) + mean(D(fake)^2)); one-sided label smoothing."""
  real = jnp.mean(jnp.square(real_logits.astype(jnp.float32) - real_label))
  fake = jnp.mean(jnp.square(fake_logits.astype(jnp.float32)))
  return 0.5 * (real + fake)


def lsgan_generator_loss(fake_logits: jax.Array) -> jax.Array:
  """mean((D(fake) - 1)^2): the generator wants its output scored as real."""
  return jnp.mean(jnp.square(fake_logits.astype(jnp.float32) - 1.0))
