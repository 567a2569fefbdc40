"""Cutting large training images into overlapping sub-images (`srrgan-prepare-data`).

A whole DIV2K frame takes longer to decode than all the augmentation and
degradation of a patch cut from it; sub-images of a few hundred pixels decode
about ten times fewer pixels per patch.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
from pathlib import Path

import cv2
import numpy as np

from srrgan_jax import files
from srrgan_jax import image_io
from srrgan_jax import tiling


def _cut_subimages(path: Path, input_dir: Path, output_dir: Path, crop: int, step: int,
                   compression: int) -> int:
  pixels = image_io.decode_raw(path)
  if pixels.dtype not in (np.uint8, np.uint16):  # e.g. float TIFF: PNG needs integers.
    pixels = np.round(np.clip(pixels, 0, 1) * 65535).astype(np.uint16)
  height, width = pixels.shape[:2]
  target = output_dir / path.relative_to(input_dir).parent
  target.mkdir(parents=True, exist_ok=True)
  count = 0
  # Same layout as inference tiles: every `step` px, the last flush with the edge.
  for top in tiling.tile_starts(height, crop, crop - step):
    for left in tiling.tile_starts(width, crop, crop - step):
      count += 1
      window = pixels[top:top + crop, left:left + crop]
      ok, encoded = cv2.imencode('.png', window,
                                 [cv2.IMWRITE_PNG_COMPRESSION, compression])
      if not ok:
        raise OSError(f'{path}: OpenCV could not encode sub-image {count} as PNG.')
      files.write_atomic(target / f'{path.stem}_s{count:03d}.png', encoded.tobytes())
  return count


def extract_subimages(input_dir, output_dir, *, crop: int = 480, step: int = 240,
                      workers: int = 0, compression: int = 3) -> tuple[int, int, list[str]]:
  """Cuts every image under `input_dir` into crop x crop PNGs every `step` px.

  Keeps bit depth, gray and alpha as they are; sub-folders are mirrored. An
  `output_dir` inside `input_dir` is left out of the input, so a second run does
  not cut sub-images of sub-images. Prints progress every 50 images. Returns
  (images done, sub-images written, error messages of images that failed).
  """
  input_dir, output_dir = Path(input_dir), Path(output_dir)
  if step < 1 or crop < 1:
    raise ValueError(f'crop={crop} and step={step} must be positive.')
  own_output = output_dir.resolve()
  paths = [path for path in image_io.list_images(input_dir)
           if not path.resolve().is_relative_to(own_output)]
  if not paths:
    raise image_io.MissingImagesError(
        f'{input_dir}: no images outside the output folder {output_dir}.')
  cut = functools.partial(_cut_subimages, input_dir=input_dir, output_dir=output_dir,
                          crop=crop, step=step, compression=compression)
  done, written, errors = 0, 0, []
  # OpenCV decodes and encodes without holding the GIL, so threads scale.
  with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
    futures = {pool.submit(cut, path): path for path in paths}
    for number, future in enumerate(concurrent.futures.as_completed(futures), 1):
      try:
        written += future.result()
        done += 1
      except (image_io.ImageReadError, OSError) as e:
        errors.append(str(e))
      if number % 50 == 0 or number == len(paths):
        print(f'{number}/{len(paths)} images, {written} sub-images', flush=True)
  return done, written, errors
