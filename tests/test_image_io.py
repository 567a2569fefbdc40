"""Image reading/writing keeps bit depth, grayscale and alpha; bad files raise naming the path."""

import struct
import zlib

import cv2
import numpy as np
import PIL.Image
import PIL.ImageCms
import PIL.ImageOps
import pytest

from srrgan_jax import files
from srrgan_jax import image_io
from test_files import fill_disk_after_ten_bytes


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
  with pytest.raises(FileNotFoundError, match='nowhere: image folder does not exist'):
    image_io.list_images(tmp_path / 'nowhere')
  (tmp_path / 'notes.txt').write_text('x')
  with pytest.raises(FileNotFoundError, match='notes.txt: image folder is a file'):
    image_io.list_images(tmp_path / 'notes.txt')
  with pytest.raises(FileNotFoundError, match='no images'):
    image_io.list_images(tmp_path)
  image_io.write_image(tmp_path / 'b' / 'deep.png', _gradient())
  image_io.write_image(tmp_path / 'a.JPG', _gradient())
  names = [p.relative_to(tmp_path).as_posix() for p in image_io.list_images(tmp_path)]
  assert names == ['a.JPG', 'b/deep.png']
  assert image_io.list_images(tmp_path, recursive=False)[0].name == 'a.JPG'


def huge_header_png(path, width=100_000, height=100_000):
  """A PNG whose header claims width x height pixels (more than OpenCV decodes)."""
  def chunk(kind, payload):
    return (struct.pack('>I', len(payload)) + kind + payload
            + struct.pack('>I', zlib.crc32(kind + payload)))
  path.write_bytes(b'\x89PNG\r\n\x1a\n'
                   + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0))
                   + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b''))
  return path


def test_huge_header_is_a_read_error_naming_the_file(tmp_path):
  path = huge_header_png(tmp_path / 'huge.png')
  for read in (image_io.read_image, image_io.decode_raw,
               lambda p: image_io.decode_raw(p, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)):
    with pytest.raises(image_io.ImageReadError, match=r'huge\.png: too large to decode'):
      read(path)


def _photo_with_orientation(path, pixels, orientation):
  exif = PIL.Image.Exif()
  exif[0x0112] = orientation
  PIL.Image.fromarray(pixels).save(path, exif=exif)


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_applied_as_pillow_does(tmp_path, orientation):
  pixels = np.round(_gradient(6, 9) * 255).astype(np.uint8)
  path = tmp_path / f'o{orientation}.png'
  _photo_with_orientation(path, pixels, orientation)
  with PIL.Image.open(path) as img:
    upright = np.asarray(PIL.ImageOps.exif_transpose(img)).astype(np.float32) / 255
  np.testing.assert_allclose(image_io.read_rgb(path), upright, atol=1e-6)
  # The training decoder turns it the same way.
  from srrgan_jax import data
  np.testing.assert_array_equal(data.decode_pixels(str(path)), np.round(upright * 255))


def test_phone_jpeg_with_orientation_6_comes_out_upright(tmp_path):
  pixels = np.zeros((20, 40, 3), np.uint8)
  pixels[:, :20] = 255  # White left half: after a quarter turn clockwise, the top half.
  path = tmp_path / 'phone.jpg'
  _photo_with_orientation(path, pixels, 6)
  rgb = image_io.read_rgb(path)
  assert rgb.shape == (40, 20, 3)
  assert rgb[:18].mean() > 0.95 and rgb[22:].mean() < 0.05


def _icc_profile() -> bytes:
  return PIL.ImageCms.ImageCmsProfile(PIL.ImageCms.createProfile('sRGB')).tobytes()


@pytest.mark.parametrize('suffix,bit_depth,alpha', [
    ('.png', 8, False), ('.png', 16, True), ('.jpg', 8, False), ('.tif', 8, False),
    ('.tif', 16, True)])
