"""Inference speed of the full-size generator: tiled and whole-image, float32 and bfloat16.

  python bench/infer.py            # 256 and 512 LR, tiled + whole, float32 + bfloat16
  python bench/infer.py --quick    # 512 LR, float32 (tiled + whole) and bfloat16 tiled
  python bench/infer.py --quick --seed_tf DIR --seed_tf_python PY   # + the original, side by side

Prints one JSON object per configuration. `seconds` is the best of --repeats
end-to-end runs of `inference.Upscaler.upscale` ([0, 1] image in, [0, 1] HR out:
tile extraction, forward calls, Hann blending); compilation is timed apart.
`gflop` counts the FLOPs the compiled programs execute, from XLA's cost analysis
(`jitted.lower(...).compile().cost_analysis()`), padded batch slots included;
`gflops` = gflop / seconds; `fraction_of_sgemm_peak` = gflops over numpy's
float32 4096x4096 matmul on all cores timed in the same run
(`sgemm_peak_gflops`, `bench/machine.py`) and `fraction_of_matmul_peak` over a
JAX 2048x2048 matmul (`matmul_peak_gflops`). `cpu_seconds` is this process's
CPU time (all threads) during that run: on a shared machine, wall time includes
waiting for other processes, CPU time does not (quiet wall time >= cpu_seconds
/ cores). Every line names the CPU model, clock, cores and load average. Random
weights: speed does not depend on them. Settings default to what infer.py uses:
on a CPU one tile per call, two calls at once (--workers) and Eigen's
convolutions (--no-eigen_convolutions for XLA's default).

Side by side: with `--seed_tf DIR --seed_tf_python PY` the original system's
TensorFlow port (`DIR/bench_infer.py`, run first by that Python, on the same
sizes and --repeats) times its tiled inference (128 px tiles, 32 px overlap,
64 tiles per call) and its whole-image forward (a tf.function); each float32 or
bfloat16 line then adds `original_s` (the original's best run, like `seconds`)
and `speedup_vs_original` = original_s / seconds.
"""

import argparse
import importlib.util
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

import machine
import seed_tf
from configs import default
from srrgan_jax import inference
from srrgan_jax import tiling
from srrgan_jax import xla_cpu
from srrgan_jax.models import init_generator

SEED_TF_SCRIPT = 'bench_infer.py'


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true',
                      help='Only 512x512: float32 tiled and whole, bfloat16 tiled.')
  parser.add_argument('--sizes', type=int, nargs='+', default=[256, 512],
                      help='Square LR input sizes.')
  parser.add_argument('--modes', nargs='+', default=['tiled', 'whole'],
                      choices=['tiled', 'whole'])
  parser.add_argument('--dtypes', nargs='+', default=['float32', 'bfloat16'],
                      choices=list(inference.COMPUTE_DTYPES))
  parser.add_argument('--tile', type=int, default=128, help='LR tile size.')
  parser.add_argument('--overlap', type=int, default=32, help='LR tile overlap.')
  parser.add_argument('--batch_size', type=int, default=0,
                      help='Tiles per forward call; 0 = what infer.py uses (1 on a '
                      'CPU, config.inference.batch_size = 16 on accelerators).')
  parser.add_argument('--workers', type=int, default=0,
                      help='Forward calls at once; 0 = what infer.py uses (2 on a CPU, '
                      'else 1).')
  parser.add_argument('--repeats', type=int, default=2, help='Timed runs; the best counts.')
  parser.add_argument('--eigen_convolutions', action=argparse.BooleanOptionalAction,
                      default=True, help='Apply xla_cpu.use_inference_convolutions() as '
                      'infer.py does (CPU only).')
  seed_tf.add_arguments(parser)
  args = parser.parse_args()
  seed_tf.check_arguments(parser, args, SEED_TF_SCRIPT)
  return args


def configurations(args):
  if args.quick:
    return [(512, 'tiled', 'float32'), (512, 'whole', 'float32'),
            (512, 'tiled', 'bfloat16')]
  return [(size, mode, dtype) for dtype in args.dtypes for size in args.sizes
          for mode in args.modes]


def original_seconds(args, sizes) -> dict:
  """{(lr size, mode): best seconds} of the original's bench_infer.py now; {} without --seed_tf."""
  if not args.seed_tf:
    return {}
  rows = seed_tf.run_or_exit(args, SEED_TF_SCRIPT, [
      '--sizes', ','.join(str(size) for size in sizes), '--batch-sizes', '64',
      '--reps', str(args.repeats)])
  mode_of = {'tiled_predict_full_image_tiled': 'tiled',
             'whole_image_tf_function_call': 'whole'}
  return {(row['lr_hw'], mode_of[row['what']]): min(row['s_all'])
          for row in rows if row.get('what') in mode_of}


