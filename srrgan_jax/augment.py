"""HR patch augmentation (crop, flips, rot90, colour jitter) and the evaluation centre crop.

Geometry (crop, flips, rot90) works on any pixel dtype, so training cuts and
turns the decoded integer image; colour jitter takes that integer patch (or
float32 RGB in [0, 1]) and returns float32 RGB in [0, 1], scaling to [0, 1]
inside its first colour transform. Randomness comes only from the
`np.random.Generator` passed in; with `return_params=True` a function also
returns what it drew (for tests and logging).
"""

from __future__ import annotations


import cv2
import numpy as np

_CV2_ROTATIONS = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180,
                  3: cv2.ROTATE_90_CLOCKWISE}
# The [0, 1] value of one step of an integer pixel type.
_INTEGER_UNITS = {np.dtype(np.uint8): 1 / 255, np.dtype(np.uint16): 1 / 65535}

def center_crop(img: np.ndarray, size: int, name: str = 'image') -> np.ndarray:
  """The central size x size window; raises naming `name` if the image is smaller."""
  height, width = img.shape[:2]
  if height < size or width < size:
    raise ValueError(f'{name}: {width}x{height} pixels is smaller than the '
                     f'{size}x{size} crop; remove it or lower the crop size.')
  top, left = (height - size) // 2, (width - size) // 2
  return img[top:top + size, left:left + size]


def random_top(height: int, size: int, rng: np.random.Generator) -> int:
  """The first row of a random size-row crop: `random_geometry`'s first draw from `rng`."""
  return int(rng.integers(0, height - size + 1))


def random_geometry(img: np.ndarray, size: int, rng: np.random.Generator, cfg, *,
                    height: int | None = None, return_params: bool = False):
  """Random size x size crop, then h/v flips and rot90 as enabled in `cfg` (config.augment).

  `height`: the whole image's height when `img` holds only its top rows (enough
  for the crop `random_top` draws: the same crop as from the whole image).
  """
  height = img.shape[0] if height is None else height
  width = img.shape[1]
  if height < size or width < size:
    raise ValueError(f'A {width}x{height} image is smaller than the {size}x{size} patch.')
  top = random_top(height, size, rng)
  if top + size > img.shape[0]:
    raise ValueError(f'The crop needs rows {top}..{top + size - 1}; only the top '
                     f'{img.shape[0]} rows were decoded.')
  left = int(rng.integers(0, width - size + 1))
  patch = img[top:top + size, left:left + size]
  hflip = bool(cfg.hflip and rng.random() < 0.5)
  vflip = bool(cfg.vflip and rng.random() < 0.5)
  turns = int(rng.integers(0, 4)) if cfg.rot90 else 0
  # OpenCV copies these ~5x faster than numpy's negative-stride views.
  if hflip or vflip:
    patch = cv2.flip(patch, -1 if hflip and vflip else (1 if hflip else 0))
  if turns:
    patch = cv2.rotate(patch, _CV2_ROTATIONS[turns])  # == np.rot90(patch, turns).
  patch = np.ascontiguousarray(patch)
  if not return_params:
    return patch
  return patch, {'top': top, 'left': left, 'hflip': hflip, 'vflip': vflip,
                 'rot90': turns}


def colour_jitter(img: np.ndarray, rng: np.random.Generator, cfg, *,
                  return_params: bool = False):
  """Brightness, contrast, saturation, hue (tf.image semantics), clipped to [0, 1].

  `img` is uint8/uint16 RGB (read as value / 255 or / 65535) or float RGB in
  [0, 1]. Contrast scales around the per-channel mean as
  tf.image.adjust_contrast does; saturation and hue are one HSV round trip (H
  in degrees for float OpenCV). The HSV step needs [0, 1] input, so
  brightness/contrast overshoot is clipped first.
  """
  brightness = float(rng.uniform(-cfg.brightness_delta, cfg.brightness_delta))
  contrast = float(rng.uniform(*cfg.contrast_range))
  saturation = float(rng.uniform(*cfg.saturation_range))
  hue = float(rng.uniform(-cfg.hue_delta, cfg.hue_delta))
  unit = _INTEGER_UNITS.get(np.dtype(img.dtype), 1.0)
  pixels = np.asarray(img, dtype=np.float32)
  mean = np.asarray(cv2.mean(img)[:3]) * unit
  # (x + b - mean(x + b)) * c + mean(x + b) == c * x + (1 - c) * mean + b, as one
  # OpenCV affine colour transform (numpy broadcasting is ~20x slower here); for
  # integer pixels x = value * unit, so the scaling to [0, 1] costs no pass of
  # its own (the result differs from scaling first by float32 rounding: a few
  # 1e-6 after the HSV round trip).
  offset = (1.0 - contrast) * mean + brightness
  rgb_affine = np.hstack([np.eye(3) * (contrast * unit), offset[:, None]]).astype(np.float32)
  out = cv2.transform(pixels, rgb_affine)
  np.clip(out, 0.0, 1.0, out=out)
  # H += hue turns (OpenCV wraps hues >= 360 itself; the extra full turn keeps
  # them non-negative) and S *= saturation, capped at 1.
  hsv_affine = np.array([[1.0, 0.0, 0.0, 360.0 * hue + 360.0],
                         [0.0, saturation, 0.0, 0.0],
                         [0.0, 0.0, 1.0, 0.0]], np.float32)
  hsv = cv2.transform(cv2.cvtColor(out, cv2.COLOR_RGB2HSV), hsv_affine)
  if saturation > 1.0:  # S <= 1 stays so under a factor <= 1.
    hsv = cv2.min(hsv, (np.inf, 1.0, np.inf, 0.0))
  out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
  np.clip(out, 0.0, 1.0, out=out)
  if not return_params:
    return out
  return out, {'brightness': brightness, 'contrast': contrast,
               'saturation': saturation, 'hue': hue}
