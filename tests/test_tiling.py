"""Tiled inference: layout, weights everywhere, exactness, no seams, one compile, bounded memory."""

import math
import threading
import tracemalloc

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data

from srrgan_jax import tiling

SCALE = 2


def nearest_upsample(tiles):
  """Stand-in model that upsamples exactly (pixel repeat)."""
  return np.repeat(np.repeat(np.asarray(tiles), SCALE, axis=1), SCALE, axis=2)


def make_conv_model(num_convs, seed=0):
  """Translation-equivariant stand-in: zero-padded 3x3 convs, tanh, nearest x2.

  Its receptive field reaches `num_convs` LR pixels, so a margin of that many
  pixels at inner tile edges makes tiling exact.
  """
  kernels = [jax.random.normal(k, (3, 3, 3, 3)) / 6 for k in
             jax.random.split(jax.random.key(seed), num_convs)]

  @jax.jit
  def forward(x):
    for kernel in kernels:
      x = jnp.tanh(jax.lax.conv_general_dilated(
          x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
    return jnp.repeat(jnp.repeat(x, SCALE, axis=1), SCALE, axis=2)

  return forward


def tile_statistics_model(tiles):
  """Stand-in whose output depends on whole-tile statistics, like GroupNorm and SE."""
  tiles = np.asarray(tiles)
  mean = tiles.mean(axis=(1, 2), keepdims=True)
  std = tiles.std(axis=(1, 2, 3), keepdims=True) + 1e-3
  return nearest_upsample(0.5 * tiles + 0.5 * (tiles - mean) / std)


def random_image(height, width, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (height, width, 3)).astype(np.float32)


@pytest.mark.parametrize('length,tile,overlap', [
    (1, 16, 4), (16, 16, 4), (17, 16, 4), (28, 16, 4), (29, 16, 4), (512, 128, 32),
    (1000, 128, 32), (50, 16, 0)])
def test_layout_matches_the_reference_count_and_covers_the_image(length, tile, overlap):
  starts = tiling.tile_starts(length, tile, overlap)
  stride = tile - overlap
  assert len(starts) == math.ceil(max(0, length - tile) / stride) + 1
  assert starts[0] == 0
  if length >= tile:
    assert starts[-1] == length - tile  # Flush with the border: no padding needed.
  gaps = np.diff(starts)
  assert np.all(gaps <= stride) and np.all(gaps > 0)
  assert tiling.count_tiles(length, 7, tile, overlap) == len(starts)


@pytest.mark.parametrize('length,tile,overlap,margin', [
    (512, 128, 32, 4), (512, 128, 32, 0), (512, 128, 32, 16), (130, 128, 32, 4),
    (45, 16, 6, 3), (20, 16, 4, 2), (10, 16, 4, 1), (50, 16, 0, 0)])
def test_every_output_pixel_gets_weight(length, tile, overlap, margin):
  starts = tiling.tile_starts(max(length, tile), tile, overlap)
  windows = tiling._axis_windows(len(starts), tile * SCALE, margin * SCALE)
  total = tiling._axis_total_weight(starts, windows, SCALE, max(length, tile) * SCALE)
  # The reference's Hann windows left the first and last pixel with ~0 weight.
  assert total[0] >= 1.0 and total[length * SCALE - 1] >= 1.0
  assert total.min() > (0.05 if 2 * margin < overlap else 0.0)


def test_window_is_hann_inside_and_flat_toward_image_borders():
  inner = tiling.blend_window_1d(16, 2, flat_start=False, flat_end=False)
  np.testing.assert_array_equal(inner[:2], 0.0)
  np.testing.assert_array_equal(inner[-2:], 0.0)
  np.testing.assert_allclose(inner, inner[::-1], atol=1e-7)
  assert np.all(inner[2:-2] > 0) and inner.max() <= 1.0
  first = tiling.blend_window_1d(16, 2, flat_start=True, flat_end=False)
  np.testing.assert_array_equal(first[:8], 1.0)
  np.testing.assert_array_equal(first[8:], inner[8:])
  single = tiling.blend_window_1d(16, 2, flat_start=True, flat_end=True)
  np.testing.assert_array_equal(single, 1.0)


@pytest.mark.parametrize('height,width', [(1, 1), (7, 5), (16, 16), (20, 37), (45, 70)])
def test_constant_input_gives_constant_output(height, width):
  lr = np.full((height, width, 3), 0.3, np.float32)
  hr = tiling.upscale_tiled(nearest_upsample, lr, scale=SCALE, tile=16, overlap=6,
                            batch_size=3)
  assert hr.shape == (height * SCALE, width * SCALE, 3)
  np.testing.assert_allclose(hr, 0.3, atol=1e-6)


@pytest.mark.parametrize('height,width,num_convs,overlap,margin', [
    (45, 70, 1, 6, 1), (20, 37, 2, 6, 2), (16, 33, 2, 4, 2), (100, 17, 3, 8, 3)])
def test_tiled_equals_whole_image_forward_everywhere(height, width, num_convs, overlap,
                                                     margin):
  forward = make_conv_model(num_convs)
  lr = random_image(height, width)
  tiled = tiling.upscale_tiled(forward, lr, scale=SCALE, tile=16, overlap=overlap,
                               batch_size=4, margin=margin)
  whole = np.asarray(forward(lr[None]))[0]
  assert tiled.shape == whole.shape
  np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5)  # Borders included.


def test_image_smaller_than_a_tile_is_reflect_padded():
  forward = make_conv_model(2)
  lr = random_image(9, 13)
  hr = tiling.upscale_tiled(forward, lr, scale=SCALE, tile=16, overlap=4, batch_size=2)
  padded = np.pad(lr, ((0, 7), (0, 3), (0, 0)), mode='reflect')
  expected = np.asarray(forward(padded[None]))[0, :18, :26]
  np.testing.assert_allclose(hr, expected, atol=1e-6)


def test_whole_image_mode_pads_to_the_model_multiple_and_crops():
  forward = make_conv_model(1)
  seen = []
  lr = random_image(19, 26)
  hr = tiling.upscale_whole(lambda x: (seen.append(x.shape), forward(x))[1], lr,
                            scale=SCALE, multiple=8)
  assert seen == [(1, 24, 32, 3)] and hr.shape == (38, 52, 3)
  np.testing.assert_allclose(hr[:30, :44], np.asarray(forward(lr[None]))[0][:30, :44],
                             atol=1e-6)  # Away from the padded bottom/right.


def seam_energy_ratio(hr, boundaries):
  """Mean squared gradient across the given HR column/row gaps over that of all gaps.

  Boundaries are multiples of SCALE; only gaps of that phase are compared, since
  inside a pixel-repeated LR pixel the gradient is zero.
  """
  ratios = []
  for axis in (0, 1):
    energy = (np.diff(hr, axis=axis) ** 2).mean(axis=(1 - axis, 2))
    gaps = [b - 1 for b in boundaries[axis] if 0 < b < hr.shape[axis]]
    ratios.append(energy[gaps].mean() / energy[SCALE - 1::SCALE].mean())
  return max(ratios)


def test_no_seams_on_a_real_photo():
  photo = skimage.data.chelsea()[:, :, :3].astype(np.float32) / 255  # 300x451 cat.
  lr = cv2.resize(photo, (150, 100), interpolation=cv2.INTER_AREA) * 2 - 1
  tile, overlap, margin = 32, 8, 1
  candidates = []  # Every place where a tile's weight starts or ends.
  for length in lr.shape[:2]:
    starts = tiling.tile_starts(length, tile, overlap)
    edges = {SCALE * (s + d) for s in starts for d in (0, margin, tile - margin, tile)}
    candidates.append(sorted(edges))
  blended = tiling.upscale_tiled(tile_statistics_model, lr, scale=SCALE, tile=tile,
                                 overlap=overlap, batch_size=4, margin=margin)
  # Control: butting tiles without overlap show the stand-in's per-tile differences.
  butted = tiling.upscale_tiled(tile_statistics_model, lr, scale=SCALE, tile=tile,
                                overlap=0, batch_size=4, margin=0)
  hard_edges = [[SCALE * s for s in tiling.tile_starts(length, tile, 0)]
                for length in lr.shape[:2]]
  assert seam_energy_ratio(butted, hard_edges) > 1.7
  assert seam_energy_ratio(blended, candidates) < 1.2
  assert seam_energy_ratio(blended, hard_edges) < 1.2


def test_one_compiled_function_with_a_fixed_batch_shape():
  traced_shapes, calls = [], []

  @jax.jit
  def forward(tiles):
    traced_shapes.append(tiles.shape)  # Runs only while tracing.
    return jnp.repeat(jnp.repeat(tiles, SCALE, axis=1), SCALE, axis=2)

  def counting_forward(tiles):
    calls.append(tiles.shape)
    return forward(tiles)

  for height, width in [(20, 37), (7, 5), (61, 29)]:
    calls.clear()
    tiling.upscale_tiled(counting_forward, random_image(height, width), scale=SCALE,
                         tile=16, overlap=4, batch_size=4)
    num_tiles = tiling.count_tiles(max(height, 16), max(width, 16), 16, 4)
    assert len(calls) == math.ceil(num_tiles / 4)
    assert set(calls) == {(4, 16, 16, 3)}  # The last batch is padded.
  assert traced_shapes == [(4, 16, 16, 3)]


@pytest.mark.parametrize('workers', [2, 3])
def test_concurrent_forward_calls_give_the_same_image(workers):
  forward = make_conv_model(3)
  lr = random_image(45, 70)
  expected = tiling.upscale_tiled(forward, lr, scale=SCALE, tile=16, overlap=6, batch_size=2)
  hr = tiling.upscale_tiled(forward, lr, scale=SCALE, tile=16, overlap=6, batch_size=2,
                            workers=workers)
  np.testing.assert_array_equal(hr, expected)  # Same tiles, blended in the same order.


def test_workers_run_forward_calls_at_once():
  barrier = threading.Barrier(2, timeout=10)  # Passes only when two calls meet.

  def forward(tiles):
    barrier.wait()
    return nearest_upsample(tiles)

  lr = random_image(40, 28)
  assert tiling.count_tiles(40, 28, 16, 4) == 6  # Even: every call has a partner.
  hr = tiling.upscale_tiled(forward, lr, scale=SCALE, tile=16, overlap=4, batch_size=1,
                            workers=2)
  np.testing.assert_allclose(hr, nearest_upsample(lr[None])[0], atol=1e-6)
  barrier = threading.Barrier(2, timeout=0.2)
  with pytest.raises(threading.BrokenBarrierError):  # One call at a time never meets.
    tiling.upscale_tiled(forward, lr, scale=SCALE, tile=16, overlap=4, batch_size=1)


@pytest.mark.parametrize('workers', [1, 2])
def test_memory_stays_bounded_by_the_canvas_and_one_batch(workers):
  height = width = 240
  tile, overlap, batch_size = 16, 8, 4
  lr = random_image(height, width)
  num_tiles = tiling.count_tiles(height, width, tile, overlap)
  calls = []

  def forward(tiles):
    calls.append(len(tiles))
    return nearest_upsample(tiles)

  tracemalloc.start()
  try:
    hr = tiling.upscale_tiled(forward, lr, scale=SCALE, tile=tile, overlap=overlap,
                              batch_size=batch_size, workers=workers)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  canvas_bytes = hr.nbytes
  all_hr_tiles_bytes = num_tiles * (tile * SCALE) ** 2 * 3 * 4
  batch_bytes = batch_size * (tile * SCALE) ** 2 * 3 * 4
  assert num_tiles == 29 * 29 and max(calls) == batch_size
  assert all_hr_tiles_bytes > 2 * canvas_bytes
  # Canvas + a few batches and windows; never all the tiles.
  assert peak - canvas_bytes < 16 * batch_bytes, (peak, canvas_bytes, batch_bytes)


def test_rejects_bad_layouts_and_wrong_forward_shapes():
  lr = random_image(20, 20)
  with pytest.raises(ValueError, match='overlap'):
    tiling.upscale_tiled(nearest_upsample, lr, scale=SCALE, tile=16, overlap=16)
  with pytest.raises(ValueError, match='margin'):
    tiling.upscale_tiled(nearest_upsample, lr, scale=SCALE, tile=16, overlap=4, margin=3)
  with pytest.raises(ValueError, match='expected'):
    tiling.upscale_tiled(nearest_upsample, lr, scale=4, tile=16, overlap=4)
  with pytest.raises(ValueError, match='expected'):
    tiling.upscale_tiled(nearest_upsample, lr, scale=4, tile=16, overlap=4, workers=2)
  with pytest.raises(ValueError, match='workers=0'):
    tiling.upscale_tiled(nearest_upsample, lr, scale=SCALE, tile=16, overlap=4, workers=0)
