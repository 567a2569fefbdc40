"""Up-front checks of a whole config: every field's type, sign, range or membership.

`check_config` runs before any work (train.py, and on a run's config in eval.py
and infer.py) and raises `errors.ConfigError` naming the first bad field, its
value and what it allows, instead of a failure deep in JAX or the data loader.
`check_known_fields` names a field that the reference recipe does not have,
with the fields of its block.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional

from configs import default
from configs import fields
from srrgan_jax import errors

_DTYPES = ('float32', 'bfloat16')
_RESIZE_METHODS = ('bilinear', 'bicubic', 'area')  # degradation.RESIZE_INTERPOLATIONS.
_FETCH_SOURCES = ('pypi', 'official', 'hub')  # weights.fetching.SOURCES.


@dataclasses.dataclass(frozen=True)
class Rule:
  """What one field allows; `check` returns None if `value` passes."""
  allowed: str  # Human-readable, e.g. 'an integer >= 1'.
  test: Callable[[Any], bool]

  def check(self, value) -> Optional[str]:
    try:
      return None if self.test(value) else self.allowed
    except (TypeError, ValueError):
      return self.allowed


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def integer(low: Optional[int] = None, high: Optional[int] = None) -> Rule:
  """An int in [low, high] (either end open when None)."""
  bounds = ' and '.join(part for part in (
      f'>= {low}' if low is not None else '', f'<= {high}' if high is not None else '')
      if part)
  return Rule(f'an integer{" " + bounds if bounds else ""}',
              lambda v: _is_int(v) and (low is None or v >= low)
              and (high is None or v <= high))


def number(low: Optional[float] = None, high: Optional[float] = None, *,
           low_open: bool = False, high_open: bool = False) -> Rule:
  """A finite number between `low` and `high` (`*_open`: that end excluded)."""
  parts = []
  if low is not None:
    parts.append(f'{">" if low_open else ">="} {low:g}')
  if high is not None:
    parts.append(f'{"<" if high_open else "<="} {high:g}')
  def test(v):
    return (_is_number(v)
            and (low is None or (v > low if low_open else v >= low))
            and (high is None or (v < high if high_open else v <= high)))
  return Rule(f'a number{" " + " and ".join(parts) if parts else ""}', test)


def one_of(*choices) -> Rule:
  return Rule(f'one of {", ".join(repr(c) for c in choices)}', lambda v: v in choices)


def flag() -> Rule:
  return Rule('True or False', lambda v: isinstance(v, bool))


def text() -> Rule:
  return Rule('a string', lambda v: isinstance(v, str))


def integers(low: int, *, odd: bool = False, nonempty: bool = True) -> Rule:
  """A tuple of ints >= low (odd ones if `odd`)."""
  return Rule(f'a tuple of{" odd" if odd else ""} integers >= {low}'
              f'{", not empty" if nonempty else ""}',
              lambda v: isinstance(v, (tuple, list)) and (len(v) or not nonempty)
              and all(_is_int(x) and x >= low and (not odd or x % 2) for x in v))


def number_range(low: float, high: Optional[float] = None) -> Rule:
  """A (min, max) pair with low <= min <= max (<= high)."""
  upper = f' <= {high:g}' if high is not None else ''
  return Rule(f'a pair (min, max) with {low:g} <= min <= max{upper}',
              lambda v: isinstance(v, (tuple, list)) and len(v) == 2
              and all(_is_number(x) for x in v) and low <= v[0] <= v[1]
              and (high is None or v[1] <= high))


def subset_of(*choices) -> Rule:
  return Rule(f'a non-empty tuple of {", ".join(repr(c) for c in choices)}',
              lambda v: isinstance(v, (tuple, list)) and len(v) > 0
              and all(x in choices for x in v))


PROBABILITY = number(0, 1)
POSITIVE = number(0, low_open=True)
NON_NEGATIVE = number(0)
COUNT = integer(1)
NON_NEGATIVE_INT = integer(0)


def _vgg19_layers() -> tuple[str, ...]:
  from srrgan_jax.weights import layout  # pylint: disable=import-outside-toplevel
  return tuple(name for name, _, _ in layout.VGG19_CONVS)


def _plateau_phase(prefix: str) -> dict[str, Rule]:
  return {
      f'{prefix}.epochs': COUNT,
      f'{prefix}.learning_rate': POSITIVE,
      f'{prefix}.weight_decay': NON_NEGATIVE,
      f'{prefix}.plateau_factor': number(0, 1, low_open=True, high_open=True),
      f'{prefix}.plateau_patience': NON_NEGATIVE_INT,
      f'{prefix}.min_learning_rate': NON_NEGATIVE,
      f'{prefix}.plateau_min_delta': NON_NEGATIVE,
      f'{prefix}.early_stop_patience': NON_NEGATIVE_INT,
  }


# Fields of default.py by name; fields not listed (the Real-ESRGAN block's
# ranges, kernel lists) are checked by training_degradation.check_config.
RULES: dict[str, Rule] = {
    'seed': integer(),
    'scale': integer(1),
    'model.stem_channels': COUNT,
    'model.num_head_blocks': NON_NEGATIVE_INT,
    'model.encoder_channels': integers(1),
    'model.num_bottleneck_blocks': NON_NEGATIVE_INT,
    'model.decoder_channels': integers(1),
    'model.num_tail_blocks': NON_NEGATIVE_INT,
    'model.se_ratio': COUNT,
    'model.spatial_attention_kernel': Rule('an odd integer >= 1',
                                           lambda v: _is_int(v) and v >= 1 and v % 2 == 1),
    'model.groupnorm_groups': COUNT,
    'model.groupnorm_epsilon': POSITIVE,
    'model.leaky_slope': NON_NEGATIVE,
    'model.dropout_rate': number(0, 1, high_open=True),
    'model.compute_dtype': one_of(*_DTYPES),
    'model.output_activation': one_of('tanh', 'clip'),
    'model.zero_init_output': flag(),
    'disc.channels': integers(1),
    'disc.strides': integers(1),
    'disc.kernel_size': COUNT,
    'disc.leaky_slope': NON_NEGATIVE,
    'disc.init_stddev': POSITIVE,
    'disc.spectral_norm': flag(),
    'disc.power_iterations': COUNT,
    'disc.compute_dtype': one_of(*_DTYPES),
    'data.train_dir': text(),
    'data.val_dir': text(),
    'data.test_dir': text(),
    'data.patch_size': COUNT,
    'data.batch_size': COUNT,
    'data.eval_batch_size': COUNT,
    'data.val_crop_size': NON_NEGATIVE_INT,
    'data.patches_per_image': COUNT,
    'data.num_workers': NON_NEGATIVE_INT,
    'data.prefetch_buffer_size': COUNT,
    'data.num_threads': COUNT,
    'data.decoded_cache_gb': NON_NEGATIVE,
    'data.decoded_cache_dir': text(),
    'data.steps_per_epoch': NON_NEGATIVE_INT,
    'data.max_val_images': NON_NEGATIVE_INT,
    'data.num_sample_images': NON_NEGATIVE_INT,
    'augment.hflip': flag(),
    'augment.vflip': flag(),
    'augment.rot90': flag(),
    'augment.brightness_delta': number(0, 1),
    'augment.contrast_range': number_range(0),
    'augment.saturation_range': number_range(0),
    'augment.hue_delta': number(0, 0.5),
    'degradation.reproduce_original_code': flag(),
    'degradation.gaussian_blur_prob': PROBABILITY,
    'degradation.gaussian_kernel_sizes': integers(1, odd=True),
    'degradation.gaussian_sigma_range': number_range(1e-3),
    'degradation.box_kernel_sizes': integers(1),
    'degradation.resize_methods': subset_of(*_RESIZE_METHODS),
    'degradation.noise_before_jpeg_prob': PROBABILITY,
    'degradation.gaussian_noise_prob': PROBABILITY,
    'degradation.gaussian_noise_std_range': number_range(0),
    'degradation.poisson_scale_range': number_range(1e-3),
    'degradation.jpeg_prob': PROBABILITY,
    'degradation.jpeg_quality_range': number_range(1, 100),
    'degradation.eval_blur_kernel_size': Rule('an odd integer >= 1',
                                              lambda v: _is_int(v) and v >= 1 and v % 2),
    'degradation.eval_blur_sigma': NON_NEGATIVE,
    'degradation.eval_resize_method': one_of(*_RESIZE_METHODS),
    'degradation.eval_noise_std': NON_NEGATIVE,
    'degradation.eval_jpeg_quality': integer(1, 100),
    'degradation.eval_noise_seed': NON_NEGATIVE_INT,
    'degradation.blur_border': one_of('reflect', 'zero'),
    'degradation.original_gaussian_kernel': integers(1, odd=True),
    'degradation.original_eval_sigma_range': number_range(0),
    'degradation.model': one_of('original', 'realesrgan'),
    'degradation.sharpen_target': flag(),
    'degradation.usm_weight': NON_NEGATIVE,
    'degradation.usm_kernel_size': Rule('an odd integer >= 1',
                                        lambda v: _is_int(v) and v >= 1 and v % 2),
    'degradation.usm_threshold': NON_NEGATIVE,
    **{f'degradation.realesrgan.{name}': PROBABILITY for name in (
        'beta_below_one_prob', 'sinc_prob', 'gaussian_noise_prob', 'gray_noise_prob',
        'second_stage_prob', 'second_blur_prob', 'sinc_prob2', 'gaussian_noise_prob2',
        'gray_noise_prob2', 'final_sinc_prob', 'resize_before_jpeg_prob')},
    'degradation.realesrgan.sinc_large_kernel': COUNT,
    'loss.perceptual_layer_weights': Rule(
        'a non-empty tuple of numbers >= 0',
        lambda v: len(v) > 0 and all(_is_number(x) and x >= 0 for x in v)),
    'loss.real_label': number(0, 1, low_open=True),
    'loss.phase2_perceptual_weight': NON_NEGATIVE,
    'loss.pixel_weight': NON_NEGATIVE,
    'loss.perceptual_weight': NON_NEGATIVE,
    'loss.gan_weight': NON_NEGATIVE,
    'weights.vgg19_file': text(),
    'weights.lpips_file': text(),
    'weights.auto_fetch': flag(),
    'weights.fetch_sources': subset_of(*_FETCH_SOURCES),
    'phases': Rule('an increasing subset of (1, 2, 3), e.g. "(3,)"',
                   lambda v: len(v) > 0 and all(p in (1, 2, 3) for p in v)
                   and list(v) == sorted(set(v))),
    'init_checkpoint': text(),
    'ema_decay': number(0, 1, high_open=True),
    'ema_warmup': flag(),
    'eval_use_ema': flag(),
    'adam_eps': POSITIVE,
    'log_every_steps': COUNT,
    'sample_every_epochs': COUNT,
    **_plateau_phase('phase1'),
    **_plateau_phase('phase2'),
    'phase3.epochs': COUNT,
    'phase3.g_learning_rate': POSITIVE,
    'phase3.d_learning_rate': POSITIVE,
    'phase3.b1': number(0, 1, high_open=True),
    'phase3.clip_norm': NON_NEGATIVE,
    'phase3.clip_mode': one_of('per_tensor', 'global'),
    'phase3.save_every_epochs': COUNT,
    'checkpoint.save_latest_every_steps': NON_NEGATIVE_INT,
    'checkpoint.async_save': flag(),
    'distributed.initialize': flag(),
    'distributed.coordinator_address': text(),
    'distributed.num_processes': NON_NEGATIVE_INT,
    'distributed.process_id': integer(-1),
    'inference.tile': NON_NEGATIVE_INT,
    'inference.overlap': NON_NEGATIVE_INT,
    'inference.batch_size': COUNT,
}


def reject(field: str, value, allowed: str):
  """Raises ConfigError: `field`=`value` is not valid, it must be `allowed`."""
  raise errors.ConfigError(f'config field {field}={value!r} is not valid: it must be '
                           f'{allowed}.')


def block_fields(block: str) -> list[str]:
  """The fields of the reference recipe's `block` ('' = the top level)."""
  names = fields.flatten(default.get_config().to_dict())
  prefix = f'{block}.' if block else ''
  return sorted({name[len(prefix):].split('.')[0] for name in names
                 if name.startswith(prefix)})


