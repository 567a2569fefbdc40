"""The evaluation of a training run: LPIPS selection of the GAN and the comparison table.

Every phase-3 checkpoint is ranked by mean LPIPS on a test folder
(deterministic degradation); the lowest wins and is recorded as the run's
selected model. The table then reports PSNR, SSIM, MAE and LPIPS for bilinear
and bicubic upsampling of the degraded input, the phase-1 best, the phase-2
best and the selected GAN generator, with the protocol beside the numbers.
Of a population run (several loss weightings trained together), every member
of every phase-3 checkpoint is ranked, the table has one row per member (its
LPIPS-best checkpoint, with its weights) and the plot draws each member's
points and the non-dominated frontier. Optionally, the network interpolation
between the phase-2 best and the selected GAN (`interpolation`) is scored at
evenly spaced alphas: rows of the table and a curve in the perception-distortion
plane.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from srrgan_jax import interpolation
from srrgan_jax import perceptual
from srrgan_jax import population
from srrgan_jax import run_dir
from srrgan_jax.evaluation import plots
from srrgan_jax.evaluation import report as report_lib
from srrgan_jax.evaluation.ranking import GeneratorRunner
from srrgan_jax.evaluation.ranking import RankedCheckpoint
from srrgan_jax.evaluation.ranking import lpips_rank_checkpoints
from srrgan_jax.evaluation.ranking import non_dominated
from srrgan_jax.evaluation.ranking import resize_upscaler
from srrgan_jax.evaluation.report import Row
from srrgan_jax.evaluation.scoring import EvaluationError
from srrgan_jax.evaluation.scoring import Scorer
from srrgan_jax.evaluation.scoring import evaluate_method
from srrgan_jax.evaluation.scoring import load_test_set
from srrgan_jax.evaluation.scoring import make_protocol
from srrgan_jax.evaluation.scoring import require_single_host


def evaluate_run(workdir, test_dir, *, out_dir=None, full_images: bool = False,
                 crop_size: int = 0, y_channel: bool = False, crop_border: int = -1,
                 use_ema: bool = True, lpips_file: str = '',
                 num_figure_images: int = 3, interpolation_steps: int = 0,
                 log: Callable[[str], None] = print) -> dict:
  """LPIPS ranking + comparison table + plots for a training run; returns the report.

  Writes into `out_dir` (default workdir/eval): ranking.json, results.{md,json,csv},
  perception_distortion.png, comparison.png; records the selected model in the run.
  interpolation_steps: N > 1 also scores the network interpolation at N evenly
  spaced alphas in [0, 1] (report['interpolation']); 0 does not.
  """
  require_single_host()
  workdir = Path(workdir)
  config = run_dir.read_config(workdir)
  if lpips_file:
    config.weights.lpips_file = lpips_file
  protocol = make_protocol(config, full_images=full_images, crop_size=crop_size,
                           y_channel=y_channel, crop_border=crop_border,
                           use_ema=use_ema)
  has_checkpoints = {p: bool(run_dir.list_checkpoints(workdir, p)) for p in run_dir.PHASES}
  if not any(has_checkpoints.values()):
    raise EvaluationError(
        f'{workdir}: no checkpoints under {workdir / "checkpoints"}/phase{{1,2,3}}; '
        'train first (python train.py --workdir ...) or pass the run directory that '
        'holds them.')
  alphas = []
  if interpolation_steps:  # Both checked before any work.
    alphas = interpolation.alphas(interpolation_steps)
    interpolation.find_endpoints(workdir)
  lpips_params = perceptual.load_lpips_params(config)  # Fails early if missing.
  out_dir = Path(out_dir) if out_dir else workdir / 'eval'
  test_set = load_test_set(test_dir, config, protocol)
  log(f'Evaluating {workdir} on {len(test_set)} images of {test_dir}')
  for line in protocol.describe(config):
    log(f'  {line}')

  scorer = Scorer(lpips_params, protocol)
  runner = GeneratorRunner(config, protocol)
  batch_size = config.data.eval_batch_size
  keep = plots.figure_indices(test_set, num_figure_images)
  members = population.members(config)
  rows = []
  for method in ('bilinear', 'bicubic'):
    result = evaluate_method(resize_upscaler(method, config.scale), test_set, scorer,
                             batch_size=batch_size, keep=keep)
    rows.append(Row(method, method.capitalize(), '', None, result))

  for phase, key, title in ((1, 'phase1_best', 'U-Net (MAE)'),
                            (2, 'phase2_best', 'U-Net (Perceptual)')):
    label = f'{title}, phase-{phase} best'
    if population.holds_members(config, phase):
      log(f'  (phase {phase}: one model per member; row "{label}" left out)')
      continue
    best = run_dir.best_checkpoint(workdir, phase)
    if best is None:
      log(f'  (no phase-{phase} checkpoint: row "{label}" left out)')
      continue
    step, path = best
    params = runner.load(workdir, phase, step)
    result = evaluate_method(runner.upscaler(params), test_set, scorer,
                             batch_size=batch_size, keep=keep)
    del params
    rows.append(Row(key, label, str(path), int(step), result, title=title))

  ranking = []
  if has_checkpoints[3]:
    log(f'LPIPS ranking of the phase-3 checkpoints ({"EMA" if use_ema else "raw"} '
        'weights):')
    ranking = lpips_rank_checkpoints(workdir, test_set, runner, scorer,
                                     batch_size=batch_size, keep=keep, members=members,
                                     log=log)
    best = ranking[0]
    if members:
      rows += _member_rows(ranking, members)
    else:
      rows.append(Row('srrgan', 'SRRGAN, LPIPS-selected', best.path, best.step,
                      best.result, title='SRRGAN'))
  else:
    log('  (no phase-3 checkpoints: nothing to rank; row "SRRGAN" left out)')

  curve = None
  if alphas:
    ends = interpolation.find_endpoints(workdir, phase3_step=ranking[0].step)
    member = ranking[0].member
    log(f'Network interpolation: phase-2 best (step {ends.phase2[0]}) -> selected GAN '
        f'(step {ends.phase3[0]}{"" if member is None else f", member {member}"}):')
    curve_rows = _interpolation_rows(workdir, ends, alphas, runner, test_set, scorer,
                                     member=member, batch_size=batch_size, log=log)
    rows += curve_rows
    curve = {**ends.as_dict(), 'member': member, 'points': [
        {'alpha': row.details['alpha'], **row.result.means} for row in curve_rows]}

  report = report_lib.build_report(config, protocol, test_set, rows, ranking,
                                   workdir=workdir)
  if curve:
    report['interpolation'] = curve
  if members and ranking:
    report['members'] = [{'member': m.index, 'name': m.name, **m.values} for m in members]
    report['frontier'] = [e.summary() for e in non_dominated(ranking)]
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = report_lib.write_report(report, out_dir)
  if ranking:
    paths['ranking'] = report_lib.write_ranking(report, out_dir / 'ranking.json')
    log(report_lib.format_ranking(ranking))
    selected = ranking[0]
    means = selected.means
    info = {
        'criterion': 'lowest mean LPIPS', 'use_ema': protocol.use_ema,
        'lpips': means['lpips'],
        'psnr': means['psnr'], 'ssim': means['ssim'], 'mae': means['mae'],
        'test_dir': str(test_dir), 'num_images': len(test_set),
        'protocol': protocol.as_dict(), 'ranking': str(out_dir / 'ranking.json')}
    which = ''
    if members:  # Each member's own best too: infer.py --member K uses it.
      info['member_name'] = members[selected.member].name
      info['member_bests'] = [
          {'member': e.member, 'name': members[e.member].name, 'step': e.step,
           'lpips': e.means['lpips']} for e in _member_bests(ranking)]
      which = f' member {selected.member} ({info["member_name"]})'
    run_dir.write_selected(workdir, 3, selected.step, info, member=selected.member)
    log(f'Selected model: phase 3 step {selected.step}{which} (LPIPS '
        f'{means["lpips"]:.4f}); recorded in {workdir} for infer.py.')
  paths['perception_distortion'] = plots.plot_perception_distortion(
      rows, ranking, out_dir / 'perception_distortion.png',
      member_names={m.index: m.name for m in members})
  if keep:
    paths['comparison'] = plots.plot_comparison(test_set, rows, keep,
                                                out_dir / 'comparison.png')
  log(report_lib.format_table(report))
  log('Written: ' + ', '.join(str(p) for p in paths.values()))
  report['files'] = {k: str(v) for k, v in paths.items()}
  return report


def _member_bests(ranking: list[RankedCheckpoint]) -> list[RankedCheckpoint]:
  """Each member's LPIPS-best checkpoint, by member index."""
  bests = {}
  for entry in ranking:  # Best first.
    bests.setdefault(entry.member, entry)
  return [bests[k] for k in sorted(bests)]


