"""The SRRGAN discriminator: a spectral-normalised PatchGAN.

Variables: {'params', 'batch_stats'} (spectral-norm `u` and `sigma` in
'batch_stats'). Train: `disc.apply(v, x, train=True, mutable=['batch_stats'])`;
eval: `disc.apply(v, x, train=False)`. Output: raw logits (B, H/8, W/8, 1) float32
for the default strides.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from srrgan_jax.models import layers


class Discriminator(nn.Module):
  """Conv(no SN) -> [SN conv] * (len(channels) - 1) -> SN conv to 1 logit, LReLU between."""
  channels: tuple[int, ...] = (64, 128, 256, 512)
  strides: tuple[int, ...] = (2, 2, 2, 1)
  kernel_size: int = 4
  leaky_slope: float = 0.2
  init_stddev: float = 0.02
  spectral_norm: bool = True
  power_iterations: int = 1
  dtype: Any = jnp.float32

  def _conv(self, index, features, strides, use_bias, x, train):
    init = nn.initializers.normal(self.init_stddev)
    name = f'conv_{index}'
    # The first conv sees raw pixels and is left unnormalised, as in the original.
    if self.spectral_norm and index > 0:
      return layers.SpectralConv(
          features, self.kernel_size, strides=strides, use_bias=use_bias,
          kernel_init=init, power_iterations=self.power_iterations,
          dtype=self.dtype, name=name)(x, update_stats=train)
    return layers.conv(features, self.kernel_size, strides=strides, use_bias=use_bias,
                       kernel_init=init, dtype=self.dtype, name=name)(x)

  @nn.compact
  def __call__(self, hr_BHWC, train: bool = False):
    if hr_BHWC.ndim != 4 or hr_BHWC.shape[-1] != 3:
      raise ValueError(
          f'Discriminator input must be an NHWC batch of RGB images (B, H, W, 3); '
          f'got shape {tuple(hr_BHWC.shape)}. Add a batch axis / convert to RGB.')
    x = hr_BHWC.astype(jnp.float32)
    for i, (features, strides) in enumerate(zip(self.channels, self.strides)):
      x = self._conv(i, features, strides, False, x, train)
      x = nn.leaky_relu(x, negative_slope=self.leaky_slope)
    logits = self._conv(len(self.channels), 1, 1, True, x, train)
    return logits.astype(jnp.float32)


def build_discriminator(config: ml_collections.ConfigDict) -> Discriminator:
  """The discriminator described by `config.disc`."""
  d = config.disc
  if len(d.strides) != len(d.channels):
    raise ValueError(f'disc.strides {tuple(d.strides)} needs one entry per '
                     f'disc.channels entry {tuple(d.channels)}.')
  return Discriminator(
      channels=tuple(d.channels), strides=tuple(d.strides), kernel_size=d.kernel_size,
      leaky_slope=d.leaky_slope, init_stddev=d.init_stddev,
      spectral_norm=d.spectral_norm, power_iterations=d.power_iterations,
      dtype=layers.compute_dtype(d.compute_dtype, 'disc.compute_dtype'))


def init_discriminator(config: ml_collections.ConfigDict, key: jax.Array,
                       hr_shape: Sequence[int] | None = None) -> dict:
  """Initial discriminator variables ({'params', 'batch_stats'})."""
  model = build_discriminator(config)
  size = config.data.patch_size
  shape = tuple(hr_shape or (1, size, size, 3))
  return jax.jit(lambda k: model.init(layers.param_init_key(k),
                                     jnp.zeros(shape, jnp.float32)))(key)
