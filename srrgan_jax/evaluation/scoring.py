"""The evaluation protocol, the test set it prepares, and scoring SR outputs against HR.

How images are prepared and measured (crops or full images, RGB or Y, border
crop, EMA or raw weights, ...) is a `Protocol`, written next to every set of
numbers. `evaluate_method` runs one upscaler over a test set and keeps
per-image PSNR, SSIM, MAE and LPIPS.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from srrgan_jax import eval_sets
from srrgan_jax import errors
from srrgan_jax import image_io
from srrgan_jax import metrics
from srrgan_jax import models
from srrgan_jax import perceptual

METRIC_NAMES = ('psnr', 'ssim', 'mae', 'lpips')
METRIC_TITLES = {'psnr': 'PSNR (dB)', 'ssim': 'SSIM', 'mae': 'MAE', 'lpips': 'LPIPS'}
# Which direction is better, for the printed tables.
METRIC_HIGHER_IS_BETTER = {'psnr': True, 'ssim': True, 'mae': False, 'lpips': False}


class EvaluationError(errors.UserError, ValueError):
  """The evaluation inputs (run dir, test folder, images) cannot be evaluated."""


@dataclasses.dataclass(frozen=True)
class Protocol:
  """How images are prepared and measured; written next to every result."""
  crop_size: int  # HR centre crop side; 0 = full images with tiled inference.
  y_channel: bool  # PSNR/SSIM on BT.601 luma instead of RGB.
  crop_border: int  # Pixels dropped on each side before PSNR/SSIM.
  use_ema: bool = True  # EMA generator weights (False: raw weights).
  tile: int = 128  # Full images: LR tile side.
  overlap: int = 32  # Full images: LR tile overlap.
  tile_batch_size: int = 16  # Full images: tiles per forward call.

  @property
  def full_images(self) -> bool:
    return self.crop_size == 0

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)

  def describe(self, config: Optional[ml_collections.ConfigDict] = None) -> list[str]:
    """One line per convention, for the Markdown report and the console."""
    if self.full_images:
      images = (f'full images; generator run on LR tiles of {self.tile}px with '
                f'{self.overlap}px overlap, Hann-blended')
    else:
      images = (f'{self.crop_size}x{self.crop_size} HR centre crops '
                '(the original SRRGAN protocol)')
    lines = [f'Images: {images}.']
    if config is not None:
      g = config.degradation
      lines.append(
          f'LR input: x{config.scale} deterministic degradation (Gaussian blur '
          f'{g.eval_blur_kernel_size}x{g.eval_blur_kernel_size} sigma '
          f'{g.eval_blur_sigma:g}, {g.eval_resize_method} downsampling, Gaussian '
          f'noise std {g.eval_noise_std * 255:g}/255 seeded per image, JPEG quality '
          f'{g.eval_jpeg_quality}).')
    channel = ('Y channel (ITU-R BT.601: Y = 16/255 + (65.481 R + 128.553 G + '
               '24.966 B)/255, as BasicSR)' if self.y_channel else 'RGB')
    lines += [
        f'PSNR/SSIM: on {channel} in [0, 1] (PSNR max value 1.0), '
        f'{self.crop_border} border pixels cropped on each side; SSIM with an '
        '11x11 Gaussian window (sigma 1.5, K1 0.01, K2 0.03; = skimage '
        'gaussian_weights=True, use_sample_covariance=False).',
        'MAE: mean absolute error on the whole RGB image in [-1, 1] (as the '
        'original table).',
        'LPIPS: VGG16 backbone, v0.1 linear heads, whole RGB image in [-1, 1].',
        'SR outputs are scored as floats clipped to [-1, 1] (not quantised to 8 bit); '
        'means are over images.',
        'Bilinear/bicubic: jax.image.resize of the degraded LR (half-pixel centres, '
        'Keys cubic a=-0.5, as tf.image.resize).',
        f'Generator weights: {"EMA" if self.use_ema else "raw (not EMA)"}.',
    ]
    return lines


def make_protocol(config: ml_collections.ConfigDict, *, full_images: bool = False,
                  crop_size: int = 0, y_channel: bool = False, crop_border: int = -1,
                  use_ema: bool = True) -> Protocol:
  """The protocol from command-line choices; defaults follow the original system.

  crop_size 0 means `eval_sets.eval_crop_size(config)` (the validation crop);
  crop_border -1 means the scale.
  """
  if full_images:
    crop_size = 0
  else:
    try:
      crop_size = eval_sets.eval_crop_size(config, crop_size)
    except ValueError as error:
      raise EvaluationError(str(error)) from None
  if crop_border < 0:
    crop_border = config.scale
  inference = config.inference
  return Protocol(crop_size=crop_size, y_channel=y_channel, crop_border=crop_border,
                  use_ema=use_ema, tile=inference.tile, overlap=inference.overlap,
                  tile_batch_size=inference.batch_size)


def require_single_host() -> None:
  """Evaluation runs on one host; several processes would race on the outputs."""
  if jax.process_count() > 1:
    raise EvaluationError(
        f'evaluation was launched on {jax.process_count()} processes; it runs on a '
        'single host. Start eval.py as one process (no jax.distributed / SLURM '
        'srun with several tasks).')


@functools.partial(jax.jit, static_argnames=('crop_border', 'y_channel'))
def _score_batch(lpips_params, sr_BHWC, hr_BHWC, *, crop_border, y_channel):
  """Per-image PSNR, SSIM, MAE, LPIPS of SR vs HR, both in [-1, 1]."""
  sr_BHWC = jnp.clip(sr_BHWC, -1.0, 1.0)
  sr01, hr01 = models.to_unit(sr_BHWC), models.to_unit(hr_BHWC)
  return {
      'psnr': metrics.psnr(sr01, hr01, crop_border=crop_border, y_channel=y_channel),
      'ssim': metrics.ssim(sr01, hr01, crop_border=crop_border, y_channel=y_channel),
      'mae': metrics.mae(sr_BHWC, hr_BHWC),
      'lpips': perceptual.lpips(lpips_params, sr_BHWC, hr_BHWC),
  }


class Scorer:
  """Scores SR batches against HR batches with one compiled program per shape."""

  def __init__(self, lpips_params, protocol: Protocol):
    self.lpips_params = lpips_params
    self.protocol = protocol

  def __call__(self, sr_BHWC, hr_BHWC) -> dict[str, jax.Array]:
    """Per-image scores as (B,) device arrays (read back by the caller, late)."""
    return _score_batch(self.lpips_params, jnp.asarray(sr_BHWC, jnp.float32),
                        jnp.asarray(hr_BHWC, jnp.float32),
                        crop_border=self.protocol.crop_border,
                        y_channel=self.protocol.y_channel)


def summarize(per_image: dict[str, np.ndarray]) -> dict[str, float]:
  """Means over images of each metric."""
  return {name: float(np.mean(per_image[name])) for name in METRIC_NAMES}


@dataclasses.dataclass
class TestSet:
  """Degraded LR inputs and HR targets in [-1, 1], one entry per test image."""
  folder: str
  names: list[str]
  lr: list[np.ndarray]  # (h, w, 3) each.
  hr: list[np.ndarray]  # (h*scale, w*scale, 3) each.

  def __len__(self) -> int:
    return len(self.names)


def load_test_set(folder, config: ml_collections.ConfigDict,
                  protocol: Protocol) -> TestSet:
  """Centre crops (or full images) of a test folder with the deterministic degradation."""
  folder = str(folder)
  try:
    image_io.list_images(folder)
  except FileNotFoundError as e:
    raise EvaluationError(
        f'{e} Point --test_dir at a folder of ground-truth HR images (e.g. '
        'BSDS100); the LR inputs are made from them with the deterministic '
        'degradation.') from e
  try:
    loaded = eval_sets.load_eval_set(
        folder, config, crop=None if protocol.full_images else protocol.crop_size)
  except ValueError as e:  # Undecodable or too-small images, named by the loader.
    raise EvaluationError(f'test folder {folder}: {e}') from e
  scale = config.scale
  lr_images, hr_images = [], []
  for lr, hr in zip(loaded['lr'], loaded['hr']):
    lr = np.asarray(lr, np.float32)
    # Odd HR sizes: the LR is floor(H/scale), so only scale * LR of the HR is comparable.
    hr = np.asarray(hr, np.float32)[:lr.shape[0] * scale, :lr.shape[1] * scale]
    lr_images.append(lr)
    hr_images.append(hr)
  return TestSet(folder, [str(n) for n in loaded['names']], lr_images, hr_images)


@dataclasses.dataclass
class MethodResult:
  """Per-image scores of one upscaling method and the outputs kept for figures."""
  per_image: dict[str, np.ndarray]
  kept_outputs: dict[int, np.ndarray]  # test index -> SR (h, w, 3) in [-1, 1].

  @property
  def means(self) -> dict[str, float]:
    return summarize(self.per_image)


def evaluate_method(upscale: Callable, test_set: TestSet, scorer: Scorer, *,
                    batch_size: int, keep: Sequence[int] = ()) -> MethodResult:
  """Upscales every test image and scores it; keeps the outputs listed in `keep`."""
  batches, kept = [], {}
  count = len(test_set)
  step = min(batch_size, count) if not scorer.protocol.full_images else 1
  for start in range(0, count, step):
    indices = list(range(start, min(start + step, count)))
    # Repeat the last image so every batch has the same shape (one compile).
    padded = indices + [indices[-1]] * (step - len(indices))
    lr_BHWC = np.stack([test_set.lr[i] for i in padded])
    hr_BHWC = np.stack([test_set.hr[i] for i in padded])
    sr_BHWC = upscale(lr_BHWC)
    batches.append((len(indices), scorer(sr_BHWC, hr_BHWC)))
    for row, index in enumerate(indices):
      if index in keep:
        kept[index] = np.asarray(sr_BHWC[row], np.float32)
  # Read back only now, so the device never waits for the host between batches.
  per_image = {name: np.concatenate([np.asarray(scores[name][:n], np.float64)
                                     for n, scores in batches])
               for name in METRIC_NAMES}
  return MethodResult(per_image, kept)
