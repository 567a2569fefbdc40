"""Running upscalers over a test set, and the LPIPS ranking of the phase-3 checkpoints.

Every phase-3 checkpoint's generator (of a population run: every member of
every checkpoint) is scored by mean LPIPS on the test set; the lowest wins and
becomes the run's selected model. One generator program is compiled per run
and reused for every checkpoint (the parameters are an argument of the
program); checkpoints are loaded one at a time (of a population: one member at
a time, read from the checkpoint of all members) and dropped after scoring.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from srrgan_jax import models
from srrgan_jax import population
from srrgan_jax import run_dir
from srrgan_jax import tiling
from srrgan_jax.evaluation.scoring import MethodResult
from srrgan_jax.evaluation.scoring import Protocol
from srrgan_jax.evaluation.scoring import Scorer
from srrgan_jax.evaluation.scoring import TestSet
from srrgan_jax.evaluation.scoring import evaluate_method


def resize_upscaler(method: str, scale: int) -> Callable:
  """Bilinear/bicubic upsampling of LR batches in [-1, 1] (the classic baselines)."""

  @jax.jit
  def upscale(lr_BHWC):
    b, h, w, c = lr_BHWC.shape
    return jnp.clip(jax.image.resize(lr_BHWC, (b, h * scale, w * scale, c), method),
                    -1.0, 1.0)

  return upscale


class GeneratorRunner:
  """The run's generator, compiled once; the parameters of each checkpoint are passed in."""

  def __init__(self, config: ml_collections.ConfigDict, protocol: Protocol):
    self.config = config
    self.protocol = protocol
    self.forward = models.GeneratorForward(config)

  def load(self, workdir, phase: int, step: int, member: Optional[int] = None):
    """Generator params of one checkpoint (of a population's `member`), checked against the run."""
    remedy = (f'It does not belong to this run ("config" = {workdir}/'
              f'{run_dir.CONFIG_FILE}): move it out of the run directory, or '
              'evaluate it with the run directory it was trained in.')
    _, params = run_dir.load_generator(
        workdir, phase=phase, step=step, use_ema=self.protocol.use_ema, config=self.config,
        remedy=remedy, member=member)
    return params

  def upscaler(self, params) -> Callable:
    """lr_BHWC -> sr_BHWC for these weights (tiled per image for full images)."""
    forward = self.forward.bind(params)
    if not self.protocol.full_images:
      return forward
    p = self.protocol

    def upscale_full(lr_BHWC):
      outputs = [
          tiling.upscale_tiled(forward, np.asarray(lr), scale=self.config.scale,
                               tile=p.tile, overlap=p.overlap, batch_size=p.tile_batch_size)
          for lr in lr_BHWC
      ]
      return np.stack([np.asarray(o, np.float32) for o in outputs])

    return upscale_full


@dataclasses.dataclass(frozen=True)
class RankedCheckpoint:
  """A phase-3 checkpoint's scores; rank 1 has the lowest mean LPIPS.

  Only the winner keeps its SR outputs (for the figures); the others' are
  dropped as soon as they lose, so memory holds one checkpoint's outputs.
  """
  rank: int
  step: int
  path: str
  result: MethodResult
  phase: int = 3
  member: Optional[int] = None  # Of a population run: the member's index.

  @property
  def means(self) -> dict[str, float]:
    return self.result.means

  def summary(self) -> dict:
    """Phase, step, path, (member,) the four mean metrics and the rank, as JSON data."""
    member = {} if self.member is None else {'member': self.member}
    return dict(phase=self.phase, step=self.step, path=self.path, **member, **self.means,
                rank=self.rank)


def _ranking_key(entry: RankedCheckpoint) -> tuple[float, int, int]:
  return entry.means['lpips'], entry.step, -1 if entry.member is None else entry.member


def lpips_rank_checkpoints(workdir, test_set: TestSet, runner: GeneratorRunner,
                           scorer: Scorer, *, batch_size: int,
                           keep: Sequence[int] = (),
                           members: Sequence[population.Member] = (),
                           log: Callable[[str], None] = print) -> list[RankedCheckpoint]:
  """Scores every phase-3 checkpoint (of each of `members`); returns them by mean LPIPS.

  Best first. The winner (with `members`: each member's best) keeps its SR
  outputs of the test images listed in `keep`.
  """
  found = run_dir.list_checkpoints(workdir, 3)
  candidates = [(step, path, m) for step, path in found for m in members or [None]]
  scored, best = [], {}
  for number, (step, path, member) in enumerate(candidates, start=1):
    index = None if member is None else member.index
    params = runner.load(workdir, 3, step, index)
    result = evaluate_method(runner.upscaler(params), test_set, scorer,
                             batch_size=batch_size, keep=keep)
    del params  # Stream: only one checkpoint's weights alive at a time.
    entry = RankedCheckpoint(0, int(step), str(path), result, member=index)
    if index not in best or _ranking_key(entry) < _ranking_key(best[index]):
      if index in best:
        best[index].result.kept_outputs.clear()
      best[index] = entry
    else:
      result.kept_outputs.clear()
    scored.append(entry)
    means = result.means
    name = '' if member is None else f' member {index} ({member.name})'
    log(f'  [{number}/{len(candidates)}] phase 3 step {step}{name}: LPIPS '
        f'{means["lpips"]:.4f}  PSNR {means["psnr"]:.3f}  SSIM {means["ssim"]:.4f}')
  scored.sort(key=_ranking_key)
  return [dataclasses.replace(entry, rank=rank) for rank, entry in enumerate(scored, 1)]


def non_dominated(entries: Sequence[RankedCheckpoint]) -> list[RankedCheckpoint]:
  """The perception-distortion frontier, by LPIPS ascending.

  An entry is dominated if another has lower-or-equal LPIPS and higher-or-equal
  PSNR, one of them strictly.
  """
  frontier = []
  for entry in sorted(entries, key=lambda e: (e.means['lpips'], -e.means['psnr'])):
    if not frontier or entry.means['psnr'] > frontier[-1].means['psnr']:
      frontier.append(entry)
  return frontier

