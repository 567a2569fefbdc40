"""Training input pipeline throughput: decode + crop + augment + degrade + batch.

Prints one JSON object per line and configuration (pixel source x worker count
x patches per decoded image) with `patches_per_s`, HR patches delivered per
second after the first batches (worker start-up excluded), and
`patches_per_cpu_s`, patches per CPU-second spent by this process and its
workers in that time: on a shared machine the first depends on the neighbours,
the second much less (N free cores deliver up to N times it).
`--degradation realesrgan` measures Real-ESRGAN's second-order model beside the
default one-pass model (rows say which).

`source` says where a patch's pixels come from (`--sources`):
- `files`: the image files, decoded for every `patches_per_image` patches;
- `decoded_cache`: the decoded-image cache (`data.decoded_cache_gb`), filled
  before timing, as in every epoch after the first: no decoding at all;
- `subimages`: the files cut first into 480 px sub-images every 240 px, as
  `srrgan-prepare-data` does by default, and decoded like `files`.

  python bench/data.py                      # built-in sample photos
  python bench/data.py --data DIV2K_train_HR --workers 0,2,8 --sources files
  python bench/data.py --degradation realesrgan --patches_per_image 4

`--stages` instead prints, per patch, the CPU milliseconds of each stage of
the in-process pipeline on one core (decode, as the loader does it: of an
8-bit PNG only the top rows the crops need; or reading the decoded-image
cache; shared by `patches_per_image` patches; the sample's two seeded random
generators; crop/flip/rot; to float (float images only: colour jitter scales
8/16-bit patches itself); colour jitter; each degradation step; the batch
rows: LR to [-1, 1] and HR rounded to uint8, written into the shared memory a
worker hands its batches over in; the hand-over of a batch to the trainer, as
Grain does it). Stage costs are
averages over all patches, so a step that only some patches take (Poisson
noise, JPEG) counts with its frequency. It checks that the staged result
equals the pipeline's own sample bit for bit: the breakdown times the real code.
"""

import argparse
import json
import multiprocessing
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs import default  # pylint: disable=g-import-not-at-top,wrong-import-position
from srrgan_jax import augment  # pylint: disable=g-import-not-at-top,wrong-import-position
from srrgan_jax import data  # pylint: disable=g-import-not-at-top,wrong-import-position
from srrgan_jax import degradation  # pylint: disable=g-import-not-at-top,wrong-import-position
from srrgan_jax import image_io  # pylint: disable=g-import-not-at-top,wrong-import-position
from srrgan_jax import sample_photos  # pylint: disable=g-import-not-at-top,wrong-import-position
from srrgan_jax import subimages  # pylint: disable=g-import-not-at-top,wrong-import-position
from srrgan_jax import training_degradation  # pylint: disable=g-import-not-at-top,wrong-import-position
# Grain's own hand-over between worker processes, timed by --stages.
from grain._src.python.ipc import shared_memory_array  # pylint: disable=g-import-not-at-top,wrong-import-position


def _int_list(text):
  return [int(x) for x in text.split(',')]


def cpu_seconds():
  """CPU time of this process and its live child processes (Linux /proc)."""
  total = time.process_time()
  ticks = os.sysconf('SC_CLK_TCK')
  for child in multiprocessing.active_children():
    try:
      fields = Path(f'/proc/{child.pid}/stat').read_text().rsplit(')', 1)[1].split()
      total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime.
    except (OSError, IndexError, ValueError):
      pass
  return total


SOURCES = ('files', 'decoded_cache', 'subimages')


def _str_list(text):
  return [x for x in text.split(',') if x]


def fill_decoded_cache(config, train_dir, cache_dir):
  """Points `config` at a decoded-image cache in `cache_dir` holding every training image."""
  config.data.decoded_cache_dir = str(cache_dir)
  config.data.decoded_cache_gb = 1000.0  # No limit: the bench measures a full cache.
  cache = data.make_decoded_cache(config)
  for path in data.scan_training_images(str(train_dir), int(config.data.patch_size)).paths:
    cache.load(path, data.decode_pixels)
  return cache


def source_dir(source, train_dir, scratch):
  """The folder the patches of `source` come from (sub-images are cut into `scratch`)."""
  if source != 'subimages':
    return train_dir
  folder = Path(scratch) / 'subimages'
  if not folder.exists():
    subimages.extract_subimages(train_dir, folder)  # srrgan-prepare-data's defaults.
  return folder


def measure(config, train_dir, warmup, batches):
  """Patches per second and per CPU-second over `batches` after `warmup`; first-batch s."""
  start = time.perf_counter()
  iterator = data.make_train_iterator(config, train_dir=train_dir)
  try:
    next(iterator)
    first_batch_s = time.perf_counter() - start
    for _ in range(warmup - 1):
      next(iterator)
    start, cpu_start = time.perf_counter(), cpu_seconds()
    for _ in range(batches):
      next(iterator)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
  finally:
    iterator.close()
  patches = batches * config.data.batch_size
  return patches / elapsed, patches / cpu, first_batch_s


