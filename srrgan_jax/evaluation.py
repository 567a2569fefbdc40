"""Evaluation: LPIPS ranking of GAN checkpoints, the comparison table, plots, folder scoring.

SPEC "Model selection and evaluation": every phase-3 checkpoint's generator is
scored by mean LPIPS on a test folder (deterministic degradation); the lowest wins
and becomes the run's selected model (`checkpoints.write_selected`). The comparison
table then reports PSNR, SSIM, MAE and LPIPS for bilinear and bicubic upsampling of
the degraded input, the phase-1 best, the phase-2 best and the selected GAN
generator. The protocol (crops or full images, RGB or Y, border crop, EMA or raw
weights, ...) is written next to every set of numbers.

One generator program is compiled per run and reused for every checkpoint (the
parameters are an argument of the jitted function); checkpoints are loaded one at
a time and dropped after scoring, so memory holds one set of weights.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from srrgan_jax import augment
from srrgan_jax import errors
from srrgan_jax import eval_sets
from srrgan_jax import image_io
from srrgan_jax import metrics

METRIC_NAMES = ('psnr', 'ssim', 'mae', 'lpips')
METRIC_TITLES = {'psnr': 'PSNR (dB)', 'ssim': 'SSIM', 'mae': 'MAE', 'lpips': 'LPIPS'}
# Which direction is better, for the printed tables.
METRIC_HIGHER_IS_BETTER = {'psnr': True, 'ssim': True, 'mae': False, 'lpips': False}


class EvaluationError(errors.UserError, ValueError):
  """The evaluation inputs (run dir, test folder, images) cannot be evaluated."""


@dataclasses.dataclass(frozen=True)
class Protocol:
  """How images are prepared and measured; written next to every result."""
  crop_size: int  # HR centre crop side; 0 = full images with tiled inference.
  y_channel: bool  # PSNR/SSIM on BT.601 luma instead of RGB.
  crop_border: int  # Pixels dropped on each side before PSNR/SSIM.
  use_ema: bool = True  # EMA generator weights (False: raw weights).
  tile: int = 128  # Full images: LR tile side.
  overlap: int = 32  # Full images: LR tile overlap.
  tile_batch_size: int = 16  # Full images: tiles per forward call.

  @property
  def full_images(self) -> bool:
    return self.crop_size == 0

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)

  def describe(self, config: Optional[ml_collections.ConfigDict] = None) -> list[str]:
    """One line per convention, for the Markdown report and the console."""
    if self.full_images:
      images = (f'full images; generator run on LR tiles of {self.tile}px with '
                f'{self.overlap}px overlap, Hann-blended')
    else:
      images = (f'{self.crop_size}x{self.crop_size} HR centre crops '
                '(the original SRRGAN protocol)')
    lines = [f'Images: {images}.']
    if config is not None:
      g = config.degradation
      lines.append(
          f'LR input: x{config.scale} deterministic degradation (Gaussian blur '
          f'{g.eval_blur_kernel_size}x{g.eval_blur_kernel_size} sigma '
          f'{g.eval_blur_sigma:g}, {g.eval_resize_method} downsampling, Gaussian '
          f'noise std {g.eval_noise_std * 255:g}/255 seeded per image, JPEG quality '
          f'{g.eval_jpeg_quality}).')
    channel = ('Y channel (ITU-R BT.601: Y = 16/255 + (65.481 R + 128.553 G + '
               '24.966 B)/255, as BasicSR)' if self.y_channel else 'RGB')
    lines += [
        f'PSNR/SSIM: on {channel} in [0, 1] (PSNR max value 1.0), '
        f'{self.crop_border} border pixels cropped on each side; SSIM with an '
        '11x11 Gaussian window (sigma 1.5, K1 0.01, K2 0.03; = skimage '
        'gaussian_weights=True, use_sample_covariance=False).',
        'MAE: mean absolute error on the whole RGB image in [-1, 1] (as the '
        'original table).',
        'LPIPS: VGG16 backbone, v0.1 linear heads, whole RGB image in [-1, 1].',
        'SR outputs are scored as floats clipped to [-1, 1] (not quantised to 8 bit); '
        'means are over images.',
        'Bilinear/bicubic: jax.image.resize of the degraded LR (half-pixel centres, '
        'Keys cubic a=-0.5, as tf.image.resize).',
        f'Generator weights: {"EMA" if self.use_ema else "raw (not EMA)"}.',
    ]
    return lines


def make_protocol(config: ml_collections.ConfigDict, *, full_images: bool = False,
                  crop_size: int = 0, y_channel: bool = False, crop_border: int = -1,
                  use_ema: bool = True) -> Protocol:
  """The protocol from command-line choices; defaults follow the original system.

  crop_size 0 means `eval_sets.eval_crop_size(config)` (the validation crop);
  crop_border -1 means the scale.
  """
  if full_images:
    crop_size = 0
  else:
    try:
      crop_size = eval_sets.eval_crop_size(config, crop_size)
    except ValueError as error:
      raise EvaluationError(str(error)) from None
  if crop_border < 0:
    crop_border = config.scale
  inference = config.inference
  return Protocol(crop_size=crop_size, y_channel=y_channel, crop_border=crop_border,
                  use_ema=use_ema, tile=inference.tile, overlap=inference.overlap,
                  tile_batch_size=inference.batch_size)


def require_single_host() -> None:
  """Evaluation runs on one host; several processes would race on the outputs."""
  if jax.process_count() > 1:
    raise EvaluationError(
        f'evaluation was launched on {jax.process_count()} processes; it runs on a '
        'single host. Start eval.py as one process (no jax.distributed / SLURM '
        'srun with several tasks).')


# ---------------------------------------------------------------------------
# Scoring.


@functools.partial(jax.jit, static_argnames=('crop_border', 'y_channel'))
def _score_batch(lpips_params, sr_BHWC, hr_BHWC, *, crop_border, y_channel):
  """Per-image PSNR, SSIM, MAE, LPIPS of SR vs HR, both in [-1, 1]."""
  from srrgan_jax import perceptual  # Late import: perceptual pulls in the nets.
  sr_BHWC = jnp.clip(sr_BHWC, -1.0, 1.0)
  sr01, hr01 = (sr_BHWC + 1.0) / 2.0, (hr_BHWC + 1.0) / 2.0
  return {
      'psnr': metrics.psnr(sr01, hr01, crop_border=crop_border, y_channel=y_channel),
      'ssim': metrics.ssim(sr01, hr01, crop_border=crop_border, y_channel=y_channel),
      'mae': metrics.mae(sr_BHWC, hr_BHWC),
      'lpips': perceptual.lpips(lpips_params, sr_BHWC, hr_BHWC),
  }


class Scorer:
  """Scores SR batches against HR batches with one compiled program per shape."""

  def __init__(self, lpips_params, protocol: Protocol):
    self.lpips_params = lpips_params
    self.protocol = protocol

  def __call__(self, sr_BHWC, hr_BHWC) -> dict[str, jax.Array]:
    """Per-image scores as (B,) device arrays (read back by the caller, late)."""
    return _score_batch(self.lpips_params, jnp.asarray(sr_BHWC, jnp.float32),
                        jnp.asarray(hr_BHWC, jnp.float32),
                        crop_border=self.protocol.crop_border,
                        y_channel=self.protocol.y_channel)


def summarize(per_image: dict[str, np.ndarray]) -> dict[str, float]:
  """Means over images of each metric."""
  return {name: float(np.mean(per_image[name])) for name in METRIC_NAMES}


# ---------------------------------------------------------------------------
# Test sets and upscalers.


@dataclasses.dataclass
class TestSet:
  """Degraded LR inputs and HR targets in [-1, 1], one entry per test image."""
  folder: str
  names: list[str]
  lr: list[np.ndarray]  # (h, w, 3) each.
  hr: list[np.ndarray]  # (h*scale, w*scale, 3) each.

  def __len__(self) -> int:
    return len(self.names)


def load_test_set(folder, config: ml_collections.ConfigDict,
                  protocol: Protocol) -> TestSet:
  """Centre crops (or full images) of a test folder with the deterministic degradation."""
  folder = str(folder)
  try:
    image_io.list_images(folder)
  except FileNotFoundError as e:
    raise EvaluationError(
        f'{e} Point --test_dir at a folder of ground-truth HR images (e.g. '
        'BSDS100); the LR inputs are made from them with the deterministic '
        'degradation.') from e
  try:
    loaded = eval_sets.load_eval_set(
        folder, config, crop=None if protocol.full_images else protocol.crop_size)
  except ValueError as e:  # Undecodable or too-small images, named by the loader.
    raise EvaluationError(f'test folder {folder}: {e}') from e
  scale = config.scale
  lr_images, hr_images = [], []
  for lr, hr in zip(loaded['lr'], loaded['hr']):
    lr = np.asarray(lr, np.float32)
    # Odd HR sizes: the LR is floor(H/scale), so only scale * LR of the HR is comparable.
    hr = np.asarray(hr, np.float32)[:lr.shape[0] * scale, :lr.shape[1] * scale]
    lr_images.append(lr)
    hr_images.append(hr)
  return TestSet(folder, [str(n) for n in loaded['names']], lr_images, hr_images)


def resize_upscaler(method: str, scale: int) -> Callable:
  """Bilinear/bicubic upsampling of LR batches in [-1, 1] (the classic baselines)."""

  @jax.jit
  def upscale(lr_BHWC):
    b, h, w, c = lr_BHWC.shape
    return jnp.clip(jax.image.resize(lr_BHWC, (b, h * scale, w * scale, c), method),
                    -1.0, 1.0)

  return upscale


class GeneratorRunner:
  """The generator compiled once; parameters of each checkpoint are passed in."""

  def __init__(self, config: ml_collections.ConfigDict, protocol: Protocol):
    from srrgan_jax import models
    self.config = config
    self.protocol = protocol
    self.model = models.build_generator(config)
    model = self.model
    self.apply = jax.jit(
        lambda params, lr_BHWC: model.apply({'params': params}, lr_BHWC, train=False))
    lr_side = (protocol.crop_size // config.scale if protocol.crop_size
               else protocol.tile)
    shape = (1, lr_side, lr_side, 3)
    self.expected_shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros(shape, jnp.float32)))['params']

  def check_params(self, params, where: str) -> None:
    """Raises EvaluationError naming the first parameter that does not fit."""
    expected = dict(_flat_shapes(self.expected_shapes))
    found = dict(_flat_shapes(params))
    problems = []
    for name in sorted(set(expected) | set(found)):
      if name not in found:
        problems.append(f'{name} missing')
      elif name not in expected:
        problems.append(f'{name} unexpected')
      elif expected[name] != found[name]:
        problems.append(f'{name} has shape {found[name]}, expected {expected[name]}')
    if problems:
      m = self.config.model
      raise EvaluationError(
          f'{where}: the checkpoint\'s generator does not match the architecture '
          f'of this run\'s config (stem {m.stem_channels}, encoder '
          f'{tuple(m.encoder_channels)}, decoder {tuple(m.decoder_channels)}, scale '
          f'{self.config.scale}): {len(problems)} mismatched parameters, e.g. '
          f'{"; ".join(problems[:3])}. Evaluate it with the run directory (and '
          'config.json) it was trained with.')

  def upscaler(self, params) -> Callable:
    """lr_BHWC -> sr_BHWC for these weights (tiled per image for full images)."""
    if not self.protocol.full_images:
      return lambda lr_BHWC: self.apply(params, lr_BHWC)
    from srrgan_jax import tiling
    p = self.protocol

    def upscale_full(lr_BHWC):
      outputs = [
          tiling.upscale_tiled(lambda tiles: self.apply(params, tiles), np.asarray(lr),
                               scale=self.config.scale, tile=p.tile,
                               overlap=p.overlap, batch_size=p.tile_batch_size)
          for lr in lr_BHWC
      ]
      return np.stack([np.asarray(o, np.float32) for o in outputs])

    return upscale_full


def _flat_shapes(tree) -> list[tuple[str, tuple]]:
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return [(jax.tree_util.keystr(path, simple=True, separator='/'),
           tuple(np.shape(leaf))) for path, leaf in leaves]


@dataclasses.dataclass
class MethodResult:
  """Per-image scores of one upscaling method and the outputs kept for figures."""
  per_image: dict[str, np.ndarray]
  kept_outputs: dict[int, np.ndarray]  # test index -> SR (h, w, 3) in [-1, 1].

  @property
  def means(self) -> dict[str, float]:
    return summarize(self.per_image)


def evaluate_method(upscale: Callable, test_set: TestSet, scorer: Scorer, *,
                    batch_size: int, keep: Sequence[int] = ()) -> MethodResult:
  """Upscales every test image and scores it; keeps the outputs listed in `keep`."""
  batches, kept = [], {}
  count = len(test_set)
  step = min(batch_size, count) if not scorer.protocol.full_images else 1
  for start in range(0, count, step):
    indices = list(range(start, min(start + step, count)))
    # Repeat the last image so every batch has the same shape (one compile).
    padded = indices + [indices[-1]] * (step - len(indices))
    lr_BHWC = np.stack([test_set.lr[i] for i in padded])
    hr_BHWC = np.stack([test_set.hr[i] for i in padded])
    sr_BHWC = upscale(lr_BHWC)
    batches.append((len(indices), scorer(sr_BHWC, hr_BHWC)))
    for row, index in enumerate(indices):
      if index in keep:
        kept[index] = np.asarray(sr_BHWC[row], np.float32)
  # Read back only now, so the device never waits for the host between batches.
  per_image = {name: np.concatenate([np.asarray(scores[name][:n], np.float64)
                                     for n, scores in batches])
               for name in METRIC_NAMES}
  return MethodResult(per_image, kept)


# ---------------------------------------------------------------------------
# LPIPS ranking and the comparison table.


def lpips_rank_checkpoints(workdir, test_set: TestSet, runner: GeneratorRunner,
                           scorer: Scorer, *, batch_size: int,
                           keep: Sequence[int] = (),
                           log: Callable[[str], None] = print) -> list[dict]:
  """Scores every phase-3 checkpoint; returns entries sorted by mean LPIPS (best first).

  Each entry: phase, step, path, the four mean metrics, per_image scores and (for
  the images in `keep`) the SR outputs under 'kept_outputs'.
  """
  from srrgan_jax import checkpoints
  found = checkpoints.list_checkpoints(workdir, 3)
  entries = []
  for number, (step, path) in enumerate(found, start=1):
    params = load_checked_generator(workdir, 3, step, runner)
    result = evaluate_method(runner.upscaler(params), test_set, scorer,
                             batch_size=batch_size, keep=keep)
    del params  # Stream: only one checkpoint's weights alive at a time.
    entry = dict(phase=3, step=int(step), path=str(path), **result.means,
                 per_image=result.per_image, kept_outputs=result.kept_outputs)
    entries.append(entry)
    log(f'  [{number}/{len(found)}] phase 3 step {step}: LPIPS {entry["lpips"]:.4f}  '
        f'PSNR {entry["psnr"]:.3f}  SSIM {entry["ssim"]:.4f}')
  entries.sort(key=lambda e: (e['lpips'], e['step']))
  for rank, entry in enumerate(entries, start=1):
    entry['rank'] = rank
  return entries


def format_ranking(entries: Sequence[dict]) -> str:
  """The full ranking as a fixed-width table (best LPIPS first)."""
  lines = [f'{"rank":>4}  {"step":>8}  {"LPIPS":>7}  {"PSNR":>8}  {"SSIM":>7}  '
           f'{"MAE":>7}']
  for e in entries:
    lines.append(f'{e["rank"]:>4}  {e["step"]:>8}  {e["lpips"]:7.4f}  '
                 f'{e["psnr"]:8.4f}  {e["ssim"]:7.4f}  {e["mae"]:7.4f}')
  return '\n'.join(lines)


def _public(entry: dict) -> dict:
  """A ranking entry without its arrays, for JSON."""
  return {k: v for k, v in entry.items() if k not in ('per_image', 'kept_outputs')}


def _per_image_json(names: Sequence[str], per_image: dict[str, np.ndarray]) -> dict:
  return {name: {m: float(per_image[m][i]) for m in METRIC_NAMES}
          for i, name in enumerate(names)}


@dataclasses.dataclass
class Row:
  """One line of the comparison table."""
  key: str  # Stable identifier: bilinear, bicubic, phase1_best, phase2_best, srrgan.
  label: str  # Human title as in the original table.
  checkpoint: str  # Checkpoint path ('' for the baselines).
  step: Optional[int]
  result: MethodResult


def load_run_config(workdir) -> ml_collections.ConfigDict:
  """The configuration a run was trained with (workdir/config.json, else a checkpoint's)."""
  from srrgan_jax import checkpoints
  workdir = Path(workdir)
  if not workdir.is_dir():
    raise EvaluationError(f'{workdir}: run directory does not exist; pass the '
                          '--workdir of a training run.')
  path = workdir / 'config.json'
  if path.is_file():
    return checkpoints.config_from_dict(json.loads(path.read_text()))
  for phase in (3, 2, 1):
    found = checkpoints.list_checkpoints(workdir, phase)
    if found:
      config, _ = checkpoints.load_generator(found[-1][1])
      return config
  raise EvaluationError(
      f'{workdir}: not a training run (no config.json and no checkpoints under '
      f'{workdir / "checkpoints"}/phase{{1,2,3}}); train first (python train.py '
      '--workdir ...) or pass the run directory that holds them.')


def load_checked_generator(workdir, phase: int, step: int, runner: GeneratorRunner):
  """Generator params of one checkpoint, refused unless it fits the run's architecture."""
  from srrgan_jax import checkpoints
  saved_config, params = checkpoints.load_generator(
      workdir, phase=phase, step=step, use_ema=runner.protocol.use_ema)
  where = checkpoints.phase_dir(workdir, phase) / str(step)
  diffs = checkpoints.architecture_differences(
      checkpoints.config_to_dict(saved_config),
      checkpoints.config_to_dict(runner.config), with_disc=False)
  if diffs:
    raise EvaluationError(
        f'{where}: this checkpoint was made with another architecture than the run '
        f'({checkpoints.describe_differences(diffs)}; "config" = {workdir}/config.json). '
        'It does not belong to this run: move it out of the run directory, or '
        'evaluate it with the run directory it was trained in.')
  runner.check_params(params, str(where))
  return params


def evaluate_run(workdir, test_dir, *, out_dir=None, full_images: bool = False,
                 crop_size: int = 0, y_channel: bool = False, crop_border: int = -1,
                 use_ema: bool = True, lpips_file: str = '',
                 num_figure_images: int = 3,
                 log: Callable[[str], None] = print) -> dict:
  """LPIPS ranking + comparison table + plots for a training run; returns the report.

  Writes into `out_dir` (default workdir/eval): ranking.json, results.{md,json,csv},
  perception_distortion.png, comparison.png; records the selected model in the run.
  """
  from srrgan_jax import checkpoints
  from srrgan_jax import perceptual
  require_single_host()
  workdir = Path(workdir)
  config = load_run_config(workdir)
  if lpips_file:
    config.weights.lpips_file = lpips_file
  protocol = make_protocol(config, full_images=full_images, crop_size=crop_size,
                           y_channel=y_channel, crop_border=crop_border,
                           use_ema=use_ema)
  has_checkpoints = {p: bool(checkpoints.list_checkpoints(workdir, p)) for p in (1, 2, 3)}
  if not any(has_checkpoints.values()):
    raise EvaluationError(
        f'{workdir}: no checkpoints under {workdir / "checkpoints"}/phase{{1,2,3}}; '
        'train first (python train.py --workdir ...) or pass the run directory that '
        'holds them.')
  lpips_params = perceptual.load_lpips_params(config)  # Fails early if missing.
  out_dir = Path(out_dir) if out_dir else workdir / 'eval'
  test_set = load_test_set(test_dir, config, protocol)
  log(f'Evaluating {workdir} on {len(test_set)} images of {test_dir}')
  for line in protocol.describe(config):
    log(f'  {line}')

  scorer = Scorer(lpips_params, protocol)
  runner = GeneratorRunner(config, protocol)
  batch_size = config.data.eval_batch_size
  keep = figure_indices(test_set, num_figure_images)
  rows = []
  for method in ('bilinear', 'bicubic'):
    result = evaluate_method(resize_upscaler(method, config.scale), test_set, scorer,
                             batch_size=batch_size, keep=keep)
    rows.append(Row(method, method.capitalize(), '', None, result))

  for phase, key, label in ((1, 'phase1_best', 'U-Net (MAE), phase-1 best'),
                            (2, 'phase2_best', 'U-Net (Perceptual), phase-2 best')):
    best = checkpoints.best_checkpoint(workdir, phase)
    if best is None:
      log(f'  (no phase-{phase} checkpoint: row "{label}" left out)')
      continue
    step, path = best
    params = load_checked_generator(workdir, phase, step, runner)
    result = evaluate_method(runner.upscaler(params), test_set, scorer,
                             batch_size=batch_size, keep=keep)
    del params
    rows.append(Row(key, label, str(path), int(step), result))

  ranking = []
  if has_checkpoints[3]:
    log(f'LPIPS ranking of the phase-3 checkpoints ({"EMA" if use_ema else "raw"} '
        'weights):')
    ranking = lpips_rank_checkpoints(workdir, test_set, runner, scorer,
                                     batch_size=batch_size, keep=keep, log=log)
    best = ranking[0]
    rows.append(Row('srrgan', 'SRRGAN, LPIPS-selected', best['path'], best['step'],
                    MethodResult(best['per_image'], best['kept_outputs'])))
    for entry in ranking[1:]:
      entry['kept_outputs'] = {}  # Only the selected model's outputs are drawn.
  else:
    log('  (no phase-3 checkpoints: nothing to rank; row "SRRGAN" left out)')

  report = build_report(config, protocol, test_set, rows, ranking, workdir=workdir)
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = write_report(report, out_dir)
  if ranking:
    paths['ranking'] = write_ranking(report, out_dir / 'ranking.json')
    log(format_ranking(ranking))
    selected = ranking[0]
    checkpoints.write_selected(workdir, 3, selected['step'], {
        'criterion': 'lowest mean LPIPS', 'use_ema': protocol.use_ema,
        'lpips': selected['lpips'],
        'psnr': selected['psnr'], 'ssim': selected['ssim'], 'mae': selected['mae'],
        'test_dir': str(test_dir), 'num_images': len(test_set),
        'protocol': protocol.as_dict(), 'ranking': str(out_dir / 'ranking.json')})
    log(f'Selected model: phase 3 step {selected["step"]} (LPIPS '
        f'{selected["lpips"]:.4f}); recorded in {workdir} for infer.py.')
  paths['perception_distortion'] = plot_perception_distortion(
      rows, ranking, out_dir / 'perception_distortion.png')
  if keep:
    paths['comparison'] = plot_comparison(test_set, rows, keep,
                                          out_dir / 'comparison.png')
  log(format_table(report))
  log('Written: ' + ', '.join(str(p) for p in paths.values()))
  report['files'] = {k: str(v) for k, v in paths.items()}
  return report


def build_report(config, protocol: Protocol, test_set: TestSet, rows: Sequence[Row],
                 ranking: Sequence[dict], *, workdir=None) -> dict:
  """Everything the outputs hold, as plain JSON-able data."""
  return {
      'run_dir': str(workdir) if workdir is not None else '',
      'test_dir': test_set.folder,
      'num_images': len(test_set),
      'scale': int(config.scale),
      'protocol': protocol.as_dict(),
      'protocol_text': protocol.describe(config),
      'rows': [dict(key=r.key, label=r.label, checkpoint=r.checkpoint, step=r.step,
                    **r.result.means) for r in rows],
      'per_image': {r.key: _per_image_json(test_set.names, r.result.per_image)
                    for r in rows},
      'ranking': [dict(_public(e), per_image=_per_image_json(test_set.names,
                                                              e['per_image']))
                  for e in ranking],
  }


def _best_marks(rows: Sequence[dict]) -> dict[str, float]:
  best = {}
  for name in METRIC_NAMES:
    values = [r[name] for r in rows]
    best[name] = max(values) if METRIC_HIGHER_IS_BETTER[name] else min(values)
  return best


def format_table(report: dict) -> str:
  """The comparison table for the console."""
  header = f'{"":34}' + ''.join(f'{METRIC_TITLES[m]:>11}' for m in METRIC_NAMES)
  lines = [header]
  for row in report['rows']:
    lines.append(f'{row["label"]:34}' + ''.join(
        f'{row[m]:11.4f}' for m in METRIC_NAMES))
  return '\n'.join(lines)


def format_markdown(report: dict) -> str:
  """results.md: the table, the protocol beside it, and the ranking."""
  rows = report['rows']
  best = _best_marks(rows) if rows else {}
  out = [f'# Evaluation of {report["run_dir"] or "SR outputs"}', '',
         f'Test images: {report["num_images"]} from `{report["test_dir"]}`, '
         f'x{report["scale"]}.', '']
  out.append('| Model | Checkpoint | ' + ' | '.join(
      METRIC_TITLES[m] + (' ↑' if METRIC_HIGHER_IS_BETTER[m] else ' ↓')
      for m in METRIC_NAMES) + ' |')
  out.append('|---|---|' + '---:|' * len(METRIC_NAMES))
  for row in rows:
    cells = []
    for m in METRIC_NAMES:
      text = f'{row[m]:.4f}'
      cells.append(f'**{text}**' if row[m] == best[m] else text)
    step = '' if row['step'] is None else f'step {row["step"]}'
    out.append(f'| {row["label"]} | {step} | ' + ' | '.join(cells) + ' |')
  out += ['', 'Best value of each column in bold.', '', '## Protocol', '']
  out += [f'- {line}' for line in report['protocol_text']]
  if report['ranking']:
    out += ['', '## LPIPS ranking of the phase-3 checkpoints', '',
            '| Rank | Step | LPIPS | PSNR | SSIM | MAE |', '|---:|---:|---:|---:|---:|---:|']
    for e in report['ranking']:
      out.append(f'| {e["rank"]} | {e["step"]} | {e["lpips"]:.4f} | {e["psnr"]:.4f} '
                 f'| {e["ssim"]:.4f} | {e["mae"]:.4f} |')
    out += ['', f'Selected (lowest LPIPS): step {report["ranking"][0]["step"]}.']
  return '\n'.join(out) + '\n'


def _protocol_columns(report: dict) -> dict:
  p = report['protocol']
  return {
      'images': 'full (tiled)' if p['crop_size'] == 0 else f'centre crop {p["crop_size"]}',
      'channel': 'Y (BT.601)' if p['y_channel'] else 'RGB',
      'crop_border': p['crop_border'],
      'weights': 'EMA' if p['use_ema'] else 'raw',
      'num_images': report['num_images'],
      'test_dir': report['test_dir'],
  }


def write_report(report: dict, out_dir: Path) -> dict[str, Path]:
  """results.md, results.json, results.csv (protocol columns beside the numbers)."""
  paths = {'markdown': out_dir / 'results.md', 'json': out_dir / 'results.json',
           'csv': out_dir / 'results.csv'}
  paths['markdown'].write_text(format_markdown(report))
  paths['json'].write_text(json.dumps(report, indent=2, allow_nan=True) + '\n')
  protocol = _protocol_columns(report)
  with open(paths['csv'], 'w', newline='') as f:
    fields = ['key', 'label', 'step', 'checkpoint', *METRIC_NAMES, *protocol]
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    for row in report['rows']:
      writer.writerow({**{k: row[k] for k in fields if k in row}, **protocol})
  return paths


def write_ranking(report: dict, path: Path) -> Path:
  """ranking.json: every phase-3 checkpoint with its scores, best first."""
  ranking = report['ranking']
  path.write_text(json.dumps({
      'criterion': 'lowest mean LPIPS',
      'selected': {k: ranking[0][k] for k in ('phase', 'step', 'path', 'lpips')},
      'test_dir': report['test_dir'], 'num_images': report['num_images'],
      'protocol': report['protocol'], 'protocol_text': report['protocol_text'],
      'ranking': ranking,
  }, indent=2) + '\n')
  return path


# ---------------------------------------------------------------------------
# Plots.


def _pyplot():
  import matplotlib
  matplotlib.use('Agg')  # Files only; works without a display.
  import matplotlib.pyplot as plt
  return plt


def plot_perception_distortion(rows: Sequence[Row], ranking: Sequence[dict],
                               path: Path) -> Path:
  """PSNR vs LPIPS: one point per phase-3 checkpoint and per table row."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
  if ranking:
    lp = [e['lpips'] for e in ranking]
    ps = [e['psnr'] for e in ranking]
    ax.scatter(lp, ps, s=18, c='tab:blue', alpha=0.6, label='phase-3 checkpoints')
    for e in ranking:
      ax.annotate(str(e['step']), (e['lpips'], e['psnr']), fontsize=6,
                  xytext=(3, 2), textcoords='offset points', color='tab:blue')
  markers = {'bilinear': ('s', 'tab:gray'), 'bicubic': ('D', 'tab:brown'),
             'phase1_best': ('o', 'tab:green'), 'phase2_best': ('^', 'tab:orange'),
             'srrgan': ('*', 'tab:red')}
  for row in rows:
    marker, colour = markers.get(row.key, ('x', 'black'))
    means = row.result.means
    ax.scatter([means['lpips']], [means['psnr']], marker=marker, c=colour,
               s=110 if row.key == 'srrgan' else 50, label=row.label,
               edgecolors='black', linewidths=0.5, zorder=3)
  ax.set_xlabel('LPIPS (lower = better perceptual quality)')
  ax.set_ylabel('PSNR dB (higher = less distortion)')
  ax.set_title('Perception-distortion plane')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc='best')
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def figure_indices(test_set: TestSet, count: int) -> list[int]:
  """The first `count` test images (stable across runs) for the figure."""
  return list(range(min(count, len(test_set))))


def zoom_box(hr_HWC: np.ndarray, fraction: float = 0.25) -> tuple[int, int, int]:
  """(top, left, side) of the most detailed square patch: where zooming shows most."""
  height, width = hr_HWC.shape[:2]
  side = max(8, int(min(height, width) * fraction))
  gray = hr_HWC.mean(axis=2)
  detail = np.abs(np.diff(gray, axis=0))[:, :-1] + np.abs(np.diff(gray, axis=1))[:-1]
  best, best_score = (0, 0), -1.0
  stride = max(1, side // 4)
  for top in range(0, height - side + 1, stride):
    for left in range(0, width - side + 1, stride):
      score = detail[top:top + side - 1, left:left + side - 1].sum()
      if score > best_score:
        best, best_score = (top, left), score
  return best[0], best[1], side


def _to_display(x_HWC: np.ndarray) -> np.ndarray:
  return np.clip((np.asarray(x_HWC, np.float32) + 1.0) / 2.0, 0.0, 1.0)


def plot_comparison(test_set: TestSet, rows: Sequence[Row], indices: Sequence[int],
                    path: Path) -> Path:
  """LR input | bilinear | each model | HR, with a zoomed patch row under each image."""
  plt = _pyplot()
  from matplotlib.patches import Rectangle
  shown = [r for r in rows if r.key != 'bicubic']
  columns = len(shown) + 2
  fig, axes = plt.subplots(2 * len(indices), columns,
                           figsize=(2.2 * columns, 4.4 * len(indices)), dpi=110,
                           squeeze=False)
  for n, index in enumerate(indices):
    hr = test_set.hr[index]
    scale = hr.shape[0] // test_set.lr[index].shape[0]
    lr_nearest = np.repeat(np.repeat(test_set.lr[index], scale, 0), scale, 1)
    panels = [('LR input', lr_nearest, None)]
    for r in shown:
      sr = r.result.kept_outputs[index]
      psnr = r.result.per_image['psnr'][index]
      lp = r.result.per_image['lpips'][index]
      panels.append((r.label.split(',')[0], sr, f'{psnr:.2f} dB / {lp:.3f}'))
    panels.append(('HR ground truth', hr, 'PSNR / LPIPS'))
    top, left, side = zoom_box(hr)
    for col, (title, image, subtitle) in enumerate(panels):
      full_ax, zoom_ax = axes[2 * n, col], axes[2 * n + 1, col]
      full_ax.imshow(_to_display(image), interpolation='nearest')
      full_ax.add_patch(Rectangle((left - 0.5, top - 0.5), side, side, fill=False,
                                  edgecolor='yellow', linewidth=1.0))
      full_ax.set_title(title if n == 0 else '', fontsize=8)
      zoom_ax.imshow(_to_display(image[top:top + side, left:left + side]),
                     interpolation='nearest')
      if subtitle:
        zoom_ax.set_xlabel(subtitle, fontsize=7)
      for ax in (full_ax, zoom_ax):
        ax.set_xticks([])
        ax.set_yticks([])
    axes[2 * n, 0].set_ylabel(test_set.names[index], fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


# ---------------------------------------------------------------------------
# Folder scoring: existing SR outputs against ground truths.


def _match_key(path: Path, root: Path) -> str:
  return str(path.relative_to(root).with_suffix(''))


def score_folders(sr_dir, hr_dir, *, config: Optional[ml_collections.ConfigDict] = None,
                  crop_size: int = 0, y_channel: bool = False, crop_border: int = -1,
                  log: Callable[[str], None] = print) -> dict:
  """PSNR, SSIM, MAE, LPIPS of each SR image vs the HR image of the same name.

  Files are matched by their path relative to the folder without the suffix (so
  `x.png` matches `x.jpg`); crop_size 0 scores full images, crop_border -1 means
  config.scale.
  """
  from configs import default
  from srrgan_jax import perceptual
  require_single_host()
  config = config or default.get_config()
  sr_dir, hr_dir = Path(sr_dir), Path(hr_dir)
  images = {}
  for role, folder in (('SR', sr_dir), ('HR', hr_dir)):
    try:
      images[role] = {_match_key(p, folder): p for p in image_io.list_images(folder)}
    except FileNotFoundError as e:
      raise EvaluationError(f'{e} Pass --{role.lower()}_dir pointing at the {role} '
                            'images.') from e
  pairs = sorted(set(images['SR']) & set(images['HR']))
  if not pairs:
    raise EvaluationError(
        f'no file names in common between {sr_dir} and {hr_dir} (e.g. SR '
        f'{sorted(images["SR"])[:3]} vs HR {sorted(images["HR"])[:3]}); SR outputs '
        'must be named like their ground truth (suffix may differ).')
  unmatched_hr = sorted(set(images['HR']) - set(images['SR']))
  if unmatched_hr:
    log(f'warning: {len(unmatched_hr)} HR images have no SR output and are not '
        f'scored: {", ".join(unmatched_hr[:5])}{" ..." if len(unmatched_hr) > 5 else ""}')
  protocol = Protocol(crop_size=crop_size, y_channel=y_channel,
                      crop_border=config.scale if crop_border < 0 else crop_border)
  lpips_params = perceptual.load_lpips_params(config)
  scorer = Scorer(lpips_params, protocol)
  per_image = {}
  for key in pairs:
    sr_path, hr_path = images['SR'][key], images['HR'][key]
    sr, hr = image_io.read_rgb(sr_path), image_io.read_rgb(hr_path)
    if sr.shape != hr.shape:
      raise EvaluationError(
          f'{sr_path} is {sr.shape[0]}x{sr.shape[1]} but its ground truth {hr_path} '
          f'is {hr.shape[0]}x{hr.shape[1]}; SR outputs must have the size of their '
          'ground truth (crop or re-run the upscaler).')
    if crop_size:
      try:
        sr = augment.center_crop(sr, crop_size, name=str(sr_path))
        hr = augment.center_crop(hr, crop_size, name=str(hr_path))
      except ValueError as e:
        raise EvaluationError(f'{e} (--crop_size; 0 scores full images)') from e
    scores = scorer(sr[None] * 2 - 1, hr[None] * 2 - 1)
    per_image[key] = {m: float(scores[m][0]) for m in METRIC_NAMES}
  means = {m: float(np.mean([s[m] for s in per_image.values()])) for m in METRIC_NAMES}
  lines = protocol.describe()
  lines = [line for line in lines if not line.startswith(('Bilinear', 'Generator'))]
  lines[0] = ('Images: full images as given.' if not crop_size else
              f'Images: {crop_size}x{crop_size} centre crops of SR and HR.')
  return {'sr_dir': str(sr_dir), 'hr_dir': str(hr_dir), 'num_images': len(pairs),
          'protocol': {'crop_size': crop_size, 'y_channel': y_channel,
                       'crop_border': protocol.crop_border},
          'protocol_text': lines, 'mean': means, 'per_image': per_image,
          'unmatched_hr': unmatched_hr}


def format_folder_scores(scores: dict) -> str:
  """Per-image and mean scores as a console table."""
  width = max([len('mean')] + [len(k) for k in scores['per_image']]) + 2
  header = f'{"image":{width}}' + ''.join(f'{METRIC_TITLES[m]:>11}' for m in METRIC_NAMES)
  lines = [header]
  for key, values in scores['per_image'].items():
    lines.append(f'{key:{width}}' + ''.join(f'{values[m]:11.4f}' for m in METRIC_NAMES))
  lines.append(f'{"mean":{width}}' + ''.join(
      f'{scores["mean"][m]:11.4f}' for m in METRIC_NAMES))
  return '\n'.join(lines + [''] + scores['protocol_text'])


def write_json(data: dict, path) -> Path:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(data, indent=2) + '\n')
  return path
