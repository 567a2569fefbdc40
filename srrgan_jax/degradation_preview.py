"""Degradation previews: N training degradations of one image, with what was drawn.

`write_preview` writes, for each degradation model, the LR images exactly as
training makes them from an HR patch, a JSON sidecar of the drawn parameters
per image, one text line per image and a grid (HR target, then each LR enlarged
to the HR size with nearest-neighbour so its pixels stay visible). Sample i
draws from `np.random.default_rng([seed, i])`, so a preview can be made again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from srrgan_jax import degradation_realesrgan
from srrgan_jax import errors
from srrgan_jax import files
from srrgan_jax import image_io
from srrgan_jax import training_degradation

_GAP = 4  # Pixels of white between grid tiles.


class PreviewError(errors.UserError):
  """The image or the crop cannot make a preview."""


def describe(params: dict[str, Any]) -> str:
  """One line summarising the drawn parameters of either model."""
  if params.get('model') == 'realesrgan':
    return degradation_realesrgan.describe(params)
  return ', '.join(f'{key} {value:.3g}' if isinstance(value, float) else f'{key} {value}'
                   for key, value in params.items() if value is not None)


def _hr_patch(image_path, crop: int, scale: int) -> np.ndarray:
  hr = image_io.read_rgb(image_path)  # Raises ImageReadError naming the file.
  height, width = hr.shape[:2]
  if crop:
    if height < crop or width < crop:
      raise PreviewError(f'{image_path}: {width}x{height} pixels is smaller than the '
                         f'{crop}x{crop} crop; lower --crop or use --crop=0 (whole image).')
    top, left = (height - crop) // 2, (width - crop) // 2
    hr = hr[top:top + crop, left:left + crop]
  # A multiple of the scale, so each enlarged LR lines up with the HR in the grid.
  height, width = hr.shape[0] // scale * scale, hr.shape[1] // scale * scale
  if not height or not width:
    raise PreviewError(f'{image_path}: {hr.shape[1]}x{hr.shape[0]} pixels is smaller '
                       f'than the scale {scale}.')
  return np.ascontiguousarray(hr[:height, :width])


def _grid(rows: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
  height, width = rows[0][0].shape[:2]
  columns = max(len(row) for row in rows)
  grid = np.ones((len(rows) * (height + _GAP) - _GAP,
                  columns * (width + _GAP) - _GAP, 3), np.float32)
  for r, row in enumerate(rows):
    for c, tile in enumerate(row):
      top, left = r * (height + _GAP), c * (width + _GAP)
      grid[top:top + height, left:left + width] = tile
  return grid


def write_preview(image_path, out_dir, config, *, models: Sequence[str],
                  num_samples: int, crop: int, seed: int) -> dict[str, Path]:
  """Writes the preview of `image_path` into `out_dir`; returns the main files.

  `crop` is the HR centre crop (0: the whole image); `config` supplies the
  scale and `config.degradation`.
  """
  if num_samples < 1:
    raise PreviewError(f'--num={num_samples}: make at least one sample.')
  scale = int(config.scale)
  hr = _hr_patch(image_path, crop, scale)
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  rows, lines, target = [], [], hr
  for model in models:
    cfg = training_degradation.plain_config(config.degradation, model=model)
    row = []
    for index in range(num_samples):
      target, lr, params = training_degradation.degrade_training(
          hr, np.random.default_rng([seed, index]), cfg, scale)
      stem = out_dir / model / f'sample_{index:03d}'
      image_io.write_image(stem.with_suffix('.png'), lr)
      files.write_atomic(stem.with_suffix('.json'), json.dumps(params, indent=1) + '\n')
      lines.append(f'{model}/sample_{index:03d}.png: {describe(params)}')
      row.append(cv2.resize(lr, (hr.shape[1], hr.shape[0]),
                            interpolation=cv2.INTER_NEAREST))
    rows.append([target] + row)
  outputs = {'hr': out_dir / 'hr.png', 'grid': out_dir / 'grid.png',
             'params': out_dir / 'params.txt'}
  image_io.write_image(outputs['hr'], target)
  image_io.write_image(outputs['grid'], _grid(rows))
  files.write_atomic(outputs['params'], '\n'.join(lines) + '\n')
  return outputs
