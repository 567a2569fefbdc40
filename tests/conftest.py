"""Test setup: 4 fake CPU devices and a compilation cache (set before jax is imported)."""

import atexit
import os
import shutil
import sys
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# One convolution library for every test process (train.py would otherwise pick
# it by a timing, and processes compared with each other could differ).
os.environ.setdefault('SRRGAN_TRAINING_CONVOLUTIONS', 'eigen')
# One persistent compilation cache for the session and the processes it starts
# (they inherit the environment): many tests, command-line subprocesses and the
# multi-process launches compile identical programs, and a hit loads the same
# executable in about a quarter of the compile time.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix='srrgan_tests_jax_cache_')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=g-import-not-at-top,wrong-import-position  (after the setup above)
import pytest

import tiny_run as tiny_run_lib
import tolerance_log
from srrgan_jax import cache
from srrgan_jax.train import loop
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


@pytest.fixture(scope='session')
def tiny_run_config(tmp_path_factory):
  """The config of the shared tiny run (see tiny_run.py); copy it before changing it."""
  return tiny_run_lib.make_config(tmp_path_factory.mktemp('tiny_run_data'))


@pytest.fixture(scope='session')
def tiny_run(tiny_run_config, tmp_path_factory):
  """(workdir, summary) of the shared tiny three-phase run; tests must not change it."""
  workdir = tmp_path_factory.mktemp('tiny_run')
  summary = loop.run(tiny_run_config.copy_and_resolve_references(), workdir)
  return workdir, summary
