"""Pure training and evaluation steps of the three phases.

Every train step is `(state, batch, key, vgg_params, hyper) -> (state, metrics)`:
`batch` holds 'lr' in [-1, 1] and 'hr' in [-1, 1] or as the loader's uint8
(mapped to [-1, 1] on the devices), `key` is the phase's root key and the step's
own key is `fold_in(key, state.step)`, `hyper` the loss weights and phase-3
peak learning rates as float32 values (`state.hyperparams`).
`compile_train_step` jits a step for a mesh with the state donated, the batch
split over 'data' and parameters replicated; frozen networks (VGG19) and the
hyperparameters are arguments, not baked into the program.

A population step runs the same member step under `jax.vmap` over a leading
member axis of the state and the hyperparameters; the batch, the key (common
random numbers: every member sees the same dropout masks) and the VGG19
features of the HR targets (computed once per step) are shared.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from srrgan_jax import losses
from srrgan_jax import metrics
from srrgan_jax import models
from srrgan_jax import parallel
from srrgan_jax.train import optim
from srrgan_jax.train import programs
from srrgan_jax.train import state as state_lib
from srrgan_jax.train.state import PhaseOptimizers
from srrgan_jax.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def image_quality(sr, hr) -> Metrics:
  """Batch-mean PSNR and SSIM of [-1, 1] images (measured on [0, 1] RGB)."""
  sr, hr = models.to_unit(jax.lax.stop_gradient(sr)), models.to_unit(hr)
  return {'psnr': jnp.mean(metrics.psnr(sr, hr)), 'ssim': jnp.mean(metrics.ssim(sr, hr))}


def ema_update(ema, params, decay):
  """ema <- decay * ema + (1 - decay) * params."""
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def ema_decay_at(config, step):
  """The EMA decay of a step; with `ema_warmup` it is min(decay, (1 + t) / (10 + t)).

  The warm-up (TensorFlow's `ExponentialMovingAverage(num_updates=t)`) stops
  the average from dragging the initial weights along in short phases.
  """
  if not config.ema_warmup:
    return config.ema_decay
  t = step.astype(jnp.float32)
  return jnp.minimum(config.ema_decay, (1.0 + t) / (10.0 + t))


def _perceptual(config, vgg_params, sr, hr):
  return losses.perceptual_loss(vgg_params, sr, hr, tuple(config.loss.perceptual_layers),
                                tuple(config.loss.perceptual_layer_weights))


def _perceptual_to_targets(config, vgg_params, sr, batch):
  """The perceptual loss of `sr` against the batch's precomputed 'hr_features'."""
  return losses.perceptual_loss_to_features(
      vgg_params, sr, batch['hr_features'], tuple(config.loss.perceptual_layers),
      tuple(config.loss.perceptual_layer_weights))


def _apply_generator_update(state: TrainState, tx, grads, config):
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return state.replace(
      step=state.step + 1, params=params, opt_state=opt_state,
      ema_params=ema_update(state.ema_params, params, ema_decay_at(config, state.step)))


def pixel_step(state: TrainState, batch: Batch, key, vgg_params, hyper, *,
               config, optimizers: PhaseOptimizers, perceptual: bool = False):
  """Phases 1-2: loss = MAE (+ phase2_perceptual_weight * VGG perceptual loss)."""
  gen = models.build_generator(config)
  step_key = jax.random.fold_in(key, state.step)

  def loss_fn(params):
    sr = models.generate(gen, params, batch['lr'], dropout_key=step_key)
    pixel = losses.pixel_mae(sr, batch['hr'])
    terms = {'pixel': pixel}
    loss = pixel
    if perceptual:
      terms['perceptual'] = _perceptual_to_targets(config, vgg_params, sr, batch)
      terms['perceptual_weighted'] = (hyper['loss.phase2_perceptual_weight'] *
                                      terms['perceptual'])
      loss = loss + terms['perceptual_weighted']
    return loss, (sr, terms)

  (loss, (sr, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = _apply_generator_update(state, optimizers.gen, grads, config)
  out = {'loss': loss, **terms, **image_quality(sr, batch['hr']),
         'learning_rate': optim.learning_rate(state.opt_state)}
  return new_state, out


def adversarial_step(state: TrainState, batch: Batch, key, vgg_params, hyper, *,
                     config, optimizers: PhaseOptimizers):
  """Phase 3: update D on (real HR, G(LR)), then G on pixel + perceptual + adversarial.

  The generator runs forward once: its output trains D, and the generator
  gradient is pulled back through the same forward pass (`jax.vjp`).
  """
  gen = models.build_generator(config)
  disc = models.build_discriminator(config)
  real_label = config.loss.real_label
  lr_img, hr = batch['lr'], batch['hr']
  step_key = jax.random.fold_in(key, state.step)

  sr, pull_back = jax.vjp(
      lambda p: models.generate(gen, p, lr_img, dropout_key=step_key), state.params)

  # Real and fake interleaved along the batch so each device's rows stay local
  # under data parallelism, and one discriminator call makes one power iteration.
  fake = jax.lax.stop_gradient(sr)
  pairs = jnp.stack([hr, fake], axis=1).reshape((-1,) + hr.shape[1:])

  def disc_loss_fn(disc_params):
    logits, updates = disc.apply(
        {'params': disc_params, 'batch_stats': state.disc_stats}, pairs, train=True,
        mutable=['batch_stats'])
    logits = logits.reshape((hr.shape[0], 2) + logits.shape[1:])
    real_logits, fake_logits = logits[:, 0], logits[:, 1]
    loss = losses.lsgan_discriminator_loss(real_logits, fake_logits, real_label)
    return loss, (updates['batch_stats'], real_logits, fake_logits)

  (d_loss, (disc_stats, real_logits, fake_logits)), d_grads = jax.value_and_grad(
      disc_loss_fn, has_aux=True)(state.disc_params)
  d_updates, disc_opt_state = optimizers.disc.update(
      d_grads, state.disc_opt_state, state.disc_params)
  disc_params = optax.apply_updates(state.disc_params, d_updates)

  def gen_loss_fn(sr):
    pixel = losses.pixel_mae(sr, hr)
    perceptual = _perceptual_to_targets(config, vgg_params, sr, batch)
    # The updated discriminator judges; eval mode leaves its SN state alone.
    gen_logits = disc.apply({'params': disc_params, 'batch_stats': disc_stats}, sr,
                            train=False)
    adversarial = losses.lsgan_generator_loss(gen_logits)
    terms = {
        'pixel': pixel, 'perceptual': perceptual, 'adversarial': adversarial,
        'pixel_weighted': hyper['loss.pixel_weight'] * pixel,
        'perceptual_weighted': hyper['loss.perceptual_weight'] * perceptual,
        'adversarial_weighted': hyper['loss.gan_weight'] * adversarial,
    }
    loss = (terms['pixel_weighted'] + terms['perceptual_weighted'] +
            terms['adversarial_weighted'])
    return loss, terms

  (g_loss, terms), sr_grad = jax.value_and_grad(gen_loss_fn, has_aux=True)(sr)
  (g_grads,) = pull_back(sr_grad)
  new_state = _apply_generator_update(state, optimizers.gen, g_grads, config)
  new_state = new_state.replace(disc_params=disc_params, disc_stats=disc_stats,
                                disc_opt_state=disc_opt_state)
  out = {
      'loss': g_loss, **terms, 'd_loss': d_loss,
      'd_real': jnp.mean(real_logits), 'd_fake': jnp.mean(fake_logits),
      **image_quality(sr, hr),
      'learning_rate': optimizers.gen_schedule(state.step),
      'd_learning_rate': optimizers.disc_schedule(state.step),
  }
  return new_state, out


def hr_to_model_range(hr):
  """An HR batch as uint8 0..255 (the training loader's) or float -> float32 in [-1, 1]."""
  if hr.dtype == jnp.uint8:
    return models.from_unit(hr.astype(jnp.float32) * (1 / 255))
  return hr


def _check_phase(phase: int) -> None:
  if phase not in (1, 2, 3):
    raise ValueError(f'phase {phase} does not exist; config.phases takes 1, 2 and 3.')


def _prepare_batch(config, phase: int, batch: Batch, vgg_params) -> Batch:
  """HR in [-1, 1], plus the VGG19 features of the HR targets in phases 2-3."""
  hr = hr_to_model_range(batch['hr'])
  prepared = {**batch, 'hr': hr}
  if phase > 1:
    prepared['hr_features'] = losses.target_features(
        vgg_params, hr, tuple(config.loss.perceptual_layers))
  return prepared


def _member_step_fn(config: ml_collections.ConfigDict, phase: int,
                    total_steps: int) -> Callable:
  """`(state, prepared batch, key, vgg_params, hyper) -> (state, metrics)` of one run."""
  _check_phase(phase)

  def run(state, batch, key, vgg_params, hyper):
    optimizers = state_lib.make_optimizers(config, phase, total_steps, hyper)
    if phase == 3:
      return adversarial_step(state, batch, key, vgg_params, hyper, config=config,
                              optimizers=optimizers)
    return pixel_step(state, batch, key, vgg_params, hyper, config=config,
                      optimizers=optimizers, perceptual=phase == 2)

  return run


def train_step_fn(config: ml_collections.ConfigDict, phase: int,
                  total_steps: int) -> Callable:
  """The un-jitted step `(state, batch, key, vgg_params, hyper) -> (state, metrics)`."""
  member_step = _member_step_fn(config, phase, total_steps)

  def run(state, batch, key, vgg_params, hyper):
    return member_step(state, _prepare_batch(config, phase, batch, vgg_params), key,
                       vgg_params, hyper)

  return run


def population_step_fn(config: ml_collections.ConfigDict, phase: int,
                       total_steps: int) -> Callable:
  """`(states, batch, key, vgg_params, hypers, active) -> (states, metrics)`.

  `states`, `hypers` and `active` (bool, per member) have a leading member
  axis; so do the metrics. A member that is not active (stopped early) keeps
  its state: its update is computed and discarded, the program stays the same.
  """
  member_step = jax.vmap(_member_step_fn(config, phase, total_steps),
                         in_axes=(0, None, None, None, 0))

  def run(states, batch, key, vgg_params, hypers, active):
    new, out = member_step(states, _prepare_batch(config, phase, batch, vgg_params), key,
                           vgg_params, hypers)

    def keep_stopped(updated, old):
      return jnp.where(active.reshape(active.shape + (1,) * (old.ndim - 1)), updated, old)

    return jax.tree.map(keep_stopped, new, states), out

  return run


def _length_key(phase: int, total_steps: int):
  # Only phase 3's program depends on the phase length (its cosine decay).
  return total_steps if phase == 3 else None


def jit_train_step(config, phase: int, total_steps: int, mesh):
  """The jitted `(state, batch, key, vgg_params, hyper) -> (state, metrics)` of a phase.

  The state is donated; the batch is split over 'data'; everything else is
  replicated. `total_steps` sets phase 3's cosine decay.
  """

  def build():
    optimizers = state_lib.make_optimizers(config, phase, total_steps)
    shardings = state_lib.state_shardings(
        state_lib.abstract_state(config, phase, optimizers), mesh)
    replicated = parallel.replicated(mesh)
    return jax.jit(
        train_step_fn(config, phase, total_steps),
        in_shardings=(shardings, parallel.batch_sharding(mesh), replicated, replicated,
                      replicated),
        out_shardings=(shardings, replicated),
        donate_argnums=0)

  return programs.cached_program(
      ('train', programs.traced_config_key(config), phase,
       _length_key(phase, total_steps), programs.mesh_key(mesh)), build)


def _per_member_group(fn: Callable, mesh, split: tuple[bool, ...], outputs: int
                      ) -> Callable:
  """`fn` run by each device group of the 'member' axis on its own members.

  `split` says which arguments have the member axis first (the others are
  shared); every output has it. With one group `fn` is returned as it is.
  Each group runs the vmapped members it holds (dense convolutions when it
  holds one); XLA's partitioner would otherwise have to split the grouped
  convolutions of the vmapped program along the member axis, which it fails
  to do.
  """
  if mesh.shape[parallel.MEMBER_AXIS] == 1:
    return fn
  by_member = jax.sharding.PartitionSpec(parallel.MEMBER_AXIS)
  shared = jax.sharding.PartitionSpec()
  return jax.shard_map(fn, mesh=mesh, axis_names={parallel.MEMBER_AXIS},
                       in_specs=tuple(by_member if s else shared for s in split),
                       out_specs=(by_member,) * outputs, check_vma=False)


def jit_population_step(config, phase: int, total_steps: int, mesh, size: int):
  """The jitted population step (see `population_step_fn`) of `size` members.

  The states are donated and split over 'member' with the hyperparameters,
  the active flags and the metrics; the batch is split over 'data'.
  """

  def build():
    optimizers = state_lib.make_optimizers(config, phase, total_steps)
    shardings = state_lib.population_shardings(
        state_lib.abstract_population(config, phase, optimizers, size), mesh)
    replicated, members = parallel.replicated(mesh), parallel.member_sharding(mesh)
    step = _per_member_group(population_step_fn(config, phase, total_steps), mesh,
                             (True, False, False, False, True, True), 2)
    return jax.jit(
        step,
        in_shardings=(shardings, parallel.batch_sharding(mesh), replicated, replicated,
                      members, members),
        out_shardings=(shardings, members),
        donate_argnums=0)

  return programs.cached_program(
      ('train_population', programs.traced_config_key(config), phase,
       _length_key(phase, total_steps), size, programs.mesh_key(mesh)), build)


def compile_train_step(config, phase: int, total_steps: int, mesh,
                       vgg_params=None) -> Callable:
  """`(state, batch, key) -> (state, metrics)` with `config`'s hyperparameters, jitted.

  See `jit_train_step`.
  """
  jitted = jit_train_step(config, phase, total_steps, mesh)
  hyper = parallel.put_replicated(state_lib.hyperparams(config), mesh)

  def step(state, batch, key):
    return jitted(state, batch, key, vgg_params, hyper)

  return step


def stack_hyperparams(member_configs) -> dict[str, np.ndarray]:
  """The members' `state.hyperparams`, stacked along a leading member axis."""
  values = [state_lib.hyperparams(c) for c in member_configs]
  return {name: np.stack([v[name] for v in values]) for name in values[0]}


def compile_population_step(config, phase: int, total_steps: int, mesh, member_configs,
                            vgg_params=None) -> Callable:
  """`(states, batch, key, active) -> (states, metrics)` of the members, jitted.

  `member_configs` are the members' single-run configs (their hyperparameters
  are stacked); `active` is a bool numpy array, one per member.
  """
  jitted = jit_population_step(config, phase, total_steps, mesh, len(member_configs))
  hypers = parallel.put_members(stack_hyperparams(member_configs), mesh)

  def step(states, batch, key, active):
    return jitted(states, batch, key, vgg_params, hypers,
                  parallel.put_members(np.asarray(active, bool), mesh))

  return step


def validation_loss(config, phase: int, pixel, perceptual):
  """The quantity phases 1-2 monitor for plateau, early stopping and "best"."""
  if phase == 1 or perceptual is None:
    return pixel
  if phase == 2:
    return pixel + config.loss.phase2_perceptual_weight * perceptual
  return config.loss.pixel_weight * pixel + config.loss.perceptual_weight * perceptual


def eval_sums(params, batch: Batch, vgg_params=None, *, config):
  """(sums over the valid rows (mask == 1) of per-image validation metrics, SR batch)."""
  gen = models.build_generator(config)
  sr = models.generate(gen, params, batch['lr'])
  hr, mask = batch['hr'], batch['mask']
  sr01, hr01 = models.to_unit(sr), models.to_unit(hr)
  per_image = {
      'pixel': metrics.mae(sr, hr),
      'psnr': metrics.psnr(sr01, hr01),
      'ssim': metrics.ssim(sr01, hr01),
  }
  if vgg_params is not None:
    per_image['perceptual'] = jax.vmap(
        lambda a, b: _perceptual(config, vgg_params, a[None], b[None]))(sr, hr)
  sums = {k: jnp.sum(v * mask) for k, v in per_image.items()}
  sums['count'] = jnp.sum(mask)
  return sums, sr


def compile_eval_step(config, mesh, vgg_params=None) -> Callable:
  """Jitted `(params, batch) -> (sums, sr)` (see `eval_sums`), batch split over 'data'."""

  def build():
    replicated = parallel.replicated(mesh)
    return jax.jit(functools.partial(eval_sums, config=config),
                   in_shardings=(replicated, parallel.batch_sharding(mesh), replicated),
                   out_shardings=(replicated, parallel.batch_sharding(mesh)))

  jitted = programs.cached_program(
      ('eval', programs.traced_config_key(config), programs.mesh_key(mesh),
       vgg_params is None), build)
  return lambda params, batch: jitted(params, batch, vgg_params)


def compile_population_eval_step(config, mesh, size: int, vgg_params=None) -> Callable:
  """`eval_sums` of every member: `(params, batch) -> (sums, sr)`, member axis first.

  The members' parameters (and the results) are split over 'member', the
  batch over 'data'.
  """

  def build():
    members = parallel.member_sharding(mesh)
    members_eval = jax.vmap(functools.partial(eval_sums, config=config),
                            in_axes=(0, None, None))
    return jax.jit(_per_member_group(members_eval, mesh, (True, False, False), 2),
                   in_shardings=(members, parallel.batch_sharding(mesh),
                                 parallel.replicated(mesh)),
                   out_shardings=(members, parallel.member_batch_sharding(mesh)))

  jitted = programs.cached_program(
      ('eval_population', programs.traced_config_key(config), size,
       programs.mesh_key(mesh), vgg_params is None), build)
  return lambda params, batch: jitted(params, batch, vgg_params)
