"""Evaluation sets: fixed HR crops of a folder and their deterministic LR inputs.

Every image of a folder is centre-cropped (or kept whole, cut to a multiple of
the scale) and degraded with the deterministic degradation, seeded per file name
(`eval_image_seed`), so every run and every machine sees the same LR images.
Validation during training, the evaluation command and `infer.py --degrade` all
build their inputs here.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import zlib
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from srrgan_jax import augment
from srrgan_jax import degradation
from srrgan_jax import errors
from srrgan_jax import image_io
from srrgan_jax import models


class EvalCropError(ValueError, errors.UserError):
  """An evaluation crop size that the scale or the generator cannot take."""


def eval_image_seed(name: str, cfg) -> int:
  """Noise seed of an evaluation image: eval_noise_seed * 2**32 + crc32(file name)."""
  return int(cfg.eval_noise_seed) * 2**32 + zlib.crc32(Path(name).name.encode('utf-8'))


def eval_pair(path, config, crop: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
  """(HR, deterministic LR) of one evaluation image, float32 in [-1, 1].

  crop: centre crop size, or None for the whole image cropped to a multiple of
  the scale. Undecodable or too-small images raise, naming the file.
  """
  path = Path(path)
  hr = image_io.read_rgb(path)  # Raises ImageReadError naming the file.
  scale = config.scale
  if crop is not None:
    if crop % scale:
      raise EvalCropError(f'Evaluation crop {crop} is not divisible by scale={scale}.')
    hr = augment.center_crop(hr, crop, name=str(path))
  else:
    hr = hr[:hr.shape[0] - hr.shape[0] % scale, :hr.shape[1] - hr.shape[1] % scale]
  lr = degradation.degrade_deterministic(hr, eval_image_seed(path.name, config.degradation),
                                         config.degradation, scale)
  return models.from_unit(hr), models.from_unit(lr)


def eval_paths(folder, max_images: int = 0) -> list[Path]:
  """The sorted images of an evaluation folder (all, or the first `max_images`)."""
  paths = image_io.list_images(folder)  # Raises naming a missing/empty folder.
  return paths[:max_images] if max_images else paths


def eval_crop_size(config, crop: int = 0) -> int:
  """The HR centre crop to score: `crop`, else data.val_crop_size, else the patch size.

  Raises EvalCropError (a ValueError) unless its LR side fits the generator (a
  multiple of scale x 2**stride-2 stages).
  """
  if crop:
    crop, source = int(crop), 'crop size'
  elif config.data.val_crop_size:
    crop, source = int(config.data.val_crop_size), 'data.val_crop_size'
  else:
    crop, source = int(config.data.patch_size), 'data.patch_size'
  size_multiple = models.build_generator(config).size_multiple
  multiple = config.scale * size_multiple
  if crop % multiple:
    raise EvalCropError(
        f'{source} {crop} is not a multiple of {multiple} (scale {config.scale} x the '
        f'generator\'s {size_multiple} size multiple); choose '
        f'a multiple, e.g. {max(multiple, crop // multiple * multiple)}, or use full images.')
  return crop


def load_eval_set(folder, config, *, crop: Optional[int] | str = 'config',
                  max_images: int = 0, skip_unreadable: bool = False) -> dict[str, Any]:
  """Every image of `folder` with its deterministic LR, both in [-1, 1].

  crop: 'config' (default) = `eval_crop_size(config)`; an int = that centre crop;
  None = whole images (lists, not stacked; for large sets loop over `eval_paths`
  with `eval_pair` instead of holding all in memory). Returns {'lr', 'hr',
  'names'} with names relative to `folder`. An image that does not decode
  raises ImageReadError naming it, or with `skip_unreadable` is logged and left
  out (raising only if none is left).
  """
  if crop == 'config':
    crop = eval_crop_size(config)
  paths = eval_paths(folder, max_images)

  def load(path):
    try:
      return eval_pair(path, config, crop)
    except image_io.ImageReadError as e:
      if not skip_unreadable:
        raise
      logging.warning('Skipping evaluation image: %s', e)
      return None

  with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
    loaded = list(pool.map(load, paths))
  paths = [path for path, pair in zip(paths, loaded) if pair is not None]
  pairs = [pair for pair in loaded if pair is not None]
  if not pairs:
    raise image_io.MissingImagesError(f'{folder}: none of its images decodes (see the '
                                      'warnings above).')
  hr, lr = [pair[0] for pair in pairs], [pair[1] for pair in pairs]
  if crop is not None:
    hr, lr = np.stack(hr), np.stack(lr)
  names = [p.relative_to(folder).as_posix() for p in paths]
  return {'lr': lr, 'hr': hr, 'names': names}


def eval_batches(eval_set: dict[str, Any], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """Fixed-size batches of a stacked eval set; the last is padded, `mask` marks real rows."""
  count = len(eval_set['names'])
  for start in range(0, count, batch_size):
    stop = min(start + batch_size, count)
    take = np.minimum(np.arange(start, start + batch_size), count - 1)
    mask = (np.arange(start, start + batch_size) < stop).astype(np.float32)
    yield {'lr': eval_set['lr'][take], 'hr': eval_set['hr'][take], 'mask': mask}
