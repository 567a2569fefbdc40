"""Pure training and evaluation steps of the three phases.

Every train step is `(state, batch, key) -> (state, metrics)`: `batch` holds
'lr' in [-1, 1] and 'hr' in [-1, 1] or as the loader's uint8 (mapped to [-1, 1]
on the devices), `key` is the phase's root key and the step's own key is
`fold_in(key, state.step)`. `compile_train_step` jits a step for a mesh with the
state donated, the batch split over 'data' and parameters replicated; frozen
networks (VGG19) are passed as an argument, not baked into the program.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
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


def _apply_generator_update(state: TrainState, tx, grads, config):
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return state.replace(
      step=state.step + 1, params=params, opt_state=opt_state,
      ema_params=ema_update(state.ema_params, params, ema_decay_at(config, state.step)))


def pixel_step(state: TrainState, batch: Batch, key, vgg_params=None, *,
               config, optimizers: PhaseOptimizers, perceptual_weight: float = 0.0):
  """Phases 1-2: loss = MAE (+ perceptual_weight * VGG perceptual loss)."""
  gen = models.build_generator(config)
  step_key = jax.random.fold_in(key, state.step)

  def loss_fn(params):
    sr = models.generate(gen, params, batch['lr'], dropout_key=step_key)
    pixel = losses.pixel_mae(sr, batch['hr'])
    terms = {'pixel': pixel}
    loss = pixel
    if perceptual_weight:
      perceptual = _perceptual(config, vgg_params, sr, batch['hr'])
      terms['perceptual'] = perceptual
      terms['perceptual_weighted'] = perceptual_weight * perceptual
      loss = loss + terms['perceptual_weighted']
    return loss, (sr, terms)

  (loss, (sr, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = _apply_generator_update(state, optimizers.gen, grads, config)
  out = {'loss': loss, **terms, **image_quality(sr, batch['hr']),
         'learning_rate': optim.learning_rate(state.opt_state)}
  return new_state, out


def adversarial_step(state: TrainState, batch: Batch, key, vgg_params=None, *,
                     config, optimizers: PhaseOptimizers):
  """Phase 3: update D on (real HR, G(LR)), then G on pixel + perceptual + adversarial.

  The generator runs forward once: its output trains D, and the generator
  gradient is pulled back through the same forward pass (`jax.vjp`).
  """
  gen = models.build_generator(config)
  disc = models.build_discriminator(config)
  w = config.loss
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
    loss = losses.lsgan_discriminator_loss(real_logits, fake_logits, w.real_label)
    return loss, (updates['batch_stats'], real_logits, fake_logits)

  (d_loss, (disc_stats, real_logits, fake_logits)), d_grads = jax.value_and_grad(
      disc_loss_fn, has_aux=True)(state.disc_params)
  d_updates, disc_opt_state = optimizers.disc.update(
      d_grads, state.disc_opt_state, state.disc_params)
  disc_params = optax.apply_updates(state.disc_params, d_updates)

  def gen_loss_fn(sr):
    pixel = losses.pixel_mae(sr, hr)
    perceptual = _perceptual(config, vgg_params, sr, hr)
    # The updated discriminator judges; eval mode leaves its SN state alone.
    gen_logits = disc.apply({'params': disc_params, 'batch_stats': disc_stats}, sr,
                            train=False)
    adversarial = losses.lsgan_generator_loss(gen_logits)
    terms = {
        'pixel': pixel, 'perceptual': perceptual, 'adversarial': adversarial,
        'pixel_weighted': w.pixel_weight * pixel,
        'perceptual_weighted': w.perceptual_weight * perceptual,
        'adversarial_weighted': w.gan_weight * adversarial,
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


def train_step_fn(config: ml_collections.ConfigDict, phase: int,
                  optimizers: PhaseOptimizers) -> Callable:
  """The un-jitted step `(state, batch, key, vgg_params) -> (state, metrics)`."""
  if phase in (1, 2):
    weight = config.loss.phase2_perceptual_weight if phase == 2 else 0.0
    step = functools.partial(pixel_step, config=config, optimizers=optimizers,
                             perceptual_weight=weight)
  elif phase == 3:
    step = functools.partial(adversarial_step, config=config, optimizers=optimizers)
  else:
    raise ValueError(f'phase {phase} does not exist; config.phases takes 1, 2 and 3.')

  def run(state, batch, key, vgg_params=None):
    return step(state, {**batch, 'hr': hr_to_model_range(batch['hr'])}, key, vgg_params)

  return run


def jit_train_step(config, phase: int, total_steps: int, mesh):
  """The jitted `(state, batch, key, vgg_params) -> (state, metrics)` of a phase.

  The state is donated; the batch is split over 'data'; everything else is
  replicated. `total_steps` sets phase 3's cosine decay.
  """

  def build():
    optimizers = state_lib.make_optimizers(config, phase, total_steps)
    shardings = state_lib.state_shardings(
        state_lib.abstract_state(config, phase, optimizers), mesh)
    replicated = parallel.replicated(mesh)
    return jax.jit(
        train_step_fn(config, phase, optimizers),
        in_shardings=(shardings, parallel.batch_sharding(mesh), replicated, replicated),
        out_shardings=(shardings, replicated),
        donate_argnums=0)

  # Only phase 3's program depends on the phase length (its cosine decay).
  length = total_steps if phase == 3 else None
  return programs.cached_program(
      ('train', programs.traced_config_key(config), phase, length,
       programs.mesh_key(mesh)), build)


def compile_train_step(config, phase: int, total_steps: int, mesh,
                       vgg_params=None) -> Callable:
  """`(state, batch, key) -> (state, metrics)`, jitted (see `jit_train_step`)."""
  jitted = jit_train_step(config, phase, total_steps, mesh)

  def step(state, batch, key):
    return jitted(state, batch, key, vgg_params)

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
