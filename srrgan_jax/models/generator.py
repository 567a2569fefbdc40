"""The SRRGAN generator: a U-Net with SE, spatial attention and PixelShuffle.

The reference network's structure (README "Models"); every width and count
comes from `config.model`.
Input LR in [-1, 1] (B, H, W, 3) with H, W multiples of 2**len(encoder_channels);
output HR (B, H*scale, W*scale, 3) float32 in [-1, 1].

`output_activation` bounds base + r to [-1, 1]: 'tanh' is the reference's
(out = tanh(base + r)); 'clip' leaves values inside the range untouched, so a zero
residual gives exactly the bilinear base (tanh would shrink it: tanh(0.9) =
0.72), which is what short runs need to beat bilinear upsampling.
"""

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from srrgan_jax.models import layers


@dataclasses.dataclass(frozen=True)
class BlockSettings:
  """Per-layer hyper-parameters shared by every generator block."""
  groupnorm_groups: int = 32
  groupnorm_epsilon: float = 1e-3
  leaky_slope: float = 0.1
  se_ratio: int = 8
  spatial_attention_kernel: int = 7
  dropout_rate: float = 0.05
  dtype: Any = jnp.float32

  def conv(self, features, kernel_size=3, *, use_bias, strides=1,
           kernel_init=layers.glorot_uniform, name=None):
    return layers.conv(features, kernel_size, use_bias=use_bias, strides=strides,
                       dtype=self.dtype, kernel_init=kernel_init, name=name)

  def norm(self, channels, name=None):
    return layers.group_norm(channels, self.groupnorm_groups, self.groupnorm_epsilon,
                             dtype=self.dtype, name=name)

  def lrelu(self, x):
    return nn.leaky_relu(x, negative_slope=self.leaky_slope)

  def squeeze_excitation(self, name=None):
    return layers.SqueezeExcitation(self.se_ratio, dtype=self.dtype, name=name)

  def spatial_attention(self, name=None):
    return layers.SpatialAttention(self.spatial_attention_kernel, dtype=self.dtype,
                                   name=name)


class AttentionResidualBlock(nn.Module):
  """Head/tail block: conv-GN-LReLU -> SE -> spatial attention, plus the input."""
  settings: BlockSettings

  @nn.compact
  def __call__(self, x):
    s = self.settings
    channels = x.shape[-1]
    h = s.conv(channels, use_bias=False, name='conv')(x)
    h = s.lrelu(s.norm(channels, name='norm')(h))
    h = s.squeeze_excitation(name='se')(h)
    h = s.spatial_attention(name='attention')(h)
    return x + h


class EncoderBlock(nn.Module):
  """Conv-GN-LReLU, stride-2 conv-GN-LReLU, SE: halves H and W."""
  channels: int
  settings: BlockSettings

  @nn.compact
  def __call__(self, x):
    s = self.settings
    h = s.conv(self.channels, use_bias=False, name='conv')(x)
    h = s.lrelu(s.norm(self.channels, name='norm')(h))
    h = s.conv(self.channels, use_bias=False, strides=2, name='down_conv')(h)
    h = s.lrelu(s.norm(self.channels, name='down_norm')(h))
    return s.squeeze_excitation(name='se')(h)


class BottleneckBlock(nn.Module):
  """Residual conv-GN-LReLU-dropout-conv-GN, then LReLU, SE, spatial attention."""
  settings: BlockSettings

  @nn.compact
  def __call__(self, x, *, train: bool, sample_ids=None):
    s = self.settings
    channels = x.shape[-1]
    h = s.conv(channels, use_bias=False, name='conv1')(x)
    h = s.lrelu(s.norm(channels, name='norm1')(h))
    h = layers.SpatialDropout(s.dropout_rate, name='dropout')(
        h, train=train, sample_ids=sample_ids)
    h = s.conv(channels, use_bias=False, name='conv2')(h)
    h = s.norm(channels, name='norm2')(h)
    h = s.lrelu(x + h)
    h = s.squeeze_excitation(name='se')(h)
    return s.spatial_attention(name='attention')(h)


class DecoderBlock(nn.Module):
  """PixelShuffle x2 upsampling, skip concatenation, two conv-GN-LReLU."""
  channels: int
  settings: BlockSettings

  @nn.compact
  def __call__(self, x, skip, *, train: bool, sample_ids=None):
    s = self.settings
    h = s.conv(self.channels * 4, use_bias=True, name='up_conv')(x)
    h = s.lrelu(layers.depth_to_space(h, 2))
    h = jnp.concatenate([h, skip.astype(h.dtype)], axis=-1)
    h = s.conv(self.channels, use_bias=False, name='conv1')(h)
    h = s.lrelu(s.norm(self.channels, name='norm1')(h))
    h = layers.SpatialDropout(s.dropout_rate, name='dropout')(
        h, train=train, sample_ids=sample_ids)
    h = s.conv(self.channels, use_bias=False, name='conv2')(h)
    return s.lrelu(s.norm(self.channels, name='norm2')(h))


# Bounds of the generator output base + r (`model.output_activation`).
_OUTPUT_BOUNDS = {'tanh': jnp.tanh, 'clip': lambda x: jnp.clip(x, -1.0, 1.0)}
OUTPUT_ACTIVATIONS = tuple(_OUTPUT_BOUNDS)