def test_icc_profile_is_read_and_written(tmp_path, suffix, bit_depth, alpha):
  icc = _icc_profile()
  rgb = _gradient()
  alpha_channel = rgb[:, :, 0] if alpha else None
  path = tmp_path / f'icc{suffix}'
  image_io.write_image(path, rgb, alpha_channel, bit_depth=bit_depth, icc_profile=icc)
  with PIL.Image.open(path) as img:
    assert img.info.get('icc_profile') == icc
  loaded = image_io.read_image(path)
  assert loaded.icc_profile == icc and loaded.bit_depth == bit_depth
  # Without a profile, none is invented; the pixels are the same either way.
  image_io.write_image(tmp_path / f'plain{suffix}', rgb, alpha_channel, bit_depth=bit_depth)
  plain = image_io.read_image(tmp_path / f'plain{suffix}')
  assert plain.icc_profile is None
  np.testing.assert_array_equal(loaded.rgb, plain.rgb)
  if suffix != '.jpg':
    tol = 0.5 / (255 if bit_depth == 8 else 65535) + 1e-7
    np.testing.assert_allclose(loaded.rgb, rgb, atol=tol)
  if alpha:
    np.testing.assert_allclose(loaded.alpha, alpha_channel, atol=tol)


@pytest.mark.parametrize('bit_depth', [8, 16])
def test_gray_alpha_png_round_trip_stays_gray_alpha(tmp_path, bit_depth):
  gray = _gradient()[:, :, 0]
  alpha = _gradient()[:, :, 1]
  path = tmp_path / 'ga.png'
  image_io.write_image(path, np.repeat(gray[:, :, None], 3, axis=2), alpha,
                       bit_depth=bit_depth, grayscale=True)
  assert path.read_bytes()[25] == 4  # PNG colour type 4: gray + alpha.
  loaded = image_io.read_image(path)
  tol = 0.5 / (255 if bit_depth == 8 else 65535) + 1e-7
  assert loaded.grayscale and loaded.bit_depth == bit_depth
  np.testing.assert_allclose(loaded.rgb[:, :, 1], gray, atol=tol)
  np.testing.assert_allclose(loaded.alpha, alpha, atol=tol)


def test_failed_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
  target = tmp_path / 'out.png'
  image_io.write_image(target, _gradient())
  before = target.read_bytes()
  fill_disk_after_ten_bytes(monkeypatch)
  with pytest.raises(files.WriteError,
                     match=rf'{tmp_path}: writing out.png \(\d+ bytes\) failed \(No space left'):
    image_io.write_image(target, 1 - _gradient())
  assert target.read_bytes() == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ['out.png']


def test_top_rows_of_a_png_equal_the_whole_decode_or_none(tmp_path):
  """Training decodes only the rows its crops need; same pixels, or None to decode it whole."""
  from srrgan_jax import data
  rgb = _gradient(12, 7)
  kinds = {'rgb.png': dict(), 'gray.png': dict(grayscale=True),
           'rgba.png': dict(alpha=np.full((12, 7), 0.5, np.float32)),
           'gray_alpha.png': dict(grayscale=True, alpha=np.full((12, 7), 0.25, np.float32))}
  for name, options in kinds.items():
    image_io.write_image(tmp_path / name, rgb, **options)
    whole = data.decode_pixels(str(tmp_path / name))
    for rows in (1, 5, 12):
      top = image_io.decode_png_top_rows(tmp_path / name, rows, 12)
      np.testing.assert_array_equal(top, whole[:rows], err_msg=f'{name} {rows}')
      assert top.dtype == np.uint8 and top.flags.c_contiguous
  palette = tmp_path / 'palette.png'
  PIL.Image.fromarray(np.round(rgb * 255).astype(np.uint8)).convert('P').save(palette)
  image_io.write_image(tmp_path / 'deep.png', rgb, bit_depth=16)
  image_io.write_image(tmp_path / 'photo.jpg', rgb)
  _photo_with_orientation(tmp_path / 'turned.png', np.round(rgb * 255).astype(np.uint8), 6)
  for name in ('palette.png', 'deep.png', 'photo.jpg', 'turned.png'):
    assert image_io.decode_png_top_rows(tmp_path / name, 5, 12) is None, name
  assert image_io.decode_png_top_rows(tmp_path / 'rgb.png', 5, 13) is None  # Changed height.
  assert image_io.decode_png_top_rows(tmp_path / 'rgb.png', 0, 12) is None
  assert image_io.decode_png_top_rows(huge_header_png(tmp_path / 'huge.png'), 5, 12) is None
  (tmp_path / 'cut.png').write_bytes((tmp_path / 'rgb.png').read_bytes()[:60])
  assert image_io.decode_png_top_rows(tmp_path / 'cut.png', 12, 12) is None
