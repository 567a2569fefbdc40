"""The XLA:CPU convolution library: CPU runs only, never over the user, probed once per
CPU for training, the same tiled image for inference."""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from srrgan_jax import cache
from srrgan_jax import conv_probe
from srrgan_jax import errors
from srrgan_jax import xla_cpu

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize('platforms', [None, 'cpu', ' CPU ', 'cpu,cuda'])
def test_cpu_runs_get_eigen_convolutions(monkeypatch, platforms):
  if platforms is None:
    monkeypatch.delenv('JAX_PLATFORMS', raising=False)
  else:
    monkeypatch.setenv('JAX_PLATFORMS', platforms)
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
  xla_cpu.use_eigen_convolutions()
  assert xla_cpu.EIGEN_CONVOLUTIONS_FLAG.startswith('--xla_cpu_')  # Read by XLA:CPU only.
  assert os.environ['XLA_FLAGS'] == ('--xla_force_host_platform_device_count=4 '
                                     + xla_cpu.EIGEN_CONVOLUTIONS_FLAG)


@pytest.mark.parametrize('platforms', ['cuda', 'gpu', 'tpu', 'tpu,cpu', 'rocm'])
def test_accelerator_runs_get_no_cpu_flag(monkeypatch, platforms):
  monkeypatch.setenv('JAX_PLATFORMS', platforms)
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  xla_cpu.use_eigen_convolutions()
  assert 'XLA_FLAGS' not in os.environ


def test_users_own_ynn_setting_wins(monkeypatch):
  monkeypatch.delenv('JAX_PLATFORMS', raising=False)
  own = '--xla_cpu_experimental_ynn_fusion_type=individual_convolution'
  monkeypatch.setenv('XLA_FLAGS', own)
  xla_cpu.use_eigen_convolutions()
  assert os.environ['XLA_FLAGS'] == own


def test_inference_gets_the_same_cpu_setting(monkeypatch):
  monkeypatch.delenv('JAX_PLATFORMS', raising=False)
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
  xla_cpu.use_inference_convolutions()
  assert os.environ['XLA_FLAGS'].endswith(' ' + xla_cpu.EIGEN_CONVOLUTIONS_FLAG)
  monkeypatch.setenv('JAX_PLATFORMS', 'cuda')
  monkeypatch.delenv('XLA_FLAGS')
  xla_cpu.use_inference_convolutions()
  assert 'XLA_FLAGS' not in os.environ


_UPSCALE_SCRIPT = '''
import sys
import jax
import numpy as np
from configs import tiny
from srrgan_jax import inference, models, xla_cpu
if sys.argv[1] == 'eigen':
  xla_cpu.use_inference_convolutions()
config = tiny.get_config()
params = models.init_generator(config, jax.random.key(0), (1, 16, 16, 3))['params']
rgb = np.random.default_rng(0).uniform(0, 1, (40, 52, 3)).astype(np.float32)
np.save(sys.argv[2], inference.Upscaler(config, params, tile=16, overlap=4).upscale(rgb))
'''


