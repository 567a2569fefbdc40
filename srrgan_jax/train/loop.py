"""The three training phases as one resumable run (`python train.py`).

Per phase: build or restore the state, run jitted steps over the global batch,
validate each epoch, adjust the learning rate / stop early (phases 1-2), save
Orbax checkpoints, and write logs, samples and plots. Phase 2 starts from phase
1's best generator, phase 3 from phase 2's best with a fresh discriminator.
Running the same command again resumes from each phase's latest checkpoint and
skips finished phases.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import pathlib
import time
from typing import Any, Callable, Optional

import jax
import ml_collections
import numpy as np

from srrgan_jax import checkpoints
from srrgan_jax import data
from srrgan_jax import metrics
from srrgan_jax import models
from srrgan_jax import parallel
from srrgan_jax import run_dir
from srrgan_jax.train import monitor as monitor_lib
from srrgan_jax.train import optim
from srrgan_jax.train import state as state_lib
from srrgan_jax.train import steps

log = logging.getLogger(__name__)

VAL_KEYS = ('pixel', 'perceptual', 'psnr', 'ssim')


@dataclasses.dataclass
class PhaseResult:
  """What a phase hands on: its chosen generator and that generator's val metrics."""
  phase: int
  params: Any  # numpy pytree (EMA weights if config.eval_use_ema).
  val_metrics: dict[str, float]
  step_dir: Optional[pathlib.Path]  # The checkpoint the params come from.


class ValidationSet:
  """The fixed validation patches, pre-split into global batches."""

  def __init__(self, eval_set: dict, config, mesh):
    self.names = list(eval_set['names'])
    self.lr, self.hr = eval_set['lr'], eval_set['hr']
    self.batches = []
    rows = parallel.process_rows(int(config.data.eval_batch_size))
    for batch in data.eval_batches(eval_set, int(config.data.eval_batch_size)):
      local = {k: v[rows] for k, v in batch.items()}
      self.batches.append(parallel.global_batch(local, mesh))
    self.num_samples = min(int(config.data.num_sample_images), len(self.names))

  def __len__(self):
    return len(self.names)


def _print(message: str) -> None:
  if parallel.is_main_process():
    print(message, flush=True)


def validate(eval_step: Callable, params, val_set: ValidationSet, config,
             phase: int) -> tuple[dict[str, float], Optional[np.ndarray]]:
  """Mean validation metrics of `params` (+ 'loss'), and SR of the sample patches."""
  totals, sample_sr = None, None
  for i, batch in enumerate(val_set.batches):
    sums, sr = eval_step(params, batch)
    totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    if i == 0 and val_set.num_samples:
      sample_sr = parallel.gather_rows(sr)[:val_set.num_samples]
  totals = parallel.to_host(totals)
  count = float(totals.pop('count'))
  means = {k: float(v) / count for k, v in totals.items()}
  means['loss'] = float(steps.validation_loss(config, phase, means['pixel'],
                                              means.get('perceptual')))
  return means, sample_sr


def bilinear_baseline(val_set: ValidationSet, scale: int) -> dict[str, float]:
  """PSNR/SSIM of bilinear upsampling of the degraded validation inputs."""
  lr = np.asarray(val_set.lr, np.float32)
  hr = np.asarray(val_set.hr, np.float32)
  up = jax.image.resize(lr, (lr.shape[0], lr.shape[1] * scale, lr.shape[2] * scale, 3),
                        'bilinear')
  up, hr = models.to_unit(up), models.to_unit(hr)
  return {'psnr': float(np.mean(metrics.psnr(up, hr))),
          'ssim': float(np.mean(metrics.ssim(up, hr)))}


def perceptual_layers_needed(vgg_params: dict, config) -> dict:
  """The VGG19 layers up to the deepest perceptual tap (the rest is never run)."""
  from srrgan_jax import perceptual
  order = perceptual.VGG19_LAYERS
  deepest = max(order.index(layer) for layer in config.loss.perceptual_layers)
  return {layer: vgg_params[layer] for layer in order[:deepest + 1]}


def _check_phases(config) -> list[int]:
  phases = [int(p) for p in config.phases]
  if not phases or any(p not in (1, 2, 3) for p in phases) or phases != sorted(set(phases)):
    raise ValueError(f'config.phases={tuple(config.phases)} must be an increasing subset '
                     'of (1, 2, 3), e.g. --config.phases="(3,)".')
  return phases


