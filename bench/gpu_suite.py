"""Accelerator suite: step speed and MFU, data pipeline, a short training run, inference.

  python bench/gpu_suite.py           # one GPU/TPU: about 5-8 minutes
  python bench/gpu_suite.py --smoke   # tiny sizes, float32 steps only, on the CPU (CI)
  python bench/gpu_suite.py --sections train_steps infer

Prints one JSON object per line, each with `section`:
- `matmul_peak`: TFLOP/s of a large square matmul per dtype, measured here: the
  "peak" that `mfu_vs_matmul` divides by.
- `train_step`: phases 1 and 3 at batch 64 (the reference batch), float32 and
  the bfloat16 recipe of `configs/gpu.py` (generator in bfloat16): seconds per
  step (median), samples/s, the step program's GFLOP from XLA's cost analysis
  of the compiled program, achieved TFLOP/s, the fraction of the measured
  matmul peak, and of the device's nominal dense bfloat16 peak where known.
- `data`: `bench/data.py` with all but two of the host's cores as workers, decoding
  every time and from the decoded-image cache.
- `train_run`: a 300-step phase-1 run of `configs/gpu.py` on the built-in
  photos: steps/s and the input-bound fraction (host time spent waiting for
  batches, per logging window after the first) from its train.csv.
- `infer`: tiled inference (128 px LR tiles, 16 per call) output MP/s.
"""

import argparse
import contextlib
import csv
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from srrgan_jax import xla_cpu  # pylint: disable=g-import-not-at-top,wrong-import-position

SECTIONS = ('matmul_peak', 'train_steps', 'data', 'train_run', 'infer')
# Dense bfloat16 TFLOP/s by device kind (vendor data sheets), for `mfu_vs_nominal`.
NOMINAL_BF16_TFLOPS = {'H200': 989.0, 'H100': 989.0, 'A100': 312.0, 'TPU v5 lite': 197.0,
                       'TPU v5e': 197.0, 'TPU v4': 275.0}
DTYPES = ('float32', 'bfloat16')


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--smoke', action='store_true',
                      help='Tiny model and sizes (runs on a CPU in under a minute).')
  parser.add_argument('--sections', nargs='+', default=list(SECTIONS), choices=SECTIONS)
  parser.add_argument('--batch_size', type=int, default=64, help='Train-step batch.')
  parser.add_argument('--repeats', type=int, default=5,
                      help='Timed steps per row (2 with --smoke).')
  parser.add_argument('--run_steps', type=int, default=300, help='train_run steps.')
  args = parser.parse_args()
  if args.smoke:
    args.repeats = min(args.repeats, 2)
  return args


def emit(section, record):
  print(json.dumps({'section': section, **record}), flush=True)


def _device():
  import jax
  device = jax.devices()[0]
  return device, f'{device.platform}:{device.device_kind}'


def nominal_bf16_tflops(device_kind):
  for name, tflops in NOMINAL_BF16_TFLOPS.items():
    if name.lower() in device_kind.lower():
      return tflops
  return None


def matmul_peak(args):
  """{dtype: TFLOP/s} of a square matmul on the first device, best of a few runs."""
  size = 256 if args.smoke else 8192
  bench_train = _load_bench_module('train')
  peaks = {}
  for dtype in DTYPES:
    peaks[dtype] = bench_train.matmul_gflops(dtype, size) / 1e3
    emit('matmul_peak', {'dtype': dtype, 'size': size, 'tflops': round(peaks[dtype], 3),
                         'device': _device()[1]})
  return peaks


