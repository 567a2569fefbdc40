"""Validation during training: the fixed patches, their metrics, the bilinear baseline."""

from __future__ import annotations

from typing import Callable, Optional

import jax
import numpy as np

from srrgan_jax import eval_sets
from srrgan_jax import metrics
from srrgan_jax import models
from srrgan_jax import parallel
from srrgan_jax.train import steps


class ValidationSet:
  """The fixed validation patches, pre-split into global batches."""

  def __init__(self, eval_set: dict, batch_size: int, num_samples: int, mesh):
    self.names = list(eval_set['names'])
    self.lr, self.hr = eval_set['lr'], eval_set['hr']
    self.batches = []
    rows = parallel.process_rows(batch_size)
    for batch in eval_sets.eval_batches(eval_set, batch_size):
      local = {k: v[rows] for k, v in batch.items()}
      self.batches.append(parallel.global_batch(local, mesh))
    # The first patches appear in sample grids.
    self.num_samples = min(num_samples, len(self.names))

  def __len__(self):
    return len(self.names)


def validate(eval_step: Callable, params, val_set: ValidationSet, config,
             phase: int) -> tuple[dict[str, float], Optional[np.ndarray]]:
  """Mean validation metrics of `params` (+ 'loss'), and SR of the sample patches."""
  totals, sample_sr = None, None
  for i, batch in enumerate(val_set.batches):
    sums, sr = eval_step(params, batch)
    totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    if i == 0 and val_set.num_samples:
      sample_sr = parallel.gather_rows(sr)[:val_set.num_samples]
  totals = parallel.to_host(totals)
  count = float(totals.pop('count'))
  means = {k: float(v) / count for k, v in totals.items()}
  means['loss'] = float(steps.validation_loss(config, phase, means['pixel'],
                                              means.get('perceptual')))
  return means, sample_sr


def bilinear_baseline(val_set: ValidationSet, scale: int) -> dict[str, float]:
  """PSNR/SSIM of bilinear upsampling of the degraded validation inputs."""
  lr = np.asarray(val_set.lr, np.float32)
  hr = np.asarray(val_set.hr, np.float32)
  up = jax.image.resize(lr, (lr.shape[0], lr.shape[1] * scale, lr.shape[2] * scale, 3),
                        'bilinear')
  up, hr = models.to_unit(up), models.to_unit(hr)
  return {'psnr': float(np.mean(metrics.psnr(up, hr))),
          'ssim': float(np.mean(metrics.ssim(up, hr)))}
