"""Training batches placed on the devices one step ahead (double buffering).

The loop dispatches step `s` (asynchronously), then calls `prefetch()`: the
next host batch is taken from the loader and its transfer to the devices starts
while step `s` runs, so step `s + 1` finds its input already in device memory.
On several hosts each host places its own rows of the global batch (see
`parallel.global_batch`), exactly as without prefetching.

A batch that was prefetched but not yet handed out must survive a checkpoint:
`get_state()` is the loader's position after the last batch *handed out*, not
after the last one loaded, so a run resumed from a checkpoint loads the
prefetched batch again and trains on the identical sequence of batches.

`wait_seconds` adds up the host time spent getting batches (waiting for the
loader and starting the transfer): the training loop's input-bound telemetry.
"""

from __future__ import annotations

import collections
import copy
import time
from typing import Any, Callable, Optional

import grain


class DevicePrefetcher(grain.DatasetIterator):
  """Iterator of device-placed batches, `depth` batches ahead of the consumer.

  `source` yields host batches and has `get_state()`/`set_state()`; `place`
  puts one host batch on the devices (e.g. `parallel.global_batch`).
  """

  def __init__(self, source, place: Callable[[Any], Any], depth: int = 1):
    super().__init__()
    self._source, self._place, self._depth = source, place, max(0, int(depth))
    self._buffer: collections.deque = collections.deque()  # (device batch, state after it)
    # The source's position after the last batch handed out; None until a batch
    # is loaded (the source's own state is the position then).
    self._state: Optional[Any] = None
    self.wait_seconds = 0.0

  def _load(self) -> None:
    started = time.perf_counter()
    if self._state is None:
      self._state = copy.deepcopy(self._source.get_state())
    host_batch = next(self._source)
    state = copy.deepcopy(self._source.get_state())
    self._buffer.append((self._place(host_batch), state))
    self.wait_seconds += time.perf_counter() - started

  def prefetch(self) -> None:
    """Loads and places batches until `depth` wait in device memory."""
    self._assert_not_closed()
    while len(self._buffer) < self._depth:
      self._load()

  def __next__(self):
    self._assert_not_closed()
    if not self._buffer:
      self._load()
    batch, self._state = self._buffer.popleft()
    return batch

  def get_state(self) -> dict[str, Any]:
    """The position after the last batch handed out (prefetched ones load again)."""
    if self._state is None:
      return self._source.get_state()
    return copy.deepcopy(self._state)

  def set_state(self, state: dict[str, Any]) -> None:
    self._buffer.clear()  # Prefetched batches belong to the old position.
    self._source.set_state(state)
    self._state = None

  def start_prefetch(self) -> None:
    if hasattr(self._source, 'start_prefetch'):
      self._source.start_prefetch()

  def close(self) -> None:
    """Drops the placed batches and closes the source (idempotent)."""
    if self._closed:
      return
    self._closed = True
    self._buffer.clear()
    if hasattr(self._source, 'close'):
      self._source.close()