def check_lr_input(shape: Sequence[int], multiple: int) -> None:
  """Raises ValueError unless `shape` is (B, H, W, 3) with H, W multiples of `multiple`."""
  shape = tuple(shape)
  if len(shape) != 4 or shape[-1] != 3:
    raise ValueError(
        f'Generator input must be an NHWC batch of RGB images (B, H, W, 3); got shape '
        f'{shape}. Add a batch axis and convert grayscale/RGBA images to RGB '
        '(srrgan_jax.image_io.read_rgb does both).')
  if shape[1] % multiple or shape[2] % multiple:
    raise ValueError(
        f'Generator input height and width must be multiples of {multiple} (one per '
        f'stride-2 encoder stage); got shape {shape}. Pad the image to a multiple of '
        f'{multiple} (e.g. reflect-pad bottom/right) or use tiled inference.')


class Generator(nn.Module):
  """Hybrid SR U-Net; `train=True` enables spatial dropout (needs a 'dropout' rng).

  `sample_ids` (optional, (B,) int): the rows' indices in the whole training
  batch, so that a micro-batch draws the same dropout masks as the whole batch.
  """
  scale: int = 2
  stem_channels: int = 64
  num_head_blocks: int = 4
  encoder_channels: tuple[int, ...] = (64, 128, 256)
  num_bottleneck_blocks: int = 5
  decoder_channels: tuple[int, ...] = (128, 64, 64)
  num_tail_blocks: int = 2
  output_activation: str = 'tanh'
  zero_init_output: bool = False
  settings: BlockSettings = BlockSettings()

  @property
  def size_multiple(self) -> int:
    return 2 ** len(self.encoder_channels)

  @nn.compact
  def __call__(self, lr_BHWC, train: bool = False, sample_ids=None):
    check_lr_input(lr_BHWC.shape, self.size_multiple)
    s = self.settings
    lr_BHWC = lr_BHWC.astype(jnp.float32)
    b, h, w, c = lr_BHWC.shape
    base = jax.image.resize(lr_BHWC, (b, h * self.scale, w * self.scale, c), 'bilinear')

    s0 = s.lrelu(s.conv(self.stem_channels, use_bias=True, name='stem')(lr_BHWC))
    x = s0
    for i in range(self.num_head_blocks):
      x = AttentionResidualBlock(s, name=f'head_{i}')(x)
    x = s.conv(self.stem_channels, use_bias=True, name='head_fuse')(x)
    x = s.lrelu(x + s0)

    skips = []
    for i, channels in enumerate(self.encoder_channels):
      skips.append(x)
      x = EncoderBlock(channels, s, name=f'encoder_{i}')(x)
    for i in range(self.num_bottleneck_blocks):
      x = BottleneckBlock(s, name=f'bottleneck_{i}')(x, train=train, sample_ids=sample_ids)
    for i, (channels, skip) in enumerate(zip(self.decoder_channels, reversed(skips))):
      x = DecoderBlock(channels, s, name=f'decoder_{i}')(x, skip, train=train,
                                                         sample_ids=sample_ids)
    for i in range(self.num_tail_blocks):
      x = AttentionResidualBlock(s, name=f'tail_{i}')(x)

    # A zero output conv makes the untrained network return its bilinear base.
    output_init = nn.initializers.zeros if self.zero_init_output else layers.glorot_uniform
    r = s.conv(3 * self.scale ** 2, use_bias=True, kernel_init=output_init,
               name='output_conv')(x)
    r = layers.PixelShuffle(self.scale, name='output_shuffle')(r)
    # The global residual and the output bound stay in float32 under mixed precision.
    return _OUTPUT_BOUNDS[self.output_activation](base + r.astype(jnp.float32))


def build_generator(config: ml_collections.ConfigDict) -> Generator:
  """The generator described by `config.model` and `config.scale`."""
  m = config.model
  if len(m.decoder_channels) != len(m.encoder_channels):
    raise ValueError(
        f'model.decoder_channels {tuple(m.decoder_channels)} needs one entry per '
        f'encoder stage in model.encoder_channels {tuple(m.encoder_channels)}.')
  if m.output_activation not in OUTPUT_ACTIVATIONS:
    raise ValueError(
        f'model.output_activation must be one of {OUTPUT_ACTIVATIONS}; got '
        f'{m.output_activation!r}.')
  if config.scale < 1:
    raise ValueError(f'scale must be a positive integer (2 or 4); got {config.scale}.')
  settings = BlockSettings(
      groupnorm_groups=m.groupnorm_groups, groupnorm_epsilon=m.groupnorm_epsilon,
      leaky_slope=m.leaky_slope, se_ratio=m.se_ratio,
      spatial_attention_kernel=m.spatial_attention_kernel, dropout_rate=m.dropout_rate,
      dtype=layers.compute_dtype(m.compute_dtype, 'model.compute_dtype'))
  return Generator(
      scale=config.scale, stem_channels=m.stem_channels,
      num_head_blocks=m.num_head_blocks,
      encoder_channels=tuple(m.encoder_channels),
      num_bottleneck_blocks=m.num_bottleneck_blocks,
      decoder_channels=tuple(m.decoder_channels),
      num_tail_blocks=m.num_tail_blocks, output_activation=m.output_activation,
      zero_init_output=m.zero_init_output, settings=settings)


def default_lr_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int, int]:
  """A one-image LR batch of the configured training patch size."""
  size = config.data.patch_size // config.scale
  return (1, size, size, 3)


def init_generator(config: ml_collections.ConfigDict, key: jax.Array,
                   lr_shape: Sequence[int] | None = None) -> dict:
  """Initial generator variables ({'params': ...}) for LR batches of `lr_shape`."""
  model = build_generator(config)
  shape = tuple(lr_shape or default_lr_shape(config))
  check_lr_input(shape, model.size_multiple)
  return jax.jit(lambda k: model.init(layers.param_init_key(k),
                                     jnp.zeros(shape, jnp.float32)))(key)
