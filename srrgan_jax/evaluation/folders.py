"""Folder scoring: existing SR outputs against the ground truths of the same name."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import ml_collections
import numpy as np

from configs import default
from srrgan_jax import augment
from srrgan_jax import image_io
from srrgan_jax import models
from srrgan_jax import perceptual
from srrgan_jax.evaluation.scoring import METRIC_NAMES
from srrgan_jax.evaluation.scoring import METRIC_TITLES
from srrgan_jax.evaluation.scoring import EvaluationError
from srrgan_jax.evaluation.scoring import Protocol
from srrgan_jax.evaluation.scoring import Scorer
from srrgan_jax.evaluation.scoring import require_single_host


def _match_key(path: Path, root: Path) -> str:
  return str(path.relative_to(root).with_suffix(''))


def score_folders(sr_dir, hr_dir, *, config: Optional[ml_collections.ConfigDict] = None,
                  crop_size: int = 0, y_channel: bool = False, crop_border: int = -1,
                  log: Callable[[str], None] = print) -> dict:
  """PSNR, SSIM, MAE, LPIPS of each SR image vs the HR image of the same name.

  Files are matched by their path relative to the folder without the suffix (so
  `x.png` matches `x.jpg`); crop_size 0 scores full images, crop_border -1 means
  config.scale.
  """
  require_single_host()
  config = config or default.get_config()
  sr_dir, hr_dir = Path(sr_dir), Path(hr_dir)
  images = {}
  for role, folder in (('SR', sr_dir), ('HR', hr_dir)):
    try:
      images[role] = {_match_key(p, folder): p for p in image_io.list_images(folder)}
    except FileNotFoundError as e:
      raise EvaluationError(f'{e} Pass --{role.lower()}_dir pointing at the {role} '
                            'images.') from e
  pairs = sorted(set(images['SR']) & set(images['HR']))
  if not pairs:
    raise EvaluationError(
        f'no file names in common between {sr_dir} and {hr_dir} (e.g. SR '
        f'{sorted(images["SR"])[:3]} vs HR {sorted(images["HR"])[:3]}); SR outputs '
        'must be named like their ground truth (suffix may differ).')
  unmatched_hr = sorted(set(images['HR']) - set(images['SR']))
  if unmatched_hr:
    log(f'warning: {len(unmatched_hr)} HR images have no SR output and are not '
        f'scored: {", ".join(unmatched_hr[:5])}{" ..." if len(unmatched_hr) > 5 else ""}')
  for key in pairs:  # From the headers, before the LPIPS weights are loaded.
    sr_path, hr_path = images['SR'][key], images['HR'][key]
    sr_size, hr_size = image_io.image_size(sr_path), image_io.image_size(hr_path)
    if sr_size != hr_size:
      raise EvaluationError(
          f'{sr_path} is {sr_size[0]}x{sr_size[1]} but its ground truth {hr_path} '
          f'is {hr_size[0]}x{hr_size[1]}; SR outputs must have the size of their '
          'ground truth (crop or re-run the upscaler).')
  protocol = Protocol(crop_size=crop_size, y_channel=y_channel,
                      crop_border=config.scale if crop_border < 0 else crop_border)
  lpips_params = perceptual.load_lpips_params(config)
  scorer = Scorer(lpips_params, protocol)
  per_image = {}
  for key in pairs:
    sr_path, hr_path = images['SR'][key], images['HR'][key]
    sr, hr = image_io.read_rgb(sr_path), image_io.read_rgb(hr_path)
    if crop_size:
      try:
        sr = augment.center_crop(sr, crop_size, name=str(sr_path))
        hr = augment.center_crop(hr, crop_size, name=str(hr_path))
      except ValueError as e:
        raise EvaluationError(f'{e} (--crop_size; 0 scores full images)') from e
    scores = scorer(models.from_unit(sr[None]), models.from_unit(hr[None]))
    per_image[key] = {m: float(scores[m][0]) for m in METRIC_NAMES}
  means = {m: float(np.mean([s[m] for s in per_image.values()])) for m in METRIC_NAMES}
  lines = protocol.describe()
  lines = [line for line in lines if not line.startswith(('Bilinear', 'Generator'))]
  lines[0] = ('Images: full images as given.' if not crop_size else
              f'Images: {crop_size}x{crop_size} centre crops of SR and HR.')
  return {'sr_dir': str(sr_dir), 'hr_dir': str(hr_dir), 'num_images': len(pairs),
          'protocol': {'crop_size': crop_size, 'y_channel': y_channel,
                       'crop_border': protocol.crop_border},
          'protocol_text': lines, 'mean': means, 'per_image': per_image,
          'unmatched_hr': unmatched_hr}


def format_folder_scores(scores: dict) -> str:
  """Per-image and mean scores as a console table."""
  width = max([len('mean')] + [len(k) for k in scores['per_image']]) + 2
  header = f'{"image":{width}}' + ''.join(f'{METRIC_TITLES[m]:>11}' for m in METRIC_NAMES)
  lines = [header]
  for key, values in scores['per_image'].items():
    lines.append(f'{key:{width}}' + ''.join(f'{values[m]:11.4f}' for m in METRIC_NAMES))
  lines.append(f'{"mean":{width}}' + ''.join(
      f'{scores["mean"][m]:11.4f}' for m in METRIC_NAMES))
  return '\n'.join(lines + [''] + scores['protocol_text'])
