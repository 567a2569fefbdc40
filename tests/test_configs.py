"""Every config file loads, overrides work, the default keeps the reference numbers, and
every config field is classified in configs/fields.py."""

import importlib
import pathlib
import subprocess
import sys

import pytest

from configs import fields
from srrgan_jax import config_check
from srrgan_jax import errors

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / 'configs'
# configs/fields.py classifies the fields; it is not a config.
CONFIG_NAMES = sorted(p.stem for p in CONFIG_DIR.glob('*.py')
                      if p.stem not in ('__init__', 'fields'))


@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_every_config_loads(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  assert config.scale in (2, 4)
  assert config.data.patch_size % (8 * config.scale) == 0
  assert config.data.batch_size % 4 == 0  # Divisible by the 4 fake test devices.
  assert set(config.phases) <= {1, 2, 3}
  from srrgan_jax import eval_sets  # pylint: disable=g-import-not-at-top
  assert eval_sets.eval_crop_size(config) % (8 * config.scale) == 0  # Raises if it does not fit.
  config_check.check_config(config)  # Raises naming a field that cannot work.


def test_default_matches_reference_numbers():
  c = importlib.import_module('configs.default').get_config()
  assert c.data.patch_size == 256 and c.data.batch_size == 64
  assert c.model.encoder_channels == (64, 128, 256)
  assert c.model.num_bottleneck_blocks == 5 and c.model.num_head_blocks == 4
  assert c.model.output_activation == 'tanh' and not c.model.zero_init_output
  assert c.degradation.jpeg_quality_range == (60, 95)
  assert c.degradation.eval_noise_std == pytest.approx(10 / 255)
  assert c.loss.perceptual_layer_weights == (0.303, 0.303, 0.242, 0.151)
  assert (c.loss.pixel_weight, c.loss.perceptual_weight, c.loss.gan_weight) == (20.0, 0.05, 0.05)
  assert (c.phase1.learning_rate, c.phase2.learning_rate) == (5e-4, 1e-5)
  assert (c.phase3.g_learning_rate, c.phase3.d_learning_rate) == (5e-5, 2.5e-5)
  assert (c.inference.tile, c.inference.overlap) == (128, 32)


def test_gpu_recipe_is_the_reference_in_bfloat16_with_a_host_sized_loader(monkeypatch):
  monkeypatch.setattr('os.cpu_count', lambda: 16)
  gpu = importlib.import_module('configs.gpu').get_config().to_dict()
  default = importlib.import_module('configs.default').get_config().to_dict()
  changed = {k: v for k, v in fields.flatten(gpu).items() if fields.flatten(default)[k] != v}
  assert changed == {'model.compute_dtype': 'bfloat16', 'data.num_workers': 14,
                     'data.patches_per_image': 4}


def test_command_line_override():
  repo = CONFIG_DIR.parent
  cmd = [sys.executable, str(repo / 'train.py'), f'--config={CONFIG_DIR / "tiny.py"}',
         '--config.loss.gan_weight=0.1', '--config.data.patch_size=64', '--print_config']
  out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=repo).stdout
  printed = yaml_like_lines(out)
  assert printed['loss.gan_weight'] == '0.1' and printed['data.patch_size'] == '64'
  bad = subprocess.run(cmd[:2] + ['--config.loss.no_such_field=1', '--print_config'],
                       capture_output=True, text=True, cwd=repo)
  assert bad.returncode != 0 and 'no_such_field' in bad.stderr


def yaml_like_lines(text):
  """Maps each `key: value` leaf line of a printed ConfigDict to its value, by dotted name."""
  leaves, blocks = {}, []  # blocks: (indent, name) of the enclosing `name:` lines.
  for line in text.splitlines():
    indent = len(line) - len(line.lstrip())
    key, sep, value = line.strip().partition(':')
    if not sep or key.startswith('- '):
      continue
    blocks = [(i, b) for i, b in blocks if i < indent]
    if value.strip():
      leaves['.'.join([b for _, b in blocks] + [key])] = value.strip()
    else:
      blocks.append((indent, key))
  return leaves


def classification_problems(names) -> list[str]:
  """What is wrong with how configs/fields.py classifies the config fields `names`."""
  problems = []
  for name in names:
    traced, untraced = fields.matches(name, fields.TRACED), fields.is_untraced(name)
    if traced == untraced:
      problems.append(
          f'{name}: in {"both TRACED and" if traced else "neither TRACED nor"} UNTRACED; '
          'classify it in configs/fields.py in exactly one of them (and in '
          'ARCHITECTURE or QUIET if it is one of those).')
    if fields.is_architecture(name) and not traced:
      problems.append(f'{name}: an architecture field must be TRACED (configs/fields.py).')
    if fields.is_architecture(name) and fields.is_quiet(name):
      problems.append(f'{name}: an architecture field cannot be QUIET (configs/fields.py).')
  entries = (fields.TRACED + fields.UNTRACED + fields.GENERATOR_ARCHITECTURE +
             fields.DISCRIMINATOR_ARCHITECTURE + fields.NOT_ARCHITECTURE + fields.QUIET)
  problems += [f'configs/fields.py: {entry!r} names no field of configs/default.py.'
               for entry in entries if not any(fields.matches(n, (entry,)) for n in names)]
  return problems