def _write_run_config(workdir: pathlib.Path, config) -> None:
  # Every process has checked the old file before process 0 replaces it.
  parallel.sync_processes('srrgan_run_config_checked')
  run_dir.write_config(workdir, config)


def _phase_complete(loop_state: dict, config, phase: int) -> bool:
  return bool(loop_state.get('stopped_early')) or (
      loop_state['epoch'] >= int(config[f'phase{phase}'].epochs))


def _finite_or_raise(values: dict, phase: int, step: int, manager) -> None:
  bad = {k: v for k, v in values.items()
         if k in ('loss', 'd_loss') and not math.isfinite(v)}
  if bad:
    manager.wait_until_finished()
    latest = manager.latest_step()
    last_good = (manager.directory / str(latest) if latest is not None
                 else 'none (no checkpoint of this phase yet)')
    raise FloatingPointError(
        f'phase {phase}, step {step}: non-finite loss {bad}. Last good checkpoint: '
        f'{last_good}. Lower the learning rate or check the data, then run the '
        'same command again to resume from it (or delete it to restart the phase).')


class _StepMetrics:
  """Reads a step's metrics one step late and logs windowed means."""

  def __init__(self, phase, manager, monitor, progress, log_every):
    self.phase, self.manager, self.monitor = phase, manager, monitor
    self.progress, self.log_every = progress, max(1, int(log_every))
    self.pending = None
    self.window: list[dict] = []
    self.window_start = time.perf_counter()

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
    values = {k: float(v) for k, v in parallel.to_host(device_metrics).items()}
    _finite_or_raise(values, self.phase, step, self.manager)
    self.window.append(values)
    if step % self.log_every == 0:
      now = time.perf_counter()
      means = {k: float(np.mean([w[k] for w in self.window])) for k in values}
      means['steps_per_second'] = len(self.window) / max(now - self.window_start, 1e-9)
      self.monitor.train(step, means)
      shown = {k: f'{means[k]:.4g}' for k in ('loss', 'pixel', 'd_loss', 'psnr') if k in means}
      self.progress.set_postfix(shown, refresh=False)
      self.window, self.window_start = [], now


def _start_params(config, workdir, phase, first_phase: bool, handed_on):
  """The generator a fresh phase starts from, as (params or None, description)."""
  if handed_on is not None:
    return handed_on.params, f'phase {handed_on.phase} best ({handed_on.step_dir})'
  if first_phase and config.init_checkpoint:
    step_dir = run_dir.resolve(config.init_checkpoint)
    _, params = run_dir.load_generator(step_dir, config=config, use_ema=config.eval_use_ema)
    return params, f'init_checkpoint {step_dir}'
  if phase == 1:
    return None, f'random initialisation (seed {config.seed})'
  found = run_dir.best_checkpoint(workdir, phase - 1)
  if found is None:
    raise checkpoints.CheckpointError(
        f'phase {phase} starts from phase {phase - 1}\'s best generator, but '
        f'{run_dir.phase_dir(workdir, phase - 1)} has no checkpoint. Run phase '
        f'{phase - 1} first (e.g. --config.phases="({phase - 1}, {phase})") or give '
        '--config.init_checkpoint=<checkpoint or run dir>.')
  _, params = run_dir.load_generator(found[1], config=config, use_ema=config.eval_use_ema)
  return params, f'phase {phase - 1} best ({found[1]})'


