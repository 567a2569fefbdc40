"""Every config file loads, overrides work, and the default matches SPEC.md."""

import importlib
import pathlib
import subprocess
import sys

import pytest

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / 'configs'
CONFIG_NAMES = sorted(p.stem for p in CONFIG_DIR.glob('*.py') if p.stem != '__init__')


@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_every_config_loads(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  assert config.scale in (2, 4)
  assert config.data.patch_size % (8 * config.scale) == 0
  assert config.data.batch_size % 4 == 0  # Divisible by the 4 fake test devices.
  assert set(config.phases) <= {1, 2, 3}
  from srrgan_jax import eval_sets  # pylint: disable=g-import-not-at-top
  assert eval_sets.eval_crop_size(config) % (8 * config.scale) == 0  # Raises if it does not fit.


def test_default_matches_spec_numbers():
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


def test_command_line_override():
  repo = CONFIG_DIR.parent
  cmd = [sys.executable, str(repo / 'train.py'), f'--config={CONFIG_DIR / "tiny.py"}',
         '--config.loss.gan_weight=0.1', '--config.data.patch_size=64', '--print_config']
  out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=repo).stdout
  printed = yaml_like_lines(out)
  assert printed['gan_weight'] == '0.1' and printed['patch_size'] == '64'
  bad = subprocess.run(cmd[:2] + ['--config.loss.no_such_field=1', '--print_config'],
                       capture_output=True, text=True, cwd=repo)
  assert bad.returncode != 0 and 'no_such_field' in bad.stderr


def yaml_like_lines(text):
  """Maps each `key: value` leaf line of a printed ConfigDict to its value."""
  pairs = (line.strip().split(': ', 1) for line in text.splitlines() if ': ' in line)
  return {k: v for k, v in pairs}
