"""Writing files so that a reader never sees half of one, and checking a folder takes files.

Images, run records (config.json, selected.json), exported models, weight files
and caches are written through `atomic_file`: a temporary file beside the
target, renamed over it once complete, so a file under the target name is
always whole, and a failed write leaves the previous one (or none) and no
temporary file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

from srrgan_jax import errors


class WriteError(errors.UserError, OSError):
  """A file could not be written (full disk, no permission); nothing partial is left.

  `strerror` is the system's reason ('No space left on device'), for callers that
  word their own message.
  """


def _write_error(message: str, cause: OSError) -> WriteError:
  error = WriteError(message)
  error.strerror = cause.strerror or str(cause)
  return error


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, size: Optional[int] = None) -> Iterator[BinaryIO]:
  """Opens a new temporary file beside `path` for binary writing; it becomes `path` on exit.

  Missing folders are created. If the block or the rename fails, the temporary
  file is removed and an existing `path` is untouched; a failing write (full
  disk, no permission) raises WriteError naming the folder (`size`: the bytes
  meant to be written, for the message).
  """
  path = Path(path)
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    # open(), unlike tempfile, gives the file the permissions of any new file (umask).
    handle = open(path.parent / f'.{path.name}.{os.urandom(4).hex()}.part', 'xb')
  except OSError as e:
    raise _write_error(f'{path.parent}: cannot write {path.name} there ({e.strerror or e}); '
                       'fix the folder or choose another.', e) from e
  try:
    with handle:
      yield handle
    os.replace(handle.name, path)
  except BaseException as e:
    Path(handle.name).unlink(missing_ok=True)
    if not isinstance(e, OSError) or isinstance(e, errors.UserError):
      raise
    size_text = f' ({size:,} bytes)' if size is not None else ''
    raise _write_error(f'{path.parent}: writing {path.name}{size_text} failed '
                       f'({e.strerror or e}); free space or choose another folder.', e) from e


def write_atomic(path: str | os.PathLike, contents: bytes | str) -> None:
  """Writes `contents` (str as UTF-8) to `path` through `atomic_file`."""
  if isinstance(contents, str):
    contents = contents.encode()
  with atomic_file(path, len(contents)) as handle:
    handle.write(contents)


def probe_writable(folder: str | os.PathLike) -> None:
  """Raises OSError unless a file can be created in the existing `folder` (tries one)."""
  with tempfile.NamedTemporaryFile(dir=folder, prefix='.srrgan_write_test_'):
    pass
