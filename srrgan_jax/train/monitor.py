"""Training logs and pictures: step metrics, TensorBoard events, CSV files, sample grids, plots.

Only process 0 writes (`enabled=False` elsewhere makes every call a no-op).
Per phase: `logs/phase{N}/events.out.tfevents.*`, `logs/phase{N}/train.csv`
(one row per logged step), `logs/phase{N}/val.csv` (one row per epoch);
`samples/phase{N}_epoch{E}.png`; `plots/phase{N}.png`.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import pathlib
import time
from typing import Callable, Mapping, Optional

import numpy as np

from srrgan_jax import files
from srrgan_jax import image_io
from srrgan_jax import models
from srrgan_jax import parallel

log = logging.getLogger(__name__)


class CsvLog:
  """An append-only CSV of metric rows keyed by a step-like column.

  On resume, rows beyond the resumed position (written after the last
  checkpoint of an interrupted run) are dropped so the file has no duplicates.
  """

  def __init__(self, path: pathlib.Path, key: str, keep_up_to: Optional[int]):
    self.path, self.key = path, key
    self.fields: Optional[list[str]] = None
    rows = []
    if path.is_file() and keep_up_to is not None:
      with path.open(newline='') as f:
        reader = csv.DictReader(f)
        self.fields = reader.fieldnames
        rows = [r for r in reader if int(float(r[key])) <= keep_up_to]
    kept = io.StringIO(newline='')
    if self.fields:
      writer = csv.DictWriter(kept, self.fields)
      writer.writeheader()
      writer.writerows(rows)
    files.write_atomic(path, kept.getvalue())  # A crash here keeps the old rows.

  def write(self, row: Mapping[str, float]) -> None:
    if self.fields is None:
      self.fields = list(row)
      with self.path.open('w', newline='') as f:
        csv.DictWriter(f, self.fields).writeheader()
    with self.path.open('a', newline='') as f:
      csv.DictWriter(f, self.fields, extrasaction='ignore').writerow(
          {k: _fmt(row.get(k, '')) for k in self.fields})


def _fmt(value):
  return f'{value:.7g}' if isinstance(value, float) else value


class EventLog:
  """Scalars and images as TensorBoard event files (no TensorFlow needed)."""

  def __init__(self, logdir: pathlib.Path):
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    self._event, self._summary = event_pb2.Event, summary_pb2.Summary
    self._writer = EventFileWriter(str(logdir))

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    summary = self._summary(value=[
        self._summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()])
    self._writer.add_event(self._event(wall_time=time.time(), step=step, summary=summary))

  def image(self, step: int, tag: str, rgb_HWC: np.ndarray) -> None:
    import cv2
    pixels = np.clip(np.round(rgb_HWC * 255.0), 0, 255).astype(np.uint8)
    ok, png = cv2.imencode('.png', pixels[:, :, ::-1])
    if not ok:
      return
    image = self._summary.Image(height=pixels.shape[0], width=pixels.shape[1],
                                colorspace=3, encoded_image_string=png.tobytes())
    summary = self._summary(value=[self._summary.Value(tag=tag, image=image)])
    self._writer.add_event(self._event(wall_time=time.time(), step=step, summary=summary))

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class PhaseMonitor:
  """Everything a phase writes for people to look at."""

  def __init__(self, workdir, phase: int, *, enabled: bool, resume_step: Optional[int],
               resume_epoch: Optional[int]):
    self.enabled, self.phase = enabled, phase
    self.workdir = pathlib.Path(workdir)
    self.logdir = self.workdir / 'logs' / f'phase{phase}'
    if not enabled:
      return
    self.logdir.mkdir(parents=True, exist_ok=True)
    self.events = EventLog(self.logdir)
    # A fresh phase (no resume) starts its CSVs empty.
    self.train_csv = CsvLog(self.logdir / 'train.csv', 'step',
                            resume_step if resume_step is not None else -1)
    self.val_csv = CsvLog(self.logdir / 'val.csv', 'epoch',
                          resume_epoch if resume_epoch is not None else -1)

  def train(self, step: int, values: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    self.events.scalars(step, {f'train/{k}': v for k, v in values.items()})
    self.train_csv.write({'step': step, **values})

  def val(self, epoch: int, step: int, values: Mapping[str, float],
          member: Optional[int] = None) -> None:
    """One epoch's validation metrics; a population writes a row per `member`."""
    if not self.enabled:
      return
    suffix = '' if member is None else f'/member{member}'
    self.events.scalars(step, {f'val/{k}{suffix}': v for k, v in values.items()})
    self.events.flush()
    self.val_csv.write({'epoch': epoch, 'step': step,
                        **({} if member is None else {'member': member}), **values})

  def sample_grid(self, epoch: int, step: int, lr, sr, hr,
                  member: Optional[int] = None) -> Optional[pathlib.Path]:
    """Writes the LR | SR | HR grid of fixed validation patches ([-1, 1] inputs)."""
    if not self.enabled:
      return None
    grid = sample_grid(lr, sr, hr)
    suffix = '' if member is None else f'_member{member}'
    path = self.workdir / 'samples' / f'phase{self.phase}_epoch{epoch:03d}{suffix}.png'
    path.parent.mkdir(parents=True, exist_ok=True)
    image_io.write_image(path, grid)
    self.events.image(step, f'samples/lr_sr_hr{suffix.replace("_", "/")}', grid)
    return path

  def plot(self) -> Optional[pathlib.Path]:
    if not self.enabled:
      return None
    try:
      return plot_phase(self.workdir, self.phase)
    except Exception as e:  # A broken plot must not fail a finished phase.
      log.warning('could not plot phase %d curves: %s', self.phase, e)
      return None

  def close(self) -> None:
    if self.enabled:
      self.events.close()