class PhaseRun:
  """One phase of a run: resume or start, train, validate, save, hand on.

  `stop_after_steps` ends the run after that step of the phase, as an
  interruption would (tests of resuming use it); nothing is handed on then.
  """

  def __init__(self, phase: int, config, workdir: pathlib.Path, mesh,
               val_set: ValidationSet, vgg_params, *, first_phase: bool,
               handed_on: Optional[PhaseResult], stop_after_steps: Optional[int] = None):
    self.phase, self.config, self.workdir, self.mesh = phase, config, workdir, mesh
    self.val_set, self.first_phase, self.handed_on = val_set, first_phase, handed_on
    self.stop_after_steps = stop_after_steps
    self.main = parallel.is_main_process()
    self.use_ema = bool(config.eval_use_ema)
    self.phase_config = config[f'phase{phase}']
    self.steps_per_epoch = data.train_steps_per_epoch(config)
    self.epochs = int(self.phase_config.epochs)
    self.total_steps = self.epochs * self.steps_per_epoch
    self.optimizers = state_lib.make_optimizers(config, phase, self.total_steps)
    # Phase 1 neither trains nor validates with the perceptual loss.
    self.vgg_params = vgg_params if phase > 1 else None
    keep_epochs = []
    if phase == 3:
      every = max(1, int(config.phase3.save_every_epochs))
      keep_epochs = [e for e in range(1, self.epochs + 1)
                     if e % every == 0 or e == self.epochs]
    self.manager = checkpoints.make_manager(
        run_dir.phase_dir(workdir, phase), phase, async_save=config.checkpoint.async_save,
        keep_steps=[e * self.steps_per_epoch for e in keep_epochs])

  def run(self) -> PhaseResult:
    latest = self.manager.latest_step()
    saved_loop = None
    if latest is not None:
      saved_loop = self._check_saved(latest)
      if _phase_complete(saved_loop, self.config, self.phase):
        return self._already_finished(saved_loop)
    self.iterator = None
    try:
      self.iterator = data.make_train_iterator(
          self.config, process_index=jax.process_index(),
          process_count=jax.process_count())
      if saved_loop is None:
        self._start()
      else:
        self._resume(latest)
      self.plateau = (optim.PlateauTracker.from_dict(self.loop_state['plateau'])
                      if self.loop_state['plateau'] else None)
      return self._train(resumed=saved_loop is not None)
    finally:
      self.manager.wait_until_finished()  # Async saves complete before anything exits.
      if self.iterator is not None and hasattr(self.iterator, 'close'):
        self.iterator.close()
      self.manager.close()

  def _check_saved(self, latest: int) -> dict:
    loop_state, saved_config = checkpoints.read_json_items(self.manager, latest)
    run_dir.check_fits(self.config, self.manager.directory, saved_config=saved_config,
                       with_disc=True)
    changed = run_dir.config_differences(saved_config, run_dir.config_to_dict(self.config))
    # How a launch is spread over hosts or which phases it runs is no news.
    changed = {k: v for k, v in changed.items()
               if not k.startswith(('distributed.', 'phases', 'init_checkpoint'))}
    if changed:
      log.warning('phase %d continues with changed settings: %s', self.phase,
                  run_dir.describe_differences(changed))
    return loop_state

  def _already_finished(self, loop_state: dict) -> PhaseResult:
    self.manager.close()
    best_step = loop_state['best_step']
    step_dir = run_dir.phase_dir(self.workdir, self.phase) / str(best_step)
    _print(f'Phase {self.phase}: already finished (epoch {loop_state["epoch"]}); '
           f'handing on step {best_step}.')
    return PhaseResult(self.phase,
                       checkpoints.restore_generator(step_dir, use_ema=self.use_ema),
                       loop_state['best_metrics'], step_dir)

  def _start(self) -> None:
    start, source = _start_params(self.config, self.workdir, self.phase,
                                  self.first_phase, self.handed_on)
    self.state = state_lib.create_state(self.config, self.phase, self.total_steps,
                                        self.mesh, start)
    plateau = (optim.PlateauTracker.from_config(self.phase_config)
               if self.phase < 3 else None)
    self.loop_state = {
        'phase': self.phase, 'step': 0, 'epoch': 0, 'stopped_early': False,
        'plateau': plateau.to_dict() if plateau else None, 'best_step': None,
        'best_val_loss': None, 'best_metrics': None, 'last_val_metrics': None,
        'start': source}
    _print(f'Phase {self.phase}: {self.epochs} epochs x {self.steps_per_epoch} steps, '
           f'starting from {source}.')

  def _resume(self, latest: int) -> None:
    checkpoints.check_process_count(self.manager.directory / str(latest))
    abstract = state_lib.abstract_state(self.config, self.phase, self.optimizers)
    replicated = parallel.replicated(self.mesh)
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), abstract)
    self.state, self.loop_state, _ = checkpoints.restore(self.manager, latest, abstract,
                                                         self.iterator)
    _print(f'Phase {self.phase}: resuming at step {latest} (epoch '
           f'{self.loop_state["epoch"]}) from {self.manager.directory / str(latest)}.')

  def _save(self, step: int, val_loss: Optional[float] = None) -> None:
    self.loop_state['step'] = step
    checkpoints.save(self.manager, step, self.state, self.iterator, self.loop_state,
                     run_dir.config_to_dict(self.config), val_loss=val_loss)

  def _train(self, resumed: bool) -> Optional[PhaseResult]:
    config, phase = self.config, self.phase
    train_step = steps.compile_train_step(config, phase, self.total_steps, self.mesh,
                                          self.vgg_params)
    self.eval_step = steps.compile_eval_step(config, self.mesh, self.vgg_params)
    # The phase key as saved in the state, in its own buffer: the state's is
    # donated to every step.
    key = parallel.put_replicated(parallel.to_host(self.state.rng), self.mesh)
    step = first_step = int(self.loop_state['step'])
    self.monitor = monitor_lib.PhaseMonitor(
        self.workdir, phase, enabled=self.main, resume_step=step if resumed else None,
        resume_epoch=self.loop_state['epoch'] if resumed else None)
    from tqdm import auto as tqdm
    self.progress = tqdm.tqdm(total=self.total_steps, initial=step, desc=f'phase {phase}',
                              unit='step', disable=not self.main, dynamic_ncols=True)
    step_metrics = _StepMetrics(phase, self.manager, self.monitor, self.progress,
                                config.log_every_steps)
    save_every = max(0, int(config.checkpoint.save_latest_every_steps))
    try:
      while step < self.total_steps and not self.loop_state['stopped_early']:
        batch = parallel.global_batch(next(self.iterator), self.mesh)
        started = time.perf_counter()
        self.state, device_metrics = train_step(self.state, batch, key)
        if step == first_step:
          jax.block_until_ready(device_metrics)
          log.info('phase %d: first step (compile + run) took %.1f s', phase,
                   time.perf_counter() - started)
        step += 1
        self.progress.update(1)
        step_metrics.push(step, device_metrics)
        if step % self.steps_per_epoch == 0:
          step_metrics.flush()  # Raises on a NaN loss before anything is saved.
          self._end_of_epoch(step)
        elif save_every and step % save_every == 0:
          step_metrics.flush()
          self._save(step)
        if self.stop_after_steps is not None and step >= self.stop_after_steps:
          step_metrics.flush()
          if self.manager.latest_step() != step:
            self._save(step)
          return PhaseResult(phase, None, {}, None)
      step_metrics.flush()
    finally:
      self.progress.close()
      self.monitor.close()
    self.monitor.plot()
    return self._hand_on(step)

  def _end_of_epoch(self, step: int) -> None:
    """Validation, learning rate / early stopping, samples and the epoch checkpoint."""
    config, phase, loop_state = self.config, self.phase, self.loop_state
    epoch = step // self.steps_per_epoch
    loop_state['epoch'] = epoch
    val, sample_sr = validate(self.eval_step, state_lib.eval_params(self.state, self.use_ema),
                              self.val_set, config, phase)
    loop_state['last_val_metrics'] = val
    if phase == 3 or loop_state['best_val_loss'] is None or (
        val['loss'] < loop_state['best_val_loss']):
      loop_state.update(best_step=step, best_val_loss=val['loss'], best_metrics=val)
    plateau = self.plateau
    if plateau is not None:
      plateau.update(val['loss'], epoch)
      loop_state['stopped_early'] = plateau.stopped
      loop_state['plateau'] = plateau.to_dict()
      if plateau.learning_rate != float(optim.learning_rate(self.state.opt_state)):
        new_lr = parallel.put_replicated(np.float32(plateau.learning_rate), self.mesh)
        self.state = self.state.replace(
            opt_state=optim.set_learning_rate(self.state.opt_state, new_lr))
      learning_rate = plateau.learning_rate
    else:
      learning_rate = float(self.optimizers.gen_schedule(step))
    self.monitor.val(epoch, step, {**val, 'learning_rate': learning_rate})
    if self.main:
      self.progress.write(_epoch_line(phase, epoch, val, plateau))
    n = self.val_set.num_samples
    if n and (epoch % max(1, config.sample_every_epochs) == 0 or epoch == self.epochs):
      self.monitor.sample_grid(epoch, step, self.val_set.lr[:n], sample_sr,
                               self.val_set.hr[:n])
    self._save(step, val_loss=val['loss'] if phase < 3 else None)

  def _hand_on(self, step: int) -> PhaseResult:
    """The phase's result: phases 1-2 their best checkpoint, phase 3 its last state."""
    loop_state = self.loop_state
    if self.phase < 3:
      step_dir = run_dir.phase_dir(self.workdir, self.phase) / str(loop_state['best_step'])
      self.manager.wait_until_finished()
      params = checkpoints.restore_generator(step_dir, use_ema=self.use_ema)
      handed = loop_state['best_metrics']
    else:
      step_dir = run_dir.phase_dir(self.workdir, self.phase) / str(step)
      params = parallel.to_host(state_lib.eval_params(self.state, self.use_ema))
      handed = loop_state['last_val_metrics']
    reason = 'early stop' if loop_state['stopped_early'] else 'last epoch'
    _print(f'Phase {self.phase}: done at step {step} ({reason}); hands on step '
           f'{step_dir.name} (val PSNR {handed["psnr"]:.3f} dB).')
    return PhaseResult(self.phase, params, handed, step_dir)


