"""Image reading/writing keeps bit depth, grayscale and alpha; bad files raise naming the path."""

import numpy as np
import pytest

from srrgan_jax import image_io


def _gradient(h=12, w=17):
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  return np.stack([x / (w - 1), y / (h - 1), (x + y) / (h + w - 2)], axis=-1)


@pytest.mark.parametrize('suffix,bit_depth,tol', [('.png', 8, 0.5 / 255),
                                                 ('.png', 16, 0.5 / 65535),
                                                 ('.tif', 16, 0.5 / 65535),
                                                 ('.bmp', 8, 0.5 / 255)])
def test_rgb_round_trip(tmp_path, suffix, bit_depth, tol):
  rgb = _gradient()
  path = tmp_path / f'img{suffix}'
  image_io.write_image(path, rgb, bit_depth=bit_depth)
  loaded = image_io.read_image(path)
  assert loaded.bit_depth == bit_depth and not loaded.grayscale and loaded.alpha is None
  assert loaded.rgb.dtype == np.float32 and loaded.rgb.shape == rgb.shape
  np.testing.assert_allclose(loaded.rgb, rgb, atol=tol + 1e-7)
  # Channel order survives (red ramps along x).
  assert loaded.rgb[0, -1, 0] > 0.99 and loaded.rgb[0, -1, 1] < 0.01


def test_gray_and_alpha_round_trip(tmp_path):
  rgb = _gradient()
  gray_path = tmp_path / 'gray.png'
  image_io.write_image(gray_path, rgb, grayscale=True, bit_depth=16)
  gray = image_io.read_image(gray_path)
  assert gray.grayscale and gray.bit_depth == 16
  np.testing.assert_array_equal(gray.rgb[..., 0], gray.rgb[..., 2])
  np.testing.assert_allclose(gray.rgb[..., 0], rgb.mean(-1), atol=1e-4)

  alpha = np.linspace(0, 1, rgb.shape[1], dtype=np.float32)[None].repeat(rgb.shape[0], 0)
  rgba_path = tmp_path / 'rgba.png'
  image_io.write_image(rgba_path, rgb, alpha=alpha)
  rgba = image_io.read_image(rgba_path)
  np.testing.assert_allclose(rgba.alpha, alpha, atol=0.5 / 255 + 1e-7)
  np.testing.assert_allclose(image_io.read_rgb(rgba_path), rgb, atol=0.5 / 255 + 1e-7)


def test_bad_files_name_the_path(tmp_path):
  corrupt = tmp_path / 'corrupt.png'
  corrupt.write_bytes(b'\x89PNG\r\n\x1a\n not really')
  with pytest.raises(image_io.ImageReadError, match='corrupt.png'):
    image_io.read_image(corrupt)
  with pytest.raises(image_io.ImageReadError, match='missing.png'):
    image_io.read_image(tmp_path / 'missing.png')
  empty = tmp_path / 'empty.jpg'
  empty.write_bytes(b'')
  with pytest.raises(image_io.ImageReadError, match='empty.jpg'):
    image_io.read_image(empty)
  with pytest.raises(ValueError, match=r'\.gif'):
    image_io.write_image(tmp_path / 'out.gif', _gradient())


def test_list_images(tmp_path):
  with pytest.raises(FileNotFoundError, match='nowhere'):
    image_io.list_images(tmp_path / 'nowhere')
  (tmp_path / 'notes.txt').write_text('x')
  with pytest.raises(FileNotFoundError, match='no images'):
    image_io.list_images(tmp_path)
  image_io.write_image(tmp_path / 'b' / 'deep.png', _gradient())
  image_io.write_image(tmp_path / 'a.JPG', _gradient())
  names = [p.relative_to(tmp_path).as_posix() for p in image_io.list_images(tmp_path)]
  assert names == ['a.JPG', 'b/deep.png']
  assert image_io.list_images(tmp_path, recursive=False)[0].name == 'a.JPG'
