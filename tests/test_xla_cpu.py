"""The XLA:CPU convolution flag is set for CPU runs only and never overrides the user."""

import os

import pytest

from srrgan_jax import xla_cpu


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
