"""Augmentation, folder scans and the Grain training pipeline."""

import logging

import grain
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from srrgan_jax import augment
from srrgan_jax import data
from srrgan_jax import image_io
from srrgan_jax import training_degradation
from srrgan_jax.train import steps
from test_degradation import photo_like


class _TopOfRange:
  """Stands in for a Generator: every uniform draw returns the top of its range."""

  def uniform(self, low, high):
    del low
    return high


def jitter_cfg(brightness=0.0, contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=0.0):
  c = tiny.get_config().augment
  c.brightness_delta, c.contrast_range = brightness, contrast
  c.saturation_range, c.hue_delta = saturation, hue
  return c


def tiny_config(**data_overrides):
  c = tiny.get_config()
  for key, value in data_overrides.items():
    setattr(c.data, key, value)
  return c


@pytest.fixture
def photo_folder(tmp_path):
  """Six usable images of every kind users bring, plus three that must be skipped."""
  folder = tmp_path / 'photos'
  image_io.write_image(folder / 'rgb8.png', photo_like(48, 64, 1))
  image_io.write_image(folder / 'rgb16.png', photo_like(40, 40, 2), bit_depth=16)
  image_io.write_image(folder / 'gray.png', photo_like(40, 50, 3), grayscale=True)
  image_io.write_image(folder / 'alpha.png', photo_like(50, 40, 4),
                       alpha=np.full((50, 40), 0.5, np.float32))
  image_io.write_image(folder / 'nested' / 'photo.jpg', photo_like(64, 48, 5))
  image_io.write_image(folder / 'nested' / 'photo.webp', photo_like(36, 36, 6))
  image_io.write_image(folder / 'small.png', photo_like(20, 60, 7))  # < 32px patch.
  (folder / 'broken.png').write_bytes(b'not an image at all')
  (folder / 'notes.txt').write_text('ignored: not an image suffix')
  return folder


def test_colour_jitter_identity_and_ranges():
  img = photo_like(32, 32)
  out = augment.colour_jitter(img, np.random.default_rng(0), jitter_cfg())
  np.testing.assert_allclose(out, img, atol=2e-6)
  c = tiny.get_config().augment
  for index in range(20):
    out, params = augment.colour_jitter(img, np.random.default_rng(index), c,
                                        return_params=True)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    assert abs(params['brightness']) <= 0.05 and abs(params['hue']) <= 0.06
    assert 0.9 <= params['contrast'] <= 1.1 and 0.9 <= params['saturation'] <= 1.1


def test_colour_jitter_follows_tf_image_semantics():
  img = 0.3 + 0.4 * photo_like(16, 16)
  brighter = augment.colour_jitter(img, _TopOfRange(), jitter_cfg(brightness=0.05))
  np.testing.assert_allclose(brighter, img + 0.05, atol=1e-5)
  contrast = augment.colour_jitter(img, _TopOfRange(), jitter_cfg(contrast=(1.0, 1.2)))
  mean = img.mean(axis=(0, 1))
  np.testing.assert_allclose(contrast, (img - mean) * 1.2 + mean, atol=1e-5)
  gray = augment.colour_jitter(img, _TopOfRange(), jitter_cfg(saturation=(0.0, 0.0)))
  np.testing.assert_allclose(gray, np.repeat(img.max(axis=2, keepdims=True), 3, 2), atol=1e-5)
  primaries = np.eye(3, dtype=np.float32)[None]  # Red, green, blue pixels.
  for turn, expected in ((1 / 3, [1, 2, 0]), (-1 / 3, [2, 0, 1])):
    shifted = augment.colour_jitter(primaries, _TopOfRange(), jitter_cfg(hue=turn))
    np.testing.assert_allclose(shifted[0], np.eye(3)[expected], atol=1e-5)


def test_colour_jitter_of_integer_pixels_equals_that_of_their_floats():
  """Scaling inside the colour transform is the one change of rounding: ~1e-6."""
  c = tiny.get_config().augment
  worst = 0.0
  for dtype, top in ((np.uint8, 255), (np.uint16, 65535)):
    pixels = np.rint(photo_like(40, 48, 5) * top).astype(dtype)
    for index in range(10):
      want = augment.colour_jitter(image_io.to_unit_float(pixels),
                                   np.random.default_rng(index), c)
      got = augment.colour_jitter(pixels, np.random.default_rng(index), c)
      assert got.dtype == np.float32
      worst = max(worst, float(np.abs(got - want).max()))
  assert worst < 1e-5  # Far below the 1/255 of an 8-bit level.
  assert data.jitter_input(pixels) is pixels  # Integer patches skip the float pass.
  floats = photo_like(8, 8) * 1.5
  np.testing.assert_array_equal(data.jitter_input(floats), np.clip(floats, 0, 1))


