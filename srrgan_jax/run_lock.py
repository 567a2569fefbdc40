"""An exclusive lock on a run directory, so that two trainings never write into one.

Each training process holds `WORKDIR/.lock.process<i>` (i = its JAX process
index) locked with `fcntl.flock` for as long as it runs: the hosts of one
multi-host run each take their own lock, as each writes its own share of a
checkpoint, and a second launch of the same process index is refused. The
kernel releases the lock whenever the holder exits, however it exits (normal
end, error, Ctrl-C, `kill -9`), so a lock file left by a dead process is stale
and simply taken over. The file records the holder (PID, host, start time) for
the message a refused process prints.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import pathlib
import socket
from typing import Iterator

from srrgan_jax import errors


class RunDirectoryInUse(errors.UserError, RuntimeError):
  """Another live process holds the run directory's lock."""


class RunDirectoryUnusable(errors.UserError, OSError):
  """The run directory cannot be created or written (e.g. it is a file)."""


def lock_path(workdir, process_index: int = 0) -> pathlib.Path:
  return pathlib.Path(workdir) / f'.lock.process{process_index}'


def _holder(path: pathlib.Path) -> str:
  try:
    info = json.loads(path.read_text())
    return (f'process {info["pid"]} on host {info["host"]} (started '
            f'{info["started"]})')
  except (OSError, ValueError, KeyError):
    return 'another process'


@contextlib.contextmanager
def hold(workdir, process_index: int = 0) -> Iterator[pathlib.Path]:
  """Holds the run directory's lock for process `process_index` inside the block.

  Raises RunDirectoryInUse, naming the holder's PID, if a live process holds it.
  """
  path = lock_path(workdir, process_index)
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, 'a+', encoding='utf-8')  # pylint: disable=consider-using-with
  except OSError as e:
    raise RunDirectoryUnusable(
        f'{path.parent}: cannot be the run directory ({e.strerror or e}): it, or a '
        'folder above it, is a file or not writable. Give a folder for --workdir '
        '(it is created if missing).') from e
  try:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise RunDirectoryInUse(
          f'{path.parent}: in use by {_holder(path)}, which trains into it. Wait for '
          'it to end (or stop it), or give another --workdir.') from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({
        'pid': os.getpid(), 'host': socket.gethostname(),
        'started': datetime.datetime.now().isoformat(timespec='seconds')}) + '\n')
    handle.flush()
    yield path
  finally:
    handle.close()  # Releases the lock.
