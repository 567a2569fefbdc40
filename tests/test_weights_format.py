"""The weight files: their layout, the lookup order and the errors that name them."""

from pathlib import Path

import numpy as np
import pytest

from configs import tiny
from srrgan_jax import cache
from srrgan_jax import errors
from srrgan_jax import perceptual
from srrgan_jax.weights import layout
from srrgan_jax.weights import lookup
from test_weights_command import run_command

pytestmark = pytest.mark.usefixtures('isolated_dirs')


def _placeholder(path):
  """Lookup only checks that a file exists; contents are checked when loading."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(b'')
  return path


def test_lookup_order_override_then_env_dir_then_cache(isolated_dirs, monkeypatch):
  in_cache = _placeholder(isolated_dirs / 'cache' / layout.LPIPS_FILE)
  assert lookup.weights_file(layout.LPIPS_FILE) == in_cache
  in_env_dir = _placeholder(isolated_dirs / 'weights_dir' / layout.LPIPS_FILE)
  assert lookup.weights_file(layout.LPIPS_FILE) == in_env_dir
  elsewhere = _placeholder(isolated_dirs / 'other' / 'my_lpips.npz')
  assert lookup.weights_file(layout.LPIPS_FILE, str(elsewhere)) == elsewhere
  monkeypatch.delenv(cache.CACHE_DIR_ENV)
  assert cache.cache_dir() == Path.home() / '.cache' / 'srrgan_jax'
  monkeypatch.setenv(cache.CACHE_DIR_ENV, '')  # Empty counts as unset.
  assert cache.cache_dir() == Path.home() / '.cache' / 'srrgan_jax'


def test_missing_weights_error_says_file_places_and_command(isolated_dirs):
  with pytest.raises(lookup.MissingWeightsError) as error:
    perceptual.load_vgg19_params(tiny.get_config())  # tiny: auto_fetch off.
  assert isinstance(error.value, FileNotFoundError)
  assert isinstance(error.value, errors.UserError)
  message = str(error.value)
  assert 'vgg19_caffe.npz not found' in message
  assert str(isolated_dirs / 'weights_dir' / 'vgg19_caffe.npz') in message
  assert str(isolated_dirs / 'cache' / 'vgg19_caffe.npz') in message
  assert 'python -m srrgan_jax.weights fetch --only vgg19_caffe.npz' in message
  assert 'SRRGAN_WEIGHTS_DIR' in message


def test_missing_configured_file_names_the_config_field(isolated_dirs):
  config = tiny.get_config()
  config.weights.lpips_file = str(isolated_dirs / 'nowhere' / 'lpips.npz')
  _placeholder(isolated_dirs / 'cache' / layout.LPIPS_FILE)
  with pytest.raises(lookup.MissingWeightsError, match='weights.lpips_file') as error:
    perceptual.load_lpips_params(config)  # A configured path is never silently replaced.
  assert config.weights.lpips_file in str(error.value)


def test_save_npz_writes_the_same_bytes_for_the_same_arrays(isolated_dirs):
  arrays = {'b': np.arange(3, dtype=np.float32), 'a': np.ones((2, 2), np.float32)}
  first = layout.save_npz(isolated_dirs / 'first.npz', arrays).read_bytes()
  assert layout.save_npz(isolated_dirs / 'second.npz', arrays).read_bytes() == first


def test_unreadable_npz_names_the_file_and_the_fix(isolated_dirs):
  path = isolated_dirs / 'cache' / layout.VGG19_FILE
  path.parent.mkdir(parents=True)
  path.write_bytes(b'not a zip')
  with pytest.raises(layout.WeightsFormatError) as error:
    layout.load_npz(path)
  assert str(path) in str(error.value) and 'fetch --force' in str(error.value)
  assert isinstance(error.value, ValueError) and isinstance(error.value, errors.UserError)


def test_verify_rejects_wrong_layout(isolated_dirs, capsys):
  path = isolated_dirs / 'bad' / layout.VGG19_FILE
  layout.save_npz(path, {'block1_conv1/kernel': np.zeros((3, 3, 3, 8), np.float32),
                         'block1_conv1/bias': np.zeros(64, np.float64),
                         'extra': np.zeros(1, np.float32)})
  assert run_command('verify', str(path)) == 1
  report = capsys.readouterr().out
  assert "missing arrays ['block1_conv2/kernel'" in report
  assert "unexpected arrays ['extra']" in report
  assert 'block1_conv1/kernel has shape (3, 3, 3, 8), expected (3, 3, 3, 64)' in report
  assert 'block1_conv1/bias has dtype float64, expected float32' in report
