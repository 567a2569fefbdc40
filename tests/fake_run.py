"""Stand-in train states (the tiny generator, constant weights) saved as real checkpoints."""

import functools

import grain
import jax
import jax.numpy as jnp
import numpy as np

from configs import tiny
from srrgan_jax import checkpoints
from srrgan_jax import models
from srrgan_jax import parallel
from srrgan_jax import run_dir
from srrgan_jax.train.state import TrainState


@functools.cache
def _generator_shapes():
  return jax.eval_shape(lambda: models.init_generator(tiny.get_config(), jax.random.key(0)))


def small_state(value: float, step: int = 0, with_disc: bool = False) -> TrainState:
  """A train state of the tiny generator: every weight `value`, every EMA weight `value + 100`."""
  filled = lambda v: jax.tree.map(lambda s: jnp.full(s.shape, v), _generator_shapes()['params'])
  state = TrainState(step=jnp.array(step, jnp.int32), params=filled(value),
                     ema_params=filled(value + 100), opt_state={'mu': jnp.zeros(2)},
                     rng=jnp.array([0, 7], jnp.uint32))
  if with_disc:
    state = state.replace(disc_params={'w': jnp.ones(4)}, disc_stats={'u': jnp.ones(4)},
                          disc_opt_state={'mu': jnp.zeros(4)})
  return parallel.put_replicated(state, parallel.make_mesh())


def counting_iterator():
  return iter(grain.MapDataset.range(1000).to_iter_dataset())


def save_steps(workdir, phase, steps_and_losses, *, keep_steps=(), config=None):
  """Saves a checkpoint of `small_state(step)` for each (step, val_loss) into the run."""
  config_dict = run_dir.config_to_dict(config or tiny.get_config())
  manager = checkpoints.make_manager(run_dir.phase_dir(workdir, phase), phase,
                                     async_save=True, keep_steps=keep_steps)
  iterator = counting_iterator()
  for step, val_loss in steps_and_losses:
    checkpoints.save(manager, step, small_state(float(step), step, phase == 3), iterator,
                     {'epoch': step, 'best_step': None}, config_dict, val_loss=val_loss)
  manager.wait_until_finished()  # Async saves must be complete before exit.
  manager.close()


def save_run(workdir):
  """A run directory with checkpoints in all three phases (see the retention rules)."""
  save_steps(workdir, 1, [(3, 0.5), (4, None), (6, 0.3), (7, None), (9, 0.4)])
  save_steps(workdir, 2, [(3, 0.2), (6, 0.25)])
  save_steps(workdir, 3, [(2, None), (3, None), (5, None), (6, None)], keep_steps=(3, 6))
  return workdir


def save_random_generator(workdir, step: int, *, seed: int = 0, ema_scale: float = 1.0):
  """A run with one phase-3 checkpoint of random tiny-generator weights, N(0, 0.2).

  The EMA weights are `ema_scale` times the raw ones. No init compile: the
  weights are drawn for the shapes from `eval_shape`.
  """
  config = tiny.get_config()
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda s: rng.normal(0, 0.2, s.shape).astype(np.float32),
                        _generator_shapes()['params'])
  ema_params = jax.tree.map(lambda p: p * np.float32(ema_scale), params)
  manager = checkpoints.make_manager(run_dir.phase_dir(workdir, 3), 3, async_save=False)
  checkpoints.save(manager, step, {'params': params, 'ema_params': ema_params}, None, {},
                   run_dir.config_to_dict(config))
  manager.wait_until_finished()
  manager.close()
  return workdir