def test_random_geometry_matches_numpy_and_covers_every_branch():
  img = (photo_like(20, 30) * 255).astype(np.uint8)
  c = tiny.get_config().augment
  seen = set()
  for index in range(40):
    patch, p = augment.random_geometry(img, 8, np.random.default_rng(index), c,
                                       return_params=True)
    expected = img[p['top']:p['top'] + 8, p['left']:p['left'] + 8]
    if p['hflip']:
      expected = expected[:, ::-1]
    if p['vflip']:
      expected = expected[::-1]
    np.testing.assert_array_equal(patch, np.rot90(expected, p['rot90']))
    seen.add((p['hflip'], p['vflip'], p['rot90']))
  assert {s[2] for s in seen} == {0, 1, 2, 3} and {s[:2] for s in seen} == {
      (False, False), (False, True), (True, False), (True, True)}
  c.hflip = c.vflip = c.rot90 = False
  patch, p = augment.random_geometry(img, 8, np.random.default_rng(0), c, return_params=True)
  np.testing.assert_array_equal(patch, img[p['top']:p['top'] + 8, p['left']:p['left'] + 8])
  with pytest.raises(ValueError, match='smaller than the 8x8 crop'):
    augment.center_crop(img[:5], 8, name='x.png')


def test_training_sample_reproducible_from_seed_and_index():
  c = tiny_config()
  pixels = (photo_like(60, 70) * 65535).astype(np.uint16)
  kwargs = dict(seed=3, patch_size=32, scale=2, augment_cfg=c.augment,
                degradation_cfg=c.degradation, return_params=True)
  hr, lr, params = data.training_sample(pixels, 11, **kwargs)
  hr2, lr2, params2 = data.training_sample(pixels, 11, **kwargs)
  np.testing.assert_array_equal(lr, lr2)
  np.testing.assert_array_equal(hr, hr2)
  assert params == params2
  assert hr.shape == (32, 32, 3) and lr.shape == (16, 16, 3) and lr.dtype == np.float32
  others = [data.training_sample(pixels, i, **kwargs)[2] for i in range(12, 20)]
  assert all(p != params for p in others)
  assert {'top', 'rot90', 'hue', 'blur', 'resize', 'noise', 'jpeg_quality'} <= set(params)


def test_batches_hold_the_samples_with_the_hr_rounded_to_8_bits(tmp_path):
  """The one change of rounding: the HR target crosses as uint8, within 0.5/255."""
  image_io.write_image(tmp_path / 'only.png', photo_like(48, 56))
  c = tiny_config(batch_size=4)
  it = data.make_train_iterator(c, train_dir=tmp_path)
  batch = next(it)
  it.close()
  pixels = data.decode_pixels(str(tmp_path / 'only.png'))
  worst = 0.0
  for index in range(4):
    hr, lr = data.training_sample(
        pixels, index, seed=c.seed, patch_size=32, scale=2, augment_cfg=c.augment,
        degradation_cfg=training_degradation.plain_config(c.degradation))
    np.testing.assert_allclose(batch['lr'][index], 2 * lr - 1, atol=1e-6)
    np.testing.assert_array_equal(batch['hr'][index], np.rint(hr * 255))
    on_device = np.asarray(steps.hr_to_model_range(jnp.asarray(batch['hr'][index])))
    worst = max(worst, np.abs((on_device + 1) / 2 - hr).max())
  assert 0.4 / 255 < worst <= 0.5 / 255 + 1e-6


def test_scan_reports_and_skips_bad_files(photo_folder, caplog):
  caplog.set_level(logging.INFO, logger='absl')  # data.py logs through absl.
  scan = data.scan_training_images(str(photo_folder), 32)
  used = sorted(p.split('photos/')[1] for p in scan.paths)
  assert used == ['alpha.png', 'gray.png', 'nested/photo.jpg', 'nested/photo.webp',
                  'rgb16.png', 'rgb8.png']
  skipped = dict(scan.skipped)
  assert set(skipped) == {str(photo_folder / 'broken.png'), str(photo_folder / 'small.png')}
  assert '60x20 pixels is smaller than the 32x32' in skipped[str(photo_folder / 'small.png')]
  assert 'broken.png' in skipped[str(photo_folder / 'broken.png')]
  assert '6 used, 2 skipped' in caplog.text and 'small.png' in caplog.text
  with pytest.raises(FileNotFoundError, match='missing'):
    data.scan_training_images(str(photo_folder / 'missing'), 32)
  (photo_folder / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='empty'):
    data.scan_training_images(str(photo_folder / 'empty'), 32)


