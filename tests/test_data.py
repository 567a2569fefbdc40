"""Augmentation, folder scans, the Grain pipeline, eval sets, sample photos, data prep."""

import logging

import grain
import numpy as np
import pytest

from configs import tiny
from srrgan_jax import augment
from srrgan_jax import data
from srrgan_jax import image_io
from srrgan_jax import tiling
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


def test_scan_reports_and_skips_bad_files(photo_folder, caplog):
  caplog.set_level(logging.INFO)
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
    assert batch['hr'].dtype == np.float32 and batch['lr'].dtype == np.float32
    assert batch['hr'].min() >= -1 and batch['hr'].max() <= 1 and batch['lr'].min() >= -1
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
    assert np.isfinite(next(it)['hr']).all()
  assert 'cut.png' in caplog.text


def test_eval_set_is_deterministic_and_strict(tmp_path):
  folder = tmp_path / 'test'
  image_io.write_image(folder / 'a.png', photo_like(40, 50))
  image_io.write_image(folder / 'b.jpg', photo_like(45, 33, 1))
  c = tiny_config()
  first = data.load_eval_set(folder, c)
  again = data.load_eval_set(folder, c)
  assert first['names'] == ['a.png', 'b.jpg']
  assert first['hr'].shape == (2, 32, 32, 3) and first['lr'].shape == (2, 16, 16, 3)
  np.testing.assert_array_equal(first['lr'], again['lr'])
  assert first['lr'].min() >= -1 and first['lr'].max() <= 1
  hr = image_io.read_rgb(folder / 'a.png')[4:36, 9:41]  # Centre crop.
  np.testing.assert_allclose(first['hr'][0], hr * 2 - 1, atol=1e-6)
  full = data.load_eval_set(folder, c, crop=None)
  assert full['hr'][1].shape == (44, 32, 3) and full['lr'][1].shape == (22, 16, 3)
  batches = list(data.eval_batches(first, 3))
  assert len(batches) == 1 and batches[0]['lr'].shape == (3, 16, 16, 3)
  np.testing.assert_array_equal(batches[0]['mask'], [1, 1, 0])
  image_io.write_image(folder / 'c_small.png', photo_like(20, 40))
  with pytest.raises(ValueError, match='c_small.png: 40x20 pixels is smaller'):
    data.load_eval_set(folder, c)
  (folder / 'c_small.png').write_bytes(b'garbage')
  with pytest.raises(image_io.ImageReadError, match='c_small.png'):
    data.load_eval_set(folder, c)
  with pytest.raises(FileNotFoundError, match='nowhere'):
    data.load_eval_set(tmp_path / 'nowhere', c)


def test_eval_crop_is_the_validation_crop_else_the_patch_size(tmp_path):
  c = tiny_config()  # Scale 2, three stride-2 stages: crops must be multiples of 16.
  assert data.eval_crop_size(c) == 32
  c.data.val_crop_size = 48
  assert data.eval_crop_size(c) == 48 and data.eval_crop_size(c, 16) == 16
  image_io.write_image(tmp_path / 'a.png', photo_like(50, 60))
  loaded = data.load_eval_set(tmp_path, c)
  assert loaded['hr'].shape == (1, 48, 48, 3) and loaded['lr'].shape == (1, 24, 24, 3)
  c.data.val_crop_size = 40
  with pytest.raises(ValueError, match='data.val_crop_size 40 is not a multiple of 16.*e.g. 32'):
    data.eval_crop_size(c)
  with pytest.raises(ValueError, match='crop size 24 is not a multiple of 16.*e.g. 16'):
    data.eval_crop_size(c, 24)


def test_sample_photos_are_real_colour_photos_with_provenance(tmp_path, monkeypatch):
  monkeypatch.setenv('SRRGAN_CACHE_DIR', str(tmp_path))
  root = data.sample_photos_dir()
  assert root == tmp_path / 'sample_photos'
  train, val = data.resolve_dirs(tiny.get_config())
  assert (train, val) == (root / 'train', root / 'val')
  train_names = {p.name for p in image_io.list_images(train)}
  val_names = {p.name for p in image_io.list_images(val)}
  assert len(train_names) >= 6 and len(val_names) >= 2 and not train_names & val_names
  provenance = (root / 'PROVENANCE.md').read_text()
  for name in train_names | val_names:
    assert name in provenance
    height, width = data._image_size(next(root.glob(f'*/{name}')))
    assert min(height, width) >= 256  # Enough for the reference 256px patches.
  pixels = data.decode_pixels(str(val / 'coffee.png')).astype(np.float32)
  assert np.abs(pixels[..., 0] - pixels[..., 2]).mean() > 10  # Colour, not gray.
  assert data.sample_photos_dir() == root  # Cached: second call reuses the folder.


def test_prepare_command_cuts_overlapping_subimages(tmp_path, capsys):
  source = tmp_path / 'hr'
  image_io.write_image(source / 'wide.png', photo_like(40, 70), bit_depth=16)
  image_io.write_image(source / 'sub' / 'tiny.png', photo_like(20, 20, 1))
  (source / 'bad.png').write_bytes(b'nope')
  assert tiling.tile_starts(70, 32, 32 - 16) == [0, 16, 32, 38]
  assert tiling.tile_starts(40, 32, 32 - 16) == [0, 8]
  assert tiling.tile_starts(20, 32, 32 - 16) == [0]
  status = data.run(['--input', str(source), '--output', str(tmp_path / 'out'),
                     '--crop', '32', '--step', '16', '--workers', '2'])
  output = capsys.readouterr()
  assert status == 1 and 'bad.png' in output.err  # Reported; the others still done.
  assert '2 images -> 9 sub-images' in output.out
  cuts = sorted(p.relative_to(tmp_path / 'out').as_posix()
                for p in (tmp_path / 'out').rglob('*.png'))
  assert len(cuts) == 9 and 'sub/tiny_s001.png' in cuts
  first = image_io.read_image(tmp_path / 'out' / 'wide_s001.png')
  assert first.bit_depth == 16 and first.rgb.shape == (32, 32, 3)
  np.testing.assert_allclose(first.rgb, image_io.read_rgb(source / 'wide.png')[:32, :32])
  last = image_io.read_rgb(tmp_path / 'out' / 'wide_s008.png')
  np.testing.assert_allclose(last, image_io.read_rgb(source / 'wide.png')[8:40, 38:70])


def test_steps_per_epoch(photo_folder):
  c = tiny_config(steps_per_epoch=0, batch_size=4, patches_per_image=2)
  assert data.train_steps_per_epoch(c, train_dir=photo_folder) == 6 * 2 // 4
  c.data.steps_per_epoch = 7
  assert data.train_steps_per_epoch(c, train_dir=photo_folder) == 7