def _timed(fn):
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def _load_bench_module(name):
  spec = importlib.util.spec_from_file_location(f'bench_{name}', REPO / 'bench' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def base_config(args):
  from configs import default
  from configs import tiny
  if not args.smoke:
    return default.get_config()
  config = tiny.get_config()
  # Two VGG blocks: the same perceptual-loss code at a fraction of the compile time.
  config.loss.perceptual_layers = ('block1_conv2', 'block2_conv2')
  config.loss.perceptual_layer_weights = (0.5, 0.5)
  return config


def step_dtypes(args):
  # The smoke run checks the code paths; every compilation costs seconds on a CPU.
  return DTYPES[:1] if args.smoke else DTYPES


def train_steps(args, peaks):
  """Phase 1 and 3 steps, float32 and the bfloat16 recipe, on one device."""
  import jax
  import numpy as np
  from srrgan_jax import parallel
  from srrgan_jax.train import state as state_lib
  from srrgan_jax.train import steps

  device, device_name = _device()
  mesh = parallel.make_mesh([device])
  batch_size = 4 if args.smoke else args.batch_size
  bench_train = _load_bench_module('train')
  with tempfile.TemporaryDirectory() as directory:
    vgg_host = bench_train.random_vgg19(base_config(args), directory)
  vgg = parallel.put_replicated(vgg_host, mesh)
  for phase in (1, 3):
    for dtype in step_dtypes(args):
      config = base_config(args)
      config.data.batch_size = batch_size
      config.model.compute_dtype = dtype
      size, low = config.data.patch_size, config.data.patch_size // config.scale
      rng = np.random.default_rng(0)
      batch = parallel.global_batch({  # As the loader sends it: float LR, uint8 HR.
          'lr': rng.uniform(-1, 1, (batch_size, low, low, 3)).astype(np.float32),
          'hr': rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)}, mesh)
      state = state_lib.create_state(config, phase, 1000, mesh)
      key = parallel.put_replicated(state_lib.phase_key(config, phase), mesh)
      phase_vgg = vgg if phase == 3 else None
      hyper = parallel.put_replicated(state_lib.hyperparams(config), mesh)
      start = time.perf_counter()
      compiled = steps.jit_train_step(config, phase, 1000, mesh).lower(
          state, batch, key, phase_vgg, hyper).compile()
      compile_s = time.perf_counter() - start
      gflop = bench_train.compiled_gflop(compiled)
      state, metrics = compiled(state, batch, key, phase_vgg, hyper)
      jax.block_until_ready(metrics)
      walls = []
      for _ in range(args.repeats):
        start = time.perf_counter()
        state, metrics = compiled(state, batch, key, phase_vgg, hyper)
        jax.block_until_ready(metrics)
        walls.append(time.perf_counter() - start)
      seconds = statistics.median(walls)
      tflops = gflop / seconds / 1e3 if gflop else None
      nominal = nominal_bf16_tflops(device.device_kind)
      emit('train_step', {
          'phase': phase, 'dtype': dtype, 'disc_dtype': config.disc.compute_dtype,
          'batch_size': batch_size, 'patch_size': size,
          's_per_step': round(seconds, 4), 'samples_per_s': round(batch_size / seconds, 1),
          'compile_s': round(compile_s, 1),
          'gflop_per_step': round(gflop, 3) if gflop else None,
          'gflop_per_sample': round(gflop / batch_size, 3) if gflop else None,
          'flops_source': 'xla_cost_analysis(compiled)',
          'tflops': round(tflops, 3) if tflops else None,
          'mfu_vs_matmul': round(tflops / peaks[dtype], 3) if tflops and peaks else None,
          'mfu_vs_nominal_bf16': round(tflops / nominal, 3) if tflops and nominal else None,
          'loss': round(float(metrics['loss']), 5), 'device': device_name})


def data_pipeline(args):
  """bench/data.py with the host's cores, its JSON lines relayed."""
  workers = max(1, (os.cpu_count() or 4) - 2)
  cmd = [sys.executable, str(REPO / 'bench' / 'data.py')]
  cmd += ['--sources', 'files,decoded_cache']  # Decoding every time, and later epochs.
  if args.smoke:
    cmd += ['--workers', '0', '--patches_per_image', '1', '--patch_size', '64',
            '--batch_size', '4', '--batches', '2', '--warmup', '1']
  else:
    cmd += ['--workers', str(workers), '--patches_per_image', '1,4', '--batches', '40']
  out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
  for line in out.splitlines():
    if line.startswith('{'):
      emit('data', json.loads(line))