def bench_config(args, model, patches_per_image, workers=0):
  config = default.get_config()
  config.degradation.model = model
  config.data.patch_size = args.patch_size
  config.data.batch_size = args.batch_size
  config.data.patches_per_image = patches_per_image
  config.data.num_workers = workers
  return config


def run_one(args, train_dir, source, scratch, model, patches_per_image, workers):
  """Measures one configuration and prints its JSON line."""
  config = bench_config(args, model, patches_per_image, workers)
  folder = source_dir(source, train_dir, scratch)
  if source == 'decoded_cache':
    fill_decoded_cache(config, folder, Path(scratch) / 'decoded')
  images = len(data.scan_training_images(str(folder), args.patch_size).paths)
  rate, cpu_rate, first_batch_s = measure(config, folder, args.warmup, args.batches)
  print(json.dumps({
      'source': source, 'degradation': model, 'workers': workers,
      'patches_per_image': patches_per_image,
      'patches_per_s': round(rate, 1), 'patches_per_cpu_s': round(cpu_rate, 1),
      'first_batch_s': round(first_batch_s, 2),
      'patch_size': args.patch_size, 'batch_size': args.batch_size,
      'timed_batches': args.batches, 'images': images, 'data': str(train_dir),
      'cpus': os.cpu_count(), 'load_avg_1min': round(os.getloadavg()[0], 1),
  }), flush=True)


class StageClock:
  """CPU seconds (this process) per named stage, summed over calls."""

  def __init__(self):
    self.seconds: dict[str, float] = {}

  def run(self, name, fn, *args, **kwargs):
    start = time.thread_time()
    out = fn(*args, **kwargs)
    self.seconds[name] = self.seconds.get(name, 0.0) + time.thread_time() - start
    return out


def staged_sample(clock, pixels, sample_index, *, seed, patch_size, scale, augment_cfg,
                  degradation_cfg, height=None):
  """`data.training_sample` split into timed stages (same calls, same random draws)."""
  # pylint: disable=protected-access
  rng = clock.run('rng_setup', data.sample_rng, seed, sample_index, data._AUGMENT_STREAM)
  patch = clock.run('crop_flip_rot', augment.random_geometry, pixels, patch_size, rng,
                    augment_cfg, height=height)
  hr = clock.run('to_float', data.jitter_input, patch)
  hr = clock.run('colour_jitter', augment.colour_jitter, hr, rng, augment_cfg)
  rng = clock.run('rng_setup', data.sample_rng, seed, sample_index, data._DEGRADE_STREAM)
  cfg = degradation_cfg
  if cfg.model != 'original':
    hr, lr, _ = clock.run(f'degrade_{cfg.model}', training_degradation.degrade_training,
                          hr, rng, cfg, scale)
    return hr, lr
  params = clock.run('degrade_draw', degradation.draw_stochastic_params, rng, cfg)
  img = clock.run(f'degrade_blur_{params["blur"]}', degradation._blur, hr, params,
                  degradation._border(cfg))
  img = clock.run(f'degrade_resize_{params["resize"]}', degradation.resize_down, img,
                  scale, params['resize'])
  for step in params['order']:
    if step == 'noise':
      img = clock.run(f'degrade_noise_{params["noise"]}', degradation._add_noise, img,
                      params, rng)
    elif params['jpeg_quality'] is not None:
      img = clock.run('degrade_jpeg', degradation.jpeg_roundtrip, img,
                      params['jpeg_quality'])
  lr = clock.run('degrade_clip', np.clip, img, 0.0, 1.0, out=img)
  if cfg.sharpen_target:
    hr = clock.run('sharpen_target', training_degradation.usm_sharpen, hr, cfg.usm_weight,
                   cfg.usm_kernel_size, cfg.usm_threshold)
  return hr, lr


def _to_batch_rows(hr, lr, hr_out, lr_out):
  data.hr_to_uint8(hr, out=hr_out)
  cv2.addWeighted(lr, 2.0, lr, 0.0, -1.0, dst=lr_out)


def _hand_over(batch):
  """What a worker's batch costs to reach the trainer: Grain passes arrays already in
  shared memory by name (it would copy others there) and pickles that small
  metadata; the trainer maps the memory."""
  metadata = shared_memory_array.copy_to_shm(batch)
  received = shared_memory_array.open_from_shm(
      pickle.loads(pickle.dumps(metadata, protocol=pickle.HIGHEST_PROTOCOL)))
  np.add.reduce(received['hr'][:, 0, 0])  # Touch the mapped pages, as the trainer does.
  del received  # Unlinks the shared memory.


def _decode_top_rows(path, rows, height):
  """The image's top `rows` rows where they decode alone, else the whole image."""
  pixels = image_io.decode_png_top_rows(path, rows, height) if rows < height else None
  return data.decode_pixels(path) if pixels is None else pixels


