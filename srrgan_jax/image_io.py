"""Reading and writing the images users bring: 8/16-bit, grayscale, alpha, any format OpenCV reads.

Inside the project an image is float32 RGB in [0, 1], shape (H, W, 3). Alpha and
grayscale-ness are kept beside it (`LoadedImage`) so inference can give back what it
was given; training and evaluation drop alpha (documented in the README) and
replicate grayscale to three channels.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from srrgan_jax import errors

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp', '.bmp', '.tif', '.tiff')


class ImageReadError(errors.UserError, ValueError):
  """An image file could not be decoded or has an unusable layout."""


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


def decode_raw(path: str | os.PathLike, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
  """Decodes with OpenCV `flags`, keeping the integer type and BGR(A) order.

  Raises ImageReadError naming the file when it cannot be read or decoded.
  """
  path = str(path)
  try:
    encoded = np.fromfile(path, dtype=np.uint8)  # Works with non-ASCII paths.
  except OSError as e:
    raise ImageReadError(f'{path}: cannot read file ({e}).') from e
  pixels = cv2.imdecode(encoded, flags) if encoded.size else None
  if pixels is None:
    raise ImageReadError(
        f'{path}: not a decodable image (corrupt, truncated or unsupported '
        f'format; supported: {", ".join(IMAGE_SUFFIXES)}).')
  return pixels


def read_image(path: str | os.PathLike) -> LoadedImage:
  """Decodes an image file; raises ImageReadError naming the file on failure."""
  path = str(path)
  pixels = decode_raw(path)
  if pixels.ndim == 3 and pixels.shape[2] == 1:
    pixels = pixels[:, :, 0]
  bit_depth = 8 if pixels.dtype == np.uint8 else 16
  if pixels.ndim == 2:
    gray = to_unit_float(pixels, path)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    return LoadedImage(rgb, None, bit_depth, True, path)
  if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
    raise ImageReadError(
        f'{path}: {pixels.shape} is not a grayscale, RGB or RGBA image; '
        'convert it to one of those.')
  values = to_unit_float(pixels, path)
  alpha = values[:, :, 3].copy() if values.shape[2] == 4 else None
  rgb = np.ascontiguousarray(values[:, :, 2::-1])  # BGR(A) -> RGB.
  return LoadedImage(rgb, alpha, bit_depth, False, path)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
  """Decodes to float32 RGB (H, W, 3) in [0, 1]: grayscale replicated, alpha dropped."""
  return read_image(path).rgb


def write_image(path: str | os.PathLike, rgb: np.ndarray,
                alpha: Optional[np.ndarray] = None, bit_depth: int = 8,
                grayscale: bool = False, jpeg_quality: int = 95) -> None:
  """Writes float RGB in [0, 1] (plus optional alpha) as 8- or 16-bit.

  Formats that cannot hold 16 bits (JPEG, WebP, BMP) are written as 8-bit.
  """
  path = Path(path)
  suffix = path.suffix.lower()
  if suffix not in IMAGE_SUFFIXES:
    raise ValueError(f'{path}: unsupported output suffix {suffix!r}; use one of '
                     f'{", ".join(IMAGE_SUFFIXES)}.')
  if suffix not in ('.png', '.tif', '.tiff'):
    bit_depth = 8
  if bit_depth not in (8, 16):
    raise ValueError(f'{path}: bit_depth must be 8 or 16, got {bit_depth}.')
  rgb = np.asarray(rgb, dtype=np.float32)
  if rgb.ndim != 3 or rgb.shape[2] != 3:
    raise ValueError(f'{path}: expected (H, W, 3) RGB pixels, got {rgb.shape}.')
  if grayscale:
    channels = rgb.mean(axis=2, keepdims=True)
  else:
    channels = rgb[:, :, ::-1]  # RGB -> BGR for OpenCV.
  if alpha is not None and suffix not in ('.jpg', '.jpeg', '.bmp'):
    channels = np.concatenate([channels, np.asarray(alpha, np.float32)[:, :, None]], axis=2)
  max_value = 65535.0 if bit_depth == 16 else 255.0
  dtype = np.uint16 if bit_depth == 16 else np.uint8
  quantised = np.round(np.clip(channels, 0.0, 1.0) * max_value).astype(dtype)
  if quantised.shape[2] == 1:
    quantised = quantised[:, :, 0]
  params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if suffix in ('.jpg', '.jpeg') else []
  ok, encoded = cv2.imencode(suffix, quantised, params)
  if not ok:
    raise OSError(f'{path}: OpenCV could not encode the image as {suffix}.')
  path.parent.mkdir(parents=True, exist_ok=True)
  encoded.tofile(str(path))


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
  """Sorted image files under `folder`; raises naming the folder if missing or empty."""
  folder = Path(folder)
  if not folder.is_dir():
    raise MissingImagesError(f'{folder}: image folder does not exist; check the path.')
  pattern = '**/*' if recursive else '*'
  files = sorted(p for p in folder.glob(pattern)
                 if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
  if not files:
    raise MissingImagesError(
        f'{folder}: no images found (looked for {", ".join(IMAGE_SUFFIXES)}'
        f'{" recursively" if recursive else ""}).')
  return files
