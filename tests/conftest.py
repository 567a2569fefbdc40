"""Test setup: 4 fake CPU devices (must be set before jax is imported)."""

import os
import sys

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=g-import-not-at-top,wrong-import-position  (after the setup above)
import pytest

import tolerance_log


@pytest.fixture(autouse=True)
def _log_tolerances(request, monkeypatch):
  """Records numerical comparisons when $SRRGAN_TOLERANCE_LOG is set (see tolerance_log)."""
  tolerance_log.install(monkeypatch, request.node.nodeid)
