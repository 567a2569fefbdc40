"""Training-step speed of the full-size model: phases 1 and 3 at batch 4 and 16.

  python bench/train.py                      # phases 1 and 3, batch 4 and 16
  python bench/train.py --quick              # phase 1 and phase 3 at batch 4
  python bench/train.py --phases 3 --batch_sizes 16
  python bench/train.py --quick --seed_tf DIR --seed_tf_python PY   # + the original, side by side
  python bench/train.py --population 4 --phases 3 --batch_sizes 4   # see bench_population

Prints one JSON object per configuration: `s_per_step` is the median wall time
of --repeats steps after the first (compiling) call, `compile_s` the first call
less one step. `cpu_s_per_step` is this process's CPU time (all threads) per
step: on a shared machine wall time includes waiting for other processes, CPU
time does not (a quiet machine's wall time is at least cpu_s_per_step / cores).

`xla_gflop_per_step` is what XLA's cost analysis counts for the compiled step
program (`jitted.lower(...).compile().cost_analysis()`), and `xla_gflops` that
per second: the work the machine really does. `matmul_peak_gflops` is a
float32 2048x2048 matmul measured in the same run, and `fraction_of_matmul_peak`
= `xla_gflops` / that. `reference_equivalent_gflops` divides the reference's
analytical FLOPs instead (a generator forward costs 23.0 GFLOP per 128x128 LR
patch, a phase-1 step 3x that per sample, a phase-3 step 297 GFLOP per sample),
the count behind the original port's `gflops_achieved`; it counts work the
program does not do (e.g. phase 3's frozen VGG19 needs no weight gradients) and
can exceed what the machine executes.

Random weights (VGG19 too): speed does not depend on them. On CPUs the XLA
flags of `srrgan_jax.xla_cpu` are applied unless --no-eigen_convolutions.

Side by side: with `--seed_tf DIR --seed_tf_python PY` the original system's
TensorFlow port (`DIR/bench_train.py`, run first by that Python: Keras's
default execution, the same phases, batch sizes and number of timed steps)
times its steps on this machine, and each line adds `original_s_per_step`,
`original_cpu_s_per_step` (its medians) and `speedup_vs_original` =
original_s_per_step / s_per_step. `sgemm_peak_gflops` is numpy's float32
4096x4096 matmul on all cores timed in the same run (`bench/machine.py`),
`fraction_of_sgemm_peak` = `xla_gflops` / that; every line names the CPU
model, clock, cores and load average.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import machine  # pylint: disable=g-import-not-at-top
import seed_tf
from srrgan_jax import xla_cpu

SEED_TF_SCRIPT = 'bench_train.py'
GENERATOR_FORWARD_GFLOP = 23.0  # Per 128x128 LR patch (the reference's analytical count).
GFLOP_PER_SAMPLE = {1: 3 * GENERATOR_FORWARD_GFLOP, 3: 297.0}


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='Only batch 4, 2 repeats.')
  parser.add_argument('--phases', type=int, nargs='+', default=[1, 3], choices=[1, 3])
  parser.add_argument('--batch_sizes', type=int, nargs='+', default=[4, 16])
  parser.add_argument('--repeats', type=int, default=3, help='Timed steps per configuration.')
  parser.add_argument('--eigen_convolutions', action=argparse.BooleanOptionalAction,
                      default=True, help='Apply srrgan_jax.xla_cpu (CPU only).')
  seed_tf.add_arguments(parser)
  parser.add_argument('--population', type=int, default=0,
                      help='Time a population of P members (differing in gan_weight) '
                      'against P single-member steps on the same batch.')
  parser.add_argument('--population_model', default='default',
                      choices=['default', 'quickstart', 'tiny'],
                      help='The config whose model --population times: the full-size '
                      'reference, the CPU quickstart, or tiny (only checks that it runs).')
  args = parser.parse_args()
  seed_tf.check_arguments(parser, args, SEED_TF_SCRIPT)
  if args.quick:
    args.batch_sizes, args.repeats = [4], 2
  return args


def random_vgg19(config, directory):
  """Random VGG19 weights in the real file layout, trimmed as training trims them."""
  from srrgan_jax import perceptual
  from srrgan_jax import weights
  from srrgan_jax.train import loop
  config.weights.vgg19_file = str(
      weights.write_random_weights(directory, [weights.VGG19_FILE])[0])
  return loop.perceptual_layers_needed(perceptual.load_vgg19_params(config),
                                       config.loss.perceptual_layers)


def random_batch(config, mesh):
  """A global batch of uniform random LR and HR patches in [-1, 1] (speed needs no photos)."""
  import numpy as np
  from srrgan_jax import parallel
  rng = np.random.default_rng(0)
  size, lr_size = config.data.batch_size, config.data.patch_size // config.scale
  return parallel.global_batch({
      'lr': rng.uniform(-1, 1, (size, lr_size, lr_size, 3)).astype(np.float32),
      'hr': rng.uniform(-1, 1, (size,) + (config.data.patch_size,) * 2 + (3,))
            .astype(np.float32)}, mesh)


def compiled_gflop(compiled):
  """GFLOP of a compiled program by XLA's cost analysis (None if it has none)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return cost.get('flops', 0.0) / 1e9 if cost else None


