"""Evaluation of a run: LPIPS ranking, comparison table, plots, clear errors.

Runs the whole evaluation on the session's tiny trained run (random stand-in
VGG/LPIPS weights) with real test photos from scikit-image, and checks the
numbers against a direct recomputation with the generator, `metrics` and
`perceptual.lpips`.
"""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from srrgan_jax import checkpoints
from srrgan_jax import evaluation
from srrgan_jax import image_io
from srrgan_jax import interpolation
from srrgan_jax import models
from srrgan_jax import run_dir
from srrgan_jax import weights
from srrgan_jax.evaluation import comparison

from evaluation_data import ATOL
from evaluation_data import direct_scores
from evaluation_data import env  # pylint: disable=unused-import  (a fixture)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def trained_run(env, tiny_run):
  """A copy of the shared tiny run (three phases, phase-3 checkpoints at steps 3 and 6).

  Evaluation records its choice in the run (selected.json): hence the copy.
  """
  shutil.copytree(tiny_run[0], env / 'run')
  return env / 'run'


@pytest.fixture(scope='module')
def evaluated(env, trained_run):
  """The default evaluation (centre crops, RGB) of the run, with the runner kept."""
  runners, lines = [], []

  class RecordingRunner(evaluation.GeneratorRunner):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      runners.append(self)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(comparison, 'GeneratorRunner', RecordingRunner)
    report = evaluation.evaluate_run(trained_run, env / 'test', out_dir=env / 'eval',
                                     interpolation_steps=3, log=lines.append)
  return report, runners[0], lines


def _assert_row_matches(row, direct):
  for name in evaluation.METRIC_NAMES:
    assert abs(row[name] - float(np.mean(direct[name]))) < ATOL[name], (
        row['key'], name, row[name], np.mean(direct[name]))


def test_table_structure_and_direct_recomputation(evaluated, trained_run, env):
  report, _, _ = evaluated
  keys = [row['key'] for row in report['rows']]
  assert keys == ['bilinear', 'bicubic', 'phase1_best', 'phase2_best', 'srrgan',
                  'interpolation_0', 'interpolation_0.5', 'interpolation_1']
  assert report['num_images'] == 3 and report['protocol']['crop_size'] == 32
  assert report['protocol']['crop_border'] == 2 and report['protocol']['use_ema']

  config = run_dir.read_config(trained_run)
  test = evaluation.load_test_set(env / 'test', config,
                                  evaluation.make_protocol(config))
  lr, hr = np.stack(test.lr), np.stack(test.hr)
  assert lr.shape == (3, 16, 16, 3) and hr.shape == (3, 32, 32, 3)
  rows = {row['key']: row for row in report['rows']}
  bilinear = jax.image.resize(lr, hr.shape, 'bilinear')
  _assert_row_matches(rows['bilinear'], direct_scores(bilinear, hr, crop_border=2))

  generator = models.build_generator(config)
  selected = run_dir.read_selected(trained_run)
  for key, phase, step in (('phase1_best', 1, rows['phase1_best']['step']),
                           ('srrgan', 3, selected['step'])):
    _, params = run_dir.load_generator(trained_run, phase=phase, step=step)
    sr = generator.apply({'params': params}, lr, train=False)
    _assert_row_matches(rows[key], direct_scores(sr, hr, crop_border=2))
    per_image = report['per_image'][key]
    assert list(per_image) == test.names


def test_ranking_selects_lowest_lpips_and_is_recorded(evaluated, trained_run, env):
  report, runner, lines = evaluated
  phase3 = run_dir.list_checkpoints(trained_run, 3)
  ranking = report['ranking']
  assert len(phase3) == 2 and len(ranking) == 2
  assert sorted(e['step'] for e in ranking) == [s for s, _ in phase3]
  assert [e['rank'] for e in ranking] == [1, 2]
  assert ranking[0]['lpips'] <= ranking[1]['lpips']
  # The network was compiled once for both baselines' rows' checkpoints and all of phase 3.
  assert len(runner.forward.compiled_shapes) == 1

  selected = run_dir.read_selected(trained_run)
  assert (selected['phase'], selected['step']) == (3, ranking[0]['step'])
  assert selected['lpips'] == pytest.approx(ranking[0]['lpips'])
  row = next(r for r in report['rows'] if r['key'] == 'srrgan')
  assert (row['step'], row['lpips']) == (ranking[0]['step'], ranking[0]['lpips'])
  # infer.py's default (the run dir) now resolves to the selected checkpoint.
  _, chosen = run_dir.load_generator(trained_run)
  _, expected = run_dir.load_generator(trained_run, phase=3, step=selected['step'])
  jax.tree.map(np.testing.assert_array_equal, chosen, expected)

  saved = json.loads((env / 'eval' / 'ranking.json').read_text())
  assert [e['step'] for e in saved['ranking']] == [e['step'] for e in ranking]
  assert saved['selected']['step'] == ranking[0]['step']
  printed = '\n'.join(lines)
  assert all(f'{e["lpips"]:7.4f}' in printed for e in ranking)


