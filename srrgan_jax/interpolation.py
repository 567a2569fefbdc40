"""Network interpolation: blending the phase-2 best and the phase-3 generator weights.

  theta(alpha) = (1 - alpha) * theta_phase2_best + alpha * theta_phase3

per parameter. Phase 3 starts from the phase-2 best generator, so the two
weight sets lie close enough for their blend to be a working generator: alpha
moves it from the smooth, distortion-oriented model (0) to the sharp GAN (1),
a perception-distortion dial without retraining (ESRGAN's network
interpolation). alpha=0 gives the phase-2 best and alpha=1 the phase-3 weights
exactly. The phase-3 end is the run's selected model (see `run_dir.resolve`),
the phase-2 end the checkpoint phase 3 started from (`run_dir.best_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any, Optional

import jax
import ml_collections
import numpy as np

from srrgan_jax import errors
from srrgan_jax import population
from srrgan_jax import population_runs
from srrgan_jax import run_dir


class InterpolationError(errors.UserError, ValueError):
  """The interpolation was asked with a bad alpha, or of a run without its two ends."""


def check_alpha(alpha: float, flag: str = '--interpolate') -> float:
  """alpha as a float; InterpolationError naming `flag` unless it is in [0, 1]."""
  try:
    value = float(alpha)
  except (TypeError, ValueError):
    value = math.nan
  if not 0.0 <= value <= 1.0:  # NaN fails too.
    raise InterpolationError(
        f'{flag} {alpha}: must be a number from 0 (the phase-2 best generator) to 1 '
        '(the phase-3 GAN generator).')
  return value


def alphas(steps: int, flag: str = '--interpolation_steps') -> list[float]:
  """`steps` evenly spaced alphas from 0 to 1 (both ends included)."""
  if steps < 2:
    raise InterpolationError(
        f'{flag} {steps}: needs at least 2 points (alpha 0 and 1), or 0 for no '
        'interpolation curve.')
  return [float(a) for a in np.linspace(0.0, 1.0, steps)]


def blend(phase2_params, phase3_params, alpha: float):
  """theta(alpha) of two parameter trees of the same structure, in their own dtype."""
  alpha = check_alpha(alpha)

  def mix(start, end):
    start, end = np.asarray(start), np.asarray(end)
    # In the weights' dtype: 1*x + 0*y == x and 0*x + 1*y == y exactly.
    a, b = start.dtype.type(1.0 - alpha), start.dtype.type(alpha)
    return a * start + b * end.astype(start.dtype)

  return jax.tree.map(mix, phase2_params, phase3_params)


@dataclasses.dataclass(frozen=True)
class Endpoints:
  """Where the two ends of a run's interpolation come from."""
  phase2: tuple[int, pathlib.Path]  # (step, path) of the phase-2 best.
  phase3: tuple[int, pathlib.Path]  # (step, path) of the phase-3 model.

  def as_dict(self) -> dict[str, Any]:
    return {f'phase{p}': {'step': int(step), 'path': str(path)}
            for p, (step, path) in ((2, self.phase2), (3, self.phase3))}


def find_endpoints(workdir, phase3_step: Optional[int] = None) -> Endpoints:
  """The phase-2 best and the selected (or `phase3_step`) phase-3 checkpoint of a run.

  InterpolationError naming the run if either phase has no checkpoint, or its
  population members do not share phase 2.
  """
  workdir = pathlib.Path(workdir)
  config = run_dir.read_config(workdir)  # Also names a missing or foreign directory.
  if population.holds_members(config, 2):
    raise InterpolationError(
        f'{workdir}: each member has its own phase-2 best (the population sweeps '
        'phase2_perceptual_weight); network interpolation of such runs is not '
        'supported: interpolate a run whose members share phase 2.')
  missing = [phase for phase in (2, 3) if not run_dir.list_checkpoints(workdir, phase)]
  if missing:
    raise InterpolationError(
        f'{workdir}: no phase-{" and phase-".join(map(str, missing))} checkpoint; network '
        'interpolation blends the phase-2 best generator with the phase-3 GAN, so the '
        'run must have trained both phases (--config.phases=(1, 2, 3)).')
  phase2 = run_dir.best_checkpoint(workdir, 2)
  phase3_dir = run_dir.resolve(workdir, phase=3, step=phase3_step)
  return Endpoints(phase2, (int(phase3_dir.name), phase3_dir))


def load_interpolated(workdir, alpha: float, *, use_ema: bool = True, member: str = '',
                      remedy: str = run_dir.DEFAULT_REMEDY
                      ) -> tuple[ml_collections.ConfigDict, Any]:
  """(config, theta(alpha)) of a run: its phase-3 model's configuration and blended weights.

  member: of a population run, the member whose phase-3 generator is the end
    (index or field=value; default the selected one). Both ends must fit the
    configuration (one run, one architecture).
  """
  alpha = check_alpha(alpha)
  ends = find_endpoints(workdir)
  config, phase3 = population_runs.load_model(workdir=str(workdir), member=member, phase=3,
                                              use_ema=use_ema, remedy=remedy)
  _, phase2 = run_dir.load_generator(ends.phase2[1], use_ema=use_ema, config=config,
                                     remedy=remedy)
  return config, blend(phase2, phase3, alpha)
