"""A population run for the evaluation and inference tests, built from the shared tiny run.

`make` copies the trained tiny run and turns it into a 3-member `gan_weight`
population as population training lays one out: phases 1-2 stay shared
single-model checkpoints, and each phase-3 checkpoint is saved again through
`checkpoints.save` with every train-state leaf stacked along a leading member
axis. Member 0 is the tiny run's state unchanged; members 1 and 2 are it with
multiplicative noise on the float leaves (so they score differently). The
config (config.json and every checkpoint's config item) holds the population
block. This is the one place that builds such a run: a real tiny population
training run can replace it.
"""

import shutil

import jax
import numpy as np

from srrgan_jax import checkpoints
from srrgan_jax import run_dir

GAN_WEIGHTS = (0.01, 0.05, 0.1)
NOISE = 0.05  # Relative size of member k's perturbation, times k.


def _stack(leaf, step: int, count: int):
  leaf = np.asarray(leaf)
  if not np.issubdtype(leaf.dtype, np.floating):
    return np.stack([leaf] * count)
  rng = np.random.default_rng(step)
  return np.stack([leaf * (1 + k * NOISE * rng.standard_normal(leaf.shape)).astype(leaf.dtype)
                   for k in range(count)])


def make(source, target, gan_weights=GAN_WEIGHTS):
  """A copy of the run `source` at `target`, its phase 3 stacked into members; returns target.

  Every checkpoint is saved again, so that its config item holds the population.
  """
  shutil.copytree(source, target)
  config = run_dir.read_config(target)
  config.population.gan_weight = tuple(gan_weights)
  config_dict = run_dir.config_to_dict(config)
  for phase in run_dir.PHASES:
    directory = run_dir.phase_dir(target, phase)
    saved = [(step, metrics, checkpoints.restore_arrays(directory / str(step)),
              checkpoints.read_json(directory / str(step), checkpoints.LOOP))
             for step, metrics in checkpoints.finished_steps(directory)]
    if not saved:
      continue
    shutil.rmtree(directory)
    manager = checkpoints.make_manager(directory, phase, async_save=False,
                                       keep_steps=[step for step, *_ in saved])
    for step, metrics, state, loop_state in saved:
      if phase == 3:  # The population's fork phase: gan_weight is a phase-3 loss weight.
        state = jax.tree.map(lambda leaf, s=step: _stack(leaf, s, len(gan_weights)), state)
      checkpoints.save(manager, step, state, None, loop_state, config_dict,
                       val_loss=checkpoints.val_loss(metrics))
    manager.wait_until_finished()
    manager.close()
  run_dir.write_config(target, config)
  return target
