"""Frozen perceptual networks: VGG19 features for the loss, LPIPS (via lpips-j) for evaluation.

Weights come from `weights` (the project's npz files) and are read once per file;
`vgg19_features` and `lpips` are pure functions of (params, images), so they jit,
shard and differentiate like the rest of a step. Gradients never reach the VGG
parameters (they are wrapped in `stop_gradient`), only the images.
"""

from __future__ import annotations

import functools
from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
from lpips_j import lpips as lpips_j

from srrgan_jax import weights

Params = Mapping[str, Mapping[str, jax.Array]]

VGG19_LAYERS = tuple(name for name, _, _ in weights.VGG19_CONVS)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)  # keras.applications "caffe" mode.
LPIPS_MIN_SIZE = 16  # lpips-j's trunk pools 4 times before its last tap.


@functools.lru_cache(maxsize=4)
def _read_npz(path: str, name: str, mtime_ns: int, size: int) -> dict[str, jax.Array]:
  del mtime_ns, size  # Cache key only: a replaced file is read again.
  return {key: jnp.asarray(value) for key, value in weights.load_npz(path, name).items()}


def _load_flat(name: str, override: str, config) -> dict[str, jax.Array]:
  w = config.weights
  path = weights.ensure(name, override, allow_download=w.get('auto_fetch', True),
                        sources=w.get('fetch_sources', weights.SOURCES))
  stat = path.stat()
  return _read_npz(str(path.resolve()), name, stat.st_mtime_ns, stat.st_size)


# --- VGG19 (perceptual loss).


def load_vgg19_params(config) -> dict[str, dict[str, jax.Array]]:
  """VGG19 conv params `{layer: {'kernel', 'bias'}}` from `config.weights` (read once)."""
  flat = _load_flat(weights.VGG19_FILE, config.weights.vgg19_file, config)
  return {layer: {'kernel': flat[f'{layer}/kernel'], 'bias': flat[f'{layer}/bias']}
          for layer in VGG19_LAYERS}


def caffe_preprocess(x_BHWC: jax.Array) -> jax.Array:
  """[-1,1] RGB -> Keras "caffe" VGG input: [0,255] BGR minus the ImageNet BGR mean."""
  x255 = (x_BHWC + 1.0) * 127.5
  return x255[..., ::-1] - jnp.asarray(CAFFE_BGR_MEAN, x_BHWC.dtype)


def _conv3x3(x, kernel, bias):
  y = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return y + bias


def _max_pool_2x2(x_BHWC):
  """2x2 stride-2 'VALID' max pool as a reshape + max: the values of `nn.max_pool`,
  with a gradient that avoids XLA:CPU's slow select-and-scatter."""
  b, h, w, c = x_BHWC.shape
  h, w = h // 2, w // 2  # An odd last row/column is dropped, as 'VALID' pooling does.
  return x_BHWC[:, :2 * h, :2 * w].reshape(b, h, 2, w, 2, c).max(axis=(2, 4))


def vgg19_features(params: Params, x_BHWC: jax.Array,
                   layers: Sequence[str]) -> dict[str, jax.Array]:
  """Post-ReLU VGG19 feature maps `{layer: (B, h, w, C)}` of [-1,1] RGB images.

  Only the layers up to the deepest requested one are computed.
  """
  unknown = [layer for layer in layers if layer not in VGG19_LAYERS]
  if unknown or not layers:
    raise ValueError(f'unknown VGG19 layers {unknown or layers}; choose from {VGG19_LAYERS}')
  deepest = max(VGG19_LAYERS.index(layer) for layer in layers)
  params = jax.lax.stop_gradient(params)  # The VGG is frozen.
  h = caffe_preprocess(x_BHWC.astype(jnp.float32))
  features = {}
  for layer in VGG19_LAYERS[:deepest + 1]:
    if layer.endswith('_conv1') and layer != 'block1_conv1':
      h = _max_pool_2x2(h)
    h = jax.nn.relu(_conv3x3(h, params[layer]['kernel'], params[layer]['bias']))
    if layer in layers:
      features[layer] = h
  return features


# --- LPIPS (evaluation, model selection).


class _LocalVGGExtractor(lpips_j.VGGExtractor):
  """lpips-j's VGG16 feature extractor, with its parameters supplied by the caller.

  The parent's setup() fetches the trunk from the Hugging Face hub at every
  init/apply; here the weights always come from the tree passed to `apply`.
  """
  output: str = 'activations'
  pretrained: Optional[str] = None
  include_head: bool = False

  def setup(self):
    self.param_dict = None  # flaxmodels: use the params of the variable tree.


class _LocalLPIPS(lpips_j.LPIPS):
  """lpips-j's LPIPS computation (scaling, taps, normalisation, heads, mean) on local params."""

  def setup(self):
    self.feature_names = ['relu1_2', 'relu2_2', 'relu3_3', 'relu4_3', 'relu5_3']
    self.vgg = _LocalVGGExtractor()
    # Head weights live in the params tree; the module attribute is only an initialiser.
    self.lins = [lpips_j.NetLinLayer(None) for _ in self.feature_names]


_LPIPS_MODULE = _LocalLPIPS()


def lpips_params_from_arrays(flat: Mapping[str, jax.Array]) -> dict:
  """Project-format LPIPS arrays (`conv*/kernel`, `lin{i}`) -> lpips-j's parameter tree."""
  tree = {'vgg': {layer: {'kernel': flat[f'{layer}/kernel'], 'bias': flat[f'{layer}/bias']}
                  for layer, _, _ in weights.VGG16_CONVS}}
  for i, channels in enumerate(weights.LPIPS_HEAD_CHANNELS):
    tree[f'lins_{i}'] = {'layer': {'kernel': jnp.reshape(flat[f'lin{i}'], (1, 1, channels, 1))}}
  return tree


def load_lpips_params(config) -> dict:
  """LPIPS (VGG16 + v0.1 heads) params from `config.weights`, read once per file."""
  return lpips_params_from_arrays(
      _load_flat(weights.LPIPS_FILE, config.weights.lpips_file, config))


def lpips(params, x0_BHWC: jax.Array, x1_BHWC: jax.Array) -> jax.Array:
  """LPIPS distance (B,) between two batches of [-1,1] RGB images; pure and jittable."""
  if x0_BHWC.shape != x1_BHWC.shape:
    raise ValueError(f'LPIPS needs equal shapes, got {x0_BHWC.shape} and {x1_BHWC.shape}')
  if min(x0_BHWC.shape[1:3]) < LPIPS_MIN_SIZE:
    raise ValueError(f'LPIPS needs images of at least {LPIPS_MIN_SIZE}x{LPIPS_MIN_SIZE} '
                     f'pixels, got {x0_BHWC.shape[1]}x{x0_BHWC.shape[2]}')
  params = jax.lax.stop_gradient(params)
  distance = _LPIPS_MODULE.apply({'params': params}, x0_BHWC.astype(jnp.float32),
                                 x1_BHWC.astype(jnp.float32))
  return distance.reshape(distance.shape[0])