def matmul_peak_gflops():
  """The float32 matmul GFLOP/s of `bench/train.py`, measured now."""
  path = pathlib.Path(__file__).resolve().parent / 'train.py'
  spec = importlib.util.spec_from_file_location('bench_train', path)
  bench_train = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench_train)
  return bench_train.matmul_gflops('float32')


def main():
  args = parse_args()
  if args.eigen_convolutions:
    xla_cpu.use_inference_convolutions()  # Before JAX starts its backend.
  original = original_seconds(args, sorted({size for size, _, _ in configurations(args)}))
  device = jax.devices()[0]
  peak = matmul_peak_gflops()
  sgemm_peak = machine.sgemm_peak_gflops()
  config = default.get_config()
  params = init_generator(config, jax.random.key(0), (1, 8, 8, 3))['params']
  image = np.random.default_rng(0).uniform(0, 1, (max(args.sizes + [512]),) * 2 + (3,))
  image = image.astype(np.float32)
  upscalers = {}
  for size, mode, dtype in configurations(args):
    tile = args.tile if mode == 'tiled' else 0
    key = (tile, dtype)
    if key not in upscalers:
      upscalers[key] = inference.Upscaler(config, params, tile=tile, overlap=args.overlap,
                                          batch_size=args.batch_size or None,
                                          compute_dtype=dtype, workers=args.workers or None)
    upscaler = upscalers[key]
    batch_size = upscaler.batch_size
    lr = image[:size, :size]
    if mode == 'tiled':
      tiles = tiling.count_tiles(size, size, args.tile, args.overlap)
      calls = -(-tiles // batch_size)
      shape = (batch_size, args.tile, args.tile, 3)
    else:
      tiles, calls = 1, 1
      padded = size + -size % upscaler.generator.size_multiple
      shape = (1, padded, padded, 3)
    start = time.perf_counter()
    upscaler.generator.compiled(upscaler.params, shape)
    compile_seconds = time.perf_counter() - start
    gflop = upscaler.generator.flops(upscaler.params, shape) * calls / 1e9
    if mode == 'tiled':
      upscaler.upscale(lr[:args.tile, :args.tile])  # Warm-up: first-call allocations.
    runs = []
    for _ in range(args.repeats):
      start, cpu_start = time.perf_counter(), time.process_time()
      hr = upscaler.upscale(lr)
      runs.append((time.perf_counter() - start, time.process_time() - cpu_start))
    seconds, cpu_seconds = min(runs)
    original_s = original.get((size, mode))
    seed_fields = {'original_s': original_s,
                   'speedup_vs_original': seed_tf.ratio(original_s, seconds)} if original else {}
    print(json.dumps({
        'bench': 'infer', 'mode': mode, 'lr_size': f'{size}x{size}',
        'out_size': f'{hr.shape[0]}x{hr.shape[1]}', 'dtype': dtype,
        'tile': args.tile if mode == 'tiled' else None,
        'overlap': args.overlap if mode == 'tiled' else None,
        'batch_size': batch_size if mode == 'tiled' else 1,
        'workers': upscaler.workers if mode == 'tiled' else 1, 'tiles': tiles,
        'forward_calls': calls, 'seconds': round(seconds, 3),
        'cpu_seconds': round(cpu_seconds, 3), 'compile_seconds': round(compile_seconds, 2),
        'out_mpix_per_s': round(hr.shape[0] * hr.shape[1] / 1e6 / seconds, 4),
        'gflop': round(gflop, 1), 'gflops': round(gflop / seconds, 1),
        'flops_source': 'xla_cost_analysis', 'matmul_peak_gflops': round(peak, 1),
        'fraction_of_matmul_peak': round(gflop / seconds / peak, 3),
        'sgemm_peak_gflops': round(sgemm_peak, 1),
        'fraction_of_sgemm_peak': round(gflop / seconds / sgemm_peak, 3),
        **seed_fields,
        'device': f'{device.platform}:{device.device_kind}',
        'load_avg_1min': round(os.getloadavg()[0], 2), **machine.describe(),
        'xla_flags': os.environ.get('XLA_FLAGS', ''),
    }), flush=True)


if __name__ == '__main__':
  main()
