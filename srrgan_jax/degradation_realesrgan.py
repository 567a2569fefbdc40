"""Real-ESRGAN's second-order degradation (Wang et al., ICCVW 2021) in numpy/OpenCV.

  HR -> stage 1: blur -> resize up/down/keep -> Gaussian or Poisson noise -> JPEG
     -> stage 2 (P = second_stage_prob): blur (P = second_blur_prob) -> resize
        relative to the LR size -> noise
     -> final, in random order: [resize to (H // scale, W // scale) + sinc
        filter (P = final_sinc_prob)] and JPEG
     -> clip, round to 8-bit levels.

Blur kernels are isotropic/anisotropic Gaussian, generalized Gaussian
exp(-0.5 q^beta), plateau 1 / (1 + q^beta) (q: the Mahalanobis distance
squared of the kernel's covariance) or a 2-D sinc (ideal circular low-pass).
All parameters are drawn first (`draw_params`: plain numbers, JSON-ready), then
`apply_degradation` draws the noise values from the same generator, so
`np.random.default_rng([seed, index, ...])` always gives the same LR. Every
number comes from `cfg.realesrgan` (configs/default.py). Images are float32
(H, W, 3) RGB in [0, 1].
"""

from __future__ import annotations

import math
from typing import Any, Optional

import cv2
import numpy as np
from scipy import special

from srrgan_jax import degradation

# Kernel name -> (family, isotropic): the names of Real-ESRGAN's kernel_list.
KERNELS = {
    'iso': ('gaussian', True),
    'aniso': ('gaussian', False),
    'generalized_iso': ('generalized', True),
    'generalized_aniso': ('generalized', False),
    'plateau_iso': ('plateau', True),
    'plateau_aniso': ('plateau', False),
}
RESIZE_DIRECTIONS = ('up', 'down', 'keep')  # The order of resize_prob.
_BORDER = cv2.BORDER_REFLECT_101  # Reflect without repeating the edge pixel.


# ----------------------------------------------------------------------------
# Kernels.


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
  """(x, y) pixel offsets from the centre of a size x size kernel."""
  axis = np.arange(size, dtype=np.float64) - (size - 1) / 2
  return np.meshgrid(axis, axis)


def blur_kernel(family: str, size: int, sigma_x: float, sigma_y: float,
                rotation: float = 0.0, beta: float = 1.0) -> np.ndarray:
  """Normalised size x size kernel of `family` 'gaussian', 'generalized' or 'plateau'.

  q = p^T C^-1 p with C = R(rotation) diag(sigma_x^2, sigma_y^2) R^T; the kernel
  is exp(-q / 2), exp(-q^beta / 2) or 1 / (1 + q^beta), divided by its sum.
  """
  x, y = _grid(size)
  cos, sin = math.cos(rotation), math.sin(rotation)
  u, v = cos * x + sin * y, cos * y - sin * x  # Offsets in the kernel's own axes.
  q = (u / sigma_x)**2 + (v / sigma_y)**2
  if family == 'gaussian':
    kernel = np.exp(-0.5 * q)
  elif family == 'generalized':
    kernel = np.exp(-0.5 * q**beta)
  elif family == 'plateau':
    kernel = 1.0 / (1.0 + q**beta)
  else:
    raise ValueError(f'Unknown kernel family {family!r}; use gaussian, generalized '
                     'or plateau.')
  return (kernel / kernel.sum()).astype(np.float32)


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
  """Normalised ideal circular low-pass filter, `cutoff` in radians per pixel.

  k(r) = cutoff J1(cutoff r) / (2 pi r), and cutoff^2 / (4 pi) at r = 0 (the limit).
  """
  x, y = _grid(size)
  r = np.hypot(x, y)
  safe_r = np.where(r == 0, 1.0, r)
  kernel = np.where(r == 0, cutoff**2 / (4 * math.pi),
                    cutoff * special.j1(cutoff * safe_r) / (2 * math.pi * safe_r))
  return (kernel / kernel.sum()).astype(np.float32)


def kernel_from_params(blur: dict[str, Any]) -> np.ndarray:
  """The kernel that a drawn `blur` entry of `draw_params` describes."""
  if blur['kernel'] == 'sinc':
    return sinc_kernel(blur['size'], blur['cutoff'])
  family, _ = KERNELS[blur['kernel']]
  return blur_kernel(family, blur['size'], blur['sigma_x'], blur['sigma_y'],
                     blur['rotation'], blur['beta'])