def _epoch_line(phase, epoch, val, plateau) -> str:
  parts = [f'phase {phase} epoch {epoch}: val loss {val["loss"]:.5f}',
           f'PSNR {val["psnr"]:.3f} dB', f'SSIM {val["ssim"]:.4f}']
  if plateau is not None:
    parts.append(f'lr {plateau.learning_rate:.3g}')
    if plateau.stopped:
      parts.append(f'early stop (best epoch {plateau.best_epoch})')
  return ', '.join(parts)


def run(config: ml_collections.ConfigDict, workdir, *,
        stop_after_steps: Optional[dict[int, int]] = None) -> dict[str, Any]:
  """Trains the configured phases in `workdir` (resuming what is there).

  Returns a summary: per phase the handed-on checkpoint and validation metrics,
  and the bilinear baseline on the same validation patches.
  `stop_after_steps={phase: step}` interrupts the run there (for tests).
  """
  parallel.initialize_distributed(config.distributed)
  # Orbax reports every save at INFO through absl; keep the console readable.
  logging.getLogger('absl').setLevel(logging.WARNING)
  workdir = pathlib.Path(workdir).expanduser().resolve()
  phases = _check_phases(config)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(int(config.data.batch_size), mesh)
  parallel.check_batch_size(int(config.data.eval_batch_size), mesh,
                            'data.eval_batch_size')
  run_dir.check_run_config(workdir, config)
  _write_run_config(workdir, config)

  _, val_dir = data.resolve_dirs(config)
  eval_set = data.load_eval_set(val_dir, config,
                                max_images=int(config.data.max_val_images))
  val_set = ValidationSet(eval_set, config, mesh)
  vgg_params = None
  if any(p in (2, 3) for p in phases):
    from srrgan_jax import perceptual
    vgg_params = parallel.put_replicated(
        perceptual_layers_needed(perceptual.load_vgg19_params(config), config), mesh)

  summary = {'workdir': str(workdir), 'phases': {}}
  handed_on = None
  for i, phase in enumerate(phases):
    stop = (stop_after_steps or {}).get(phase)
    result = PhaseRun(phase, config, workdir, mesh, val_set, vgg_params,
                      first_phase=(i == 0), handed_on=handed_on,
                      stop_after_steps=stop).run()
    if stop is not None and result.params is None:
      summary['stopped'] = {'phase': phase, 'step': stop}
      return summary
    summary['phases'][phase] = {'checkpoint': str(result.step_dir), **result.val_metrics}
    handed_on = result

  baseline = bilinear_baseline(val_set, config.scale)
  summary['bilinear'] = baseline
  summary['final'] = handed_on.val_metrics
  _print(f'\nFinal generator (phase {handed_on.phase}, {handed_on.step_dir}):\n'
         f'  validation PSNR {handed_on.val_metrics["psnr"]:.3f} dB, SSIM '
         f'{handed_on.val_metrics["ssim"]:.4f} on {len(val_set)} held-out '
         f'{val_set.hr.shape[1]}x{val_set.hr.shape[2]} centre crops\n'
         f'  bilinear upsampling of the degraded input: PSNR {baseline["psnr"]:.3f} dB, '
         f'SSIM {baseline["ssim"]:.4f}\n'
         f'Outputs in {workdir}: checkpoints/, logs/ (TensorBoard: tensorboard '
         f'--logdir {workdir / "logs"}), samples/, plots/, config.json.')
  return summary
