"""Exported generator speed: onnxruntime (CPU) beside JAX on one image, tiled and whole.

  python bench/export.py            # full-size model, 512x512 LR, float32
  python bench/export.py --fp16     # also the float16 ONNX file
  python bench/export.py --smoke    # tiny model, 64x64 LR, one repeat (a check that it runs)

Prints one JSON object for the export (seconds and file size per format) and one
per backend and mode. `seconds` is the best of --repeats end-to-end runs of
`Upscaler.upscale` ([0, 1] image in, [0, 1] HR out: the same tiling and Hann
blending for every backend, one tile per call as infer.py uses on a CPU; JAX
with infer.py's CPU settings: two calls at once, Eigen's convolutions);
compilation (JAX) and session creation (onnxruntime) come first and are not
timed. `cpu_seconds` is this process's CPU time (all threads) during that run:
on a shared machine, wall time includes waiting for other processes, CPU time
does not. `max_abs_diff` compares each output with the JAX float32 output.
Random weights: speed does not depend on them.
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np
import onnxruntime

from configs import default
from configs import tiny
from srrgan_jax import export
from srrgan_jax import inference
from srrgan_jax import onnx_inference
from srrgan_jax import xla_cpu
from srrgan_jax.models import init_generator


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--smoke', action='store_true',
                      help='Tiny model, 64x64 LR, tile 16, one repeat.')
  parser.add_argument('--size', type=int, default=512, help='Square LR input size.')
  parser.add_argument('--modes', nargs='+', default=['tiled', 'whole'],
                      choices=['tiled', 'whole'])
  parser.add_argument('--fp16', action='store_true', help='Also time the float16 ONNX file.')
  parser.add_argument('--repeats', type=int, default=2, help='Timed runs; the best counts.')
  return parser.parse_args()


def timed(function):
  start, cpu_start = time.perf_counter(), time.process_time()
  result = function()
  return result, time.perf_counter() - start, time.process_time() - cpu_start


def main():
  args = parse_args()
  xla_cpu.use_inference_convolutions()  # As infer.py; before JAX starts its backend.
  config = tiny.get_config() if args.smoke else default.get_config()
  size = 64 if args.smoke else args.size
  repeats = 1 if args.smoke else args.repeats
  params = init_generator(config, jax.random.key(0), (1, 8, 8, 3))['params']
  image = np.random.default_rng(0).uniform(0, 1, (size, size, 3)).astype(np.float32)
  folder = pathlib.Path(tempfile.mkdtemp(prefix='srrgan_bench_export_'))
  files = {}
  for name, fmt, fp16 in [('onnx', 'onnx', False), ('onnx_fp16', 'onnx', True),
                          ('stablehlo', 'stablehlo', False)]:
    if fp16 and not args.fp16:
      continue
    files[name] = folder / f'model_{name}.{fmt}'
    _, seconds, _ = timed(lambda: export.export(config, params, files[name], format=fmt,  # pylint: disable=cell-var-from-loop
                                                fp16=fp16))
    print(json.dumps({'bench': 'export', 'file': name, 'seconds': round(seconds, 1),
                      'megabytes': round(files[name].stat().st_size / 1e6, 1)}), flush=True)

  reference = None
  for mode in args.modes:
    tile = config.inference.tile if mode == 'tiled' else 0
    upscalers = {'jax': inference.Upscaler(config, params, tile=tile, batch_size=1)}
    for name in ('onnx', 'onnx_fp16'):
      if name in files:
        upscalers[name] = onnx_inference.upscaler(files[name], tile=tile, batch_size=1)
    for backend, upscaler in upscalers.items():
      upscaler.upscale(image)  # Warm-up: compilation, first-call allocations.
      runs = [timed(lambda: upscaler.upscale(image)) for _ in range(repeats)]  # pylint: disable=cell-var-from-loop
      hr, seconds, cpu_seconds = min(runs, key=lambda run: run[1])
      if backend == 'jax':
        reference = hr
      print(json.dumps({
          'bench': 'export_speed', 'backend': backend, 'mode': mode,
          'lr_size': f'{size}x{size}', 'out_size': f'{hr.shape[0]}x{hr.shape[1]}',
          'tile': tile or None, 'overlap': upscaler.overlap if tile else None,
          'tiles': upscaler.num_tiles(size, size), 'seconds': round(seconds, 3),
          'cpu_seconds': round(cpu_seconds, 3),
          'out_mpix_per_s': round(hr.shape[0] * hr.shape[1] / 1e6 / seconds, 4),
          'max_abs_diff': float(np.abs(hr - reference).max()),
          'onnxruntime': onnxruntime.__version__, 'jax': jax.__version__,
          'cpu_count': os.cpu_count(), 'load_avg_1min': round(os.getloadavg()[0], 2),
      }), flush=True)


if __name__ == '__main__':
  main()