def matmul_gflops(dtype='float32', size=2048, repeats=5):
  """GFLOP/s of a square matmul on the default device, best of `repeats`."""
  import jax
  import jax.numpy as jnp
  a = jnp.ones((size, size), dtype)
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, a).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size**3 / best / 1e9


def original_steps(args) -> dict:
  """{(phase, batch size): the original's bench_train.py line}, run now ({} without --seed_tf)."""
  if not args.seed_tf:
    return {}

  def batches(phase):
    return ','.join(str(b) for b in args.batch_sizes) if phase in args.phases else ''

  rows = seed_tf.run_or_exit(args, SEED_TF_SCRIPT, [
      '--p1-batches', batches(1), '--p3-batches', batches(3), '--jit', '0',
      '--warmup', '2', '--steps', str(args.repeats)])
  phase_of = {'phase1_gen_mae_step': 1, 'phase3_gan_step': 3}
  return {(phase_of[row['what']], row['batch']): row
          for row in rows if row.get('what') in phase_of}


def bench(args, phase, batch_size, vgg_params, mesh, peak_gflops, sgemm_peak_gflops):
  import jax
  from configs import default
  from srrgan_jax import parallel
  from srrgan_jax.train import state as state_lib
  from srrgan_jax.train import steps

  config = default.get_config()
  config.data.batch_size = batch_size
  vgg = parallel.put_replicated(vgg_params, mesh) if phase == 3 else None
  lr_size = config.data.patch_size // config.scale
  batch = random_batch(config, mesh)
  state = state_lib.create_state(config, phase, 1000, mesh)
  key = parallel.put_replicated(state_lib.phase_key(config, phase), mesh)
  hyper = parallel.put_replicated(state_lib.hyperparams(config), mesh)
  start = time.perf_counter()
  step = steps.jit_train_step(config, phase, 1000, mesh).lower(state, batch, key, vgg,
                                                                hyper).compile()
  compile_s = time.perf_counter() - start
  gflop_xla = compiled_gflop(step)
  state, metrics = step(state, batch, key, vgg, hyper)
  jax.block_until_ready((state, metrics))
  walls, cpus = [], []
  for _ in range(args.repeats):
    start, cpu_start = time.perf_counter(), time.process_time()
    state, metrics = step(state, batch, key, vgg, hyper)
    jax.block_until_ready((state, metrics))
    walls.append(time.perf_counter() - start)
    cpus.append(time.process_time() - cpu_start)
  seconds = statistics.median(walls)
  gflop = GFLOP_PER_SAMPLE[phase] * batch_size
  device = jax.devices()[0]
  return {
      'bench': 'train', 'phase': phase, 'batch_size': batch_size,
      'lr_patch': f'{lr_size}x{lr_size}',
      's_per_step': round(seconds, 3), 's_per_step_runs': [round(w, 3) for w in walls],
      'cpu_s_per_step': round(statistics.median(cpus), 3),
      'compile_s': round(compile_s, 1),
      'xla_gflop_per_step': round(gflop_xla, 1) if gflop_xla else None,
      'xla_gflops': round(gflop_xla / seconds, 1) if gflop_xla else None,
      'matmul_peak_gflops': round(peak_gflops, 1),
      'fraction_of_matmul_peak': (round(gflop_xla / seconds / peak_gflops, 3)
                                  if gflop_xla else None),
      'reference_gflop_per_step': round(gflop, 1),
      'reference_equivalent_gflops': round(gflop / seconds, 1),
      'sgemm_peak_gflops': round(sgemm_peak_gflops, 1),
      'fraction_of_sgemm_peak': (round(gflop_xla / seconds / sgemm_peak_gflops, 3)
                                 if gflop_xla else None),
      'loss': round(float(metrics['loss']), 5),
      'device': f'{device.platform}:{device.device_kind}', 'devices': mesh.devices.size,
      'load_avg_1min': round(os.getloadavg()[0], 2), **machine.describe(),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }


def with_original(row, original):
  """`row` plus the original's matching step times and the ratio (unchanged without them)."""
  match = original.get((row['phase'], row['batch_size']))
  if match is None:
    return row
  return {**row, 'original_s_per_step': match['s_per_step_median'],
          'original_cpu_s_per_step': match['cpu_s_per_step_median'],
          'speedup_vs_original': seed_tf.ratio(match['s_per_step_median'], row['s_per_step'])}


def _timed_steps(step, state, args, *step_args):
  """(median wall s, median CPU s) of --repeats calls after a warm-up call; the state."""
  import jax
  state, metrics = step(state, *step_args)
  jax.block_until_ready((state, metrics))
  walls, cpus = [], []
  for _ in range(args.repeats):
    start, cpu_start = time.perf_counter(), time.process_time()
    state, metrics = step(state, *step_args)
    jax.block_until_ready((state, metrics))
    walls.append(time.perf_counter() - start)
    cpus.append(time.process_time() - cpu_start)
  return statistics.median(walls), statistics.median(cpus), state


