"""Population runs in eval.py, infer.py and srrgan-export: (member, checkpoint) ranking,
member rows, the frontier, selected.json's member, --member selection, and the clear errors.

The population run is the shared tiny run with its phase-3 checkpoints stacked
into three `gan_weight` members (population_run.py).
"""

import json
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

import fake_run
import population_run
from srrgan_jax import errors
from srrgan_jax import evaluation
from srrgan_jax import export
from srrgan_jax import image_io
from srrgan_jax import inference
from srrgan_jax import models
from srrgan_jax import population_runs
from srrgan_jax import run_dir

from evaluation_data import ATOL
from evaluation_data import direct_scores
from evaluation_data import env  # pylint: disable=unused-import  (a fixture)

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def population(env, tiny_run):
  return population_run.make(tiny_run[0], env / 'population')


@pytest.fixture(scope='module')
def evaluated(env, population):
  lines = []
  report = evaluation.evaluate_run(population, env / 'test', out_dir=env / 'eval',
                                   num_figure_images=1, interpolation_steps=2,
                                   log=lines.append)
  return report, lines


def _trees_equal(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_member_weights_are_slices_of_the_stacked_checkpoint(population, tiny_run):
  config = run_dir.read_config(population)
  step, path = run_dir.list_checkpoints(population, 3)[-1]
  _, member0 = run_dir.load_generator(path, member=0, config=config)
  _, original = run_dir.load_generator(tiny_run[0], phase=3, step=step)
  assert _trees_equal(member0, original)  # Member 0 is the unperturbed state.
  _, member2 = run_dir.load_generator(path, member=2, config=config, use_ema=False)
  _, original_raw = run_dir.load_generator(tiny_run[0], phase=3, step=step, use_ema=False)
  assert not _trees_equal(member2, original_raw)
  assert jax.tree.structure(member2) == jax.tree.structure(original_raw)


def test_every_member_of_every_checkpoint_is_ranked(evaluated, population):
  report, lines = evaluated
  ranking = report['ranking']
  steps = [s for s, _ in run_dir.list_checkpoints(population, 3)]
  assert sorted((e['member'], e['step']) for e in ranking) == sorted(
      (m, s) for m in range(3) for s in steps)
  assert [e['lpips'] for e in ranking] == sorted(e['lpips'] for e in ranking)
  assert [e['rank'] for e in ranking] == list(range(1, 7))
  assert any('member 2 (gan_weight=0.1): LPIPS' in line for line in lines)


def test_one_row_per_member_with_its_weights(evaluated, population, env):
  report, _ = evaluated
  keys = [row['key'] for row in report['rows']]
  assert keys == ['bilinear', 'bicubic', 'phase1_best', 'phase2_best', 'member_0',
                  'member_1', 'member_2', 'interpolation_0', 'interpolation_1']
  rows = {row['key']: row for row in report['rows']}
  config = run_dir.read_config(population)
  test = evaluation.load_test_set(env / 'test', config, evaluation.make_protocol(config))
  generator = models.build_generator(config)
  for k, gan_weight in enumerate(population_run.GAN_WEIGHTS):
    row = rows[f'member_{k}']
    assert (row['member'], row['weights'], row['loss.gan_weight']) == (
        k, f'gan_weight={gan_weight:g}', gan_weight)
    own = [e for e in report['ranking'] if e['member'] == k]
    assert (row['step'], row['lpips']) == (own[0]['step'], min(e['lpips'] for e in own))
    _, params = run_dir.load_generator(population, phase=3, step=row['step'], member=k,
                                       config=config)
    sr = generator.apply({'params': params}, np.stack(test.lr), train=False)
    scores = direct_scores(sr, np.stack(test.hr), crop_border=2)
    for name in evaluation.METRIC_NAMES:
      assert abs(row[name] - float(np.mean(scores[name]))) < ATOL[name], (k, name)
  winner = report['ranking'][0]['member']
  assert rows[f'member_{winner}']['label'].endswith('LPIPS-selected')
  markdown = (env / 'eval' / 'results.md').read_text()
  assert '| Member 1: gan_weight=0.05 |' in markdown and '## Population members' in markdown


def test_selected_member_and_each_members_best_are_recorded(evaluated, population, env):
  report, _ = evaluated
  best = report['ranking'][0]
  selected = run_dir.read_selected(population)
  assert (selected['phase'], selected['step'], selected['member']) == (
      3, best['step'], best['member'])
  assert selected['member_name'] == f'gan_weight={population_run.GAN_WEIGHTS[best["member"]]:g}'
  rows = {row['key']: row for row in report['rows']}
  assert {e['member']: e['step'] for e in selected['member_bests']} == {
      k: rows[f'member_{k}']['step'] for k in range(3)}
  saved = json.loads((env / 'eval' / 'ranking.json').read_text())
  assert saved['selected']['member'] == best['member']


def test_frontier_is_the_non_dominated_set(evaluated, env):
  report, _ = evaluated
  points = report['ranking']
  dominated = {(e['member'], e['step']) for e in points for o in points
               if o['lpips'] <= e['lpips'] and o['psnr'] >= e['psnr'] and
               (o['lpips'], o['psnr']) != (e['lpips'], e['psnr'])}
  frontier = [(e['member'], e['step']) for e in report['frontier']]
  assert set(frontier) == {(e['member'], e['step']) for e in points} - dominated
  assert [e['lpips'] for e in report['frontier']] == sorted(
      e['lpips'] for e in report['frontier'])
  assert report['members'][1] == {'member': 1, 'name': 'gan_weight=0.05',
                                  'loss.gan_weight': 0.05}
  image = image_io.read_image(env / 'eval' / 'perception_distortion.png')
  assert image.width > 200 and image.rgb.std() > 0.05


def test_interpolation_of_a_population_ends_at_the_selected_member(evaluated):
  report, _ = evaluated
  curve = report['interpolation']
  best = report['ranking'][0]
  assert (curve['member'], curve['phase3']['step']) == (best['member'], best['step'])
  end = curve['points'][-1]
  assert {m: end[m] for m in evaluation.METRIC_NAMES} == {
      m: best[m] for m in evaluation.METRIC_NAMES}


def test_infer_takes_the_selected_member_or_the_one_named(evaluated, population, tmp_path):
  report, _ = evaluated
  config = run_dir.read_config(population)
  rows = {row['key']: row for row in report['rows']}

  def member_params(k):
    path = run_dir.resolve(population, 3, rows[f'member_{k}']['step'])
    return run_dir.load_generator(path, member=k, config=config)[1]

  best = report['ranking'][0]['member']
  _, default = inference.load_model(workdir=str(population))
  assert _trees_equal(default, member_params(best))
  for spec, k in (('1', 1), ('gan_weight=0.1', 2), ('loss.gan_weight=0.01', 0)):
    _, chosen = inference.load_model(workdir=str(population), member=spec)
    assert _trees_equal(chosen, member_params(k)), spec
  # A phase-3 step directory: the member named, at that step.
  step, path = run_dir.list_checkpoints(population, 3)[0]
  _, by_path = inference.load_model(checkpoint=str(path), member='2')
  assert _trees_equal(by_path, run_dir.load_generator(path, member=2, config=config)[1])

  # Interpolation with a member: alpha 1 is that member's generator.
  _, blended = inference.load_model(workdir=str(population), member='0', interpolate=1.0)
  assert _trees_equal(blended, member_params(0))

  # The upscaled image is that member's output.
  rng = np.random.default_rng(0)
  image_io.write_image(tmp_path / 'in.png', rng.random((16, 24, 3), dtype=np.float32))
  inference.run(tmp_path / 'in.png', tmp_path / 'out.png', workdir=str(population),
                member='gan_weight=0.05', tile=0, show_progress=False)
  upscaler = inference.Upscaler(config, member_params(1), tile=0)
  expected = upscaler.upscale(image_io.read_rgb(tmp_path / 'in.png'))
  written = image_io.read_rgb(tmp_path / 'out.png')
  np.testing.assert_allclose(written, expected, atol=1 / 255 / 2 + 1e-6)


def test_member_errors_are_clear(population, tmp_path):
  with pytest.raises(errors.ConfigError, match=r'--member 5: .*members 0 to 2.*gan_weight=0.1'):
    inference.load_model(workdir=str(population), member='5')
  with pytest.raises(errors.ConfigError, match='--member gan_weight=0.2: no member has'):
    inference.load_model(workdir=str(population), member='gan_weight=0.2')
  single = fake_run.save_random_generator(tmp_path / 'single', 7)
  with pytest.raises(errors.ConfigError, match='--member 0: this run has no population'):
    inference.load_model(workdir=str(single), member='0')
  with pytest.raises(population_runs.MemberError,
                     match=r'phase-2 checkpoint, which all members share'):
    inference.load_model(checkpoint=str(run_dir.phase_dir(population, 2)), member='1')
  step_dir = run_dir.list_checkpoints(population, 3)[0][1]
  with pytest.raises(population_runs.MemberError,
                     match=r'3 members \(0: gan_weight=0.01; .*no member selected.*--member'):
    inference.load_model(checkpoint=str(step_dir))
  unevaluated = tmp_path / 'unevaluated'
  shutil.copytree(population, unevaluated)
  (unevaluated / run_dir.SELECTED_FILE).unlink(missing_ok=True)
  with pytest.raises(population_runs.MemberError, match='unevaluated: a population'):
    inference.load_model(workdir=str(unevaluated))


def _export_cli(*args):
  return subprocess.run([sys.executable, '-m', 'srrgan_jax.commands.export', *args],
                        capture_output=True, text=True, cwd=REPO, timeout=300)


def test_export_takes_the_member_infer_takes(evaluated, population, tmp_path):
  best = evaluated[0]['ranking'][0]['member']
  spec = f'gan_weight={population_run.GAN_WEIGHTS[(best + 1) % 3]:g}'  # Not the default.
  path = tmp_path / 'member.shlo'
  result = _export_cli('--workdir', str(population), '--member', spec, '--format',
                       'stablehlo', '-o', str(path))
  assert result.returncode == 0, result.stderr
  images = np.random.default_rng(0).random((1, 3, 16, 24), dtype=np.float32)
  got = np.asarray(jax.export.deserialize(path.read_bytes()).call(images))
  config, params = inference.load_model(workdir=str(population), member=spec)  # infer.py's.
  np.testing.assert_allclose(got, jax.jit(export.upscale_function(config, params))(images),
                             atol=1e-6)
  assert not _trees_equal(params, inference.load_model(workdir=str(population))[1])


@pytest.mark.parametrize('case', ['unknown member', 'single run', 'shared phase'])
def test_export_member_errors_are_infers_one_line(population, tmp_path, case):
  single = tmp_path / 'single'
  args, message = {
      'unknown member': (['--workdir', str(population), '--member', 'gan_weight=0.2'],
                         '--member gan_weight=0.2: no member has'),
      'single run': (['--workdir', str(fake_run.save_random_generator(single, 7)),
                      '--member', '0'], '--member 0: this run has no population'),
      'shared phase': (['--checkpoint', str(run_dir.phase_dir(population, 2)), '--member',
                        '1'], 'phase-2 checkpoint, which all members share'),
  }[case]
  result = _export_cli(*args, '--format', 'stablehlo', '-o', str(tmp_path / 'm.shlo'))
  assert result.returncode == 1 and not (tmp_path / 'm.shlo').exists()
  assert result.stderr.startswith('srrgan-export: error: --member '), result.stderr
  assert result.stderr.strip().count('\n') == 0 and message in result.stderr, result.stderr


def test_selected_files_without_a_member_still_read(tmp_path):
  (tmp_path / run_dir.SELECTED_FILE).write_text('{"phase": 3, "step": 6, "lpips": 0.2}')
  assert run_dir.read_selected(tmp_path) == {'phase': 3, 'step': 6, 'lpips': 0.2,
                                             'member': None}
  assert population_runs.selected_member_steps(tmp_path) == {}
