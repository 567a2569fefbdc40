"""HR -> LR degradation (README "Data"), in numpy/OpenCV on the CPU.

Two modes:
- `degrade_stochastic`: training. Blur (Gaussian or box) -> downsample with a
  random interpolation -> noise (Gaussian or Poisson) and JPEG in random order
  -> clip. Every random choice comes from the `np.random.Generator` passed in, so
  a sample made from `np.random.default_rng([seed, index])` can be made again.
- `degrade_deterministic`: validation, test and full-image evaluation. Gaussian
  5x5 sigma 1 -> area -> Gaussian noise 10/255 from a per-image seed -> JPEG 75
  -> clip: the same image and seed always give the same LR.

Images are float32 (H, W, 3) RGB in [0, 1]; the LR is (H // scale, W // scale, 3).
All numbers come from `config.degradation`. With `reproduce_original_code` the
blurs behave as the original notebook's code did rather than as it described
them: keras_cv's separable Gaussian 3 taps wide and 7 tall, zero ('SAME')
padding, and an evaluation blur whose sigma is drawn from [0, 1] per image (from
the image's seed here, so numbers stay reproducible; the original was unseeded).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

RESIZE_INTERPOLATIONS = {
    'bilinear': cv2.INTER_LINEAR,
    'bicubic': cv2.INTER_CUBIC,
    'area': cv2.INTER_AREA,
}
_BORDERS = {'reflect': cv2.BORDER_REFLECT_101, 'zero': cv2.BORDER_CONSTANT}
# keras_cv clamps sigma to keras.backend.epsilon() so a zero draw does not give NaNs.
_KERAS_EPSILON = 1e-7


def gaussian_taps(size: int, sigma: float) -> np.ndarray:
  """Normalised 1-D Gaussian kernel exp(-x^2 / (2 sigma^2)), x centred, float32."""
  x = np.arange(size, dtype=np.float64) - (size - 1) / 2
  taps = np.exp(-x**2 / (2.0 * max(float(sigma), _KERAS_EPSILON)**2))
  return (taps / taps.sum()).astype(np.float32)


def _border(cfg) -> int:
  name = 'zero' if cfg.reproduce_original_code else cfg.blur_border
  if name not in _BORDERS:
    raise ValueError(f'degradation.blur_border={name!r}; use one of {sorted(_BORDERS)}.')
  return _BORDERS[name]


def _blur(img: np.ndarray, params: dict[str, Any], border: int) -> np.ndarray:
  width, height = params['blur_kernel']
  if params['blur'] == 'box':
    return cv2.blur(img, (width, height), borderType=border)
  sigma = params['blur_sigma']
  return cv2.sepFilter2D(img, -1, gaussian_taps(width, sigma),
                         gaussian_taps(height, sigma), borderType=border)


def resize_down(img: np.ndarray, scale: int, method: str) -> np.ndarray:
  """Downsamples to exactly (H // scale, W // scale) with 'bilinear'/'bicubic'/'area'."""
  if method not in RESIZE_INTERPOLATIONS:
    raise ValueError(f'Unknown resize method {method!r}; use one of '
                     f'{sorted(RESIZE_INTERPOLATIONS)}.')
  height, width = img.shape[0] // scale, img.shape[1] // scale
  if height < 1 or width < 1:
    raise ValueError(f'A {img.shape[0]}x{img.shape[1]} image is too small to '
                     f'downsample by {scale}.')
  return cv2.resize(img, (width, height), interpolation=RESIZE_INTERPOLATIONS[method])


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
  """Quantises to uint8, encodes as JPEG at `quality` and decodes back to float32."""
  levels = img * 255.0  # Rounded half up and clipped, in place: one temporary.
  levels += 0.5
  np.clip(levels, 0, 255, out=levels)
  bgr = cv2.cvtColor(levels.astype(np.uint8), cv2.COLOR_RGB2BGR)
  ok, encoded = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
  if not ok:
    raise RuntimeError(f'OpenCV failed to JPEG-encode a {img.shape} image.')
  decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR_RGB)
  return decoded.astype(np.float32) * np.float32(1 / 255)


def _add_noise(img: np.ndarray, params: dict[str, Any],
               rng: np.random.Generator) -> np.ndarray:
  if params['noise'] == 'gaussian':
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    noise *= np.float32(params['noise_std'])  # In place: img + noise * std.
    noise += img
    return noise
  scale = params['poisson_scale']
  # Intensities are photon counts, so they cannot be negative (bicubic undershoots).
  rates = np.maximum(img, 0.0)
  rates *= np.float32(scale)
  counts = rng.poisson(rates)
  # counts / scale in float64, rounded once to float32 as it is stored.
  return np.multiply(counts, 1.0 / scale, out=np.empty(img.shape, np.float32),
                     casting='unsafe')