def stage_costs(config, train_dir, patches, cache=None):
  """{stage: CPU ms per patch} of `patches` in-process patches, on one OpenCV thread.

  With a filled decoded-image `cache` the pixels come from it instead of decoding.
  """
  cv2.setNumThreads(1)  # As in the workers: CPU time per stage on one core.
  scan = data.scan_training_images(str(train_dir), int(config.data.patch_size))
  seed, size, scale = int(config.seed), int(config.data.patch_size), int(config.scale)
  per_image, batch_size = int(config.data.patches_per_image), int(config.data.batch_size)
  augment_cfg = data._plain(config.augment)  # pylint: disable=protected-access
  degradation_cfg = training_degradation.plain_config(config.degradation)
  clock = StageClock()
  batch = pixels = None
  for index in range(patches):
    if index % per_image == 0:
      record = (index // per_image) % len(scan.paths)
      path, height = scan.paths[record], scan.heights[record]
      if cache is None:  # As the loader does: only the rows the record's crops need.
        rows = max(data.crop_bottom(height, i, seed=seed, patch_size=size)
                   for i in range(index, index + per_image))
        pixels = clock.run('decode', _decode_top_rows, path, rows, height)
      else:
        pixels = clock.run('read_decoded_cache', cache.load, path, data.decode_pixels)
    kwargs = dict(seed=seed, patch_size=size, scale=scale, augment_cfg=augment_cfg,
                  degradation_cfg=degradation_cfg,
                  height=height if pixels.shape[0] < height else None)
    hr, lr = staged_sample(clock, pixels, index, **kwargs)
    if index == 0:  # The stages are the pipeline: same pixels, bit for bit.
      want_hr, want_lr = data.training_sample(pixels, index, **kwargs)
      np.testing.assert_array_equal(hr, want_hr)
      np.testing.assert_array_equal(lr, want_lr)
    row = index % batch_size
    if row == 0:  # In shared memory, as a worker builds it.
      batch = clock.run('batch_rows', data.new_batch, batch_size, size, size // scale,
                        shared=True)
    clock.run('batch_rows', _to_batch_rows, hr, lr, batch['hr'][row].view(np.ndarray),
              batch['lr'][row].view(np.ndarray))
    if row == batch_size - 1:
      clock.run('hand_over', _hand_over, batch)
      batch = None
  costs = {name: 1e3 * seconds / patches for name, seconds in clock.seconds.items()}
  costs['total'] = sum(costs.values())
  return costs


def run_stages(args, train_dir, scratch):
  """Prints one JSON line of per-stage CPU ms per patch for each source and patches_per_image."""
  for source in args.sources:
    folder = source_dir(source, train_dir, scratch)
    for patches_per_image in args.patches_per_image:
      config = bench_config(args, args.degradation, patches_per_image)
      cache = None
      if source == 'decoded_cache':
        cache = fill_decoded_cache(config, folder, Path(scratch) / 'decoded')
      patches = args.batches * args.batch_size
      costs = stage_costs(config, folder, patches, cache)
      print(json.dumps({
          'stages_cpu_ms_per_patch': {k: round(v, 3) for k, v in costs.items()},
          'patches_per_cpu_s': round(1e3 / costs['total'], 1), 'source': source,
          'degradation': args.degradation, 'patches_per_image': patches_per_image,
          'patches': patches, 'patch_size': args.patch_size, 'batch_size': args.batch_size,
          'data': str(train_dir), 'load_avg_1min': round(os.getloadavg()[0], 1),
      }), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data', default='', help='Image folder; default: sample photos.')
  parser.add_argument('--workers', type=_int_list, default=[0, 1, 2],
                      help='Comma-separated worker counts.')
  parser.add_argument('--patches_per_image', type=_int_list, default=[1, 4],
                      help='Comma-separated patches cut per decoded image.')
  parser.add_argument('--patch_size', type=int, default=256)
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--batches', type=int, default=24, help='Timed batches.')
  parser.add_argument('--warmup', type=int, default=3, help='Untimed first batches.')
  parser.add_argument('--degradation', default='original',
                      choices=training_degradation.MODELS,
                      help="Degradation model measured beside the default 'original'.")
  parser.add_argument('--sources', type=_str_list, default=list(SOURCES),
                      help=f'Comma-separated pixel sources, of {",".join(SOURCES)}.')
  parser.add_argument('--stages', action='store_true',
                      help='Per-stage CPU ms per patch (in-process) instead of throughput.')
  args = parser.parse_args()
  unknown = sorted(set(args.sources) - set(SOURCES))
  if unknown or not args.sources:
    parser.error(f'--sources {",".join(args.sources)}: use some of {",".join(SOURCES)}.')
  train_dir = Path(args.data) if args.data else sample_photos.sample_photos_dir() / 'train'
  with tempfile.TemporaryDirectory(prefix='bench_data_') as scratch:
    if args.stages:
      run_stages(args, train_dir, scratch)
      return
    models = list(dict.fromkeys(['original', args.degradation]))
    for source in args.sources:
      for model in models:
        for patches_per_image in args.patches_per_image:
          for workers in args.workers:
            run_one(args, train_dir, source, scratch, model, patches_per_image, workers)


if __name__ == '__main__':
  main()
