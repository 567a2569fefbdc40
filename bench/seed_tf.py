"""Runs a benchmark of the original system's TensorFlow port, for side-by-side ratios.

The port (a folder of scripts such as `bench_infer.py` and `bench_train.py`
that print one JSON object per line) times the original TF/Keras code on this
machine. It needs TensorFlow, so it runs in its own Python (a venv with
TensorFlow installed) as a subprocess; srrgan-jax never imports it. A speed
ratio is only meaningful when both sides ran on the same machine in the same
run: `bench/infer.py` and `bench/train.py` call `run()` next to their own
timings and print original seconds / srrgan-jax seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time
from typing import Optional, Sequence


class SeedTFError(RuntimeError):
  """The port or its Python is missing, or one of its scripts failed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--seed_tf', default='', metavar='DIR',
                      help="Folder of the original system's TensorFlow port: also run its "
                      'matching benchmark and print the ratio. Default: skip.')
  parser.add_argument('--seed_tf_python', default='', metavar='PATH',
                      help='Python of a venv with TensorFlow for --seed_tf.')


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace,
                    script: str) -> None:
  """Exits with one line (parser.error) if --seed_tf is given but unusable."""
  if not args.seed_tf:
    if args.seed_tf_python:
      parser.error('--seed_tf_python needs --seed_tf DIR (the port to run).')
    return
  if not (pathlib.Path(args.seed_tf) / script).is_file():
    parser.error(f'--seed_tf {args.seed_tf}: no {script} there; pass the folder of the '
                 "original system's TensorFlow port.")
  if not args.seed_tf_python:
    parser.error('--seed_tf needs --seed_tf_python PATH (a Python with TensorFlow).')
  if not os.access(args.seed_tf_python, os.X_OK) or pathlib.Path(args.seed_tf_python).is_dir():
    parser.error(f'--seed_tf_python {args.seed_tf_python}: not an executable Python.')


def run(directory: str, python: str, script: str, script_args: Sequence[str] = (),
        timeout_s: Optional[float] = None) -> list[dict]:
  """Runs `python script script_args` in `directory`; returns its JSON lines, parsed.

  Lines that are not JSON objects (library chatter) are skipped. The environment
  is this process's less XLA_FLAGS and PYTHONPATH, so neither JAX's XLA settings
  nor this checkout reach TensorFlow. The last line added, {'info': 'seed_tf_run',
  ...}, holds the script's wall and CPU seconds (all its threads, imports
  included).
  """
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'PYTHONPATH')}
  command = [python, script, *script_args]
  cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.perf_counter()
  try:
    result = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True,
                            timeout=timeout_s, check=False)
  except (OSError, subprocess.TimeoutExpired) as e:
    raise SeedTFError(f'{" ".join(command)} (in {directory}): {e}') from e
  wall_s = time.perf_counter() - start
  cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if result.returncode:
    raise SeedTFError(f'{" ".join(command)} (in {directory}) exited with '
                      f'{result.returncode}:\n{result.stderr[-2000:]}')
  rows = []
  for line in result.stdout.splitlines():
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(row, dict):
      rows.append(row)
  cpu_s = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
  rows.append({'info': 'seed_tf_run', 'command': [script, *script_args],
               'wall_s': round(wall_s, 1), 'cpu_s': round(cpu_s, 1)})
  return rows


def run_or_exit(args: argparse.Namespace, script: str, script_args: Sequence[str]
                ) -> list[dict]:
  """`run()` for a benchmark's --seed_tf options; a failure ends the benchmark with its message."""
  try:
    return run(args.seed_tf, args.seed_tf_python, script, script_args)
  except SeedTFError as e:
    sys.exit(f'--seed_tf: {e}')


def ratio(original_s: Optional[float], ours_s: float) -> Optional[float]:
  """original seconds / srrgan-jax seconds (>1: srrgan-jax is faster), or None."""
  return round(original_s / ours_s, 2) if original_s and ours_s > 0 else None
