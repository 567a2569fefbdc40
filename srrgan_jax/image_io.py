"""Reading and writing the images users bring: 8/16-bit, grayscale, alpha, any format OpenCV reads.

Inside the project an image is float32 RGB in [0, 1], shape (H, W, 3). Alpha,
grayscale-ness and the ICC colour profile are kept beside it (`LoadedImage`) so
inference can give back what it was given; training and evaluation drop alpha
(documented in the README) and replicate grayscale to three channels. Every read
applies the EXIF orientation (a phone photo comes out upright); every write goes
through `files.atomic_file`, so a file under the target name is always complete.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import zlib
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import PIL.Image

from srrgan_jax import errors
from srrgan_jax import files

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp', '.bmp', '.tif', '.tiff')
# Formats whose written files carry an input's ICC colour profile.
ICC_SUFFIXES = ('.png', '.jpg', '.jpeg', '.tif', '.tiff')
_EXIF_ORIENTATION = 0x0112

# OpenCV logs its own line for a damaged file ("[ERROR:0@1.1] ... IHDR chunk
# shall be first") before this module raises the one-line error naming the
# file; keep it quiet unless the user asks for OpenCV's log ($OPENCV_LOG_LEVEL).
if 'OPENCV_LOG_LEVEL' not in os.environ:
  cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


class ImageReadError(errors.UserError, ValueError):
  """An image file could not be decoded or has an unusable layout."""


class UnsupportedFormatError(errors.UserError, ValueError):
  """An output path has a suffix no writer here supports."""


class MissingImagesError(errors.UserError, FileNotFoundError):
  """An image folder does not exist or holds no images."""


@dataclasses.dataclass
class LoadedImage:
  """A decoded image: RGB pixels plus what is needed to write it back alike."""
  rgb: np.ndarray  # float32 (H, W, 3) in [0, 1].
  alpha: Optional[np.ndarray]  # float32 (H, W) in [0, 1], or None.
  bit_depth: int  # 8 or 16: the source's bits per channel.
  grayscale: bool  # True when the source had a single colour channel.
  path: str  # Where it came from (for messages).
  icc_profile: Optional[bytes] = None  # The source's embedded ICC colour profile.

  @property
  def height(self) -> int:
    return self.rgb.shape[0]

  @property
  def width(self) -> int:
    return self.rgb.shape[1]


def to_unit_float(pixels: np.ndarray, path='image') -> np.ndarray:
  """uint8/uint16/float pixels -> float32 in [0, 1] (float input is clipped)."""
  if pixels.dtype == np.uint8:
    return pixels.astype(np.float32) * np.float32(1 / 255)
  if pixels.dtype == np.uint16:
    return pixels.astype(np.float32) * np.float32(1 / 65535)
  if pixels.dtype in (np.float32, np.float64):  # e.g. float TIFF: assume [0, 1].
    return np.clip(pixels.astype(np.float32), 0.0, 1.0)
  raise ImageReadError(
      f'{path}: unsupported pixel type {pixels.dtype}; convert it to 8- or '
      '16-bit PNG/TIFF.')


@dataclasses.dataclass(frozen=True)
class _Header:
  """What OpenCV does not report: EXIF orientation, ICC profile, gray+alpha layout."""
  orientation: int = 1
  icc_profile: Optional[bytes] = None
  gray_alpha: bool = False


_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _orientation(img: PIL.Image.Image) -> int:
  """The EXIF orientation (1-8) of an opened image, from its headers only.

  `Image.getexif()` would decode a whole PNG to look for a late eXIf chunk.
  """
  if img.format == 'TIFF':
    value = img.tag_v2.get(_EXIF_ORIENTATION, 1)
  else:
    raw = img.info.get('exif')
    if not raw:
      return 1
    exif = PIL.Image.Exif()
    exif.load(raw)
    value = exif.get(_EXIF_ORIENTATION, 1)
  return value if value in range(1, 9) else 1


def _read_header(encoded: np.ndarray) -> _Header:
  """Pillow parses the headers only; formats it does not know get the defaults."""
  # PNG colour type 4 (byte 25): gray+alpha, which Pillow calls RGBA at 16 bits.
  png_gray_alpha = (encoded[:8].tobytes() == _PNG_SIGNATURE and encoded.size > 25
                    and encoded[25] == 4)
  try:
    with PIL.Image.open(io.BytesIO(encoded.tobytes())) as img:
      # OpenCV's TIFF decoder turns TIFFs upright itself.
      orientation = 1 if img.format == 'TIFF' else _orientation(img)
      return _Header(orientation, img.info.get('icc_profile') or None,
                     png_gray_alpha or img.mode in ('LA', 'La'))
  except Exception:  # pylint: disable=broad-except  # Unknown or damaged: OpenCV decides.
    return _Header(gray_alpha=png_gray_alpha)


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
  """Turns decoded pixels upright as EXIF `orientation` (1-8) says."""
  if orientation in (5, 6, 7, 8):  # Stored with rows and columns swapped.
    pixels = np.swapaxes(pixels, 0, 1)
    orientation = {5: 1, 6: 2, 7: 3, 8: 4}[orientation]
  if orientation == 2:
    pixels = pixels[:, ::-1]
  elif orientation == 3:
    pixels = pixels[::-1, ::-1]
  elif orientation == 4:
    pixels = pixels[::-1]
  return np.ascontiguousarray(pixels)


def _max_decode_pixels() -> int:
  return int(os.environ.get('OPENCV_IO_MAX_IMAGE_PIXELS', 2**30))


def _decode(path: str, flags: int) -> tuple[np.ndarray, _Header]:
  try:
    encoded = np.fromfile(path, dtype=np.uint8)  # Works with non-ASCII paths.
  except OSError as e:
    raise ImageReadError(f'{path}: cannot read file ({e}).') from e
  header = _read_header(encoded) if encoded.size else _Header()
  if flags != cv2.IMREAD_UNCHANGED:  # Which never rotates; the header says how.
    flags |= cv2.IMREAD_IGNORE_ORIENTATION
  try:
    pixels = cv2.imdecode(encoded, flags) if encoded.size else None
  except cv2.error as e:  # OpenCV refuses headers claiming too many pixels.
    raise ImageReadError(
        f'{path}: too large to decode or a damaged header (OpenCV decodes at most '
        f'{_max_decode_pixels():,} pixels, set by OPENCV_IO_MAX_IMAGE_PIXELS); shrink '
        'it or remove it.') from e
  if pixels is None:
    raise ImageReadError(
        f'{path}: not a decodable image (corrupt, truncated or unsupported '
        f'format; supported: {", ".join(IMAGE_SUFFIXES)}).')
  return apply_orientation(pixels, header.orientation), header


def image_size(path: str | os.PathLike) -> tuple[int, int]:
  """(height, width) as read would give them (upright), from the header when Pillow knows it.

  Raises ImageReadError naming the file if neither Pillow nor OpenCV can read it.
  """
  try:
    with PIL.Image.open(path) as img:
      width, height = img.size
      turned = _orientation(img) in (5, 6, 7, 8)
    return (width, height) if turned else (height, width)
  except Exception:  # pylint: disable=broad-except  # Unknown to Pillow: decode it.
    pixels = decode_raw(path)
    return pixels.shape[0], pixels.shape[1]


def decode_raw(path: str | os.PathLike, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
  """Decodes with OpenCV `flags`, keeping the integer type and BGR(A) order.

  The EXIF orientation is applied. Raises ImageReadError naming the file when
  it cannot be read or decoded (also when it is too large for OpenCV).
  """
  return _decode(str(path), flags)[0]


# Pillow's raw modes of the 8-bit PNGs it can stop decoding after any row:
# gray, gray + alpha, RGB, RGBA (16-bit and palette images have other raw modes).
_TOP_ROWS_RAW_MODES = ('L', 'LA', 'RGB', 'RGBA')


def decode_png_top_rows(path: str | os.PathLike, rows: int,
                        height: int) -> Optional[np.ndarray]:
  """The top `rows` rows of an 8-bit PNG `height` rows tall, as RGB uint8, or None.

  Equal to `decode_raw(path, cv2.IMREAD_COLOR_RGB)[:rows]` (gray replicated,
  alpha dropped) while inflating only the compressed rows up to `rows`: PNG
  rows are compressed in order, so a training crop near the top costs a
  fraction of a whole decode. None (decode it whole instead) for anything else:
  another format, 16-bit or palette pixels, interlacing, an EXIF rotation, a
  height other than `height` (the file changed), or a file Pillow cannot read.
  Damage below `rows` goes unnoticed, as it does not touch these pixels.
  """
  try:
    with PIL.Image.open(path) as img:
      tile = img.tile[0] if len(img.tile) == 1 else None
      width = img.size[0]
      if (img.format != 'PNG' or img.size[1] != height or not 0 < rows <= height
          or tile is None or tile[0] != 'zip' or tile[3] not in _TOP_ROWS_RAW_MODES
          or img.info.get('interlace') or _orientation(img) != 1):
        return None
      extents = (0, 0, width, rows)
      img.tile = [tile._replace(extents=extents) if hasattr(tile, '_replace')
                  else (tile[0], extents) + tuple(tile[2:])]
      img.load()  # Stops once the (shortened) tile is full.
      pixels = np.asarray(img.crop(extents))
  except Exception:  # pylint: disable=broad-except  # Decode it whole, which names errors.
    return None
  if pixels.ndim == 2:
    return np.repeat(pixels[:, :, None], 3, axis=2)
  if pixels.shape[2] == 2:  # Gray + alpha.
    return np.repeat(pixels[:, :, :1], 3, axis=2)
  return np.ascontiguousarray(pixels[:, :, :3])


def read_image(path: str | os.PathLike) -> LoadedImage:
  """Decodes an image file; raises ImageReadError naming the file on failure."""
  path = str(path)
  pixels, header = _decode(path, cv2.IMREAD_UNCHANGED)
  if pixels.ndim == 3 and pixels.shape[2] == 1:
    pixels = pixels[:, :, 0]
  bit_depth = 8 if pixels.dtype == np.uint8 else 16
  icc = header.icc_profile
  if pixels.ndim == 2:
    gray = to_unit_float(pixels, path)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    return LoadedImage(rgb, None, bit_depth, True, path, icc)
  if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
    raise ImageReadError(
        f'{path}: {pixels.shape} is not a grayscale, RGB or RGBA image; '
        'convert it to one of those.')
  values = to_unit_float(pixels, path)
  alpha = values[:, :, 3].copy() if values.shape[2] == 4 else None
  rgb = np.ascontiguousarray(values[:, :, 2::-1])  # BGR(A) -> RGB.
  grayscale = header.gray_alpha and alpha is not None  # OpenCV gives gray+alpha as BGRA.
  return LoadedImage(rgb, alpha, bit_depth, grayscale, path, icc)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
  """Decodes to float32 RGB (H, W, 3) in [0, 1]: grayscale replicated, alpha dropped."""
  return read_image(path).rgb


def check_output_suffix(path: str | os.PathLike) -> str:
  """The lower-case suffix of `path`; raises UnsupportedFormatError unless it is writable."""
  suffix = Path(path).suffix.lower()
  if suffix not in IMAGE_SUFFIXES:
    raise UnsupportedFormatError(
        f'{path}: cannot write {suffix or "a file without suffix"}; use one of '
        f'{", ".join(IMAGE_SUFFIXES)}.')
  return suffix


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
  return (struct.pack('>I', len(payload)) + kind + payload
          + struct.pack('>I', zlib.crc32(kind + payload)))


def _gray_alpha_png(values: np.ndarray) -> bytes:
  """PNG colour type 4 (gray + alpha), which OpenCV cannot write; 8 or 16 bit."""
  height, width = values.shape[:2]
  depth = 16 if values.dtype == np.uint16 else 8
  rows = values.astype('>u2' if depth == 16 else np.uint8).reshape(height, -1).view(np.uint8)
  scanlines = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)  # Filter 0.
  return (b'\x89PNG\r\n\x1a\n'
          + _png_chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, depth, 4, 0, 0, 0))
          + _png_chunk(b'IDAT', zlib.compress(scanlines.tobytes(), 6))
          + _png_chunk(b'IEND', b''))


def _with_png_icc(encoded: bytes, icc_profile: bytes) -> bytes:
  """Inserts an iCCP chunk right after IHDR (8-byte signature + 25-byte IHDR)."""
  chunk = _png_chunk(b'iCCP', b'ICC profile\0\0' + zlib.compress(icc_profile))
  return encoded[:33] + chunk + encoded[33:]


def _with_jpeg_icc(encoded: bytes, icc_profile: bytes) -> bytes:
  """Inserts APP2 ICC_PROFILE segments after SOI and a JFIF APP0 segment."""
  position = 2
  if encoded[2:4] == b'\xff\xe0':
    position = 4 + struct.unpack('>H', encoded[4:6])[0]
  pieces = [icc_profile[i:i + 65519] for i in range(0, len(icc_profile), 65519)]
  segments = b''.join(
      b'\xff\xe2' + struct.pack('>H', 2 + 14 + len(piece)) + b'ICC_PROFILE\0'
      + bytes([number, len(pieces)]) + piece
      for number, piece in enumerate(pieces, 1))
  return encoded[:position] + segments + encoded[position:]


def _tiff_bytes(values: np.ndarray, icc_profile: Optional[bytes]) -> bytes:
  """TIFF (deflate) via tifffile, which embeds the ICC profile (OpenCV cannot)."""
  import tifffile  # pylint: disable=import-outside-toplevel  # Only TIFFs need it.
  channels = 1 if values.ndim == 2 else values.shape[2]
  if channels >= 3:
    values = values[:, :, [2, 1, 0, 3][:channels]]  # OpenCV's BGR(A) -> RGB(A).
  buffer = io.BytesIO()
  tifffile.imwrite(buffer, values, photometric='rgb' if channels >= 3 else 'minisblack',
                   planarconfig='contig' if channels > 1 else None,
                   extrasamples=('unassalpha',) if channels == 4 else None,
                   compression='zlib', iccprofile=icc_profile)
  return buffer.getvalue()


def encode_image(suffix: str, rgb: np.ndarray, alpha: Optional[np.ndarray] = None,
                 bit_depth: int = 8, grayscale: bool = False, jpeg_quality: int = 95,
                 icc_profile: Optional[bytes] = None) -> bytes:
  """The file contents of float RGB in [0, 1] (plus optional alpha) as `suffix`."""
  if suffix not in ('.png', '.tif', '.tiff'):
    bit_depth = 8
  if bit_depth not in (8, 16):
    raise ValueError(f'bit_depth must be 8 or 16, got {bit_depth}.')
  rgb = np.asarray(rgb, dtype=np.float32)
  if rgb.ndim != 3 or rgb.shape[2] != 3:
    raise ValueError(f'expected (H, W, 3) RGB pixels, got {rgb.shape}.')
  if alpha is not None and suffix in ('.jpg', '.jpeg', '.bmp'):
    alpha = None
  # Gray+alpha is written as such in PNG only (OpenCV reads other formats' without alpha).
  if grayscale and (alpha is None or suffix == '.png'):
    channels = rgb.mean(axis=2, keepdims=True)
  else:
    channels = rgb[:, :, ::-1]  # RGB -> BGR for OpenCV.
  if alpha is not None:
    channels = np.concatenate([channels, np.asarray(alpha, np.float32)[:, :, None]], axis=2)
  max_value = 65535.0 if bit_depth == 16 else 255.0
  dtype = np.uint16 if bit_depth == 16 else np.uint8
  quantised = np.round(np.clip(channels, 0.0, 1.0) * max_value).astype(dtype)
  if quantised.shape[2] == 1:
    quantised = quantised[:, :, 0]
  icc_profile = icc_profile if suffix in ICC_SUFFIXES else None
  if suffix in ('.tif', '.tiff') and icc_profile:
    return _tiff_bytes(quantised, icc_profile)
  if suffix == '.png' and quantised.ndim == 3 and quantised.shape[2] == 2:
    encoded = _gray_alpha_png(quantised)
  else:
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if suffix in ('.jpg', '.jpeg') else []
    ok, buffer = cv2.imencode(suffix, quantised, params)
    if not ok:
      raise ValueError(f'OpenCV could not encode the image as {suffix}.')
    encoded = buffer.tobytes()
  if icc_profile and suffix == '.png':
    return _with_png_icc(encoded, icc_profile)
  if icc_profile:
    return _with_jpeg_icc(encoded, icc_profile)
  return encoded


def write_image(path: str | os.PathLike, rgb: np.ndarray,
                alpha: Optional[np.ndarray] = None, bit_depth: int = 8,
                grayscale: bool = False, jpeg_quality: int = 95,
                icc_profile: Optional[bytes] = None) -> None:
  """Writes float RGB in [0, 1] (plus optional alpha) as 8- or 16-bit, atomically.

  Formats that cannot hold 16 bits (JPEG, WebP, BMP) are written as 8-bit.
  `icc_profile` is embedded in PNG, JPEG and TIFF files. A failed write raises
  `files.WriteError` and leaves no partial file.
  """
  suffix = check_output_suffix(path)
  try:
    contents = encode_image(suffix, rgb, alpha, bit_depth, grayscale, jpeg_quality,
                            icc_profile)
  except ValueError as e:
    raise ValueError(f'{path}: {e}') from e
  files.write_atomic(path, contents)


def is_complete(path: str | os.PathLike) -> bool:
  """False if an image file was cut short (a write interrupted before it was atomic).

  PNG and JPEG are checked by their end markers, WebP and BMP by the size in
  their header, other formats by decoding.
  """
  path = Path(path)
  suffix = path.suffix.lower()
  try:
    size = path.stat().st_size
    with open(path, 'rb') as f:
      head = f.read(8)
      f.seek(max(0, size - 12))
      tail = f.read()
  except OSError:
    return False
  if suffix == '.png':
    return tail.endswith(b'IEND\xaeB`\x82')
  if suffix in ('.jpg', '.jpeg'):
    return tail.rstrip(b'\0').endswith(b'\xff\xd9')
  if suffix == '.webp':
    return head[:4] == b'RIFF' and struct.unpack('<I', head[4:8])[0] + 8 == size
  if suffix == '.bmp':
    return head[:2] == b'BM' and struct.unpack('<I', head[2:6])[0] == size
  try:
    decode_raw(path)
  except ImageReadError:
    return False
  return True


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
  """Sorted image files under `folder`; raises naming the folder if missing or empty."""
  folder = Path(folder)
  if not folder.is_dir():
    what = 'is a file, not a folder of images' if folder.exists() else 'does not exist'
    raise MissingImagesError(f'{folder}: image folder {what}; check the path.')
  pattern = '**/*' if recursive else '*'
  images = sorted(p for p in folder.glob(pattern)
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
  if not images:
    raise MissingImagesError(
        f'{folder}: no images found (looked for {", ".join(IMAGE_SUFFIXES)}'
        f'{" recursively" if recursive else ""}).')
  return images