def data_seconds_per_batch(config, batches=8):
  """Wall seconds the training loader takes per global batch (built-in photos, this host)."""
  from srrgan_jax import data
  config = config.copy_and_resolve_references()
  config.data.train_dir = ''
  iterator = data.make_train_iterator(config)
  try:
    next(iterator)  # Start-up (workers, first decode) is not per-step work.
    start = time.perf_counter()
    for _ in range(batches):
      next(iterator)
    return (time.perf_counter() - start) / batches
  finally:
    iterator.close()


def bench_population(args, phase, batch_size, vgg_params, mesh):
  """One population step of P members vs P single steps, on the same batch.

  The members differ in gan_weight (a traced value: the P single steps are one
  compiled program). `population_s_per_step` / `single_s_per_step` is what one
  member costs inside the population relative to alone; `speedup` = P single
  steps / one population step. The population shares the batch, the HR
  targets' VGG19 features and the data pipeline's work: `data_s_per_batch` is
  that work per step (once, whatever P), measured on the built-in photos.
  """
  import jax
  import numpy as np
  import importlib
  from srrgan_jax import parallel
  from srrgan_jax import population
  from srrgan_jax.train import state as state_lib
  from srrgan_jax.train import steps

  size = args.population
  config = importlib.import_module(f'configs.{args.population_model}').get_config()
  config.data.batch_size = batch_size
  config.population.gan_weight = tuple(0.01 * (k + 1) for k in range(size))
  member_configs = [population.member_config(config, m) for m in population.members(config)]
  vgg = parallel.put_replicated(vgg_params, mesh) if phase > 1 else None
  lr_size = config.data.patch_size // config.scale
  batch = random_batch(config, mesh)
  key = parallel.put_replicated(state_lib.phase_key(config, phase), mesh)
  active = np.ones(size, bool)

  start = time.perf_counter()
  states = state_lib.create_population(config, phase, 1000, mesh, size)
  population_step = steps.compile_population_step(config, phase, 1000, mesh, member_configs,
                                                  vgg)
  population_s, population_cpu, states = _timed_steps(population_step, states, args,
                                                       batch, key, active)
  population_first_s = time.perf_counter() - start
  del states
  single_steps = [steps.compile_train_step(c, phase, 1000, mesh, vgg)
                  for c in member_configs]
  state = state_lib.create_state(member_configs[0], phase, 1000, mesh)

  def all_singles(state, batch, key):
    for step in single_steps:  # Each member's step, one after the other.
      state, metrics = step(state, batch, key)
    return state, metrics

  singles_s, singles_cpu, _ = _timed_steps(all_singles, state, args, batch, key)
  data_s = data_seconds_per_batch(config)
  device = jax.devices()[0]
  return {
      'bench': 'train_population', 'phase': phase, 'batch_size': batch_size,
      'population': size, 'model': args.population_model,
      'lr_patch': f'{lr_size}x{lr_size}',
      'population_s_per_step': round(population_s, 4),
      'single_s_per_step': round(singles_s / size, 4),
      'singles_s_per_population_step': round(singles_s, 4),
      'speedup': round(singles_s / population_s, 2),
      'population_cpu_s_per_step': round(population_cpu, 4),
      'singles_cpu_s_per_population_step': round(singles_cpu, 4),
      'population_first_call_s': round(population_first_s, 1),
      'data_s_per_batch': round(data_s, 4),
      'data_workers': config.data.num_workers,
      'device': f'{device.platform}:{device.device_kind}', 'devices': mesh.devices.size,
      'cpu_count': os.cpu_count(), 'load_avg_1min': round(os.getloadavg()[0], 2),
  }


def main():
  args = parse_args()
  original = original_steps(args)  # Before this process starts JAX.
  if args.eigen_convolutions:
    xla_cpu.use_eigen_convolutions()  # Before JAX starts its backend.
  import jax
  from configs import default
  from srrgan_jax import parallel

  mesh = parallel.make_mesh(jax.local_devices()[:1])  # One device: a step's speed.
  with tempfile.TemporaryDirectory() as directory:
    vgg_params = random_vgg19(default.get_config(), directory) if 3 in args.phases else None
  if args.population:
    for phase in args.phases:
      for batch_size in args.batch_sizes:
        print(json.dumps(bench_population(args, phase, batch_size, vgg_params, mesh)),
              flush=True)
    return
  peak_gflops = matmul_gflops()
  sgemm_peak = machine.sgemm_peak_gflops()
  for phase in args.phases:
    for batch_size in args.batch_sizes:
      row = bench(args, phase, batch_size, vgg_params, mesh, peak_gflops, sgemm_peak)
      print(json.dumps(with_original(row, original)), flush=True)


if __name__ == '__main__':
  main()
