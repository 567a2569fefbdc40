"""The LPIPS ranking's order and kept outputs, and the report files and figures built from it."""

import json
import types

import numpy as np

from srrgan_jax import population
from srrgan_jax.evaluation import comparison
from srrgan_jax.evaluation import plots
from srrgan_jax.evaluation import ranking
from srrgan_jax.evaluation import report
from srrgan_jax.evaluation import scoring

from fake_run import save_steps

# Mean LPIPS that the stand-in scorer gives each phase-3 step: 6 and 9 tie.
LPIPS = {3: 0.30, 6: 0.20, 9: 0.20}


def _result(lpips, kept=None):
  per_image = {'psnr': np.array([20.0, 22.0]), 'ssim': np.array([0.5, 0.7]),
               'mae': np.array([0.1, 0.3]), 'lpips': np.array([lpips - 0.05, lpips + 0.05])}
  return scoring.MethodResult(per_image, kept or {})


def _test_set():
  lr = [np.zeros((4, 4, 3), np.float32)] * 2
  hr = [np.zeros((8, 8, 3), np.float32)] * 2
  return scoring.TestSet('tests', ['a.png', 'b.png'], lr, hr)


def test_ranking_orders_by_lpips_then_step_and_only_the_winner_keeps_outputs(tmp_path):
  save_steps(tmp_path, 3, [(3, None), (6, None), (9, None)], keep_steps=(3, 6, 9))
  protocol = scoring.Protocol(crop_size=8, y_channel=False, crop_border=0)
  # The stand-in generator of step s outputs the constant s; the scorer reads it back.
  runner = types.SimpleNamespace(
      load=lambda workdir, phase, step, member=None: step,
      upscaler=lambda step: lambda lr: np.full((len(lr), 8, 8, 3), step, np.float32))

  def scorer(sr, hr):
    step = int(sr[0, 0, 0, 0])
    return {**_result(LPIPS[step]).per_image, 'lpips': np.full(len(sr), LPIPS[step])}

  scorer.protocol = protocol
  lines = []
  ranked = ranking.lpips_rank_checkpoints(tmp_path, _test_set(), runner, scorer,
                                          batch_size=2, keep=[1], log=lines.append)
  assert [(e.rank, e.step) for e in ranked] == [(1, 6), (2, 9), (3, 3)]
  assert ranked[0].means['lpips'] == 0.2 and ranked[0].path.endswith('phase3/6')
  assert list(ranked[0].result.kept_outputs) == [1]
  assert all(not e.result.kept_outputs for e in ranked[1:])
  assert len(lines) == 3 and 'phase 3 step 9: LPIPS 0.2000' in lines[2]


def test_report_files_carry_the_ranking_and_the_protocol(tmp_path):
  config = types.SimpleNamespace(
      scale=2, degradation=types.SimpleNamespace(
          eval_blur_kernel_size=5, eval_blur_sigma=1.0, eval_resize_method='area',
          eval_noise_std=10 / 255, eval_jpeg_quality=75))
  protocol = scoring.Protocol(crop_size=8, y_channel=True, crop_border=2)
  ranked = [ranking.RankedCheckpoint(1, 6, 'p/6', _result(0.2)),
            ranking.RankedCheckpoint(2, 3, 'p/3', _result(0.3))]
  rows = [report.Row('bilinear', 'Bilinear', '', None, _result(0.5)),
          report.Row('srrgan', 'SRRGAN, LPIPS-selected', 'p/6', 6, ranked[0].result)]
  built = report.build_report(config, protocol, _test_set(), rows, ranked, workdir='run')
  assert list(built['ranking'][0]) == ['phase', 'step', 'path', 'psnr', 'ssim', 'mae',
                                       'lpips', 'rank', 'per_image']
  assert built['ranking'][1]['per_image']['b.png']['lpips'] == 0.35
  assert built['rows'][1]['lpips'] == 0.2 and built['rows'][1]['step'] == 6
  assert report.format_ranking(ranked).splitlines()[1].split() == [
      '1', '6', '0.2000', '21.0000', '0.6000', '0.2000']

  paths = report.write_report(built, tmp_path)
  markdown = paths['markdown'].read_text()
  # Best per column in bold (PSNR, SSIM and MAE tie with bilinear here).
  assert ('| SRRGAN, LPIPS-selected | step 6 | **21.0000** | **0.6000** | **0.2000** | '
          '**0.2000** |') in markdown
  assert '| Bilinear |  | **21.0000** | **0.6000** | **0.2000** | 0.5000 |' in markdown
  assert 'Y channel (ITU-R BT.601' in markdown and 'Selected (lowest LPIPS): step 6.' in markdown
  saved = json.loads(report.write_ranking(built, tmp_path / 'ranking.json').read_text())
  assert saved['selected'] == {'phase': 3, 'step': 6, 'path': 'p/6', 'lpips': 0.2}
  assert paths['csv'].read_text().splitlines()[1].startswith('bilinear,Bilinear,,,21.0')


def test_non_dominated_keeps_the_perception_distortion_frontier():
  def entry(step, lpips, psnr):
    per_image = {'psnr': np.array([psnr]), 'ssim': np.array([0.5]), 'mae': np.array([0.1]),
                 'lpips': np.array([lpips])}
    return ranking.RankedCheckpoint(0, step, '', scoring.MethodResult(per_image, {}))

  entries = [entry(1, 0.30, 25.0), entry(2, 0.20, 24.0), entry(3, 0.25, 24.0),  # 3 < 2.
             entry(4, 0.20, 23.0),  # Same LPIPS as 2, lower PSNR: dominated.
             entry(5, 0.35, 26.0), entry(6, 0.40, 25.5)]  # 6 < 5.
  assert [e.step for e in ranking.non_dominated(entries)] == [2, 1, 5]


def test_comparison_titles_show_whole_member_names_wrapped():
  members = [population.Member(k, {'loss.gan_weight': w, 'loss.pixel_weight': 2.0})
             for k, w in enumerate((0.01, 0.1))]
  sr = np.zeros((8, 8, 3), np.float32)
  ranked = [ranking.RankedCheckpoint(1, 6, 'p/6', _result(0.2, {0: sr}), member=1),
            ranking.RankedCheckpoint(2, 6, 'p/6', _result(0.3, {0: sr}), member=0)]
  rows = [report.Row('phase2_best', 'U-Net (Perceptual), phase-2 best', 'p2/4', 4,
                     _result(0.4, {0: sr}), title='U-Net (Perceptual)'),
          *comparison._member_rows(ranked, members)]  # pylint: disable=protected-access
  assert [r.label for r in rows[1:]] == [
      'Member 0: gan_weight=0.01,pixel_weight=2',
      'Member 1: gan_weight=0.1,pixel_weight=2, LPIPS-selected']
  figure = plots.comparison_figure(_test_set(), rows, [0])
  titles = [ax.get_title() for ax in figure.axes[:len(rows) + 2]]
  # Every swept value, broken after a comma; the table's 'LPIPS-selected' is not a name.
  assert titles == ['LR input', 'U-Net (Perceptual)', 'Member 0: gan_weight=0.01,\npixel_weight=2',
                    'Member 1: gan_weight=0.1,\npixel_weight=2', 'HR ground truth']
  assert plots.wrap_title('Member 12: gan_weight=0.01,perceptual_weight=0.05,pixel_weight=20') == (
      'Member 12: gan_weight=0.01,\nperceptual_weight=0.05,\npixel_weight=20')