def unknown_field_message(field: str) -> str:
  """One line naming `field` (unknown) and the fields its block does have."""
  parts = field.split('.')
  known = fields.flatten(default.get_config().to_dict())
  blocks = {name.rsplit('.', 1)[0] for name in known if '.' in name}
  # The deepest existing block the name lies in.
  block = ''
  for depth in range(len(parts) - 1, 0, -1):
    if '.'.join(parts[:depth]) in blocks:
      block = '.'.join(parts[:depth])
      break
  where = f'block {block}' if block else 'the top level'
  return (f'config field {field} does not exist; {where} has: '
          f'{", ".join(block_fields(block))}.')


def check_known_fields(tree: Mapping[str, Any]) -> None:
  """Raises ConfigError naming a field that the reference recipe does not have."""
  known = set(fields.flatten(default.get_config().to_dict()))
  for name in fields.flatten(tree):
    if name not in known:
      raise errors.ConfigError(unknown_field_message(name))


def _check_consistency(c) -> None:
  """Rules between fields."""
  m = c.model
  if len(m.decoder_channels) != len(m.encoder_channels):
    reject('model.decoder_channels', tuple(m.decoder_channels),
           f'one entry per encoder stage ({len(m.encoder_channels)}, as '
           f'model.encoder_channels={tuple(m.encoder_channels)})')
  if len(c.disc.strides) != len(c.disc.channels):
    reject('disc.strides', tuple(c.disc.strides),
           f'one stride per entry of disc.channels ({len(c.disc.channels)})')
  multiple = c.scale * 2 ** len(m.encoder_channels)
  if c.data.patch_size % multiple:
    reject('data.patch_size', c.data.patch_size,
           f'a multiple of {multiple} (scale {c.scale} x 2 per encoder stage)')
  layers = _vgg19_layers()
  taps = tuple(c.loss.perceptual_layers)
  if not taps or any(t not in layers for t in taps):
    reject('loss.perceptual_layers', taps, f'a non-empty tuple of VGG19 layers: '
           f'{", ".join(layers)}')
  if len(c.loss.perceptual_layer_weights) != len(taps):
    reject('loss.perceptual_layer_weights', tuple(c.loss.perceptual_layer_weights),
           f'one weight per entry of loss.perceptual_layers ({len(taps)})')
  if c.inference.tile and c.inference.overlap >= c.inference.tile:
    reject('inference.overlap', c.inference.overlap,
           f'smaller than inference.tile ({c.inference.tile})')


def check_config(config, *, known_fields_only: bool = True) -> None:
  """Raises ConfigError naming the first field of `config` that cannot work.

  `known_fields_only=False` lets fields pass that the recipe does not have (a
  run saved by another version of the project).
  """
  tree = config.to_dict()
  if known_fields_only:
    check_known_fields(tree)
  values = fields.flatten(tree)
  for name, rule in RULES.items():
    if name in values:
      problem = rule.check(values[name])
      if problem is not None:
        reject(name, values[name], problem)
  try:
    _check_consistency(config)
    from srrgan_jax import population  # pylint: disable=import-outside-toplevel
    population.check(config)
    from srrgan_jax import training_degradation  # pylint: disable=import-outside-toplevel
    training_degradation.plain_config(config.degradation)  # Checks the Real-ESRGAN block.
  except (AttributeError, KeyError) as e:  # A saved config that lacks a block or field.
    missing = str(e).split('\n', maxsplit=1)[0].strip('"\'')
    raise errors.ConfigError(f'config field {missing} is missing; the configuration is '
                             'incomplete.') from e