# ----------------------------------------------------------------------------
# Random draws.


def _uniform(rng: np.random.Generator, bounds) -> float:
  return float(rng.uniform(bounds[0], bounds[1]))


def _choose(probs, rng: np.random.Generator) -> int:
  """Index drawn with the given (unnormalised) probabilities."""
  cumulative = np.cumsum(probs, dtype=np.float64)
  index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side='right'))
  return min(index, len(cumulative) - 1)


def _draw_beta(rng: np.random.Generator, bounds, below_one_prob: float) -> float:
  """Shape beta: as often from [low, 1] (heavier tails) as from [1, high] (flatter top)."""
  low, high = bounds
  if rng.random() < below_one_prob:
    return float(rng.uniform(low, min(1.0, high)))
  return float(rng.uniform(max(1.0, low), high))


def _pick(options, rng: np.random.Generator):
  return options[int(rng.integers(len(options)))]


def _draw_sinc(rng: np.random.Generator, size: int, bounds) -> dict[str, Any]:
  return {'kernel': 'sinc', 'size': size, 'cutoff': _uniform(rng, bounds)}


def _draw_blur(rng: np.random.Generator, r, sigma_range, betag_range, betap_range,
               sinc_prob: float) -> dict[str, Any]:
  size = _pick(r.kernel_range, rng)
  if rng.random() < sinc_prob:
    large = size >= r.sinc_large_kernel
    return _draw_sinc(rng, size,
                      r.sinc_cutoff_range_large if large else r.sinc_cutoff_range)
  name = r.kernel_list[_choose(r.kernel_prob, rng)]
  family, isotropic = KERNELS[name]
  sigma_x = _uniform(rng, sigma_range)
  if isotropic:
    sigma_y, rotation = sigma_x, 0.0
  else:
    sigma_y, rotation = _uniform(rng, sigma_range), _uniform(rng, r.rotation_range)
  beta = 1.0
  if family != 'gaussian':
    beta = _draw_beta(rng, betag_range if family == 'generalized' else betap_range,
                      r.beta_below_one_prob)
  return {'kernel': name, 'size': size, 'sigma_x': sigma_x, 'sigma_y': sigma_y,
          'rotation': rotation, 'beta': beta}


def _draw_resize(rng: np.random.Generator, r, probs, bounds) -> dict[str, Any]:
  direction = RESIZE_DIRECTIONS[_choose(probs, rng)]
  if direction == 'up':
    factor = float(rng.uniform(1.0, bounds[1]))
  elif direction == 'down':
    factor = float(rng.uniform(bounds[0], 1.0))
  else:
    factor = 1.0
  return {'resize': direction, 'resize_factor': factor,
          'resize_mode': _pick(r.resize_modes, rng)}


def _draw_noise(rng: np.random.Generator, gaussian_prob, sigma_range, poisson_range,
                gray_prob) -> dict[str, Any]:
  if rng.random() < gaussian_prob:
    noise = {'noise': 'gaussian', 'noise_sigma': _uniform(rng, sigma_range)}
  else:
    noise = {'noise': 'poisson', 'poisson_scale': _uniform(rng, poisson_range)}
  noise['gray_noise'] = bool(rng.random() < gray_prob)
  return noise


def _draw_quality(rng: np.random.Generator, bounds) -> int:
  return int(rng.integers(bounds[0], bounds[1], endpoint=True))


