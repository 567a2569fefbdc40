"""The project's weight files: what each holds, and reading/writing them as npz.

Two plain npz files of float32 arrays, kernels HWIO `(3, 3, Cin, Cout)` (README
"Pretrained weights" has the full layout):

  vgg19_caffe.npz  `block{b}_conv{c}/kernel|bias`: Keras VGG19 "notop" (caffe
                   BGR preprocessing), the perceptual-loss network.
  lpips_vgg16.npz  `conv{b}_{c}/kernel|bias`: torchvision VGG16, and `lin{i}` (C,):
                   the LPIPS v0.1 linear heads.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from srrgan_jax import errors
from srrgan_jax import files

VGG19_FILE = 'vgg19_caffe.npz'
LPIPS_FILE = 'lpips_vgg16.npz'
WEIGHT_FILES = (VGG19_FILE, LPIPS_FILE)
# The command that (re)creates a file, named in error messages.
FETCH_COMMAND = 'python -m srrgan_jax.weights fetch'

Arrays = dict[str, np.ndarray]


def _conv_layers(name_format: str, blocks) -> tuple[tuple[str, int, int], ...]:
  """(name, Cin, Cout) of each 3x3 conv of a VGG trunk, from (width, convs) per block."""
  layers, cin = [], 3
  for b, (width, convs) in enumerate(blocks, start=1):
    for c in range(1, convs + 1):
      layers.append((name_format.format(b=b, c=c), cin, width))
      cin = width
  return tuple(layers)


VGG19_CONVS = _conv_layers('block{b}_conv{c}',
                           ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4)))
VGG16_CONVS = _conv_layers('conv{b}_{c}',
                           ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)))
LPIPS_HEAD_CHANNELS = (64, 128, 256, 512, 512)

# Deflate level of written npz files. 9 reproduces the published sha256 of the
# fetched files; tests lower it only to save time (the bytes differ, the arrays do not).
NPZ_COMPRESS_LEVEL = 9


class WeightsFormatError(ValueError, errors.UserError):
  """A weight file does not have the layout the converter or loader expects."""


def expected_shapes(name: str) -> dict[str, tuple[int, ...]]:
  """The exact arrays (key -> shape) a file in the project format holds."""
  if name == VGG19_FILE:
    convs = VGG19_CONVS
  elif name == LPIPS_FILE:
    convs = VGG16_CONVS
  else:
    raise ValueError(f'unknown weight file {name!r}; expected one of {WEIGHT_FILES}')
  shapes = {}
  for layer, cin, cout in convs:
    shapes[f'{layer}/kernel'] = (3, 3, cin, cout)
    shapes[f'{layer}/bias'] = (cout,)
  if name == LPIPS_FILE:
    for i, c in enumerate(LPIPS_HEAD_CHANNELS):
      shapes[f'lin{i}'] = (c,)
  return shapes


def check_arrays(name: str, arrays: Mapping[str, np.ndarray], origin: str = '') -> None:
  """Raises WeightsFormatError listing every missing, extra or malformed array."""
  expected = expected_shapes(name)
  problems = []
  missing = [k for k in expected if k not in arrays]
  extra = [k for k in arrays if k not in expected]
  if missing:
    problems.append(f'missing arrays {missing[:4]}{"..." if len(missing) > 4 else ""}')
  if extra:
    problems.append(f'unexpected arrays {extra[:4]}{"..." if len(extra) > 4 else ""}')
  for key, shape in expected.items():
    if key not in arrays:
      continue
    value = arrays[key]
    if value.shape != shape:
      problems.append(f'{key} has shape {value.shape}, expected {shape}')
    elif value.dtype != np.float32:
      problems.append(f'{key} has dtype {value.dtype}, expected float32')
    elif not np.all(np.isfinite(value)):
      problems.append(f'{key} has non-finite values')
    elif key.startswith('lin') and np.any(value < 0):
      problems.append(f'{key} (an LPIPS head) has negative entries')
  if problems:
    raise WeightsFormatError(
        f'{origin or name}: not a valid {name}: ' + '; '.join(problems) +
        f'. Recreate it with `{FETCH_COMMAND} --only {name} --force`.')


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
  """Writes a compressed npz with fixed zip timestamps (same arrays -> same bytes), atomically."""
  path = Path(path)
  with files.atomic_file(path) as handle, zipfile.ZipFile(
      handle, 'w', compression=zipfile.ZIP_DEFLATED) as zf:
    for key, value in arrays.items():
      buffer = io.BytesIO()
      np.lib.format.write_array(buffer, np.ascontiguousarray(value), allow_pickle=False)
      info = zipfile.ZipInfo(key + '.npy', date_time=(1980, 1, 1, 0, 0, 0))
      info.compress_type = zipfile.ZIP_DEFLATED
      info.external_attr = 0o644 << 16
      zf.writestr(info, buffer.getvalue(), compresslevel=NPZ_COMPRESS_LEVEL)
  return path


def load_npz(path: str | os.PathLike, name: str | None = None) -> Arrays:
  """Reads a weight npz into numpy arrays and checks its layout (name defaults to the file's)."""
  path = Path(path)
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {key: npz[key] for key in npz.files}
  except (OSError, ValueError, zipfile.BadZipFile) as error:
    raise WeightsFormatError(
        f'{path}: cannot read it as an npz file ({error}). Recreate it with '
        f'`{FETCH_COMMAND} --force`.') from None
  check_arrays(name or path.name, arrays, origin=str(path))
  return arrays


def write_random_weights(directory: str | os.PathLike, names: Iterable[str] = WEIGHT_FILES,
                         seed: int = 0) -> list[Path]:
  """Writes random stand-ins with the exact real layout (tests, offline smoke runs).

  He-initialised kernels keep activations in a sane range through the trunk; LPIPS
  heads are non-negative like the real ones. Uncompressed, so writing is fast.
  """
  rng = np.random.default_rng(seed)
  paths = []
  for name in names:
    arrays = {}
    for key, shape in expected_shapes(name).items():
      if key.endswith('/kernel'):
        std = np.sqrt(2.0 / (9 * shape[2]))
        arrays[key] = (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32)
      elif key.endswith('/bias'):
        arrays[key] = (0.01 * rng.standard_normal(shape)).astype(np.float32)
      else:
        arrays[key] = rng.uniform(0.0, 2.0 / shape[0], shape).astype(np.float32)
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    paths.append(path)
  return paths
