"""Optimisers of the three phases and the host-side plateau / early-stopping logic.

Phases 1-2: AdamW whose learning rate sits in the optimizer state
(`optax.inject_hyperparams`), so reduce-on-plateau changes it between epochs
without recompiling the step. Phase 3: Adam (beta1 from the config) after
clipping, with a cosine decay to zero over every phase-3 step, for G and D.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from srrgan_jax import errors


def clip_each_tensor(max_norm: float) -> optax.GradientTransformation:
  """Scales every gradient tensor separately to L2 norm <= max_norm (Keras `clipnorm`)."""

  def clip(g):
    norm = jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32))))
    factor = max_norm / jnp.maximum(norm, max_norm)
    return (g * factor).astype(g.dtype)

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(clip, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def clipping(clip_norm: float, clip_mode: str) -> optax.GradientTransformation:
  """Phase-3 gradient clipping: 'per_tensor' (Keras clipnorm) or 'global'; 0 = none."""
  if clip_norm <= 0:
    return optax.identity()
  if clip_mode == 'per_tensor':
    return clip_each_tensor(clip_norm)
  if clip_mode == 'global':
    return optax.clip_by_global_norm(clip_norm)
  raise errors.ConfigError(
      f"phase3.clip_mode={clip_mode!r} is not one of 'per_tensor', 'global'.")


def plateau_optimizer(learning_rate: float, weight_decay: float,
                      eps: float) -> optax.GradientTransformation:
  """AdamW for phases 1-2 with an injectable learning rate (see `set_learning_rate`)."""
  return optax.inject_hyperparams(optax.adamw)(
      learning_rate=learning_rate, weight_decay=weight_decay, eps=eps)


def learning_rate(opt_state) -> jax.Array:
  """The current learning rate held in an `inject_hyperparams` optimizer state."""
  return opt_state.hyperparams['learning_rate']


def set_learning_rate(opt_state, value: jax.Array):
  """Returns `opt_state` with the learning rate `value` (an array placed like the old)."""
  old = learning_rate(opt_state)
  if value.shape != old.shape or value.dtype != old.dtype:
    raise ValueError(f'learning rate must be a {old.dtype} scalar array, got {value!r}')
  hyperparams = dict(opt_state.hyperparams, learning_rate=value)
  return opt_state._replace(hyperparams=hyperparams)


def cosine_schedule(peak: float, total_steps: int) -> optax.Schedule:
  """Cosine decay from `peak` to 0 over `total_steps` (phase 3, G and D)."""
  return optax.cosine_decay_schedule(peak, max(int(total_steps), 1), alpha=0.0)


def adversarial_optimizer(peak_lr: float, total_steps: int, *, b1: float, eps: float,
                          clip_norm: float, clip_mode: str) -> optax.GradientTransformation:
  """Phase-3 optimizer: clip (per tensor or global), then Adam with cosine decay."""
  return optax.chain(
      clipping(clip_norm, clip_mode),
      optax.adam(cosine_schedule(peak_lr, total_steps), b1=b1, eps=eps))


@dataclasses.dataclass
class PlateauTracker:
  """Keras-style ReduceLROnPlateau + EarlyStopping on the validation loss, on the host.

  `update(val_loss, epoch)` is called once per epoch and returns whether the
  loss is a new best; afterwards `learning_rate` is the rate for the next epoch
  and `stopped` says whether to stop. Kept in the checkpoint via `to_dict`.
  """
  learning_rate: float
  factor: float
  patience: int
  min_learning_rate: float
  early_stop_patience: int
  min_delta: float = 0.0
  best: float = math.inf  # Best val loss seen (early stopping's reference).
  best_epoch: int = -1
  plateau_best: float = math.inf  # Reference for plateau (needs min_delta gain).
  plateau_wait: int = 0
  stop_wait: int = 0
  stopped: bool = False

  def update(self, val_loss: float, epoch: int) -> bool:
    """Records one epoch's validation loss; returns True if it is a new best."""
    improved = val_loss < self.best
    if improved:
      self.best, self.best_epoch, self.stop_wait = val_loss, epoch, 0
    else:
      self.stop_wait += 1
      if self.early_stop_patience > 0 and self.stop_wait >= self.early_stop_patience:
        self.stopped = True
    if val_loss < self.plateau_best - self.min_delta:
      self.plateau_best, self.plateau_wait = val_loss, 0
    else:
      self.plateau_wait += 1
      if self.plateau_wait >= self.patience and self.learning_rate > self.min_learning_rate:
        self.learning_rate = max(self.learning_rate * self.factor, self.min_learning_rate)
        self.plateau_wait = 0
    return improved

  def to_dict(self) -> dict[str, Any]:
    # JSON has no infinity: store None for "nothing seen yet".
    d = dataclasses.asdict(self)
    for k in ('best', 'plateau_best'):
      if math.isinf(d[k]):
        d[k] = None
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> 'PlateauTracker':
    d = dict(d)
    for k in ('best', 'plateau_best'):
      if d.get(k) is None:
        d[k] = math.inf
    return cls(**d)