class NonFiniteLoss(FloatingPointError):
  """A step's loss came out NaN or infinite."""

  def __init__(self, step: int, values: Mapping[str, float]):
    super().__init__(f'step {step}: non-finite loss {dict(values)}')
    self.step, self.values = step, dict(values)


# A logging window in which the host spent at least this fraction of the wall
# time getting batches is input-bound: the accelerator idled for lack of data.
INPUT_BOUND_FRACTION = 0.2


class StepMetrics:
  """A phase's step metrics, logged as means over every `log_every` steps.

  Each step's metrics are read one step late, so the host never waits on the
  device; a NaN or infinite loss raises `NonFiniteLoss`. `input_wait()` is the
  host's running total of seconds spent getting batches: per window its share
  of the wall time is logged as `input_wait_fraction` (and the milliseconds per
  step as `input_wait_ms`) and shown in the progress bar; the first window at or
  above `INPUT_BOUND_FRACTION` logs a warning ending with `input_advice`.
  """

  def __init__(self, monitor: PhaseMonitor, progress, log_every: int, *,
               input_wait: Optional[Callable[[], float]] = None,
               input_advice: str = ''):
    self.monitor, self.progress = monitor, progress
    self.log_every = max(1, int(log_every))
    self.input_wait, self.input_advice = input_wait, input_advice
    self.pending = None
    self.window: list[dict] = []
    self.window_start = time.perf_counter()
    self.window_wait_start = input_wait() if input_wait else 0.0
    self.warned_input_bound = False

  def push(self, step: int, device_metrics) -> None:
    """Queues this step's metrics and handles the previous step's."""
    previous, self.pending = self.pending, (step, device_metrics)
    if previous is not None:
      self._handle(*previous)

  def flush(self) -> None:
    """Handles the queued step now (before saving, validating or finishing)."""
    if self.pending is not None:
      previous, self.pending = self.pending, None
      self._handle(*previous)

  def _handle(self, step: int, device_metrics) -> None:
    values = {}
    for k, v in parallel.to_host(device_metrics).items():
      if np.ndim(v):  # A population's: one value per member.
        values.update({f'{k}/member{i}': float(x) for i, x in enumerate(v)})
      else:
        values[k] = float(v)
    bad = {k: v for k, v in values.items()
           if k.split('/')[0] in ('loss', 'd_loss') and not math.isfinite(v)}
    if bad:
      raise NonFiniteLoss(step, bad)
    self.window.append(values)
    if step % self.log_every == 0:
      now = time.perf_counter()
      elapsed = max(now - self.window_start, 1e-9)
      means = {k: float(np.mean([w[k] for w in self.window])) for k in values}
      means['steps_per_second'] = len(self.window) / elapsed
      shown = {k: f'{means[k]:.4g}' for k in ('loss', 'pixel', 'd_loss', 'psnr') if k in means}
      if self.input_wait is not None:
        total_wait = self.input_wait()
        waited, self.window_wait_start = total_wait - self.window_wait_start, total_wait
        means['input_wait_ms'] = 1e3 * waited / len(self.window)
        means['input_wait_fraction'] = min(1.0, waited / elapsed)
        shown['input'] = f'{means["input_wait_fraction"]:.0%}'
        self._check_input_bound(step, means['input_wait_fraction'])
      self.monitor.train(step, means)
      self.progress.set_postfix(shown, refresh=False)
      self.window, self.window_start = [], now

  def _check_input_bound(self, step: int, fraction: float) -> None:
    if fraction < INPUT_BOUND_FRACTION or self.warned_input_bound:
      return
    self.warned_input_bound = True
    log.warning(
        'phase %d is input-bound: in the steps up to %d the host spent %.0f%% of the '
        'time waiting for training batches while the accelerator idled. %s',
        self.monitor.phase, step, 100 * fraction, self.input_advice)


