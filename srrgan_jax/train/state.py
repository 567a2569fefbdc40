"""The train state pytree of a phase, built under `eval_shape`, placed, then initialised.

One `TrainState` class serves all phases; the discriminator fields are `None` in
phases 1-2 (pytree nodes without leaves), so a phase-1/2 state holds exactly the
generator, its EMA and optimizer state, the step and the phase's root key.
A population's state is the same pytree with a leading member axis on every
leaf, split over the mesh's 'member' axis.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from configs import fields
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


def hyperparams(config: ml_collections.ConfigDict) -> dict[str, np.float32]:
  """{field: value} of the config fields a train step takes as values (float32).

  These are `fields.HYPERPARAMETERS`: loss weights and phase-3 peak learning
  rates. Passed to the step rather than baked into it, they can change (or
  differ between the members of a population) without recompiling.
  """
  values = {}
  for name in fields.HYPERPARAMETERS:
    block, field = name.split('.')
    values[name] = np.float32(config[block][field])
  return values


def make_optimizers(config: ml_collections.ConfigDict, phase: int, total_steps: int,
                    hyper: Optional[Mapping[str, Any]] = None) -> PhaseOptimizers:
  """Optimizers of `phase`; `total_steps` spans phase 3's cosine decay.

  Phase 3's peak learning rates come from `hyper` (see `hyperparams`; traced
  values inside a step), else from the config. They only enter the updates:
  the optimizer states do not depend on them.
  """
  if phase in (1, 2):
    p = config[f'phase{phase}']
    return PhaseOptimizers(
        gen=optim.plateau_optimizer(p.learning_rate, p.weight_decay, config.adam_eps))
  if phase == 3:
    p3 = config.phase3
    hyper = hyperparams(config) if hyper is None else hyper
    g_peak, d_peak = hyper['phase3.g_learning_rate'], hyper['phase3.d_learning_rate']
    adam = dict(b1=p3.b1, eps=config.adam_eps, clip_norm=p3.clip_norm,
                clip_mode=p3.clip_mode)
    return PhaseOptimizers(
        gen=optim.adversarial_optimizer(g_peak, total_steps, **adam),
        disc=optim.adversarial_optimizer(d_peak, total_steps, **adam),
        gen_schedule=optim.cosine_schedule(g_peak, total_steps),
        disc_schedule=optim.cosine_schedule(d_peak, total_steps))
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


def abstract_population(config, phase, optimizers, size: int) -> TrainState:
  """`abstract_state` with a leading member axis of `size` on every leaf."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct((size,) + a.shape, a.dtype),
                      abstract_state(config, phase, optimizers))


def population_shardings(abstract: TrainState, mesh) -> TrainState:
  """Every leaf of a population state is split over 'member' along its first axis."""
  return jax.tree.map(lambda _: parallel.member_sharding(mesh), abstract)


def create_population(config: ml_collections.ConfigDict, phase: int, total_steps: int,
                      mesh, size: int, gen_params=None) -> TrainState:
  """A fresh population state of `size` members (see `create_state`).

  Every member starts as the single run would: the same generator (or, with
  `gen_params` stacked along a leading member axis, each its own), the same
  discriminator, optimizer states and phase key.
  """
  with_params = gen_params is not None

  def build():
    optimizers = make_optimizers(config, phase, total_steps)
    shardings = population_shardings(
        abstract_population(config, phase, optimizers, size), mesh)

    def init(params, key):
      if params is None:
        single = _build_state(config, phase, optimizers, None, key)
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (size,) + x.shape), single)
      return jax.vmap(lambda p: _build_state(config, phase, optimizers, p, key))(params)

    if with_params:
      return jax.jit(init, in_shardings=(parallel.member_sharding(mesh),
                                         parallel.replicated(mesh)),
                     out_shardings=shardings)
    return jax.jit(lambda k: init(None, k), in_shardings=parallel.replicated(mesh),
                   out_shardings=shardings)

  init = programs.cached_program(('init_population', programs.traced_config_key(config),
                                  phase, total_steps, size, programs.mesh_key(mesh),
                                  with_params), build)
  key = parallel.put_replicated(phase_key(config, phase), mesh)
  if with_params:
    return init(parallel.put_members(gen_params, mesh), key)
  return init(key)


def member_state(state: TrainState, member: int) -> TrainState:
  """Member `member`'s state of a population state (numpy or device arrays)."""
  return jax.tree.map(lambda x: x[member], state)


def eval_params(state: TrainState, use_ema: bool):
  """The generator parameters used for validation, samples and selection."""
  return state.ema_params if use_ema else state.params
