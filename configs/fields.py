"""What each config field is, for the code that compares, caches or resumes configs.

A field is named by its dotted path (`model.stem_channels`); a name ending in
'.' stands for a whole block. Every field of `default.py` is in exactly one of
TRACED and UNTRACED (tests/test_configs.py checks it, and names any field that
is in neither): a new field goes into one of them, and also into ARCHITECTURE
or QUIET when it is one of those.
"""

from __future__ import annotations

from typing import Any, Mapping

# Fields a compiled training program may depend on; they are part of the key
# under which compiled programs are reused. When in doubt a field is traced: a
# needless entry costs a recompilation, a missing one reuses a stale program.
TRACED = (
    'seed', 'scale', 'model.', 'disc.', 'augment.', 'degradation.',
    'loss.perceptual_layers', 'loss.perceptual_layer_weights', 'loss.real_label',
    'data.patch_size', 'data.batch_size', 'data.eval_batch_size', 'data.val_crop_size',
    'data.patches_per_image', 'ema_decay', 'ema_warmup', 'eval_use_ema', 'adam_eps',
    'phase1.', 'phase2.', 'phase3.epochs', 'phase3.b1', 'phase3.clip_norm',
    'phase3.clip_mode', 'phase3.save_every_epochs',
)

# Loss weights and phase-3 peak learning rates: the train step takes them as
# float32 arguments (`train.state.hyperparams`), so changing one reuses the compiled
# program, and a population of members that differ in them is one program.
HYPERPARAMETERS = (
    'loss.pixel_weight', 'loss.perceptual_weight', 'loss.gan_weight',
    'loss.phase2_perceptual_weight', 'phase3.g_learning_rate', 'phase3.d_learning_rate',
)

# Host-side settings that no compiled program reads: folders, periods, the
# loader's processes, launching, inference and weight files, the phase list;
# and the values compiled programs take as arguments.
UNTRACED = HYPERPARAMETERS + (
    'phases', 'init_checkpoint', 'log_every_steps', 'sample_every_epochs',
    'checkpoint.', 'distributed.', 'inference.', 'weights.',
    'data.train_dir', 'data.val_dir', 'data.test_dir', 'data.num_workers',
    'data.num_threads', 'data.prefetch_buffer_size', 'data.steps_per_epoch',
    'data.max_val_images', 'data.num_sample_images', 'data.decoded_cache_gb',
    'data.decoded_cache_dir',
    # Swept values reach the programs as arrays; the member count via their shapes.
    'population.',
)

# Fields that give the parameters their shapes or meaning: a checkpoint made
# with other values can be neither resumed nor used as a starting point. The
# compute dtypes are exempt: parameters are float32 whichever is used.
GENERATOR_ARCHITECTURE = ('scale', 'model.')
DISCRIMINATOR_ARCHITECTURE = ('disc.',)
NOT_ARCHITECTURE = ('model.compute_dtype', 'disc.compute_dtype')

# Fields whose change on resume is no news: how a launch is spread over hosts,
# which phases it runs and where the first one starts.
QUIET = ('distributed.', 'phases', 'init_checkpoint')


def matches(field: str, names: tuple[str, ...]) -> bool:
  """True if `field` is one of `names` or lies in one of its blocks ('model.')."""
  return any(field == name or (name.endswith('.') and field.startswith(name))
             for name in names)


def is_architecture(field: str, *, with_disc: bool = True) -> bool:
  """True if `field` shapes the generator's (`with_disc`: or discriminator's) parameters."""
  names = GENERATOR_ARCHITECTURE + (DISCRIMINATOR_ARCHITECTURE if with_disc else ())
  return matches(field, names) and not matches(field, NOT_ARCHITECTURE)


def is_untraced(field: str) -> bool:
  """True if no compiled program reads `field` (unknown fields count as traced)."""
  return matches(field, UNTRACED)


def is_quiet(field: str) -> bool:
  """True if a change of `field` on resume is not worth a warning."""
  return matches(field, QUIET)


def is_other_phase(field: str, phase: int) -> bool:
  """True if `field` is in the `phaseN.` block of a phase other than `phase` (only N reads it)."""
  block = field.split('.', 1)[0]
  return block.startswith('phase') and block[5:].isdigit() and block != f'phase{phase}'


def flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """{dotted field name: value} of a nested config dict."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out
