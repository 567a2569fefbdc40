"""The training pair of an HR patch: the configured degradation model and the target.

`degradation.model` names the model: 'original' (the original system's one-pass
blur, resize, noise, JPEG: `degradation.degrade_stochastic`) or 'realesrgan'
(Real-ESRGAN's second-order model: `degradation_realesrgan.degrade`). With
`degradation.sharpen_target` the HR target is USM-sharpened as Real-ESRGAN's
GAN training does, while the LR is made from the unsharpened HR.
"""

from __future__ import annotations

import argparse
from typing import Any, Optional

import cv2
import numpy as np

from srrgan_jax import degradation
from srrgan_jax import degradation_realesrgan
from srrgan_jax import errors

MODELS = ('original', 'realesrgan')


class DegradationConfigError(errors.UserError, ValueError):
  """A `config.degradation` field has a value the degradation cannot use."""


def usm_sharpen(img: np.ndarray, weight: float, kernel_size: int,
                threshold_levels: float) -> np.ndarray:
  """Unsharp masking: img + weight * (img - blur), faded in where the detail is visible.

  The blur is OpenCV's Gaussian of `kernel_size` (sigma from the size); pixels
  whose |img - blur| exceeds `threshold_levels`/255 are sharpened, through a
  mask blurred the same way so that no edges of the mask show. Clipped to [0, 1].
  """
  img = np.asarray(img, dtype=np.float32)
  blurred = cv2.GaussianBlur(img, (kernel_size, kernel_size), 0)
  residual = img - blurred
  mask = (np.abs(residual) * 255.0 > threshold_levels).astype(np.float32)
  soft_mask = cv2.GaussianBlur(mask, (kernel_size, kernel_size), 0)
  sharp = np.clip(img + np.float32(weight) * residual, 0.0, 1.0)
  return soft_mask * sharp + (1.0 - soft_mask) * img


def degrade_training(hr_HWC: np.ndarray, rng: np.random.Generator, cfg,
                     scale: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
  """(HR target, LR, drawn params) of one training patch with `cfg.model`."""
  if cfg.model == 'realesrgan':
    lr, params = degradation_realesrgan.degrade(hr_HWC, rng, cfg, scale,
                                                return_params=True)
  elif cfg.model == 'original':
    lr, params = degradation.degrade_stochastic(hr_HWC, rng, cfg, scale,
                                                return_params=True)
  else:
    raise DegradationConfigError(f'degradation.model={cfg.model!r}; use one of {MODELS}.')
  if cfg.sharpen_target:
    hr_HWC = usm_sharpen(hr_HWC, cfg.usm_weight, cfg.usm_kernel_size, cfg.usm_threshold)
  return hr_HWC, lr, params


def _fail(field: str, value, what: str):
  raise DegradationConfigError(f'degradation.{field}={value!r}: {what}')


def _check_range(r, field: str, low_limit: float = 0.0) -> None:
  value = tuple(getattr(r, field))
  if len(value) != 2 or not low_limit <= value[0] <= value[1]:
    _fail(f'realesrgan.{field}', value, f'needs (low, high) with {low_limit} <= low <= high.')


def _check_probs(r, field: str, length: int) -> None:
  value = tuple(getattr(r, field))
  if len(value) != length or min(value) < 0 or sum(value) <= 0:
    _fail(f'realesrgan.{field}', value,
          f'needs {length} non-negative probabilities that do not all vanish.')


def check_config(cfg) -> None:
  """Raises DegradationConfigError naming the first unusable training-degradation field."""
  if cfg.model not in MODELS:
    _fail('model', cfg.model, f'use one of {MODELS}.')
  size = cfg.usm_kernel_size
  if size < 1 or size % 2 == 0:
    _fail('usm_kernel_size', size, 'needs an odd size, e.g. 51.')
  if cfg.model != 'realesrgan':
    return
  r = cfg.realesrgan
  sizes = tuple(r.kernel_range)
  if not sizes or any(k < 1 or k % 2 == 0 for k in sizes):
    _fail('realesrgan.kernel_range', sizes, 'needs odd kernel sizes, e.g. (7, 9, 11).')
  unknown = sorted(set(r.kernel_list) - set(degradation_realesrgan.KERNELS))
  if unknown:
    _fail('realesrgan.kernel_list', tuple(r.kernel_list),
          f'{unknown} unknown; use {tuple(degradation_realesrgan.KERNELS)}.')
  _check_probs(r, 'kernel_prob', len(r.kernel_list))
  _check_probs(r, 'resize_prob', 3)
  _check_probs(r, 'resize_prob2', 3)
  unknown = sorted(set(r.resize_modes) - set(degradation.RESIZE_INTERPOLATIONS))
  if not r.resize_modes or unknown:
    _fail('realesrgan.resize_modes', tuple(r.resize_modes),
          f'use some of {tuple(degradation.RESIZE_INTERPOLATIONS)}.')
  for field in ('blur_sigma', 'blur_sigma2'):
    _check_range(r, field, low_limit=1e-3)
  for field in ('sinc_cutoff_range', 'sinc_cutoff_range_large', 'final_sinc_cutoff_range',
                'noise_range', 'noise_range2', 'poisson_scale_range',
                'poisson_scale_range2'):
    _check_range(r, field)
  # Drawn below 1 or above 1 (resize down or up, beta heavy-tailed or flat-topped).
  for field in ('resize_range', 'resize_range2', 'betag_range', 'betag_range2',
                'betap_range', 'betap_range2'):
    _check_range(r, field, low_limit=1e-3)
    low, high = getattr(r, field)
    if not low <= 1.0 <= high:
      _fail(f'realesrgan.{field}', (low, high), 'needs low <= 1 <= high.')
  for field in ('jpeg_range', 'jpeg_range2'):
    _check_range(r, field, low_limit=1)
    if getattr(r, field)[1] > 100:
      _fail(f'realesrgan.{field}', tuple(getattr(r, field)), 'JPEG quality is at most 100.')


def plain_config(block, model: Optional[str] = None) -> argparse.Namespace:
  """A checked, picklable, fast-to-read copy of `config.degradation` for workers.

  `model` replaces `degradation.model` when given.
  """
  fields = block.to_dict()
  fields['realesrgan'] = argparse.Namespace(**fields['realesrgan'])
  if model is not None:
    fields['model'] = model
  plain = argparse.Namespace(**fields)
  check_config(plain)
  return plain
