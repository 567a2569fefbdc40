"""Decoded training images kept on disk as raw pixels and read back memory-mapped.

Decoding a 1024 px PNG costs ~8 ms of a core, more than everything else done
to a training patch; copying a patch out of raw pixels in the page cache costs
a few hundredths of that. With `data.decoded_cache_gb` > 0 the loader stores
each training image the first time it decodes it, as an uncompressed `.npy`
file holding exactly the decoder's array (RGB, EXIF orientation applied,
integer type kept), and from then on maps that file instead of decoding: the
samples are the same bit for bit.

A file's name is a hash of the image's absolute path, size and modification
time, so an edited image is decoded afresh. Files are written to a temporary
name and renamed, so the worker processes (and concurrent runs) can share a
folder. An image that would take the folder past the limit is not stored (said
once per process) and is decoded every time; as the folder's size is re-read
only every ten seconds, the workers together can overshoot the limit by what
they store in that time.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
import time
from pathlib import Path
from typing import Callable, Optional

from absl import logging
import numpy as np

from srrgan_jax import cache
from srrgan_jax import errors
from srrgan_jax import files

_RESCAN_S = 10.0  # How stale the folder's size may be before storing re-reads it.
DEFAULT_SUBDIR = 'decoded_images'


class DecodedCacheError(ValueError, errors.UserError):
  """The decoded-image cache settings cannot be used."""


def default_folder() -> Path:
  """`$SRRGAN_CACHE_DIR/decoded_images` (see `cache.cache_dir`)."""
  return cache.cache_dir() / DEFAULT_SUBDIR


class DecodedCache:
  """A folder of decoded images, at most `max_gb` GB of them (see the module docstring)."""

  def __init__(self, folder: str | os.PathLike, max_gb: float):
    if not max_gb > 0:
      raise DecodedCacheError(f'data.decoded_cache_gb={max_gb!r}: must be > 0 to use the '
                              'decoded-image cache (0 turns it off).')
    self.folder = Path(folder).expanduser()
    self.max_bytes = int(max_gb * 1e9)
    try:
      self.folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise DecodedCacheError(
          f'data.decoded_cache_dir={str(folder)!r}: cannot create the folder '
          f'({e.strerror or e}); choose another folder or set data.decoded_cache_gb=0.'
      ) from e
    self._fresh_state()

  def _fresh_state(self):
    self._used: Optional[int] = None
    self._scanned_at = 0.0
    self._storing = True  # Off after the folder filled up or a write failed.
    # file -> (shape, dtype, offset) of the files read before: parsing a .npy
    # header costs more than mapping the pixels.
    self._layouts: dict[Path, tuple[tuple[int, ...], np.dtype, int]] = {}

  def __getstate__(self):  # Worker processes start with a fresh view of the folder.
    return {'folder': self.folder, 'max_bytes': self.max_bytes}

  def __setstate__(self, state):
    self.folder, self.max_bytes = state['folder'], state['max_bytes']
    self._fresh_state()

  def file_for(self, path: str) -> Path:
    """Where the decoded pixels of image `path` (as it is now) are kept."""
    stat = os.stat(path)
    key = f'{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}'
    return self.folder / (hashlib.sha1(key.encode()).hexdigest() + '.npy')

  def load(self, path: str, decode: Callable[[str], np.ndarray]) -> np.ndarray:
    """The pixels of image `path`: mapped from the cache, else `decode(path)` (then stored)."""
    try:
      file = self.file_for(path)
    except OSError:
      return decode(path)  # Gone since the scan: let the decoder report it.
    try:
      return self._map(file)
    except FileNotFoundError:
      pass
    except (OSError, ValueError) as e:  # Damaged, e.g. by hand: decode and store again.
      self._layouts.pop(file, None)
      logging.warning('Decoded-image cache: %s is unreadable (%s); decoding %s again.',
                      file, e, path)
    pixels = decode(path)
    if self._storing and self._has_room(pixels.nbytes):
      self._store(file, pixels)
    return pixels

  def _map(self, file: Path) -> np.ndarray:
    """The read-only pixels of a stored file, mapped into memory."""
    layout = self._layouts.get(file)
    if layout is None:
      pixels = np.load(file, mmap_mode='r')
      self._layouts[file] = (pixels.shape, pixels.dtype, pixels.offset)
      return pixels
    shape, dtype, offset = layout
    with open(file, 'rb') as f:
      buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(buffer, dtype, count=math.prod(shape),
                         offset=offset).reshape(shape)

  def _has_room(self, nbytes: int) -> bool:
    now = time.monotonic()
    if (self._used is None or now - self._scanned_at > _RESCAN_S
        or self._used + nbytes > self.max_bytes):
      self._used = sum(entry.stat().st_size for entry in os.scandir(self.folder)
                       if entry.name.endswith('.npy'))
      self._scanned_at = now
    if self._used + nbytes <= self.max_bytes:
      return True
    self._storing = False
    logging.warning(
        'Decoded-image cache %s is full (%.2f GB of data.decoded_cache_gb=%g): images not '
        'stored yet are decoded every time. Raise the limit or free the folder.',
        self.folder, self._used / 1e9, self.max_bytes / 1e9)
    return False

  def _store(self, file: Path, pixels: np.ndarray) -> None:
    try:
      with files.atomic_file(file, pixels.nbytes) as handle:
        np.save(handle, pixels, allow_pickle=False)
    except files.WriteError as e:
      self._storing = False
      logging.warning('Decoded-image cache: cannot write to %s (%s); decoding every '
                      'time from now on in this process.', self.folder, e.strerror or e)
      return
    self._used += pixels.nbytes