def apply_degradation(hr: np.ndarray, params: dict[str, Any], scale: int,
                      rng: np.random.Generator, cfg) -> np.ndarray:
  """Runs blur -> downsample -> noise/JPEG (in `params['order']`) -> clip.

  `params` is what `draw_stochastic_params`/`deterministic_params` return; `rng`
  supplies the noise values.
  """
  img = np.asarray(hr, dtype=np.float32)
  img = _blur(img, params, _border(cfg))
  img = resize_down(img, scale, params['resize'])
  for step in params['order']:
    if step == 'noise':
      img = _add_noise(img, params, rng)
    elif params['jpeg_quality'] is not None:
      img = jpeg_roundtrip(img, params['jpeg_quality'])
  return np.clip(img, 0.0, 1.0, out=img)


def _pick(options, rng: np.random.Generator):
  """Uniform choice from a tuple (rng.choice builds an array first: 5x slower)."""
  return options[int(rng.integers(len(options)))]


def draw_stochastic_params(rng: np.random.Generator, cfg) -> dict[str, Any]:
  """Draws one training degradation; each choice is independent of the others."""
  params: dict[str, Any] = {}
  if rng.random() < cfg.gaussian_blur_prob:
    params['blur'] = 'gaussian'
    if cfg.reproduce_original_code:
      params['blur_kernel'] = tuple(int(k) for k in cfg.original_gaussian_kernel)
    else:
      size = _pick(cfg.gaussian_kernel_sizes, rng)
      params['blur_kernel'] = (size, size)
    params['blur_sigma'] = float(rng.uniform(*cfg.gaussian_sigma_range))
  else:
    params['blur'] = 'box'
    size = _pick(cfg.box_kernel_sizes, rng)
    params['blur_kernel'] = (size, size)
    params['blur_sigma'] = None
  params['resize'] = _pick(cfg.resize_methods, rng)
  noise_first = rng.random() < cfg.noise_before_jpeg_prob
  params['order'] = ('noise', 'jpeg') if noise_first else ('jpeg', 'noise')
  if rng.random() < cfg.gaussian_noise_prob:
    params['noise'] = 'gaussian'
    params['noise_std'] = float(rng.uniform(*cfg.gaussian_noise_std_range))
  else:
    params['noise'] = 'poisson'
    params['poisson_scale'] = float(rng.uniform(*cfg.poisson_scale_range))
  low, high = cfg.jpeg_quality_range
  params['jpeg_quality'] = (int(rng.integers(low, high, endpoint=True))
                            if rng.random() < cfg.jpeg_prob else None)
  return params


def deterministic_params(cfg, rng: np.random.Generator) -> dict[str, Any]:
  """The fixed evaluation degradation (noise values come from `rng`)."""
  size = int(cfg.eval_blur_kernel_size)
  if cfg.reproduce_original_code:  # keras_cv factor=1.0 means sigma ~ U[0, 1].
    sigma = float(rng.uniform(*cfg.original_eval_sigma_range))
  else:
    sigma = float(cfg.eval_blur_sigma)
  return {
      'blur': 'gaussian', 'blur_kernel': (size, size), 'blur_sigma': sigma,
      'resize': cfg.eval_resize_method, 'order': ('noise', 'jpeg'),
      'noise': 'gaussian', 'noise_std': float(cfg.eval_noise_std),
      'jpeg_quality': int(cfg.eval_jpeg_quality),
  }


def degrade_stochastic(hr_HWC: np.ndarray, rng: np.random.Generator, cfg,
                       scale: int, *, return_params: bool = False):
  """Training degradation of one HR image; returns the LR (and the drawn params)."""
  params = draw_stochastic_params(rng, cfg)
  lr = apply_degradation(hr_HWC, params, scale, rng, cfg)
  return (lr, params) if return_params else lr


def degrade_deterministic(hr_HWC: np.ndarray, seed: int, cfg, scale: int, *,
                          return_params: bool = False):
  """Evaluation degradation; the noise comes from `seed`, so it is repeatable."""
  rng = np.random.default_rng(seed)
  params = deterministic_params(cfg, rng)
  lr = apply_degradation(hr_HWC, params, scale, rng, cfg)
  return (lr, params) if return_params else lr
