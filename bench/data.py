"""Training input pipeline throughput: decode + crop + augment + degrade + batch.

Prints one JSON object per line and configuration (worker count x patches per
decoded image) with `patches_per_s`, HR patches delivered per second after the
first batches (worker start-up excluded), and `patches_per_cpu_s`, patches per
CPU-second spent by this process and its workers in that time: on a shared
machine the first depends on the neighbours, the second much less (N free cores
deliver up to N times it). `--degradation realesrgan` measures Real-ESRGAN's
second-order model beside the default one-pass model (rows say which).

  python bench/data.py                      # built-in sample photos
  python bench/data.py --data DIV2K_train_HR_sub --workers 0,2,8
  python bench/data.py --degradation realesrgan --patches_per_image 4
"""

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs import default  # pylint: disable=g-import-not-at-top,wrong-import-position
from srrgan_jax import data  # pylint: disable=g-import-not-at-top,wrong-import-position
from srrgan_jax import sample_photos  # pylint: disable=g-import-not-at-top,wrong-import-position
from srrgan_jax import training_degradation  # pylint: disable=g-import-not-at-top,wrong-import-position


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


def run_one(args, train_dir, images, model, patches_per_image, workers):
  """Measures one configuration and prints its JSON line."""
  config = default.get_config()
  config.degradation.model = model
  config.data.patch_size = args.patch_size
  config.data.batch_size = args.batch_size
  config.data.patches_per_image = patches_per_image
  config.data.num_workers = workers
  rate, cpu_rate, first_batch_s = measure(config, train_dir, args.warmup, args.batches)
  print(json.dumps({
      'degradation': model, 'workers': workers, 'patches_per_image': patches_per_image,
      'patches_per_s': round(rate, 1), 'patches_per_cpu_s': round(cpu_rate, 1),
      'first_batch_s': round(first_batch_s, 2),
      'patch_size': args.patch_size, 'batch_size': args.batch_size,
      'timed_batches': args.batches, 'images': images, 'data': str(train_dir),
      'cpus': os.cpu_count(), 'load_avg_1min': round(os.getloadavg()[0], 1),
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
  args = parser.parse_args()
  train_dir = Path(args.data) if args.data else sample_photos.sample_photos_dir() / 'train'
  images = len(data.scan_training_images(str(train_dir), args.patch_size).paths)
  models = list(dict.fromkeys(['original', args.degradation]))
  for model in models:
    for patches_per_image in args.patches_per_image:
      for workers in args.workers:
        run_one(args, train_dir, images, model, patches_per_image, workers)


if __name__ == '__main__':
  main()
