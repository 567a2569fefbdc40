"""The accelerator suite's --smoke mode runs every section on the CPU."""

import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_smoke_run_prints_every_section_as_json():
  result = subprocess.run([sys.executable, str(REPO / 'bench' / 'gpu_suite.py'), '--smoke'],
                          capture_output=True, text=True, cwd=REPO, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(line) for line in result.stdout.splitlines()]  # Only JSON lines.
  by_section = {}
  for row in rows:
    by_section.setdefault(row['section'], []).append(row)
  assert set(by_section) == {'matmul_peak', 'train_step', 'data', 'train_run', 'infer',
                             'done'}
  assert {(r['phase'], r['dtype']) for r in by_section['train_step']} == {
      (1, 'float32'), (3, 'float32')}
  for row in by_section['train_step']:
    assert row['gflop_per_step'] > 0 and row['samples_per_s'] > 0
    assert 0 < row['mfu_vs_matmul'] < 5  # A CPU's small matmul is a loose "peak".
  assert by_section['data'][0]['patches_per_cpu_s'] > 0
  run, = by_section['train_run']
  assert run['steps'] == 3 and 0 <= run['input_wait_fraction'] <= 1
  assert all(r['out_mpix_per_s'] > 0 for r in by_section['infer'])
