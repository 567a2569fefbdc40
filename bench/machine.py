"""What a benchmark ran on: CPU model, clock, cores, load, and the float32 sgemm peak.

Every bench/ JSON line carries `describe()`, so a number is never read without
the machine and its load. `sgemm_peak_gflops()` is the practical float32 limit
of the CPU: numpy's BLAS multiplying two 4096x4096 matrices on all cores (the
same measurement as the original system's TensorFlow port makes), taken in the
same run as the timings it is compared with.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np


def _cpuinfo_field(name: str) -> str:
  """The first `name : value` of /proc/cpuinfo ('' where there is none, e.g. macOS)."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == name:
          return value.strip()
  except OSError:
    pass
  return ''


def describe() -> dict:
  """CPU model, clock (MHz, as the kernel reports it now), cores and 1/5/15-min load."""
  mhz = _cpuinfo_field('cpu MHz')
  return {
      'cpu_model': _cpuinfo_field('model name') or platform.processor() or platform.machine(),
      'cpu_mhz': round(float(mhz)) if mhz else None,
      'cpu_count': os.cpu_count(),
      'load_avg': [round(load, 2) for load in os.getloadavg()],
  }


def sgemm_peak_gflops(size: int = 4096, repeats: int = 5) -> float:
  """GFLOP/s of numpy's float32 `size` x `size` matmul on all cores, best of `repeats`."""
  rng = np.random.default_rng(0)
  a = rng.standard_normal((size, size), dtype=np.float32)
  b = rng.standard_normal((size, size), dtype=np.float32)
  a @ b  # Warm-up: thread pool start, page faults.
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - start)
  return 2 * size**3 / best / 1e9
