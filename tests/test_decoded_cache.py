"""The decoded-image cache and the shared-memory batches of worker processes."""

import gc
import logging
import os
import time

import grain
import numpy as np
import pytest

from configs import tiny
from srrgan_jax import data
from srrgan_jax import decoded_cache
from srrgan_jax import image_io
from test_data import photo_folder  # pylint: disable=unused-import  # A fixture.
from test_degradation import photo_like


def _config(cache_dir=None, gb=1.0, **data_overrides):
  c = tiny.get_config()
  c.data.batch_size, c.data.patches_per_image = 4, 2
  if cache_dir is not None:
    c.data.decoded_cache_dir, c.data.decoded_cache_gb = str(cache_dir), gb
  for key, value in data_overrides.items():
    setattr(c.data, key, value)
  return c


def _batches(config, folder, count=3):
  it = data.make_train_iterator(config, train_dir=folder)
  try:
    return [{k: np.array(v) for k, v in next(it).items()} for _ in range(count)]
  finally:
    it.close()


def _assert_same(got, want):
  for a, b in zip(got, want, strict=True):
    np.testing.assert_array_equal(a['hr'], b['hr'])
    np.testing.assert_array_equal(a['lr'], b['lr'])


def test_cached_pixels_give_the_same_batches_without_decoding(photo_folder, tmp_path,
                                                              monkeypatch):
  plain = _batches(_config(), photo_folder)
  cache_dir = tmp_path / 'decoded'
  _assert_same(_batches(_config(cache_dir), photo_folder), plain)  # Fills the cache.
  scan = data.scan_training_images(str(photo_folder), 32)
  cache = decoded_cache.DecodedCache(cache_dir, 1.0)
  stored = {f.name for f in cache_dir.glob('*.npy')}
  assert stored and stored <= {cache.file_for(p).name for p in scan.paths}
  sixteen_bit = str(photo_folder / 'rgb16.png')
  cache.load(sixteen_bit, data.decode_pixels)
  assert np.load(cache.file_for(sixteen_bit)).dtype == np.uint16  # As decoded.

  def no_decoding(path):
    raise AssertionError(f'decoded {path} although it is cached')
  monkeypatch.setattr(data, 'decode_pixels', no_decoding)
  _assert_same(_batches(_config(cache_dir), photo_folder), plain)


def test_an_edited_image_is_decoded_afresh(photo_folder, tmp_path):
  cache = decoded_cache.DecodedCache(tmp_path / 'decoded', 1.0)
  path = str(photo_folder / 'rgb8.png')
  first = np.array(cache.load(path, data.decode_pixels))
  image_io.write_image(photo_folder / 'rgb8.png', photo_like(48, 64, 9))
  os.utime(path, ns=(1, 10**18))  # A different modification time, whatever the clock.
  edited = cache.load(path, data.decode_pixels)
  assert not np.array_equal(first, edited)
  np.testing.assert_array_equal(edited, data.decode_pixels(path))
  assert len(list((tmp_path / 'decoded').glob('*.npy'))) == 2


def test_a_damaged_file_is_reported_and_replaced(photo_folder, tmp_path, caplog):
  cache = decoded_cache.DecodedCache(tmp_path / 'decoded', 1.0)
  path = str(photo_folder / 'rgb8.png')
  want = data.decode_pixels(path)
  np.testing.assert_array_equal(cache.load(path, data.decode_pixels), want)  # Stores.
  np.testing.assert_array_equal(cache.load(path, data.decode_pixels), want)  # Maps.
  file = cache.file_for(path)
  file.write_bytes(file.read_bytes()[:200])  # Cut short behind the reader's back.
  np.testing.assert_array_equal(cache.load(path, data.decode_pixels), want)
  assert 'is unreadable' in caplog.text and file.name in caplog.text
  np.testing.assert_array_equal(np.load(file), want)  # Stored again, whole.


def test_the_size_limit_stops_storing_and_says_so(photo_folder, tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  one_image = 48 * 64 * 3
  cache = decoded_cache.DecodedCache(tmp_path / 'decoded', (one_image + 500) / 1e9)
  paths = [str(photo_folder / 'rgb8.png'), str(photo_folder / 'gray.png')]
  for path in paths:
    np.testing.assert_array_equal(cache.load(path, data.decode_pixels),
                                  data.decode_pixels(path))
  assert [f.name for f in (tmp_path / 'decoded').glob('*.npy')] == [
      cache.file_for(paths[0]).name]
  assert 'is full' in caplog.text and 'data.decoded_cache_gb' in caplog.text


def test_unusable_settings_name_the_field(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a folder')
  with pytest.raises(decoded_cache.DecodedCacheError,
                     match=r'data.decoded_cache_dir=.*file/sub.*cannot create'):
    decoded_cache.DecodedCache(blocker / 'sub', 1.0)
  with pytest.raises(decoded_cache.DecodedCacheError, match='decoded_cache_gb=-1'):
    decoded_cache.DecodedCache(tmp_path, -1)
  assert data.make_decoded_cache(_config()) is None  # 0 GB: off.


def test_worker_batches_travel_in_shared_memory_and_equal_in_process_ones(photo_folder):
  in_process = _batches(_config(), photo_folder, count=2)
  it = data.make_train_iterator(_config(num_workers=1), train_dir=photo_folder)
  try:
    batch = next(it)
    assert all(isinstance(v, grain.multiprocessing.SharedMemoryArray)
               for v in batch.values())
    _assert_same([batch, next(it)], in_process)
  finally:
    it.close()


def test_a_failed_worker_batch_leaves_no_shared_memory(photo_folder, monkeypatch):
  monkeypatch.setattr(data, '_IN_WORKER_PROCESS', True)  # As in a Grain worker.
  names = []
  real_new_batch = data.new_batch

  def recording_new_batch(*args, **kwargs):
    batch = real_new_batch(*args, **kwargs)
    names.extend(array.shm.name for array in batch.values())
    return batch
  monkeypatch.setattr(data, 'new_batch', recording_new_batch)
  # Captured log records would keep the failed decodes' frames, and the batch, alive.
  monkeypatch.setattr(data.logging, 'warning', lambda *args: None)
  broken = str(photo_folder / 'broken.png')
  with pytest.raises(image_io.ImageReadError, match='None of the training images'):
    data._LoadBatch(_config(), [broken]).map([(broken, 0)])  # pylint: disable=protected-access
  gc.collect()
  deadline = time.monotonic() + 5  # Grain may unlink from a thread.
  while any(os.path.exists(f'/dev/shm/{name}') for name in names):
    assert time.monotonic() < deadline, f'shared memory {names} left behind'
    time.sleep(0.05)
  assert len(names) == 2


def test_a_failed_write_is_reported_once_and_decoding_goes_on(photo_folder, tmp_path,
                                                              monkeypatch, caplog):
  caplog.set_level(logging.WARNING)
  cache = decoded_cache.DecodedCache(tmp_path / 'decoded', 1.0)

  def disk_full(*args, **kwargs):
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(decoded_cache.np, 'save', disk_full)
  for name in ('rgb8.png', 'gray.png'):
    path = str(photo_folder / name)
    np.testing.assert_array_equal(cache.load(path, data.decode_pixels),
                                  data.decode_pixels(path))
  assert not list((tmp_path / 'decoded').iterdir())  # No files, not even temporary ones.
  assert caplog.text.count('cannot write') == 1 and 'No space left' in caplog.text