def sample_grid(lr_BHWC, sr_BHWC, hr_BHWC, gap: int = 4) -> np.ndarray:
  """Rows of [LR (nearest-upscaled) | SR | HR] in [0, 1], separated by white gaps."""
  lr, sr, hr = (models.to_unit(np.asarray(x, np.float32)) for x in (lr_BHWC, sr_BHWC, hr_BHWC))
  factor = hr.shape[1] // lr.shape[1]
  lr = lr.repeat(factor, axis=1).repeat(factor, axis=2)  # Nearest: shows the LR pixels.
  rows = []
  for images in zip(lr, sr, hr):
    row = []
    for image in images:
      row += [image, np.ones((image.shape[0], gap, 3), np.float32)]
    rows += [np.concatenate(row[:-1], axis=1)]
    rows += [np.ones((gap, rows[-1].shape[1], 3), np.float32)]
  return np.concatenate(rows[:-1], axis=0)


def read_csv(path: pathlib.Path) -> dict[str, np.ndarray]:
  """Columns of a metrics CSV as float arrays (empty dict if missing)."""
  if not path.is_file():
    return {}
  with path.open(newline='') as f:
    rows = list(csv.DictReader(f))
  if not rows:
    return {}
  to_float = lambda v: float(v) if v not in ('', None) else math.nan
  return {k: np.array([to_float(r[k]) for r in rows]) for k in rows[0]}


def plot_phase(workdir, phase: int) -> Optional[pathlib.Path]:
  """Training-curve PNG of a phase: losses, PSNR/SSIM, learning rates (train + val)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  workdir = pathlib.Path(workdir)
  logdir = workdir / 'logs' / f'phase{phase}'
  train, val = read_csv(logdir / 'train.csv'), read_csv(logdir / 'val.csv')
  if not train:
    return None
  if 'member' in val or 'loss/member0' in train:
    return _plot_population(workdir, phase, train, val)
  loss_keys = [k for k in train if k not in ('step', 'psnr', 'ssim', 'steps_per_second')
               and 'learning_rate' not in k and not k.startswith(('d_', 'input_'))]
  panels = ['generator', 'validation', 'psnr', 'learning_rate']
  if 'd_loss' in train:
    panels.insert(1, 'discriminator')
  fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4))
  ax = dict(zip(panels, axes))
  for k in loss_keys:
    ax['generator'].plot(train['step'], train[k], label=k)
  ax['generator'].set_yscale('log')
  ax['generator'].set_title(f'phase {phase}: generator losses (train)')
  if 'discriminator' in ax:
    for k in ('d_loss', 'd_real', 'd_fake'):
      ax['discriminator'].plot(train['step'], train[k], label=k)
    ax['discriminator'].set_title('discriminator loss, mean logits')
  for k in ('pixel', 'perceptual', 'loss'):
    if val and k in val:
      ax['validation'].plot(val['step'], val[k], 'o-', label=k)
  ax['validation'].set_yscale('log')
  ax['validation'].set_title('validation losses (per epoch)')
  ax['psnr'].plot(train['step'], train['psnr'], label='train', alpha=0.6)
  if val and 'psnr' in val:
    ax['psnr'].plot(val['step'], val['psnr'], 'o-', label='validation')
  ax['psnr'].set_title('PSNR (dB)')
  for k in train:
    if 'learning_rate' in k:
      ax['learning_rate'].plot(train['step'], train[k], label=k)
  ax['learning_rate'].set_title('learning rates')
  for a in axes:
    a.set_xlabel('step')
    if a.has_data():
      a.legend(fontsize=7)
  return _save_plot(fig, workdir, phase)


def _plot_population(workdir: pathlib.Path, phase: int, train, val) -> pathlib.Path:
  """A population phase's curves: loss, validation loss, PSNR, learning rate per member."""
  import matplotlib.pyplot as plt

  count = len([k for k in train if k.startswith('loss/member')])
  panels = (('loss', 'generator loss (train)', True), ('val_loss', 'validation loss', True),
            ('psnr', 'PSNR (dB, train)', False), ('learning_rate', 'learning rate', False))
  fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4))
  for a, (name, title, log_scale) in zip(axes, panels):
    for k in range(count):
      if name == 'val_loss':
        rows = val.get('member', np.array([])) == k
        if np.any(rows):
          a.plot(val['step'][rows], val['loss'][rows], 'o-', label=f'member {k}')
      elif f'{name}/member{k}' in train:
        a.plot(train['step'], train[f'{name}/member{k}'], label=f'member {k}')
    a.set_title(f'phase {phase}: {title}')
    a.set_xlabel('step')
    if log_scale and a.has_data():
      a.set_yscale('log')
    if a.has_data():
      a.legend(fontsize=7)
  return _save_plot(fig, workdir, phase)


def _save_plot(fig, workdir: pathlib.Path, phase: int) -> pathlib.Path:
  """Writes a phase's figure to plots/phase{N}.png and closes it."""
  import matplotlib.pyplot as plt
  fig.subplots_adjust(left=0.04, right=0.99, bottom=0.15, top=0.9, wspace=0.25)
  path = workdir / 'plots' / f'phase{phase}.png'
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=80)
  plt.close(fig)
  files.write_atomic(path, buffer.getvalue())
  return path
