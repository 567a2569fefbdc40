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
  totals, sample_sr = _totals(eval_step, params, val_set)
  return _means(totals, config, phase), sample_sr


def validate_population(eval_step: Callable, params, val_set: ValidationSet,
                        member_configs, phase: int
                        ) -> tuple[list[dict[str, float]], Optional[np.ndarray]]:
  """`validate` of every member (params and `eval_step` with a leading member axis).

  Each member's 'loss' weighs its terms with its own config's weights. The
  sample SR has the member axis first.
  """
  totals, sample_sr = _totals(eval_step, params, val_set)
  return [_means(jax.tree.map(lambda v, k=k: v[k], totals), member_config, phase)
          for k, member_config in enumerate(member_configs)], sample_sr


def _totals(eval_step: Callable, params, val_set: ValidationSet):
  """(host sums of the validation metrics over all batches, SR of the sample patches)."""
  totals, sample_sr = None, None
  for i, batch in enumerate(val_set.batches):
    sums, sr = eval_step(params, batch)
    totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    if i == 0 and val_set.num_samples:
      sample_sr = parallel.gather_rows(sr)[..., :val_set.num_samples, :, :, :]
  return parallel.to_host(totals), sample_sr


def _means(totals, config, phase: int) -> dict[str, float]:
  totals = dict(totals)
  count = float(totals.pop('count'))
  means = {k: float(v) / count for k, v in totals.items()}
  means['loss'] = float(steps.validation_loss(config, phase, means['pixel'],
                                              means.get('perceptual')))
  return means


def bilinear_baseline(val_set: ValidationSet, scale: int) -> dict[str, float]:
  """PSNR/SSIM of bilinear upsampling of the degraded validation inputs."""
  lr = np.asarray(val_set.lr, np.float32)
  hr = np.asarray(val_set.hr, np.float32)
  up = jax.image.resize(lr, (lr.shape[0], lr.shape[1] * scale, lr.shape[2] * scale, 3),
                        'bilinear')
  up, hr = models.to_unit(up), models.to_unit(hr)
  return {'psnr': float(np.mean(metrics.psnr(up, hr))),
          'ssim': float(np.mean(metrics.ssim(up, hr)))}
