"""bench/'s side-by-side plumbing: running the original's port and matching its lines to ours.

A fake port (a folder of small scripts printing the original's JSON lines) stands
in for the TensorFlow one, so these tests need neither TensorFlow nor a full-size
model.
"""

import argparse
import importlib.util
import json
import pathlib
import sys
import textwrap

import pytest

BENCH = pathlib.Path(__file__).resolve().parent.parent / 'bench'


@pytest.fixture(name='bench_path')
def fixture_bench_path(monkeypatch):
  monkeypatch.syspath_prepend(str(BENCH))  # As when a bench script runs: bench/ is on the path.


def load(name):
  spec = importlib.util.spec_from_file_location(f'bench_{name}_under_test', BENCH / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def write_script(directory, name, body):
  (directory / name).write_text(textwrap.dedent(body))


def test_run_returns_json_lines_without_xla_flags_or_pythonpath(tmp_path, monkeypatch, bench_path):
  seed_tf = load('seed_tf')
  write_script(tmp_path, 'bench_x.py', '''
      import json, os, sys
      print('TensorFlow chatter')
      print(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(),
                        'xla_flags': os.environ.get('XLA_FLAGS'),
                        'pythonpath': os.environ.get('PYTHONPATH')}))
      print(json.dumps([1, 2]))  # Not an object: skipped.
  ''')
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution')
  monkeypatch.setenv('PYTHONPATH', '/somewhere/else')
  rows = seed_tf.run(str(tmp_path), sys.executable, 'bench_x.py', ['--sizes', '512'])
  assert rows[0] == {'argv': ['--sizes', '512'], 'cwd': str(tmp_path), 'xla_flags': None,
                     'pythonpath': None}
  assert len(rows) == 2 and rows[1]['info'] == 'seed_tf_run'
  assert rows[1]['command'] == ['bench_x.py', '--sizes', '512'] and rows[1]['wall_s'] >= 0


def test_failing_script_raises_with_its_stderr(tmp_path, bench_path):
  seed_tf = load('seed_tf')
  write_script(tmp_path, 'bench_x.py', 'import sys; sys.exit("no tensorflow here")\n')
  with pytest.raises(seed_tf.SeedTFError, match='exited with 1:\nno tensorflow here'):
    seed_tf.run(str(tmp_path), sys.executable, 'bench_x.py')


@pytest.mark.parametrize('argv, message', [
    (['--seed_tf', 'DIR'], 'no bench_x.py there'),
    (['--seed_tf_python', sys.executable], '--seed_tf_python needs --seed_tf DIR'),
    (['--seed_tf', '{tmp}'], '--seed_tf needs --seed_tf_python PATH'),
    (['--seed_tf', '{tmp}', '--seed_tf_python', '{tmp}'], 'not an executable Python'),
])
def test_bad_options_exit_with_one_line(tmp_path, capsys, bench_path, argv, message):
  seed_tf = load('seed_tf')
  write_script(tmp_path, 'bench_x.py', '')
  parser = argparse.ArgumentParser()
  seed_tf.add_arguments(parser)
  args = parser.parse_args([a.format(tmp=tmp_path) for a in argv])
  with pytest.raises(SystemExit) as exit_info:
    seed_tf.check_arguments(parser, args, 'bench_x.py')
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err


def test_ratio_is_original_over_ours(bench_path):
  seed_tf = load('seed_tf')
  assert seed_tf.ratio(12.8, 5.12) == 2.5
  assert seed_tf.ratio(None, 5.0) is None


def test_infer_matches_the_originals_tiled_and_whole_lines(tmp_path, bench_path):
  bench_infer = load('infer')
  write_script(tmp_path, 'bench_infer.py', '''
      import json, sys
      assert sys.argv[1:] == ['--sizes', '256,512', '--batch-sizes', '64', '--reps', '3'], sys.argv
      print(json.dumps({'info': 'env'}))
      for hw in (256, 512):
        print(json.dumps({'what': 'tiled_predict_full_image_tiled', 'lr_hw': hw,
                          's_all': [hw / 40, hw / 50, hw / 45]}))
        print(json.dumps({'what': 'whole_image_model_predict', 'lr_hw': hw, 's_all': [99.0]}))
        print(json.dumps({'what': 'whole_image_tf_function_call', 'lr_hw': hw,
                          's_all': [hw / 60, hw / 70]}))
  ''')
  args = argparse.Namespace(seed_tf=str(tmp_path), seed_tf_python=sys.executable, repeats=3)
  assert bench_infer.original_seconds(args, [256, 512]) == {
      (256, 'tiled'): 256 / 50, (256, 'whole'): 256 / 70,
      (512, 'tiled'): 512 / 50, (512, 'whole'): 512 / 70}
  assert bench_infer.original_seconds(argparse.Namespace(seed_tf=''), [512]) == {}


def test_train_matches_the_originals_steps(tmp_path, bench_path):
  bench_train = load('train')
  write_script(tmp_path, 'bench_train.py', '''
      import json, sys
      assert sys.argv[1:] == ['--p1-batches', '', '--p3-batches', '4,16', '--jit', '0',
                              '--warmup', '2', '--steps', '3'], sys.argv
      for batch in (4, 16):
        print(json.dumps({'what': 'phase3_gan_step', 'jit': False, 'batch': batch,
                          's_per_step_median': 4.5 * batch, 'cpu_s_per_step_median': 9 * batch}))
  ''')
  args = argparse.Namespace(seed_tf=str(tmp_path), seed_tf_python=sys.executable,
                            phases=[3], batch_sizes=[4, 16], repeats=3)
  original = bench_train.original_steps(args)
  assert sorted(original) == [(3, 4), (3, 16)]
  row = {'phase': 3, 'batch_size': 4, 's_per_step': 6.0}
  assert bench_train.with_original(row, original) == {
      **row, 'original_s_per_step': 18.0, 'original_cpu_s_per_step': 36,
      'speedup_vs_original': 3.0}
  assert bench_train.with_original({'phase': 1, 'batch_size': 4}, original) == {
      'phase': 1, 'batch_size': 4}


def test_machine_description_and_sgemm_peak(bench_path):
  machine = load('machine')
  described = machine.describe()
  assert set(described) == {'cpu_model', 'cpu_mhz', 'cpu_count', 'load_avg'}
  assert described['cpu_model'] and described['cpu_count'] >= 1
  assert len(described['load_avg']) == 3
  assert machine.sgemm_peak_gflops(size=256, repeats=2) > 0
  json.dumps(described)  # Goes into every JSON line.