def draw_params(rng: np.random.Generator, cfg) -> dict[str, Any]:
  """Draws one degradation: {'model', 'stage1', 'stage2' (None: skipped), 'final'}."""
  r = cfg.realesrgan
  stage1 = {
      'blur': _draw_blur(rng, r, r.blur_sigma, r.betag_range, r.betap_range,
                         r.sinc_prob),
      **_draw_resize(rng, r, r.resize_prob, r.resize_range),
      **_draw_noise(rng, r.gaussian_noise_prob, r.noise_range, r.poisson_scale_range,
                    r.gray_noise_prob),
      'jpeg_quality': _draw_quality(rng, r.jpeg_range),
  }
  stage2 = None
  if rng.random() < r.second_stage_prob:
    blur2 = None
    if rng.random() < r.second_blur_prob:
      blur2 = _draw_blur(rng, r, r.blur_sigma2, r.betag_range2, r.betap_range2,
                         r.sinc_prob2)
    stage2 = {
        'blur': blur2,
        **_draw_resize(rng, r, r.resize_prob2, r.resize_range2),
        **_draw_noise(rng, r.gaussian_noise_prob2, r.noise_range2,
                      r.poisson_scale_range2, r.gray_noise_prob2),
    }
  resize_first = bool(rng.random() < r.resize_before_jpeg_prob)
  sinc = None
  if rng.random() < r.final_sinc_prob:
    sinc = _draw_sinc(rng, _pick(r.kernel_range, rng),
                      r.final_sinc_cutoff_range)
  final = {
      'order': ('resize_sinc', 'jpeg') if resize_first else ('jpeg', 'resize_sinc'),
      'resize_mode': _pick(r.resize_modes, rng),
      'sinc': sinc,
      'jpeg_quality': _draw_quality(rng, r.jpeg_range2),
  }
  return {'model': 'realesrgan', 'stage1': stage1, 'stage2': stage2, 'final': final}


# ----------------------------------------------------------------------------
# Image operations.


def filter_image(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """2-D filter with reflected borders (kernels here are point-symmetric)."""
  return cv2.filter2D(img, -1, kernel, borderType=_BORDER)


def blur_image(img: np.ndarray, blur: dict[str, Any]) -> np.ndarray:
  """Filters with the kernel a drawn `blur` entry describes.

  An isotropic Gaussian is the outer product of 1-D taps: two 1-D passes cost
  a tenth of OpenCV's 2-D (DFT) filter for 11-21 px kernels.
  """
  if blur['kernel'] == 'iso':
    taps = degradation.gaussian_taps(blur['size'], blur['sigma_x'])
    return cv2.sepFilter2D(img, -1, taps, taps, borderType=_BORDER)
  return filter_image(img, kernel_from_params(blur))


def resize_to(img: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
  """Resizes to (max(1, height), max(1, width)) with 'area', 'bilinear' or 'bicubic'."""
  height, width = max(1, int(height)), max(1, int(width))
  if img.shape[:2] == (height, width):
    return img
  return cv2.resize(img, (width, height),
                    interpolation=degradation.RESIZE_INTERPOLATIONS[mode])


def add_gaussian_noise(img: np.ndarray, sigma_levels: float, gray: bool,
                       rng: np.random.Generator) -> np.ndarray:
  """Adds N(0, (sigma/255)^2) noise, one value per pixel for all channels if `gray`; clips."""
  shape = img.shape[:2] + (1,) if gray else img.shape
  noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma_levels / 255)
  return np.clip(img + noise, 0.0, 1.0)


def add_poisson_noise(img: np.ndarray, scale: float, gray: bool,
                      rng: np.random.Generator) -> np.ndarray:
  """Adds `scale` x shot noise (on the luma if `gray`); clips.

  As in Real-ESRGAN, the photon count of full white is the number of distinct
  8-bit levels in the image rounded up to a power of two (256 for most photos),
  so the noise std at intensity x is scale * sqrt(x / peak).
  """
  source = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None] if gray else img
  levels = np.rint(np.clip(source, 0.0, 1.0) * 255.0)
  distinct = np.count_nonzero(np.bincount(levels.astype(np.uint8).ravel(), minlength=256))
  peak = 2.0**math.ceil(math.log2(distinct))
  quantised = levels * (1.0 / 255.0)
  noise = rng.poisson(quantised * peak) * (1.0 / peak) - quantised
  return np.clip(img + (noise * scale).astype(np.float32), 0.0, 1.0)


def _add_noise(img: np.ndarray, stage: dict[str, Any], rng: np.random.Generator):
  if stage['noise'] == 'gaussian':
    return add_gaussian_noise(img, stage['noise_sigma'], stage['gray_noise'], rng)
  return add_poisson_noise(img, stage['poisson_scale'], stage['gray_noise'], rng)


