"""The XLA:CPU convolution flag: CPU runs only, never over the user, same tiled image."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

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
