"""The train state pytree of a phase, built under `eval_shape`, placed, then initialised.

One `TrainState` class serves all phases; the discriminator fields are `None` in
phases 1-2 (pytree nodes without leaves), so a phase-1/2 state holds exactly the
generator, its EMA and optimizer state, the step and the phase's root key.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from srrgan_jax import models
from srrgan_jax import parallel
from srrgan_jax.train import optim
from srrgan_jax.train import programs


@flax.struct.dataclass
class TrainState:
  """Everything a training step reads and writes (donated to each step)."""
  step: jax.Array  # int32 scalar: optimizer steps taken in this phase.
  params: Any  # Generator parameters.
  ema_params: Any  # Exponential moving average of `params` (eval/inference).
  opt_state: Any  # Generator optimizer state.
  rng: jax.Array  # uint32[2] root key of the phase; per-step keys fold in `step`.
  disc_params: Optional[Any] = None  # Phase 3: discriminator parameters.
  disc_stats: Optional[Any] = None  # Phase 3: spectral-norm state ('batch_stats').
  disc_opt_state: Optional[Any] = None  # Phase 3: discriminator optimizer state.


class PhaseOptimizers(flax.struct.PyTreeNode):
  """The optax transformations of one phase (static, not part of the state)."""
  gen: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  disc: Optional[optax.GradientTransformation] = flax.struct.field(
      pytree_node=False, default=None)
  gen_schedule: Optional[Callable] = flax.struct.field(pytree_node=False, default=None)
  disc_schedule: Optional[Callable] = flax.struct.field(pytree_node=False, default=None)


def make_optimizers(config: ml_collections.ConfigDict, phase: int,
                    total_steps: int) -> PhaseOptimizers:
  """Optimizers of `phase`; `total_steps` spans phase 3's cosine decay."""
  if phase in (1, 2):
    p = config[f'phase{phase}']
    return PhaseOptimizers(
        gen=optim.plateau_optimizer(p.learning_rate, p.weight_decay, config.adam_eps))
  if phase == 3:
    p3 = config.phase3
    adam = dict(b1=p3.b1, eps=config.adam_eps, clip_norm=p3.clip_norm,
                clip_mode=p3.clip_mode)
    return PhaseOptimizers(
        gen=optim.adversarial_optimizer(p3.g_learning_rate, total_steps, **adam),
        disc=optim.adversarial_optimizer(p3.d_learning_rate, total_steps, **adam),
        gen_schedule=optim.cosine_schedule(p3.g_learning_rate, total_steps),
        disc_schedule=optim.cosine_schedule(p3.d_learning_rate, total_steps))
  raise ValueError(f'phase {phase} does not exist; config.phases takes 1, 2 and 3.')


def phase_key(config: ml_collections.ConfigDict, phase: int) -> jax.Array:
  """The root key of a phase, derived from `config.seed` (uint32[2])."""
  return jax.random.fold_in(jax.random.PRNGKey(config.seed), phase)


def _build_state(config, phase, optimizers, gen_params, key):
  """Traceable state constructor; `gen_params=None` initialises a new generator."""
  init_key, disc_key = jax.random.split(jax.random.fold_in(key, 0x5EED))
  if gen_params is None:
    gen_params = models.init_generator(config, init_key)['params']
  state = TrainState(
      step=jnp.zeros((), jnp.int32), params=gen_params,
      ema_params=jax.tree.map(jnp.copy, gen_params),
      opt_state=optimizers.gen.init(gen_params), rng=key)
  if phase == 3:
    disc_vars = models.init_discriminator(config, disc_key)
    state = state.replace(
        disc_params=disc_vars['params'], disc_stats=disc_vars['batch_stats'],
        disc_opt_state=optimizers.disc.init(disc_vars['params']))
  return state


def abstract_state(config, phase, optimizers) -> TrainState:
  """Shapes and dtypes of a phase's state, without computing anything."""
  return jax.eval_shape(
      lambda k: _build_state(config, phase, optimizers, None, k),
      jax.ShapeDtypeStruct((2,), jnp.uint32))


def state_shardings(abstract: TrainState, mesh) -> TrainState:
  """Every state leaf is replicated over the mesh (data parallelism)."""
  return jax.tree.map(lambda _: parallel.replicated(mesh), abstract)


def create_state(config: ml_collections.ConfigDict, phase: int, total_steps: int, mesh,
                 gen_params=None) -> TrainState:
  """A fresh state for `phase`, replicated over `mesh`.

  `gen_params` (the previous phase's best generator) starts the generator and its
  EMA; without it the generator is initialised from `config.seed`. Phase 3 always
  gets a fresh discriminator. `total_steps` is the phase's length (phase 3 decay).
  """
  with_params = gen_params is not None

  def build():
    optimizers = make_optimizers(config, phase, total_steps)
    shardings = state_shardings(abstract_state(config, phase, optimizers), mesh)
    replicated = parallel.replicated(mesh)
    if with_params:
      return jax.jit(lambda p, k: _build_state(config, phase, optimizers, p, k),
                     in_shardings=(replicated, replicated), out_shardings=shardings)
    return jax.jit(lambda k: _build_state(config, phase, optimizers, None, k),
                   in_shardings=replicated, out_shardings=shardings)

  init = programs.cached_program(('init', programs.traced_config_key(config), phase,
                                  total_steps, programs.mesh_key(mesh), with_params), build)
  key = parallel.put_replicated(phase_key(config, phase), mesh)
  if with_params:
    return init(parallel.put_replicated(gen_params, mesh), key)
  return init(key)


def eval_params(state: TrainState, use_ema: bool):
  """The generator parameters used for validation, samples and selection."""
  return state.ema_params if use_ema else state.params