def _member_rows(ranking: list[RankedCheckpoint], members) -> list[Row]:
  """A table row per population member: its LPIPS-best checkpoint and its weights."""
  rows = []
  for entry in _member_bests(ranking):
    member = members[entry.member]
    selected = ', LPIPS-selected' if entry.member == ranking[0].member else ''
    title = f'Member {member.index}: {member.name}'
    rows.append(Row(f'member_{member.index}', title + selected, entry.path, entry.step,
                    entry.result, details={'member': member.index, 'weights': member.name,
                                           **member.values}, title=title))
  return rows


def _interpolation_rows(workdir, ends: interpolation.Endpoints, alphas, runner, test_set,
                        scorer, *, member, batch_size: int,
                        log: Callable[[str], None]) -> list[Row]:
  """A table row per alpha of the network interpolation between `ends` (of `member`)."""
  phase2 = runner.load(workdir, 2, ends.phase2[0])
  phase3 = runner.load(workdir, 3, ends.phase3[0], member)
  rows = []
  for alpha in alphas:
    result = evaluate_method(runner.upscaler(interpolation.blend(phase2, phase3, alpha)),
                             test_set, scorer, batch_size=batch_size)
    means = result.means
    log(f'  alpha {alpha:.3g}: LPIPS {means["lpips"]:.4f}  PSNR {means["psnr"]:.3f}  '
        f'SSIM {means["ssim"]:.4f}')
    rows.append(Row(f'interpolation_{alpha:g}', f'Interpolation, alpha {alpha:g}', '', None,
                    result, details={'alpha': alpha}))
  return rows
