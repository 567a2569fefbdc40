"""Image-quality metrics: PSNR, SSIM, MAE (pure jnp; usable under jit and on numpy).

Conventions (stated because super-resolution papers differ on them):
- PSNR/SSIM inputs are RGB in [0, 1], NHWC (-> one value per image, shape (B,)) or
  HWC (-> a scalar). `max_value` is the data range (1.0 for [0, 1] images).
- `crop_border=n` drops n pixels on every side before measuring (BasicSR's
  `crop_border`; super-resolution papers use n = scale).
- `y_channel=True` measures the ITU-R BT.601 luma of the RGB image, as BasicSR's
  `test_y_channel`: Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255, so Y lies
  in [16/255, 235/255] and the data range stays 1.0.
- SSIM is Wang et al. (2004) with an 11x11 Gaussian window (sigma 1.5), K1 0.01,
  K2 0.03, population covariance, mean over the window positions that fit inside the
  image, then over channels: the same number as `skimage.metrics.structural_similarity(
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
  channel_axis=-1)` and BasicSR's `calculate_ssim`.
- PSNR of identical images is +inf (MSE 0), as skimage and BasicSR report it.
- MAE is the mean absolute difference of the images as given; the evaluation
  table applies it to [-1, 1] images, as the original SRRGAN table did.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SSIM_WINDOW_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
# BT.601 luma weights applied to R, G, B in [0, 1] (BasicSR `rgb2ycbcr`, y_only).
_Y_WEIGHTS_RGB = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)
_Y_OFFSET = 16.0 / 255.0


def rgb_to_y(rgb_NHWC):
  """BT.601 luma of RGB in [0, 1] -> (..., H, W, 1) in [16/255, 235/255]."""
  rgb_NHWC = jnp.asarray(rgb_NHWC, jnp.float32)
  weights = jnp.asarray(_Y_WEIGHTS_RGB, jnp.float32)
  y = jnp.tensordot(rgb_NHWC, weights, axes=([-1], [0]),
                    precision=jax.lax.Precision.HIGHEST)
  return (y + _Y_OFFSET)[..., None]


def _prepare(a, b, crop_border: int, y_channel: bool, name: str):
  """Validates shapes, adds a batch axis to HWC input, crops, converts to Y."""
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  if a.shape != b.shape:
    raise ValueError(f'{name}: images have different shapes {a.shape} and '
                     f'{b.shape}; compare images of the same size.')
  if a.ndim not in (3, 4):
    raise ValueError(f'{name}: expected HWC or NHWC images, got shape {a.shape}.')
  single = a.ndim == 3
  if single:
    a, b = a[None], b[None]
  if crop_border:
    height, width = a.shape[1], a.shape[2]
    if 2 * crop_border >= min(height, width):
      raise ValueError(f'{name}: crop_border={crop_border} leaves nothing of a '
                       f'{height}x{width} image; lower it.')
    a = a[:, crop_border:height - crop_border, crop_border:width - crop_border]
    b = b[:, crop_border:height - crop_border, crop_border:width - crop_border]
  if y_channel:
    if a.shape[-1] != 3:
      raise ValueError(f'{name}: y_channel needs RGB images, got {a.shape[-1]} '
                       'channels.')
    a, b = rgb_to_y(a), rgb_to_y(b)
  return a, b, single


def _finish(values_B, single: bool):
  return values_B[0] if single else values_B


def psnr(a, b, *, max_value: float = 1.0, crop_border: int = 0,
         y_channel: bool = False):
  """Peak signal-to-noise ratio in dB per image: (B,) for NHWC, scalar for HWC."""
  a, b, single = _prepare(a, b, crop_border, y_channel, 'psnr')
  mse_B = jnp.mean(jnp.square(a - b), axis=(1, 2, 3))
  # log10(max^2) - log10(mse) gives +inf (not nan) for identical images.
  values_B = 10.0 * (2.0 * jnp.log10(max_value) - jnp.log10(mse_B))
  return _finish(values_B, single)


def gaussian_window_1d(size: int = SSIM_WINDOW_SIZE, sigma: float = SSIM_SIGMA):
  """Normalised sampled 1-D Gaussian (the taps of OpenCV/scipy for this size)."""
  offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
  taps = np.exp(-0.5 * (offsets / sigma) ** 2)
  return (taps / taps.sum()).astype(np.float32)


def _gaussian_blur_valid(x_NHW1, taps):
  """Separable Gaussian filter keeping only positions where the window fits."""
  size = taps.shape[0]
  numbers = ('NHWC', 'HWIO', 'NHWC')
  # HIGHEST keeps float32 accuracy on GPUs/TPUs (default may use TF32/bf16 passes).
  x_NHW1 = jax.lax.conv_general_dilated(
      x_NHW1, jnp.asarray(taps).reshape(size, 1, 1, 1), (1, 1), 'VALID',
      dimension_numbers=numbers, precision=jax.lax.Precision.HIGHEST)
  return jax.lax.conv_general_dilated(
      x_NHW1, jnp.asarray(taps).reshape(1, size, 1, 1), (1, 1), 'VALID',
      dimension_numbers=numbers, precision=jax.lax.Precision.HIGHEST)


def ssim(a, b, *, crop_border: int = 0, y_channel: bool = False,
         max_value: float = 1.0):
  """Structural similarity per image (Gaussian 11x11, sigma 1.5): (B,) or scalar."""
  a, b, single = _prepare(a, b, crop_border, y_channel, 'ssim')
  batch, height, width, channels = a.shape
  if min(height, width) < SSIM_WINDOW_SIZE:
    raise ValueError(f'ssim: a {height}x{width} image (after crop_border='
                     f'{crop_border}) is smaller than the {SSIM_WINDOW_SIZE}x'
                     f'{SSIM_WINDOW_SIZE} SSIM window; use larger images.')
  # Channels become batch entries so one single-channel filter serves all.
  to_planes = lambda x: jnp.transpose(x, (0, 3, 1, 2)).reshape(
      batch * channels, height, width, 1)
  x, y = to_planes(a), to_planes(b)
  taps = gaussian_window_1d()
  blur = lambda z: _gaussian_blur_valid(z, taps)
  mu_x, mu_y = blur(x), blur(y)
  var_x = blur(x * x) - mu_x * mu_x
  var_y = blur(y * y) - mu_y * mu_y
  cov_xy = blur(x * y) - mu_x * mu_y
  c1 = (SSIM_K1 * max_value) ** 2
  c2 = (SSIM_K2 * max_value) ** 2
  ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
      (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
  values_B = jnp.mean(ssim_map.reshape(batch, -1), axis=1)
  return _finish(values_B, single)


def mae(a, b, *, crop_border: int = 0):
  """Mean absolute error per image: (B,) for NHWC, scalar for HWC."""
  a, b, single = _prepare(a, b, crop_border, False, 'mae')
  return _finish(jnp.mean(jnp.abs(a - b), axis=(1, 2, 3)), single)