def test_every_default_field_is_classified_once():
  config = importlib.import_module('configs.default').get_config()
  names = list(fields.flatten(config.to_dict()))
  assert len(names) > 100
  assert classification_problems(names) == []
  assert fields.is_architecture('model.stem_channels')
  assert not fields.is_architecture('model.compute_dtype')
  assert not fields.is_architecture('disc.channels', with_disc=False)
  assert fields.is_untraced('data.train_dir') and not fields.is_untraced('data.patch_size')
  assert fields.is_quiet('distributed.num_processes') and not fields.is_quiet('seed')


def test_a_phase_block_belongs_to_its_phase_only():
  assert fields.is_other_phase('phase3.epochs', 1)
  assert fields.is_other_phase('phase1.learning_rate', 2)
  assert not fields.is_other_phase('phase2.epochs', 2)
  assert not fields.is_other_phase('phases', 1)  # The phase list, not a phase block.
  assert not fields.is_other_phase('loss.gan_weight', 1)


def test_an_unclassified_new_field_is_named_with_where_to_classify_it():
  config = importlib.import_module('configs.default').get_config()
  config.data.new_knob = 3
  config.model.compute_dtype_2 = 'x'  # In the 'model.' block: traced architecture.
  assert classification_problems(list(fields.flatten(config.to_dict()))) == [
      'data.new_knob: in neither TRACED nor UNTRACED; classify it in configs/fields.py '
      'in exactly one of them (and in ARCHITECTURE or QUIET if it is one of those).']


def test_train_command_reports_a_bad_config_value_in_one_line(tmp_path):
  repo = CONFIG_DIR.parent
  result = subprocess.run(
      [sys.executable, str(repo / 'train.py'), f'--config={CONFIG_DIR / "tiny.py"}',
       '--config.phases=(2, 1)', f'--workdir={tmp_path / "run"}'],
      capture_output=True, text=True, cwd=repo, timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip() == ('train: error: config field phases=(2, 1) is not valid: '
                                   'it must be an increasing subset of (1, 2, 3), e.g. "(3,)".')
  assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('field,value,allowed', [
    ('phase1.epochs', 0, 'an integer >= 1'),
    ('data.steps_per_epoch', -1, 'an integer >= 0'),
    ('data.batch_size', -4, 'an integer >= 1'),
    ('data.patch_size', 40, 'a multiple of 16'),
    ('model.dropout_rate', 1.0, 'a number >= 0 and < 1'),
    ('model.compute_dtype', 'float16', "one of 'float32', 'bfloat16'"),
    ('model.decoder_channels', (8, 8), 'one entry per encoder stage (3'),
    ('degradation.jpeg_prob', 1.5, 'a number >= 0 and <= 1'),
    ('degradation.jpeg_quality_range', (60, 120), 'min <= max <= 100'),
    ('degradation.resize_methods', ('nearest',), "a non-empty tuple of 'bilinear'"),
    ('degradation.realesrgan.sinc_prob', -0.1, 'a number >= 0 and <= 1'),
    ('loss.perceptual_layers', ('block9_conv1',), 'a non-empty tuple of VGG19 layers'),
    ('loss.gan_weight', float('nan'), 'a number >= 0'),
    ('phase2.plateau_factor', 1.0, 'a number > 0 and < 1'),
    ('phase3.clip_mode', 'norm', "one of 'per_tensor', 'global'"),
    ('ema_decay', 1.0, 'a number >= 0 and < 1'),
    ('weights.fetch_sources', ('ftp',), "a non-empty tuple of 'pypi'"),
    ('inference.overlap', 16, 'smaller than inference.tile (16)'),
    ('distributed.process_id', -2, 'an integer >= -1'),
])
def test_config_check_names_field_value_and_allowed_range(field, value, allowed):
  config = importlib.import_module('configs.tiny').get_config()
  block, _, name = field.rpartition('.')
  target = config
  for part in block.split('.') if block else ():
    target = target[part]
  target[name] = value
  with pytest.raises(errors.ConfigError) as raised:
    config_check.check_config(config)
  message = str(raised.value)
  assert message.startswith(f'config field {field}={value!r} is not valid: it must be ')
  assert allowed in message


def test_config_check_names_an_unknown_field_and_its_blocks_fields():
  config = importlib.import_module('configs.tiny').get_config()
  config.data.foo = 1
  with pytest.raises(errors.ConfigError, match=r'config field data.foo does not exist; '
                     r'block data has: batch_size, decoded_cache_dir, .*val_dir\.$'):
    config_check.check_config(config)
  config_check.check_config(config, known_fields_only=False)  # An older run's field.


def test_every_rule_names_a_field_of_the_recipe():
  names = fields.flatten(importlib.import_module('configs.default').get_config().to_dict())
  assert set(config_check.RULES) <= set(names)