def train_run(args):
  """A short phase-1 run of the GPU recipe on the built-in photos."""
  from configs import gpu
  from srrgan_jax.train import loop
  config = base_config(args) if args.smoke else gpu.get_config()
  steps_total = 3 if args.smoke else args.run_steps
  epochs = 1 if args.smoke else 3
  config.phases = (1,)
  config.data.steps_per_epoch = steps_total // epochs
  config.phase1.epochs = epochs
  config.log_every_steps = 1 if args.smoke else 20
  config.checkpoint.save_latest_every_steps = 0
  config.data.train_dir = config.data.val_dir = ''  # The built-in sample photos.
  config.data.max_val_images = 2 if args.smoke else 4
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Keep stdout to JSON lines.
      loop.run(config, workdir)
    wall = time.perf_counter() - start
    with (pathlib.Path(workdir) / 'logs' / 'phase1' / 'train.csv').open(newline='') as f:
      rows = list(csv.DictReader(f))
  later = rows[1:] or rows  # The first window holds compilation.
  fractions = [float(r['input_wait_fraction']) for r in later]
  emit('train_run', {
      'steps': steps_total, 'batch_size': config.data.batch_size,
      'patch_size': config.data.patch_size, 'dtype': config.model.compute_dtype,
      'num_workers': config.data.num_workers,
      'patches_per_image': config.data.patches_per_image, 'wall_s': round(wall, 1),
      'steps_per_s': round(statistics.median(float(r['steps_per_second']) for r in later), 3),
      'input_wait_fraction': round(statistics.mean(fractions), 3),
      'input_wait_ms_per_step': round(
          statistics.mean(float(r['input_wait_ms']) for r in later), 2),
      'device': _device()[1]})


def infer(args):
  """Tiled inference output MP/s, float32 and bfloat16."""
  import jax
  import numpy as np
  from srrgan_jax import inference
  from srrgan_jax.models import init_generator
  config = base_config(args)
  params = init_generator(config, jax.random.key(0), (1, 8, 8, 3))['params']
  size, tile, overlap = (64, 16, 4) if args.smoke else (1024, 128, 32)
  image = np.random.default_rng(0).uniform(0, 1, (size, size, 3)).astype(np.float32)
  for dtype in DTYPES:
    upscaler = inference.Upscaler(config, params, tile=tile, overlap=overlap,
                                  batch_size=4 if args.smoke else 16, compute_dtype=dtype)
    upscaler.upscale(image[:tile, :tile])  # Compiles.
    seconds = min(_timed(lambda: upscaler.upscale(image)) for _ in range(2))
    scale = config.scale
    emit('infer', {'dtype': dtype, 'lr_size': size, 'tile': tile, 'overlap': overlap,
                   'batch_size': upscaler.batch_size, 'seconds': round(seconds, 3),
                   'out_mpix_per_s': round((size * scale)**2 / 1e6 / seconds, 3),
                   'device': _device()[1]})


def main():
  args = parse_args()
  xla_cpu.use_eigen_convolutions()  # CPU runs only; before JAX starts its backend.
  import jax
  with tempfile.TemporaryDirectory() as cache:
    if not jax.config.jax_compilation_cache_dir:
      # The training run's step program is one the step timing compiled already.
      jax.config.update('jax_compilation_cache_dir', cache)
    run_sections(args)


def run_sections(args):
  start = time.perf_counter()
  peaks = {}
  if 'matmul_peak' in args.sections or 'train_steps' in args.sections:
    peaks = matmul_peak(args)
  if 'train_steps' in args.sections:
    train_steps(args, peaks)
  if 'data' in args.sections:
    data_pipeline(args)
  if 'train_run' in args.sections:
    train_run(args)
  if 'infer' in args.sections:
    infer(args)
  emit('done', {'wall_s': round(time.perf_counter() - start, 1), 'smoke': args.smoke,
                'cpu_count': os.cpu_count(), 'load_avg_1min': round(os.getloadavg()[0], 2)})


if __name__ == '__main__':
  main()