def test_interpolation_curve_runs_from_the_phase2_best_to_the_selected_gan(
    evaluated, trained_run, env):
  report, _, lines = evaluated
  rows = {row['key']: row for row in report['rows']}
  curve = report['interpolation']
  assert [p['alpha'] for p in curve['points']] == [0.0, 0.5, 1.0]
  assert curve['phase2']['step'] == rows['phase2_best']['step']
  assert curve['phase3']['step'] == rows['srrgan']['step']
  # The ends are the same weights, hence the same outputs and scores, as those rows.
  for point, end in ((curve['points'][0], 'phase2_best'), (curve['points'][-1], 'srrgan')):
    assert {m: point[m] for m in evaluation.METRIC_NAMES} == {
        m: rows[end][m] for m in evaluation.METRIC_NAMES}, end
  middle = rows['interpolation_0.5']
  assert middle['alpha'] == 0.5 and middle['step'] is None
  assert middle['lpips'] not in (rows['phase2_best']['lpips'], rows['srrgan']['lpips'])
  config = run_dir.read_config(trained_run)
  test = evaluation.load_test_set(env / 'test', config, evaluation.make_protocol(config))
  _, blended = interpolation.load_interpolated(trained_run, 0.5)
  sr = models.build_generator(config).apply({'params': blended}, np.stack(test.lr),
                                            train=False)
  _assert_row_matches(middle, direct_scores(sr, np.stack(test.hr), crop_border=2))
  saved = json.loads((env / 'eval' / 'results.json').read_text())
  assert saved['interpolation'] == curve
  with open(env / 'eval' / 'results.csv', newline='') as f:
    assert [r['alpha'] for r in csv.DictReader(f)][-3:] == ['0.0', '0.5', '1.0']
  assert 'Interpolation, alpha 0.5' in (env / 'eval' / 'results.md').read_text()
  assert any(line.startswith('  alpha 0.5: LPIPS') for line in lines)


def test_outputs_carry_the_protocol(evaluated, env):
  report, _, _ = evaluated
  out = env / 'eval'
  markdown = (out / 'results.md').read_text()
  assert '| Model | Checkpoint | PSNR (dB) ↑ | SSIM ↑ | MAE ↓ | LPIPS ↓ |' in markdown
  assert '## Protocol' in markdown and '32x32 HR centre crops' in markdown
  assert '2 border pixels cropped' in markdown and 'on RGB' in markdown
  with open(out / 'results.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert [r['key'] for r in rows] == [r['key'] for r in report['rows']]
  assert rows[0]['images'] == 'centre crop 32' and rows[0]['channel'] == 'RGB'
  assert float(rows[2]['psnr']) == pytest.approx(report['rows'][2]['psnr'])
  saved = json.loads((out / 'results.json').read_text())
  assert saved['protocol'] == report['protocol'] and saved['rows'] == report['rows']
  for name in ('perception_distortion.png', 'comparison.png'):
    image = image_io.read_image(out / name)
    assert image.height > 200 and image.width > 200
    assert image.rgb.std() > 0.05  # Not a blank canvas.


def test_full_images_y_channel_raw_weights(trained_run, env, tmp_path):
  run = tmp_path / 'run'
  shutil.copytree(trained_run, run)
  report = evaluation.evaluate_run(
      run, env / 'test', out_dir=tmp_path / 'eval', full_images=True, y_channel=True,
      crop_border=0, use_ema=False, num_figure_images=1, log=lambda _: None)
  protocol = report['protocol']
  assert (protocol['crop_size'], protocol['y_channel'], protocol['crop_border'],
          protocol['use_ema']) == (0, True, 0, False)
  assert 'Y channel (ITU-R BT.601' in (tmp_path / 'eval' / 'results.md').read_text()
  config = run_dir.read_config(run)
  test = evaluation.load_test_set(env / 'test', config,
                                  evaluation.make_protocol(config, full_images=True))
  lr, hr = np.stack(test.lr), np.stack(test.hr)
  assert lr.shape == (3, 22, 26, 3) and hr.shape == (3, 44, 52, 3)
  bicubic = jax.image.resize(lr, hr.shape, 'bicubic')
  _assert_row_matches(report['rows'][1],
                      direct_scores(bicubic, hr, crop_border=0, y_channel=True))
  assert all(np.isfinite(row[m]) for row in report['rows'] for m in evaluation.METRIC_NAMES)
  assert run_dir.read_selected(run)['protocol']['use_ema'] is False


def test_bad_run_inputs_are_clear_errors(trained_run, env, tmp_path, monkeypatch):
  with pytest.raises(checkpoints.CheckpointError, match='does not exist'):
    evaluation.evaluate_run(tmp_path / 'nowhere', env / 'test')
  bare = tmp_path / 'bare'
  bare.mkdir()
  shutil.copy(trained_run / 'config.json', bare / 'config.json')
  with pytest.raises(evaluation.EvaluationError, match='no checkpoints.*train first'):
    evaluation.evaluate_run(bare, env / 'test')

  (tmp_path / 'no_images').mkdir()
  with pytest.raises(evaluation.EvaluationError, match='no images found.*--test_dir'):
    evaluation.evaluate_run(trained_run, tmp_path / 'no_images', out_dir=tmp_path / 'o')

  with pytest.raises(weights.MissingWeightsError, match='lpips_vgg16.npz'):
    evaluation.evaluate_run(trained_run, env / 'test', lpips_file=str(tmp_path / 'x.npz'))
  monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path / 'no_weights'))
  with pytest.raises(weights.MissingWeightsError,
                     match='lpips_vgg16.npz not found.*srrgan_jax.weights fetch'):
    evaluation.evaluate_run(trained_run, env / 'test')

  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  with pytest.raises(evaluation.EvaluationError, match='single host'):
    evaluation.evaluate_run(trained_run, env / 'test')


