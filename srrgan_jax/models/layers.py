"""Building blocks of the SRRGAN networks: convolutions, GroupNorm, SE, attention, PixelShuffle.

Every conv keeps float32 parameters and computes in `dtype`, so a bfloat16
`dtype` gives mixed precision without touching the parameter tree.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Initializer = Callable[..., Any]

# Keras Conv2D defaults that the original relied on.
glorot_uniform = nn.initializers.glorot_uniform()


def compute_dtype(name: str, field: str) -> jnp.dtype:
  """The activation dtype named by config `field` ('float32' or 'bfloat16')."""
  if name not in ('float32', 'bfloat16', 'float16'):
    raise ValueError(f'{field}={name!r} is not supported; use float32 or bfloat16 '
                     '(parameters stay float32 either way).')
  return jnp.dtype(name)


def param_init_key(key: jax.Array) -> jax.Array:
  """A key of the RngBitGenerator-backed 'rbg' PRNG, derived from `key`, for init.

  XLA:CPU compiles threefry bit generation slowly, once per parameter shape
  (the tiny generator's init compiles ~7x faster with 'rbg'); 'rbg' draws the
  same distributions, deterministically for a given `key`.
  """
  return jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl='rbg')


def conv(features: int, kernel_size: int, *, use_bias: bool, strides: int = 1,
         dtype: Dtype = jnp.float32, kernel_init: Initializer = glorot_uniform,
         name: str | None = None) -> nn.Conv:
  """A Keras-like 'same'-padded square conv with float32 parameters."""
  return nn.Conv(features, (kernel_size, kernel_size), strides=(strides, strides),
                 padding='SAME', use_bias=use_bias, kernel_init=kernel_init,
                 dtype=dtype, param_dtype=jnp.float32, name=name)


class GroupNorm(nn.Module):
  """GroupNorm (learned per-channel scale and offset, statistics per sample and group).

  Computes the same function with the same parameters ('scale', 'bias') as
  `flax.linen.GroupNorm`, but takes the statistics as per-channel sums over H, W
  before grouping: XLA:CPU runs those reductions (and their gradients) much
  faster than flax's reductions over a (B, H, W, groups, C/groups) view, which
  shortens a full-size generator step by about 7% on a CPU.
  """
  num_groups: int
  epsilon: float
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC):
    b, h, w, channels = x_BHWC.shape
    per_group = channels // self.num_groups
    scale = self.param('scale', nn.initializers.ones, (channels,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (channels,), jnp.float32)
    x = x_BHWC.astype(jnp.float32)  # Statistics in float32, as flax does.
    count = h * w * per_group

    def group_mean(values_BC):
      return jnp.sum(values_BC.reshape(b, self.num_groups, per_group), axis=-1) / count

    mean = group_mean(jnp.sum(x, axis=(1, 2)))
    # E[x^2] - E[x]^2 (flax's default "fast variance"), clipped at 0.
    var = jnp.maximum(group_mean(jnp.sum(jnp.square(x), axis=(1, 2))) - jnp.square(mean), 0.0)
    inv_std = jax.lax.rsqrt(var + self.epsilon)
    mean_BC = jnp.repeat(mean, per_group, axis=1)[:, None, None, :]
    gain_BC = (jnp.repeat(inv_std, per_group, axis=1) * scale)[:, None, None, :]
    return ((x - mean_BC) * gain_BC + bias).astype(self.dtype)


def group_norm(channels: int, groups: int, epsilon: float, *,
               dtype: Dtype = jnp.float32, name: str | None = None) -> GroupNorm:
  """GroupNorm with `groups` clipped to `channels` (learned scale and offset)."""
  num_groups = min(groups, channels)
  if channels % num_groups:
    raise ValueError(
        f'GroupNorm: {channels} channels cannot be split into {num_groups} groups; '
        'choose model.groupnorm_groups dividing every width of the model.')
  return GroupNorm(num_groups=num_groups, epsilon=epsilon, dtype=dtype, name=name)


def depth_to_space(x_BHWC: jnp.ndarray, block_size: int) -> jnp.ndarray:
  """TensorFlow `depth_to_space` (NHWC, DCR order): C*b*b channels -> b x b pixels.

  out[n, h*b + i, w*b + j, c] = in[n, h, w, (i*b + j)*C + c].
  """
  b = block_size
  n, h, w, c = x_BHWC.shape
  if c % (b * b):
    raise ValueError(f'depth_to_space: {c} channels are not divisible by {b}*{b}.')
  out_c = c // (b * b)
  x = x_BHWC.reshape(n, h, w, b, b, out_c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h * b, w * b, out_c)


class PixelShuffle(nn.Module):
  """Sub-pixel upsampling by `scale` (a module so summaries list it)."""
  scale: int

  @nn.compact
  def __call__(self, x_BHWC):
    return depth_to_space(x_BHWC, self.scale)


class SqueezeExcitation(nn.Module):
  """Channel gating: mean pool -> 1x1 conv C/ratio + ReLU -> 1x1 conv C + sigmoid."""
  ratio: int = 8
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC):
    channels = x_BHWC.shape[-1]
    squeezed = max(1, channels // self.ratio)
    s = jnp.mean(x_BHWC, axis=(1, 2), keepdims=True)
    s = nn.relu(conv(squeezed, 1, use_bias=True, dtype=self.dtype, name='squeeze')(s))
    s = nn.sigmoid(conv(channels, 1, use_bias=True, dtype=self.dtype, name='excite')(s))
    return x_BHWC * s.astype(x_BHWC.dtype)


class SpatialAttention(nn.Module):
  """CBAM spatial gating from channel-mean and channel-max maps."""
  kernel_size: int = 7
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC):
    pooled = jnp.concatenate([jnp.mean(x_BHWC, axis=-1, keepdims=True),
                              jnp.max(x_BHWC, axis=-1, keepdims=True)], axis=-1)
    gate = nn.sigmoid(conv(1, self.kernel_size, use_bias=True, dtype=self.dtype,
                           name='conv')(pooled))
    return x_BHWC * gate.astype(x_BHWC.dtype)


class SpatialDropout(nn.Module):
  """Drops whole channels (one mask of shape (B, 1, 1, C)); identity unless train.

  Training needs a 'dropout' rng: `apply(..., rngs={'dropout': key})`. Each
  row's mask is drawn from (rng, this layer, `sample_ids[row]`), default the row
  number, so a batch split into micro-batches or over devices gets the same
  masks as the whole batch when each part passes its rows' global indices.
  """
  rate: float

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool, sample_ids=None):
    if not train or self.rate == 0.0:
      return x_BHWC
    if self.rate >= 1.0:
      return jnp.zeros_like(x_BHWC)
    rng = self.make_rng('dropout')
    keep = 1.0 - self.rate
    if sample_ids is None:
      sample_ids = jnp.arange(x_BHWC.shape[0])
    channels = x_BHWC.shape[-1]
    keep_BC = jax.vmap(
        lambda i: jax.random.bernoulli(jax.random.fold_in(rng, i), keep, (channels,)))(
            sample_ids)
    return jnp.where(keep_BC[:, None, None, :], x_BHWC / keep, 0).astype(x_BHWC.dtype)


def _l2_normalize(x, epsilon=1e-12):
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x), epsilon))


class SpectralConv(nn.Module):
  """A 'same'-padded conv whose kernel is divided by its largest singular value.

  The kernel parameter stays un-normalised (so it keeps its initialiser's scale);
  the power-iteration vector `u` and the estimate `sigma` live in the
  'batch_stats' collection and change only with `update_stats=True` (training,
  applied with `mutable=['batch_stats']`). Evaluation runs the same power
  iteration from the stored `u` without storing it, so it is deterministic.
  """
  features: int
  kernel_size: int
  strides: int = 1
  use_bias: bool = False
  kernel_init: Initializer = glorot_uniform
  power_iterations: int = 1
  epsilon: float = 1e-12
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, *, update_stats: bool):
    if self.power_iterations < 1:
      raise ValueError(f'SpectralConv needs at least one power iteration; got '
                       f'{self.power_iterations} (disc.power_iterations).')
    k = self.kernel_size
    kernel = self.param('kernel', self.kernel_init,
                        (k, k, x_BHWC.shape[-1], self.features), jnp.float32)
    matrix = kernel.reshape(-1, self.features)
    u_var = self.variable(
        'batch_stats', 'u',
        lambda: _l2_normalize(jax.random.normal(self.make_rng('params'),
                                                (1, self.features))))
    sigma_var = self.variable('batch_stats', 'sigma', jnp.ones, (), jnp.float32)

    u = u_var.value
    for _ in range(self.power_iterations):
      v = _l2_normalize(u @ matrix.T, self.epsilon)
      u = _l2_normalize(v @ matrix, self.epsilon)
    # As in Miyato et al., gradients flow through sigma but not through u, v.
    u, v = jax.lax.stop_gradient(u), jax.lax.stop_gradient(v)
    sigma = (v @ matrix @ u.T)[0, 0]
    if update_stats and not self.is_initializing():
      u_var.value = u
      sigma_var.value = sigma

    normalized = (kernel / jnp.where(sigma != 0, sigma, 1.0)).astype(self.dtype)
    y = jax.lax.conv_general_dilated(
        x_BHWC.astype(self.dtype), normalized, (self.strides, self.strides), 'SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y
