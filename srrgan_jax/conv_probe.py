"""Which XLA:CPU convolution library trains faster on this CPU: a one-off timing, cached.

XLA:CPU runs convolutions with YNNPACK by default, or with its own Eigen kernels
(`xla_cpu.EIGEN_CONVOLUTIONS_FLAG`). Forward and input-gradient convolutions
run at similar speeds either way; the weight gradient decides, and which
library wins depends on the CPU, the per-device batch and the cores free. On a
2-core AMD EPYC (AVX2), for a 3x3 64->64 convolution on 128x128 images,
YNNPACK's weight gradient takes 4x Eigen's CPU time at batch 4 and half of it
at batch 1, but runs mostly on one thread: on that machine, quiet, the layer's
training work is 5x faster with Eigen at batch 4 and about even at batch 1.

The probe times that layer's training work (forward, input and weight
gradients) at the run's per-device batch, LR patch size and width, both
libraries compiled in one process (per-program compiler options) and timed
alternately, best of a few calls each. YNNPACK is chosen only when it is at
least `YNNPACK_MARGIN` faster; ties go to Eigen, which is never much slower for
training. The probe only runs on a quiet machine (`busy_load`). The choice is
cached in `cache.cache_dir()` per CPU model, core count, jax/jaxlib version and
shapes, so a machine keeps one choice (and a resumed run the same rounding)
until one of those changes.

  python -m srrgan_jax.conv_probe --batch 4 --size 128 --channels 64
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

from absl import logging

from srrgan_jax import cache
from srrgan_jax import files

# Per-program equivalent of EIGEN_CONVOLUTIONS_FLAG: YNNPACK keeps the
# reductions it takes by default, convolutions go to Eigen.
EIGEN_COMPILER_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_REDUCE'}
LIBRARIES = ('eigen', 'ynnpack')
YNNPACK_MARGIN = 0.2  # YNNPACK must take at most 1 - this of Eigen's time.
CACHE_FILE = 'xla_cpu_convolutions.json'
PROBE_TIMEOUT_S = 600
BUSY_LOAD_PER_CORE = 0.5  # Above this 1-minute load average per core, do not probe.


def cpu_model() -> str:
  """The CPU's model name ('AMD EPYC 7B13', 'Apple M2', ...), or the architecture."""
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith(('model name', 'Processor', 'cpu model')):
        return line.split(':', 1)[1].strip()
  except OSError:
    pass
  if sys.platform == 'darwin':
    try:
      return subprocess.run(['sysctl', '-n', 'machdep.cpu.brand_string'], check=True,
                            capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
      pass
  return platform.processor() or platform.machine()


def busy_load() -> float | None:
  """The 1-minute load average if it exceeds half the cores, else None.

  Other jobs slow Eigen's multi-threaded weight gradients more than YNNPACK's,
  which mostly run on one thread: a probe on a busy machine would favour
  YNNPACK, which is then slower on the idle machine.
  """
  if not hasattr(os, 'getloadavg'):
    return None
  load = os.getloadavg()[0]
  return load if load > BUSY_LOAD_PER_CORE * (os.cpu_count() or 1) else None


def cache_key(batch: int, size: int, channels: int) -> str:
  """What a cached choice depends on: CPU, cores, JAX build and the layer's shapes."""
  versions = ' '.join(f'{name} {importlib.metadata.version(name)}' for name in ('jax', 'jaxlib'))
  return (f'{cpu_model()} | {os.cpu_count()} cores | {versions} | batch {batch} | '
          f'{size}x{size}x{channels}')


def layer_step(batch: int, size: int, channels: int):
  """(function, arguments): a 3x3 conv's forward, input and weight gradients."""
  import jax

  def step(x, w, g):
    y, pull_back = jax.vjp(
        lambda x, w: jax.lax.conv_general_dilated(
            x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')), x, w)
    return y, pull_back(g)

  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (batch, size, size, channels))
  w = jax.random.normal(keys[1], (3, 3, channels, channels)) * 0.05
  g = jax.random.normal(keys[2], (batch, size, size, channels))
  return step, (x, w, g)


def compile_both(batch: int, size: int, channels: int):
  """{'eigen': program, 'ynnpack': program} and their arguments."""
  import jax
  step, args = layer_step(batch, size, channels)
  lowered = jax.jit(step).lower(*args)
  programs = {'eigen': lowered.compile(compiler_options=EIGEN_COMPILER_OPTIONS),
              'ynnpack': lowered.compile()}
  return programs, args


def measure(batch: int, size: int, channels: int, rounds: int = 5) -> dict[str, float]:
  """Best wall seconds of each library for the layer, timed alternately after a warm-up."""
  import jax
  programs, args = compile_both(batch, size, channels)
  for program in programs.values():
    jax.block_until_ready(program(*args))  # Warm-up.
  best = dict.fromkeys(programs, float('inf'))
  for _ in range(rounds):
    for name, program in programs.items():
      start = time.perf_counter()
      jax.block_until_ready(program(*args))
      best[name] = min(best[name], time.perf_counter() - start)
  return best


def choose(seconds: dict[str, float]) -> str:
  """'ynnpack' if it beats Eigen by YNNPACK_MARGIN, else 'eigen'."""
  return 'ynnpack' if seconds['ynnpack'] <= (1 - YNNPACK_MARGIN) * seconds['eigen'] else 'eigen'


def _read_cache(path: pathlib.Path) -> dict:
  try:
    entries = json.loads(path.read_text())
  except (OSError, ValueError):
    return {}
  return entries if isinstance(entries, dict) else {}


def cached_choice(batch: int, size: int, channels: int) -> tuple[str, dict]:
  """(library, cache entry) for a training layer, probing in a child process on a miss.

  The child runs JAX on the CPU with the current XLA_FLAGS, so this process's
  own JAX backend need not (and must not yet) have started. On a busy machine
  (`busy_load`) nothing is measured; a failed probe, like a busy machine, gives
  Eigen, uncached, so a later start measures.
  """
  path = cache.cache_dir() / CACHE_FILE
  key = cache_key(batch, size, channels)
  entry = _read_cache(path).get(key)
  if isinstance(entry, dict) and entry.get('choice') in LIBRARIES:
    return entry['choice'], entry
  load = busy_load()
  load_before = os.getloadavg()[0] if hasattr(os, 'getloadavg') else 0.0
  if load is not None:
    logging.info('XLA:CPU convolution probe skipped (load average %.2f on %d cores): Eigen '
                 'for this run; a quieter start measures.', load, os.cpu_count())
    return 'eigen', {'choice': 'eigen',
                     'not_measured': f'load average {load:.2f} on {os.cpu_count()} cores'}
  logging.info('Timing XLA:CPU convolution libraries once for %s (cached in %s).', key, path)
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
         'PYTHONPATH': os.pathsep.join(filter(None, [
             str(pathlib.Path(__file__).resolve().parent.parent),
             os.environ.get('PYTHONPATH')]))}
  command = [sys.executable, '-m', 'srrgan_jax.conv_probe', '--batch', str(batch),
             '--size', str(size), '--channels', str(channels)]
  try:
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True,
                            timeout=PROBE_TIMEOUT_S)
    seconds = json.loads(result.stdout.strip().splitlines()[-1])['seconds']
  except (OSError, subprocess.SubprocessError, ValueError, KeyError, IndexError) as error:
    return 'eigen', {'choice': 'eigen', 'error': f'probe failed: {error}'[:500]}
  entry = {'choice': choose(seconds), 'seconds': seconds, 'load_avg_1min': round(load_before, 2),
           'measured': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
  entries = _read_cache(path)  # Re-read: another process may have added entries.
  entries[key] = entry
  # Atomic: concurrent readers see the old or the new file.
  files.write_atomic(path, json.dumps(entries, indent=1, sort_keys=True) + '\n')
  return entry['choice'], entry


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=4, help='Per-device batch.')
  parser.add_argument('--size', type=int, default=128, help='Image height and width.')
  parser.add_argument('--channels', type=int, default=64, help='Input and output channels.')
  parser.add_argument('--rounds', type=int, default=5, help='Timed calls per library.')
  args = parser.parse_args()
  for name in ('batch', 'size', 'channels', 'rounds'):
    if getattr(args, name) < 1:
      parser.error(f'--{name} must be at least 1; got {getattr(args, name)}.')
  seconds = measure(args.batch, args.size, args.channels, args.rounds)
  print(json.dumps({'key': cache_key(args.batch, args.size, args.channels),
                    'seconds': {k: round(v, 5) for k, v in seconds.items()},
                    'choice': choose(seconds)}))


if __name__ == '__main__':
  main()