def test_inference_setting_keeps_the_tiled_image(tmp_path):
  """Tiles upscaled with Eigen's convolutions match XLA's default ones to 1e-5 ([0, 1])."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'JAX_ENABLE_COMPILATION_CACHE': 'false',
         'XLA_FLAGS': '--xla_force_host_platform_device_count=1',
         'PYTHONPATH': str(REPO)}
  images = {}
  for setting in ('default', 'eigen'):
    subprocess.run([sys.executable, '-c', _UPSCALE_SCRIPT, setting,
                    str(tmp_path / f'{setting}.npy')], env=env, cwd=REPO, check=True,
                   timeout=600)
    images[setting] = np.load(tmp_path / f'{setting}.npy')
  assert images['default'].shape == (80, 104, 3)
  np.testing.assert_allclose(images['eigen'], images['default'], rtol=0, atol=1e-5)


@pytest.fixture
def cpu_env(monkeypatch, tmp_path):
  monkeypatch.delenv('JAX_PLATFORMS', raising=False)
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
  monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path / 'cache'))
  return monkeypatch


@pytest.mark.parametrize('library, flag_set', [('eigen', True), ('ynnpack', False),
                                               (' Eigen ', True)])
def test_training_convolutions_forced_by_env(cpu_env, library, flag_set):
  cpu_env.setenv(xla_cpu.TRAINING_CONVOLUTIONS_ENV, library)
  cpu_env.setattr(conv_probe, 'cached_choice', _no_probe)
  assert xla_cpu.choose_training_convolutions(4, 128, 64) == library.strip().lower()
  assert (xla_cpu.EIGEN_CONVOLUTIONS_FLAG in os.environ['XLA_FLAGS']) == flag_set


def test_training_convolutions_bad_env_value_is_one_line(cpu_env):
  cpu_env.setenv(xla_cpu.TRAINING_CONVOLUTIONS_ENV, 'onednn')
  with pytest.raises(errors.ConfigError, match=r"SRRGAN_TRAINING_CONVOLUTIONS='onednn'.*eigen"):
    xla_cpu.choose_training_convolutions(4, 128, 64)


@pytest.mark.parametrize('platforms, flags', [
    ('cuda', ''), ('tpu,cpu', ''),
    (None, '--xla_cpu_experimental_ynn_fusion_type=individual_convolution')])
def test_training_convolutions_left_alone(monkeypatch, platforms, flags):
  if platforms is None:
    monkeypatch.delenv('JAX_PLATFORMS', raising=False)
  else:
    monkeypatch.setenv('JAX_PLATFORMS', platforms)
  monkeypatch.setenv('XLA_FLAGS', flags)
  monkeypatch.delenv(xla_cpu.TRAINING_CONVOLUTIONS_ENV, raising=False)
  monkeypatch.setattr(conv_probe, 'cached_choice', _no_probe)
  assert xla_cpu.choose_training_convolutions(4, 128, 64) is None
  assert os.environ['XLA_FLAGS'] == flags


def _no_probe(*args, **kwargs):
  raise AssertionError(f'probed {args} {kwargs}')


def _failed_probe(*args, **kwargs):
  raise conv_probe.subprocess.CalledProcessError(1, args[0])


@pytest.mark.parametrize('eigen_s, ynnpack_s, choice', [
    (1.0, 0.5, 'ynnpack'), (1.0, 0.8, 'ynnpack'), (1.0, 0.85, 'eigen'), (1.0, 3.0, 'eigen')])
def test_ynnpack_needs_a_clear_win(eigen_s, ynnpack_s, choice):
  assert conv_probe.choose({'eigen': eigen_s, 'ynnpack': ynnpack_s}) == choice


def test_busy_machine_is_not_probed(cpu_env):
  cpu_env.delenv(xla_cpu.TRAINING_CONVOLUTIONS_ENV, raising=False)
  cpu_env.setattr(os, 'getloadavg', lambda: (0.51 * os.cpu_count(), 0.0, 0.0))
  cpu_env.setattr(conv_probe.subprocess, 'run', _no_probe)
  assert xla_cpu.choose_training_convolutions(1, 8, 4) == 'eigen'
  assert xla_cpu.EIGEN_CONVOLUTIONS_FLAG in os.environ['XLA_FLAGS']
  assert not (cache.cache_dir() / conv_probe.CACHE_FILE).exists()  # Measured when quiet.


def test_probe_runs_once_per_key_and_sets_its_choice(cpu_env):
  cpu_env.delenv(xla_cpu.TRAINING_CONVOLUTIONS_ENV, raising=False)
  cpu_env.setattr(os, 'getloadavg', lambda: (0.49 * os.cpu_count(), 0.0, 0.0))  # Quiet.
  library = xla_cpu.choose_training_convolutions(1, 8, 4)  # A real child process.
  entries = json.loads((cache.cache_dir() / conv_probe.CACHE_FILE).read_text())
  entry = entries[conv_probe.cache_key(1, 8, 4)]
  assert set(entry['seconds']) == set(conv_probe.LIBRARIES)
  assert library == entry['choice'] == conv_probe.choose(entry['seconds'])
  assert (xla_cpu.EIGEN_CONVOLUTIONS_FLAG in os.environ['XLA_FLAGS']) == (library == 'eigen')
  # A second process on this machine reads the cache: no child, same choice.
  cpu_env.setenv('XLA_FLAGS', '')
  cpu_env.setattr(conv_probe.subprocess, 'run', _no_probe)
  assert xla_cpu.choose_training_convolutions(1, 8, 4) == library
  # Another shape is another measurement; a failed one means Eigen, uncached.
  cpu_env.setenv('XLA_FLAGS', '')
  cpu_env.setattr(conv_probe.subprocess, 'run', _failed_probe)
  assert xla_cpu.choose_training_convolutions(2, 8, 4) == 'eigen'
  assert conv_probe.cache_key(2, 8, 4) not in json.loads(
      (cache.cache_dir() / conv_probe.CACHE_FILE).read_text())


def test_probe_compiles_the_flags_programs():
  """The per-program option takes convolutions from YNNPACK, as the flag does."""
  programs, _ = conv_probe.compile_both(1, 8, 32)  # YNNPACK takes 32 channels and up.
  assert _ynn_convolutions(programs['eigen'].as_text()) == 0
  assert _ynn_convolutions(programs['ynnpack'].as_text()) == 3  # Forward, both gradients.


def _ynn_convolutions(hlo: str) -> int:
  """YNNPACK fusions whose fused computation contains a convolution."""
  called = re.findall(r'fusion\([^\n]*calls=(%[\w.\-]+)[^\n]*"__ynn_fusion"', hlo)
  bodies = {m[1]: m[2] for m in re.finditer(r'\n(%[\w.\-]+) [^\n]*\{\n(.*?)\n\}', hlo, re.S)}
  return sum(' convolution(' in bodies.get(name, '') for name in called)


@pytest.mark.parametrize('xla_flags, distributed, per_device_batch, forced', [
    ('', False, 8, None),
    ('--xla_force_host_platform_device_count=4', False, 2, None),
    ('--xla_force_host_platform_device_count=16', False, 1, None),
    ('', True, 8, 'eigen')])
def test_train_command_probes_its_layer(cpu_env, xla_flags, distributed, per_device_batch,
                                        forced):
  from configs import default
  from srrgan_jax.commands import train as train_command
  config = default.get_config()
  config.data.batch_size, config.data.patch_size, config.scale = 8, 96, 2
  config.model.stem_channels = 32
  config.distributed.initialize = distributed
  cpu_env.setenv('XLA_FLAGS', xla_flags)
  cpu_env.delenv(xla_cpu.TRAINING_CONVOLUTIONS_ENV, raising=False)
  asked = []
  cpu_env.setattr(conv_probe, 'cached_choice',
                  lambda *args: asked.append(args) or ('ynnpack', {}))
  train_command._choose_convolutions(config)  # pylint: disable=protected-access
  if forced:
    assert not asked and xla_cpu.EIGEN_CONVOLUTIONS_FLAG in os.environ['XLA_FLAGS']
  else:
    assert asked == [(per_device_batch, 48, 32)]
    assert os.environ['XLA_FLAGS'] == xla_flags  # YNNPACK: XLA's default.