def test_checkpoint_of_another_architecture_is_refused(trained_run, env, tmp_path):
  run = tmp_path / 'run'
  shutil.copytree(trained_run, run)
  config = json.loads((run / 'config.json').read_text())
  config['model']['stem_channels'] = 16  # As if the checkpoints came from another run.
  (run / 'config.json').write_text(json.dumps(config))
  with pytest.raises(checkpoints.CheckpointError,
                     match=r'another architecture.*model\.stem_channels: checkpoint 8.*'
                     r'does not belong to this run'):
    evaluation.evaluate_run(run, env / 'test', out_dir=tmp_path / 'eval',
                            log=lambda _: None)


def test_command_line(env, tmp_path):
  """eval.py: --help documents the protocol; errors are one clear line."""
  result = subprocess.run([sys.executable, str(REPO / 'eval.py'), '--help'],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
  assert 'Protocol options' in result.stdout  # absl exits 1 after --help.
  for flag in ('workdir', 'test_dir', 'sr_dir', 'hr_dir', 'full_images', 'y_channel',
               'crop_border', 'raw', 'json', 'interpolation_steps'):
    assert f'{flag}: ' in result.stdout, flag
  result = subprocess.run(
      [sys.executable, str(REPO / 'eval.py'), f'--workdir={tmp_path / "missing"}',
       f'--test_dir={env / "test"}'], capture_output=True, text=True, timeout=120,
      cwd=REPO)
  assert result.returncode == 1
  assert 'eval: error:' in result.stderr and 'does not exist' in result.stderr
  assert 'Traceback' not in result.stderr

  sr_dir = tmp_path / 'sr'
  shutil.copytree(env / 'test', sr_dir)
  image_io.write_image(sr_dir / 'rocket.png', image_io.read_rgb(sr_dir / 'rocket.png') * 0.9)
  result = subprocess.run(
      [sys.executable, str(REPO / 'eval.py'), f'--sr_dir={sr_dir}',
       f'--hr_dir={env / "test"}', f'--json={tmp_path / "scores.json"}'],
      capture_output=True, text=True, timeout=300, cwd=REPO)
  assert result.returncode == 0, result.stderr
  scores = json.loads((tmp_path / 'scores.json').read_text())
  assert scores['protocol'] == {'crop_size': 0, 'y_channel': False, 'crop_border': 2}
  assert np.isinf(scores['per_image']['coffee']['psnr'])  # Identical files.
  assert scores['per_image']['coffee']['ssim'] == pytest.approx(1.0, abs=1e-6)
  assert 15 < scores['per_image']['rocket']['psnr'] < 40
  assert 'rocket' in result.stdout and 'mean' in result.stdout
