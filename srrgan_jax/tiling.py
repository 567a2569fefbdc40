"""Tiled full-image inference with Hann-window blending (README "How tiling works").

Why tiles: GroupNorm and squeeze-excitation use whole-input statistics, so the
generator behaves as trained only on inputs of the training patch size; tiles
also bound memory for images of any size.

Layout: LR tiles of `tile` pixels every `tile - overlap` pixels along each axis,
with the last tile placed flush with the image's bottom/right edge (it overlaps
its neighbour a little more). Every tile therefore holds real pixels and the
image border coincides with a tile border, exactly as in a whole-image forward.
An image smaller than one tile is reflect-padded up to the tile size.

Blending: each HR tile is weighted by the outer product of two 1-D Hann windows
(sampled at pixel centres, so never exactly zero) and accumulated on the HR
canvas; the canvas is divided by the accumulated weight. Two departures from the
reference, both so that every output pixel is well defined and comes from
trustworthy outputs:
  * A tile side that lies on the image border uses a flat window (1) from the
    tile centre outwards: the reference's window is ~0 there and left the
    image's outer rows/columns with almost no weight.
  * A tile side facing another tile gives zero weight to its outermost
    `margin` LR pixels, whose outputs are skewed by the convolutions' zero
    padding; the overlap still covers them (2 * margin <= overlap).
The windows are separable and the tiles form a grid, so the total weight is an
outer product of two 1-D sums: only the HR canvas is held, never a weight canvas
or all tiles.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
from typing import Callable, Optional

import numpy as np

Forward = Callable[[np.ndarray], np.ndarray]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
  """Start offsets of the tiles along one axis of `length` pixels.

  n = ceil(max(0, length - tile) / stride) + 1 tiles (as in the reference), every
  `stride = tile - overlap` pixels, the last one ending exactly at `length`.
  """
  if length <= tile:
    return [0]
  stride = tile - overlap
  num_tiles = -(-(length - tile) // stride) + 1
  return [i * stride for i in range(num_tiles - 1)] + [length - tile]


def blend_window_1d(size: int, margin: int, *, flat_start: bool,
                    flat_end: bool) -> np.ndarray:
  """1-D blending weights of one tile side by side: Hann, flat toward image borders.

  Args:
    size: HR tile length.
    margin: HR pixels at each inner end that get zero weight.
    flat_start: the tile's first pixel is on the image border (weight 1 up to
      the centre instead of rising from 0).
    flat_end: likewise for the tile's last pixel.
  """
  core = size - 2 * margin
  positions = (np.arange(core, dtype=np.float64) + 0.5) / core
  window = np.zeros(size, np.float64)
  window[margin:size - margin] = np.sin(np.pi * positions) ** 2
  if flat_start:
    window[:size // 2] = 1.0
  if flat_end:
    window[size // 2:] = 1.0
  return window.astype(np.float32)


def count_tiles(height: int, width: int, tile: int, overlap: int) -> int:
  """Number of tiles `upscale_tiled` runs for an LR image of this size."""
  return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


def _check_layout(tile: int, overlap: int, margin: int, batch_size: int) -> None:
  if tile < 1:
    raise ValueError(f'tile={tile}: the tile size must be a positive number of LR pixels.')
  if not 0 <= overlap < tile:
    raise ValueError(f'overlap={overlap}: must be >= 0 and smaller than tile={tile}.')
  if not 0 <= 2 * margin <= overlap:
    raise ValueError(f'margin={margin}: must be >= 0 and at most half the '
                     f'overlap ({overlap}) so that every pixel keeps some weight.')
  if batch_size < 1:
    raise ValueError(f'batch_size={batch_size}: need at least one tile per forward call.')


def _axis_windows(num_tiles: int, tile_hr: int, margin_hr: int) -> list[np.ndarray]:
  """Window of each tile along one axis; tiles of the same kind share one array."""
  sides = [(i == 0, i == num_tiles - 1) for i in range(num_tiles)]
  by_side = {side: blend_window_1d(tile_hr, margin_hr, flat_start=side[0], flat_end=side[1])
             for side in set(sides)}
  return [by_side[side] for side in sides]


def _axis_total_weight(starts: list[int], windows: list[np.ndarray], scale: int,
                       length_hr: int) -> np.ndarray:
  total = np.zeros(length_hr, np.float32)
  for start, window in zip(starts, windows):
    total[start * scale:start * scale + window.size] += window
  return total


def _finished(forward: Forward, tiles: np.ndarray) -> np.ndarray:
  """forward(tiles) run to completion on the calling thread."""
  return np.asarray(forward(tiles), np.float32)


def upscale_tiled(forward: Forward, lr_HWC: np.ndarray, *, scale: int, tile: int = 128,
                  overlap: int = 32, batch_size: int = 16, margin: Optional[int] = None,
                  progress: Optional[Callable[[int], None]] = None,
                  workers: int = 1) -> np.ndarray:
  """Upscales an image of any size tile by tile and blends the tiles seamlessly.

  Args:
    forward: maps a float32 batch (batch_size, tile, tile, C) to
      (batch_size, tile*scale, tile*scale, C_out); always called with exactly that
      shape (the last batch is padded), so a jitted forward compiles once.
      Calls may return unfinished jax arrays: the next batch is dispatched before
      the previous one is read back.
    lr_HWC: the LR image, in whatever value range `forward` expects (the
      generator's [-1, 1]).
    scale: the upscaling factor of `forward`.
    tile, overlap: LR tile size and overlap of neighbouring tiles.
    batch_size: tiles per forward call; with the HR canvas this bounds memory.
    margin: LR pixels at each inner tile edge given zero weight; default
      overlap // 8.
    progress: called with the number of tiles finished after each batch.
    workers: forward calls run at once, each on its own thread. XLA:CPU runs
      one call at a time per calling thread and keeps the cores only partly
      busy with a single small tile; two threads fill them. With 1, calls are
      made from this thread (an accelerator queues them itself). Tiles are
      blended in the same order either way, so the result does not depend on it.

  Returns:
    float32 (H*scale, W*scale, C_out) numpy array.
  """
  margin = overlap // 8 if margin is None else margin
  _check_layout(tile, overlap, margin, batch_size)
  if workers < 1:
    raise ValueError(f'workers={workers}: need at least one forward call at a time.')
  lr_HWC = np.asarray(lr_HWC)
  if lr_HWC.ndim != 3:
    raise ValueError(f'Expected an (H, W, C) image, got shape {lr_HWC.shape}.')
  height, width, _ = lr_HWC.shape
  pad_h, pad_w = max(0, tile - height), max(0, tile - width)
  if pad_h or pad_w:  # Smaller than one tile: reflect up to the tile size.
    lr_HWC = np.pad(lr_HWC, ((0, pad_h), (0, pad_w), (0, 0)), mode='reflect')
  ys = tile_starts(lr_HWC.shape[0], tile, overlap)
  xs = tile_starts(lr_HWC.shape[1], tile, overlap)
  tile_hr = tile * scale
  row_windows = _axis_windows(len(ys), tile_hr, margin * scale)
  col_windows = _axis_windows(len(xs), tile_hr, margin * scale)
  grid = [(iy, ix) for iy in range(len(ys)) for ix in range(len(xs))]
  canvas = weighted = None
  windows_2d = {}  # At most 9 kinds (first/inner/last row x column).

  def accumulate(batch_grid, hr_tiles):
    nonlocal canvas, weighted
    if isinstance(hr_tiles, concurrent.futures.Future):
      hr_tiles = hr_tiles.result()
    hr_tiles = np.asarray(hr_tiles, np.float32)
    expected = (batch_size, tile_hr, tile_hr)
    if hr_tiles.ndim != 4 or hr_tiles.shape[:3] != expected:
      raise ValueError(f'forward returned shape {hr_tiles.shape}; expected '
                       f'{expected + ("C",)} for tile={tile}, scale={scale}, '
                       f'batch_size={batch_size}.')
    if canvas is None:
      canvas = np.zeros((lr_HWC.shape[0] * scale, lr_HWC.shape[1] * scale,
                         hr_tiles.shape[3]), np.float32)
      weighted = np.empty(hr_tiles.shape[1:], np.float32)
    for (iy, ix), hr_tile in zip(batch_grid, hr_tiles):
      row, col = row_windows[iy], col_windows[ix]
      if (id(row), id(col)) not in windows_2d:
        windows_2d[id(row), id(col)] = row[:, None, None] * col[None, :, None]
      y, x = ys[iy] * scale, xs[ix] * scale
      np.multiply(hr_tile, windows_2d[id(row), id(col)], out=weighted)
      canvas[y:y + tile_hr, x:x + tile_hr] += weighted
    if progress is not None:
      progress(len(batch_grid))

  with contextlib.ExitStack() as stack:
    if workers > 1:
      pool = stack.enter_context(concurrent.futures.ThreadPoolExecutor(workers))
      call = functools.partial(pool.submit, _finished, forward)
    else:
      call = forward
    # Up to `workers` + 1 batches in flight: the next call starts before the
    # oldest one is blended, so host blending overlaps the forward calls.
    in_flight = []
    for first in range(0, len(grid), batch_size):
      batch_grid = grid[first:first + batch_size]
      # A fresh array per batch: a dispatched forward may still be reading the last one.
      tiles = np.zeros((batch_size, tile, tile, lr_HWC.shape[2]), np.float32)
      for i, (iy, ix) in enumerate(batch_grid):
        tiles[i] = lr_HWC[ys[iy]:ys[iy] + tile, xs[ix]:xs[ix] + tile]
      in_flight.append((batch_grid, call(tiles)))
      if len(in_flight) > workers:
        accumulate(*in_flight.pop(0))
    for pending in in_flight:
      accumulate(*pending)

  total_rows = _axis_total_weight(ys, row_windows, scale, canvas.shape[0])
  total_cols = _axis_total_weight(xs, col_windows, scale, canvas.shape[1])
  canvas /= total_rows[:, None, None]  # In place: no second canvas-sized array.
  canvas /= total_cols[None, :, None]
  if pad_h or pad_w:
    canvas = np.ascontiguousarray(canvas[:height * scale, :width * scale])
  return canvas


def upscale_whole(forward: Forward, lr_HWC: np.ndarray, *, scale: int,
                  multiple: int = 8) -> np.ndarray:
  """Upscales the whole image in one forward call (compiles once per padded size).

  The image is reflect-padded at the bottom/right to a multiple of `multiple`
  (the generator's three stride-2 stages need 8) and the output cropped back.
  """
  lr_HWC = np.asarray(lr_HWC, np.float32)
  if lr_HWC.ndim != 3:
    raise ValueError(f'Expected an (H, W, C) image, got shape {lr_HWC.shape}.')
  height, width, _ = lr_HWC.shape
  pad_h, pad_w = -height % multiple, -width % multiple
  padded = np.pad(lr_HWC, ((0, pad_h), (0, pad_w), (0, 0)), mode='reflect')
  hr = np.asarray(forward(padded[None]), np.float32)[0]
  return np.array(hr[:height * scale, :width * scale])  # A writable copy.
