"""Evaluation sets: deterministic LR inputs, strict about bad files, crops that fit."""

import numpy as np
import pytest

from configs import tiny
from srrgan_jax import eval_sets
from srrgan_jax import image_io
from test_degradation import photo_like


def test_eval_set_is_deterministic_and_strict(tmp_path):
  folder = tmp_path / 'test'
  image_io.write_image(folder / 'a.png', photo_like(40, 50))
  image_io.write_image(folder / 'b.jpg', photo_like(45, 33, 1))
  c = tiny.get_config()
  first = eval_sets.load_eval_set(folder, c)
  again = eval_sets.load_eval_set(folder, c)
  assert first['names'] == ['a.png', 'b.jpg']
  assert first['hr'].shape == (2, 32, 32, 3) and first['lr'].shape == (2, 16, 16, 3)
  np.testing.assert_array_equal(first['lr'], again['lr'])
  assert first['lr'].min() >= -1 and first['lr'].max() <= 1
  hr = image_io.read_rgb(folder / 'a.png')[4:36, 9:41]  # Centre crop.
  np.testing.assert_allclose(first['hr'][0], hr * 2 - 1, atol=1e-6)
  full = eval_sets.load_eval_set(folder, c, crop=None)
  assert full['hr'][1].shape == (44, 32, 3) and full['lr'][1].shape == (22, 16, 3)
  batches = list(eval_sets.eval_batches(first, 3))
  assert len(batches) == 1 and batches[0]['lr'].shape == (3, 16, 16, 3)
  np.testing.assert_array_equal(batches[0]['mask'], [1, 1, 0])
  image_io.write_image(folder / 'c_small.png', photo_like(20, 40))
  with pytest.raises(ValueError, match='c_small.png: 40x20 pixels is smaller'):
    eval_sets.load_eval_set(folder, c)
  (folder / 'c_small.png').write_bytes(b'garbage')
  with pytest.raises(image_io.ImageReadError, match='c_small.png'):
    eval_sets.load_eval_set(folder, c)
  with pytest.raises(FileNotFoundError, match='nowhere'):
    eval_sets.load_eval_set(tmp_path / 'nowhere', c)


def test_eval_crop_is_the_validation_crop_else_the_patch_size(tmp_path):
  c = tiny.get_config()  # Scale 2, three stride-2 stages: crops must be multiples of 16.
  assert eval_sets.eval_crop_size(c) == 32
  c.data.val_crop_size = 48
  assert eval_sets.eval_crop_size(c) == 48 and eval_sets.eval_crop_size(c, 16) == 16
  image_io.write_image(tmp_path / 'a.png', photo_like(50, 60))
  loaded = eval_sets.load_eval_set(tmp_path, c)
  assert loaded['hr'].shape == (1, 48, 48, 3) and loaded['lr'].shape == (1, 24, 24, 3)
  c.data.val_crop_size = 40
  with pytest.raises(ValueError, match='data.val_crop_size 40 is not a multiple of 16.*e.g. 32'):
    eval_sets.eval_crop_size(c)
  with pytest.raises(ValueError, match='crop size 24 is not a multiple of 16.*e.g. 16'):
    eval_sets.eval_crop_size(c, 24)


def test_validation_set_can_skip_unreadable_images(tmp_path, caplog):
  from test_image_io import huge_header_png
  image_io.write_image(tmp_path / 'a.png', photo_like(40, 40))
  huge_header_png(tmp_path / 'b.png')
  c = tiny.get_config()
  with pytest.raises(image_io.ImageReadError, match='b.png: too large'):
    eval_sets.load_eval_set(tmp_path, c)
  loaded = eval_sets.load_eval_set(tmp_path, c, skip_unreadable=True)
  assert loaded['names'] == ['a.png'] and loaded['hr'].shape == (1, 32, 32, 3)
  assert 'b.png: too large' in caplog.text
  (tmp_path / 'a.png').write_bytes(b'garbage')
  with pytest.raises(FileNotFoundError, match='none of its images decodes'):
    eval_sets.load_eval_set(tmp_path, c, skip_unreadable=True)
