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
from srrgan_jax import cache
from srrgan_jax.weights import layout
from srrgan_jax.weights import lookup


@pytest.fixture(autouse=True)
def _log_tolerances(request, monkeypatch):
  """Records numerical comparisons when $SRRGAN_TOLERANCE_LOG is set (see tolerance_log)."""
  tolerance_log.install(monkeypatch, request.node.nodeid)


@pytest.fixture
def isolated_dirs(tmp_path, monkeypatch):
  """Empty weight/cache dirs, and a fast npz deflate level (the arrays are what matter)."""
  monkeypatch.setenv(lookup.WEIGHTS_DIR_ENV, str(tmp_path / 'weights_dir'))
  monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path / 'cache'))
  monkeypatch.setattr(layout, 'NPZ_COMPRESS_LEVEL', 0)
  return tmp_path