def test_train_iterator_batches_and_resumes_exactly(photo_folder):
  c = tiny_config(batch_size=4, patches_per_image=3)
  it = data.make_train_iterator(c, train_dir=photo_folder)
  batches = [next(it) for _ in range(3)]
  state = it.get_state()
  after = [next(it) for _ in range(3)]
  for batch in batches:
    assert batch['hr'].shape == (4, 32, 32, 3) and batch['lr'].shape == (4, 16, 16, 3)
    assert batch['hr'].dtype == np.uint8 and batch['lr'].dtype == np.float32
    assert batch['lr'].min() >= -1 and batch['lr'].max() <= 1
  assert not np.array_equal(batches[0]['hr'], batches[1]['hr'])
  resumed = data.make_train_iterator(c, train_dir=photo_folder)
  resumed.set_state(state)
  for expected in after:
    got = next(resumed)
    np.testing.assert_array_equal(got['hr'], expected['hr'])
    np.testing.assert_array_equal(got['lr'], expected['lr'])
  fresh = data.make_train_iterator(c, train_dir=photo_folder)
  np.testing.assert_array_equal(next(fresh)['lr'], batches[0]['lr'])  # Same seed, same data.
  assert isinstance(fresh, grain.DatasetIterator)
  fresh.close()
  fresh.close()  # Idempotent.
  with pytest.raises(ValueError, match='closed'):
    next(fresh)


def test_hosts_get_their_share_of_distinct_samples(photo_folder):
  c = tiny_config(batch_size=4, patches_per_image=1)
  host_batches = [next(data.make_train_iterator(c, process_index=h, process_count=2,
                                                train_dir=photo_folder)) for h in (0, 1)]
  assert all(b['hr'].shape == (2, 32, 32, 3) for b in host_batches)
  rows = np.concatenate([b['hr'] for b in host_batches]).reshape(4, -1)
  assert len({row.tobytes() for row in rows}) == 4
  with pytest.raises(ValueError, match='split evenly over 3 hosts'):
    data.make_train_iterator(c, process_index=0, process_count=3, train_dir=photo_folder)


def test_file_that_fails_to_decode_in_training_is_reported_and_replaced(tmp_path, caplog):
  folder = tmp_path / 'truncated'
  image_io.write_image(folder / 'good.png', photo_like(40, 40))
  image_io.write_image(folder / 'cut.png', photo_like(40, 40, 1))
  whole = (folder / 'cut.png').read_bytes()
  (folder / 'cut.png').write_bytes(whole[:len(whole) // 3])  # Header intact, pixels not.
  c = tiny_config(batch_size=4, patches_per_image=1)
  assert len(data.scan_training_images(str(folder), 32).paths) == 2  # Header check passes.
  it = data.make_train_iterator(c, train_dir=folder)
  for _ in range(2):
    assert np.isfinite(next(it)['lr']).all()
  assert 'cut.png' in caplog.text


def test_steps_per_epoch(photo_folder):
  c = tiny_config(steps_per_epoch=0, batch_size=4, patches_per_image=2)
  assert data.train_steps_per_epoch(c, train_dir=photo_folder) == 6 * 2 // 4
  c.data.steps_per_epoch = 7
  assert data.train_steps_per_epoch(c, train_dir=photo_folder) == 7


def test_scan_skips_an_image_too_large_for_opencv(tmp_path, caplog):
  from test_image_io import huge_header_png
  image_io.write_image(tmp_path / 'a.png', photo_like(40, 40))
  huge_header_png(tmp_path / 'huge.png')
  scan = data.scan_training_images(str(tmp_path), 32)
  assert scan.paths == (str(tmp_path / 'a.png'),)
  assert 'huge.png: too large to decode' in dict(scan.skipped)[str(tmp_path / 'huge.png')]


def test_loader_decodes_only_the_rows_its_crops_need_with_the_same_samples(
    photo_folder, monkeypatch):
  c = tiny_config(batch_size=6, patches_per_image=2)
  scan = data.scan_training_images(str(photo_folder), 32)
  refs = [(path, index) for index, path in enumerate(scan.paths * 2)][:12]
  whole = data._LoadBatch(c, scan.paths).map(refs)  # pylint: disable=protected-access
  decoded_rows = []
  top_rows = image_io.decode_png_top_rows

  def spy(path, rows, height):
    pixels = top_rows(path, rows, height)
    decoded_rows.append((str(path).split('photos/')[1], rows, height, pixels is not None))
    return pixels

  monkeypatch.setattr(image_io, 'decode_png_top_rows', spy)
  loader = data._LoadBatch(c, scan.paths, scan.heights)  # pylint: disable=protected-access
  partial = loader.map(refs)
  np.testing.assert_array_equal(partial['hr'], whole['hr'])
  np.testing.assert_array_equal(partial['lr'], whole['lr'])
  # 8-bit PNGs (RGB, gray, RGBA) were cut short; 16-bit, JPEG and WebP decoded whole.
  cut = {name for name, rows, height, done in decoded_rows if done and rows < height}
  assert cut and cut <= {'alpha.png', 'gray.png', 'rgb8.png'}
  assert {name for name, *_, done in decoded_rows if not done} <= {
      'rgb16.png', 'nested/photo.jpg', 'nested/photo.webp'}
  for path, index in refs:  # Each crop lay within the rows decoded for it.
    height = dict(zip(scan.paths, scan.heights))[path]
    bottom = data.crop_bottom(height, index, seed=c.seed, patch_size=32)
    assert 32 <= bottom <= height