def lr_size(shape, scale: int) -> tuple[int, int]:
  """(H // scale, W // scale); raises if the image is smaller than the scale."""
  height, width = shape[0] // scale, shape[1] // scale
  if height < 1 or width < 1:
    raise ValueError(f'A {shape[0]}x{shape[1]} image is too small to downsample by '
                     f'{scale}.')
  return height, width


def apply_degradation(hr: np.ndarray, params: dict[str, Any], scale: int,
                      rng: np.random.Generator) -> np.ndarray:
  """Runs the degradation `params` describes; `rng` supplies the noise values."""
  img = np.asarray(hr, dtype=np.float32)
  lr_height, lr_width = lr_size(img.shape, scale)
  lr_height_exact, lr_width_exact = img.shape[0] / scale, img.shape[1] / scale
  stage = params['stage1']
  img = blur_image(img, stage['blur'])
  factor = stage['resize_factor']
  img = resize_to(img, img.shape[0] * factor, img.shape[1] * factor, stage['resize_mode'])
  img = _add_noise(img, stage, rng)
  img = degradation.jpeg_roundtrip(img, stage['jpeg_quality'])
  stage = params['stage2']
  if stage is not None:
    if stage['blur'] is not None:
      img = blur_image(img, stage['blur'])
    factor = stage['resize_factor']  # Relative to the LR size, as in Real-ESRGAN.
    img = resize_to(img, lr_height_exact * factor, lr_width_exact * factor,
                    stage['resize_mode'])
    img = _add_noise(img, stage, rng)
  final = params['final']
  for step in final['order']:
    if step == 'jpeg':
      img = degradation.jpeg_roundtrip(img, final['jpeg_quality'])
      continue
    img = resize_to(img, lr_height, lr_width, final['resize_mode'])
    if final['sinc'] is not None:
      img = blur_image(img, final['sinc'])
  img = np.rint(np.clip(img, 0.0, 1.0) * 255.0)  # Saved-image levels, as Real-ESRGAN.
  return img * np.float32(1 / 255)


def degrade(hr_HWC: np.ndarray, rng: np.random.Generator, cfg, scale: int, *,
            return_params: bool = False):
  """Real-ESRGAN degradation of one HR image; returns the LR (and the drawn params)."""
  params = draw_params(rng, cfg)
  lr = apply_degradation(hr_HWC, params, scale, rng)
  return (lr, params) if return_params else lr


def describe(params: dict[str, Any]) -> str:
  """One line summarising drawn params (for previews and logs)."""
  parts = []
  for name in ('stage1', 'stage2'):
    stage: Optional[dict[str, Any]] = params[name]
    if stage is None:
      parts.append(f'{name}: skipped')
      continue
    parts.append(f'{name}: blur {_describe_blur(stage["blur"])}, '
                 f'{stage["resize"]} x{stage["resize_factor"]:.2f} {stage["resize_mode"]}, '
                 f'{_describe_noise(stage)}'
                 + (f', JPEG {stage["jpeg_quality"]}' if 'jpeg_quality' in stage else ''))
  final = params['final']
  resize = f'resize {final["resize_mode"]} + ' + (
      _describe_blur(final['sinc']) if final['sinc'] else 'no sinc')
  steps = [resize if step == 'resize_sinc' else f'JPEG {final["jpeg_quality"]}'
           for step in final['order']]
  parts.append('final: ' + ' -> '.join(steps))
  return '; '.join(parts)


def _describe_blur(blur: Optional[dict[str, Any]]) -> str:
  if blur is None:
    return 'none'
  if blur['kernel'] == 'sinc':
    return f'sinc {blur["size"]}px cutoff {blur["cutoff"]:.2f}'
  text = f'{blur["kernel"]} {blur["size"]}px sigma {blur["sigma_x"]:.2f}'
  if not KERNELS[blur['kernel']][1]:
    text += f'/{blur["sigma_y"]:.2f} rot {blur["rotation"]:.2f}'
  if KERNELS[blur['kernel']][0] != 'gaussian':
    text += f' beta {blur["beta"]:.2f}'
  return text


def _describe_noise(stage: dict[str, Any]) -> str:
  gray = 'gray ' if stage['gray_noise'] else ''
  if stage['noise'] == 'gaussian':
    return f'{gray}Gaussian noise {stage["noise_sigma"]:.1f}/255'
  return f'{gray}Poisson noise x{stage["poisson_scale"]:.2f}'
