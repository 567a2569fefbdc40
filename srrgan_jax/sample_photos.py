"""The built-in sample photos: real photographs shipped inside installed packages.

With `data.train_dir` / `data.val_dir` empty, training and validation use ten
colour photos copied once from scikit-image and matplotlib into the cache
(`sample_photos_dir`); `PROVENANCE.md` next to them names each file's source
package, version and licence. Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import shutil
import tempfile
from pathlib import Path

from absl import logging

from srrgan_jax import cache
from srrgan_jax import errors


class SamplePhotoError(FileNotFoundError, errors.UserError):
  """A package that ships a sample photo is missing or incomplete."""


@dataclasses.dataclass(frozen=True)
class _SamplePhoto:
  split: str  # 'train' or 'val'.
  distribution: str  # pip distribution that ships the file.
  package: str  # Import name of that distribution.
  source: str  # Path inside the package; copied byte for byte.
  subject: str
  licence: str

  @property
  def name(self) -> str:
    return Path(self.source).name


_SKIMAGE = ('scikit-image', 'skimage')
_MIDDLEBURY = 'research dataset (Scharstein et al.), redistributed by scikit-image'
_SAMPLE_PHOTOS = (
    _SamplePhoto('train', *_SKIMAGE, 'data/astronaut.png',
                 'Astronaut Eileen Collins (NASA Great Images)', 'public domain'),
    _SamplePhoto('train', *_SKIMAGE, 'data/rocket.jpg',
                 'DSCOVR launch on Falcon 9 (SpaceX)', 'public domain (released by SpaceX)'),
    _SamplePhoto('train', *_SKIMAGE, 'data/hubble_deep_field.jpg',
                 'Hubble eXtreme Deep Field (NASA)', 'public domain'),
    _SamplePhoto('train', *_SKIMAGE, 'data/ihc.png',
                 'Immunohistochemistry micrograph (CMMI)', 'no known copyright restrictions'),
    _SamplePhoto('train', *_SKIMAGE, 'data/motorcycle_left.png',
                 'Middlebury 2014 stereo pair, left view', _MIDDLEBURY),
    _SamplePhoto('train', *_SKIMAGE, 'data/motorcycle_right.png',
                 'Middlebury 2014 stereo pair, right view', _MIDDLEBURY),
    _SamplePhoto('train', *_SKIMAGE, 'data/retina.jpg',
                 'Human retina fundus photograph (M. Haggstrom)', 'CC0 1.0'),
    _SamplePhoto('val', *_SKIMAGE, 'data/chelsea.png',
                 'Chelsea the cat (Stefan van der Walt)', 'CC0'),
    _SamplePhoto('val', *_SKIMAGE, 'data/coffee.png',
                 'Coffee cup (Rachel Michetti, Pikolo Espresso Bar)', 'CC0'),
    _SamplePhoto('val', 'matplotlib', 'matplotlib', 'mpl-data/sample_data/grace_hopper.jpg',
                 'Rear Admiral Grace Hopper (US Navy photograph)', 'public domain'),
)


def _package_file(import_name: str, relative: str) -> Path:
  spec = importlib.util.find_spec(import_name)
  if spec is None or not spec.submodule_search_locations:
    raise SamplePhotoError(f'Python package {import_name!r} is not installed; '
                           'run `pip install -r requirements.txt`.')
  return Path(list(spec.submodule_search_locations)[0]) / relative


def _provenance_text() -> str:
  lines = ['# Built-in sample photos', '',
           'Real photographs that ship inside installed Python packages, copied '
           'here by `srrgan_jax.sample_photos.sample_photos_dir()`. `train/` feeds '
           'training and `val/` is held out for validation when '
           '`data.train_dir`/`val_dir` are empty.', '',
           '| split | file | source package | file in the package | subject | licence |',
           '|---|---|---|---|---|---|']
  for photo in _SAMPLE_PHOTOS:
    version = importlib.metadata.version(photo.distribution)
    lines.append(f'| {photo.split} | {photo.name} | {photo.distribution} {version} | '
                 f'{photo.source} | {photo.subject} | {photo.licence} |')
  return '\n'.join(lines) + '\n'


def _sample_photos_complete(root: Path) -> bool:
  """True when `root` holds exactly the current photo list (an older list is redone)."""
  if not (root / 'PROVENANCE.md').is_file():
    return False
  present = {p.relative_to(root).as_posix() for p in root.glob('*/*') if p.is_file()}
  return present == {f'{photo.split}/{photo.name}' for photo in _SAMPLE_PHOTOS}


def sample_photos_dir() -> Path:
  """Folder with `train/` and `val/` sample photos, written once under the cache dir."""
  root = cache.cache_dir() / 'sample_photos'
  if _sample_photos_complete(root):
    return root
  root.parent.mkdir(parents=True, exist_ok=True)
  staging = Path(tempfile.mkdtemp(prefix='.sample_photos-', dir=root.parent))
  try:
    for photo in _SAMPLE_PHOTOS:
      source = _package_file(photo.package, photo.source)
      if not source.is_file():
        raise SamplePhotoError(f'{source}: sample photo missing from the installed '
                               'package; reinstall it (`pip install --force-reinstall '
                               '-r requirements.txt`) or set data.train_dir/val_dir.')
      (staging / photo.split).mkdir(exist_ok=True)
      # Copied as shipped: re-encoding the JPEGs as PNG adds nothing and makes
      # them decode 3-4x slower.
      shutil.copyfile(source, staging / photo.split / photo.name)
    (staging / 'PROVENANCE.md').write_text(_provenance_text())
    if root.exists() and not _sample_photos_complete(root):  # An interrupted attempt.
      shutil.rmtree(root, ignore_errors=True)
    try:
      staging.rename(root)
    except OSError:
      if not _sample_photos_complete(root):  # Not a concurrent process winning.
        raise
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  logging.info('Wrote the built-in sample photos to %s', root)
  return root
