"""The three training phases as one resumable run (`python train.py`).

Per phase: build or restore the state, run jitted steps over the global batch,
validate each epoch, adjust the learning rate / stop early (phases 1-2), save
Orbax checkpoints, and write logs, samples and plots. Phase 2 starts from phase
1's best generator, phase 3 from phase 2's best with a fresh discriminator.
Running the same command again resumes from each phase's latest checkpoint and
skips finished phases.

With a population (members that differ in loss weights, `srrgan_jax.population`)
the phases before the first one the members differ in are trained once, as a
single run; from that phase on all members train together as one program, each
with its own validation, plateau / early stopping and best checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import pathlib
import shutil
import time
from typing import Any, Callable, Optional, Sequence

import jax
import ml_collections
import numpy as np
from tqdm import auto as tqdm

from configs import fields
from srrgan_jax import checkpoints
from srrgan_jax import config_check
from srrgan_jax import data
from srrgan_jax import errors
from srrgan_jax import eval_sets
from srrgan_jax import parallel
from srrgan_jax import population
from srrgan_jax import run_dir
from srrgan_jax import run_lock
from srrgan_jax.train import device_prefetch
from srrgan_jax.train import loop_state as loop_state_lib
from srrgan_jax.train import monitor as monitor_lib
from srrgan_jax.train import optim
from srrgan_jax.train import state as state_lib
from srrgan_jax.train import steps
from srrgan_jax.train import validation
from srrgan_jax.train.loop_state import LoopState
from srrgan_jax.train.loop_state import PopulationLoopState

log = logging.getLogger(__name__)


class TrainingDiverged(errors.UserError, FloatingPointError):
  """A loss became NaN or infinite; the message names the last good checkpoint."""


class CheckpointSaveError(errors.UserError, OSError):
  """A checkpoint could not be saved (full disk); the message names the folder."""


@dataclasses.dataclass
class PhaseResult:
  """What a phase hands on: its chosen generator and that generator's val metrics.

  A population's result holds every member: `params` stacked along a leading
  member axis, `val_metrics` and `step_dirs` one per member.
  """
  phase: int
  params: Any  # numpy pytree (EMA weights if config.eval_use_ema).
  val_metrics: Any  # dict[str, float]; a population's: a list of them.
  step_dir: Optional[pathlib.Path]  # The checkpoint the params come from.
  step_dirs: Optional[list[pathlib.Path]] = None  # A population's, one per member.

  @property
  def is_population(self) -> bool:
    return self.step_dirs is not None


def _print(message: str) -> None:
  if parallel.is_main_process():
    print(message, flush=True)


def perceptual_layers_needed(vgg_params: dict, taps) -> dict:
  """The VGG19 layers up to the deepest of the perceptual `taps` (the rest never runs)."""
  from srrgan_jax import perceptual
  order = perceptual.VGG19_LAYERS
  deepest = max(order.index(layer) for layer in taps)
  return {layer: vgg_params[layer] for layer in order[:deepest + 1]}


def _write_run_config(workdir: pathlib.Path, config) -> None:
  # Every process has checked the old file before process 0 replaces it.
  parallel.sync_processes('srrgan_run_config_checked')
  run_dir.write_config(workdir, config)


def _plateau_tracker(phase_config) -> optim.PlateauTracker:
  """Reduce-on-plateau and early stopping as a phase's config describes them."""
  return optim.PlateauTracker(
      learning_rate=float(phase_config.learning_rate),
      factor=float(phase_config.plateau_factor),
      patience=int(phase_config.plateau_patience),
      min_learning_rate=float(phase_config.min_learning_rate),
      early_stop_patience=int(phase_config.early_stop_patience),
      min_delta=float(phase_config.plateau_min_delta))


def _start_params(config, workdir, phase, first_phase: bool, handed_on):
  """The generator a fresh phase starts from, as (params or None, description)."""
  if handed_on is not None and handed_on.is_population:
    dirs = ', '.join(str(d) for d in handed_on.step_dirs)
    return handed_on.params, f'phase {handed_on.phase} best of each member ({dirs})'
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
  With `members` (a population's, `population.members`) the phase trains them
  all in one program.
  """

  def __init__(self, phase: int, config, workdir: pathlib.Path, mesh,
               val_set: validation.ValidationSet, vgg_params, *, first_phase: bool,
               handed_on: Optional[PhaseResult], stop_after_steps: Optional[int] = None,
               on_start: Callable[[], None] = lambda: None,
               members: Sequence[population.Member] = ()):
    self.phase, self.config, self.workdir, self.mesh = phase, config, workdir, mesh
    self.members = list(members)
    self.member_configs = [population.member_config(config, m) for m in self.members]
    self.val_set, self.first_phase, self.handed_on = val_set, first_phase, handed_on
    self.stop_after_steps = stop_after_steps
    self.on_start = on_start  # Called once the phase's state is ready to train.
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
        keep_steps=[e * self.steps_per_epoch for e in keep_epochs],
        members=len(self.members))
    # Set up by `run` for the phase's training:
    self.iterator = None  # Training batches; its position is saved with each checkpoint.
    self.state: Optional[state_lib.TrainState] = None  # Device state, donated per step.
    self.loop: Optional[LoopState | PopulationLoopState] = None  # Saved with each checkpoint.
    self.eval_step: Optional[Callable] = None
    self.monitor: Optional[monitor_lib.PhaseMonitor] = None
    self.progress = None  # The tqdm progress bar (process 0 only shows it).

  def run(self) -> PhaseResult:
    latest, saved = self._latest_intact(self.manager.latest_step())
    if saved is not None and saved.finished(self.epochs):
      return self._already_finished(saved)
    try:
      self.iterator = device_prefetch.DevicePrefetcher(
          data.make_train_iterator(self.config, process_index=jax.process_index(),
                                   process_count=jax.process_count()),
          lambda host_batch: parallel.global_batch(host_batch, self.mesh))
      self.state, self.loop = self._start_or_resume(latest, saved)
      self.on_start()
      if self.members:
        self.eval_step = steps.compile_population_eval_step(
            self.config, self.mesh, len(self.members), self.vgg_params)
      else:
        self.eval_step = steps.compile_eval_step(self.config, self.mesh, self.vgg_params)
      resumed = saved is not None
      self.monitor = monitor_lib.PhaseMonitor(
          self.workdir, self.phase, enabled=self.main,
          resume_step=self.loop.step if resumed else None,
          resume_epoch=self.loop.epoch if resumed else None)
      self.progress = tqdm.tqdm(
          total=self.total_steps, initial=self.loop.step, desc=f'phase {self.phase}',
          unit='step', disable=not self.main, dynamic_ncols=True)
      try:
        step = self._train()
      finally:
        self.progress.close()
        self.monitor.close()
      if step is None:
        return PhaseResult(self.phase, None, {}, None)
      self.monitor.plot()
      return self._hand_on(step)
    finally:
      with self._space_errors():  # Async saves complete before anything exits,
        try:
          self.manager.wait_until_finished()
        except KeyboardInterrupt:  # also when Ctrl-C lands in this wait (a second
          self.manager.wait_until_finished()  # one exits at once: commands/train.py).
          raise
      if self.iterator is not None and hasattr(self.iterator, 'close'):
        self.iterator.close()
      self.manager.close()

  def _check_saved(self, latest: int) -> LoopState | PopulationLoopState:
    loop_state, saved_config = checkpoints.read_json_items(self.manager, latest)
    run_dir.check_fits(self.config, self.manager.directory, saved_config=saved_config,
                       with_disc=True)
    saved = loop_state_lib.from_json(loop_state)
    saved_names = saved.names if isinstance(saved, PopulationLoopState) else []
    names = [m.name for m in self.members]
    if saved_names != names:
      raise checkpoints.CheckpointError(
          f'{self.manager.directory / str(latest)}: phase {self.phase} was saved with '
          f'{_describe_members(saved_names)}, this run has {_describe_members(names)}. '
          'Resume with the same population settings, or start in a fresh --workdir.')
    changed = run_dir.config_differences(saved_config, run_dir.config_to_dict(self.config))
    if 'data.batch_size' in changed and not saved.finished(self.epochs):
      before, now = changed['data.batch_size']
      raise checkpoints.CheckpointError(
          f'{self.manager.directory / str(latest)}: phase {self.phase} was saved mid-way '
          f'with data.batch_size={before}, now {now}; its data position is only valid '
          f'with the same batch. Resume with --config.data.batch_size={before}, or start '
          'the phase over in a fresh --workdir.')
    changed = {k: v for k, v in changed.items()
               if not fields.is_quiet(k) and not fields.is_other_phase(k, self.phase)
               and population.affects_phase(self.config, k, self.phase)}
    if changed:
      log.warning('phase %d continues with changed settings: %s', self.phase,
                  run_dir.describe_differences(changed))
    return saved

  def _latest_intact(self, latest: Optional[int]) -> tuple[Optional[int], Optional[LoopState]]:
    """(step, loop state) of the latest checkpoint whose records read back, or (None, None)."""
    while latest is not None:
      try:
        return latest, self._check_saved(latest)
      except checkpoints.DamagedCheckpointError as damaged:
        latest = self._set_aside(latest, damaged)
    return None, None

  def _start_or_resume(self, latest: Optional[int], saved: Optional[LoopState]
                       ) -> tuple[state_lib.TrainState, LoopState]:
    """Resumes from the latest intact checkpoint (damaged ones set aside), else starts."""
    while saved is not None:
      try:
        return self._resume(latest)
      except checkpoints.DamagedCheckpointError as damaged:
        latest, saved = self._latest_intact(self._set_aside(latest, damaged))
    return self._start()

  def _set_aside(self, step: int, damaged: checkpoints.DamagedCheckpointError
                 ) -> Optional[int]:
    """Moves a damaged checkpoint out of the phase (kept); the latest step before it."""
    self.manager.wait_until_finished()
    moved = run_dir.set_aside(damaged.step_dir)
    parallel.sync_processes(f'srrgan_set_aside_{self.phase}_{step}')
    self.manager.reload()
    previous = self.manager.latest_step()
    _print(f'Phase {self.phase}: checkpoint step {step} is damaged ({damaged.reason}); '
           f'moved it to {moved}; '
           + (f'trying step {previous}.' if previous is not None
              else 'no earlier checkpoint, starting the phase over.'))
    return previous

  def _already_finished(self, saved: LoopState | PopulationLoopState) -> PhaseResult:
    self.manager.close()
    if isinstance(saved, PopulationLoopState):
      _print(f'Phase {self.phase}: already finished (epoch {saved.epoch}); handing on '
             f'steps {[m.best_step for m in saved.members]} of the members.')
      return self._members_best(saved)
    step_dir = run_dir.phase_dir(self.workdir, self.phase) / str(saved.best_step)
    _print(f'Phase {self.phase}: already finished (epoch {saved.epoch}); '
           f'handing on step {saved.best_step}.')
    return PhaseResult(self.phase,
                       checkpoints.restore_generator(step_dir, use_ema=self.use_ema),
                       saved.best_metrics, step_dir)

  def _members_best(self, saved: PopulationLoopState) -> PhaseResult:
    """Each member's best generator (its own best step), stacked in member order."""
    step_dirs = [run_dir.phase_dir(self.workdir, self.phase) / str(m.best_step)
                 for m in saved.members]
    params = [state_lib.member_state(
        checkpoints.restore_generator(step_dir, use_ema=self.use_ema), k)
              for k, step_dir in enumerate(step_dirs)]
    stacked = jax.tree.map(lambda *leaves: np.stack(leaves), *params)
    return PhaseResult(self.phase, stacked, [m.best_metrics for m in saved.members],
                       step_dirs[-1], step_dirs)

  def _start(self) -> tuple[state_lib.TrainState, LoopState | PopulationLoopState]:
    start, source = _start_params(self.config, self.workdir, self.phase,
                                  self.first_phase, self.handed_on)
    _print(f'Phase {self.phase}: {self.epochs} epochs x {self.steps_per_epoch} steps, '
           f'starting from {source}.')
    if self.members:
      return self._start_population(start, source)
    state = state_lib.create_state(self.config, self.phase, self.total_steps,
                                   self.mesh, start)
    plateau = _plateau_tracker(self.phase_config) if self.phase < 3 else None
    return state, LoopState(phase=self.phase, start=source, plateau=plateau)

  def _start_population(self, start, source: str
                        ) -> tuple[state_lib.TrainState, PopulationLoopState]:
    """Every member from the shared start (or, forked earlier, each from its own)."""
    size = len(self.members)
    if start is not None and not (self.handed_on and self.handed_on.is_population):
      start = jax.tree.map(lambda x: np.broadcast_to(x, (size,) + np.shape(x)), start)
    state = state_lib.create_population(self.config, self.phase, self.total_steps,
                                        self.mesh, size, start)
    loops = [LoopState(phase=self.phase, start=source,
                       plateau=_plateau_tracker(self.phase_config) if self.phase < 3
                       else None) for _ in self.members]
    _print(f'Phase {self.phase}: {size} members ({_describe_members(self.members)}) '
           'train together.')
    return state, PopulationLoopState(phase=self.phase, start=source, members=loops,
                                      names=[m.name for m in self.members])

  def _resume(self, latest: int) -> tuple[state_lib.TrainState,
                                          LoopState | PopulationLoopState]:
    checkpoints.check_process_count(self.manager.directory / str(latest))
    if self.members:
      abstract = state_lib.abstract_population(self.config, self.phase, self.optimizers,
                                               len(self.members))
      sharding = parallel.member_sharding(self.mesh)
    else:
      abstract = state_lib.abstract_state(self.config, self.phase, self.optimizers)
      sharding = parallel.replicated(self.mesh)
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract)
    state, saved, _ = checkpoints.restore(self.manager, latest, abstract, self.iterator)
    loop = loop_state_lib.from_json(saved)
    _print(f'Phase {self.phase}: resuming at step {latest} (epoch {loop.epoch}) from '
           f'{self.manager.directory / str(latest)}.')
    return state, loop

  def _save(self, step: int, val_loss: Optional[float | list[float]] = None) -> None:
    self.loop.step = step
    with self._space_errors():
      checkpoints.save(self.manager, step, self.state, self.iterator, self.loop.to_json(),
                       run_dir.config_to_dict(self.config), val_loss=val_loss)

  @contextlib.contextmanager
  def _space_errors(self):
    """A full disk during a save as one CheckpointSaveError.

    An asynchronous save reports it at the next save or when the run waits for it.
    """
    try:
      yield
    except CheckpointSaveError:
      raise
    except OSError as e:
      if e.errno not in (errno.ENOSPC, errno.EDQUOT):
        raise
      raise self._disk_full(self.loop.step if self.loop else 0, e) from e

  def _disk_full(self, step: int, error: OSError) -> CheckpointSaveError:
    """The error of a save that ran out of space, naming the folder and the space needed."""
    folder = self.manager.directory
    finished = run_dir.list_checkpoints(self.workdir, self.phase)
    size = sum(f.stat().st_size for f in finished[-1][1].rglob('*') if f.is_file()) \
        if finished else 0
    free = shutil.disk_usage(folder).free
    last = finished[-1][1] if finished else 'none yet'
    return CheckpointSaveError(
        f'{folder}: no space left to save step {step} ({error.strerror or error}); a '
        f'checkpoint needs about {size / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free. '
        f'Free space and run the same command to resume from the last checkpoint '
        f'({last}).')

  def _train(self) -> Optional[int]:
    """Steps to the end of the phase; the last step, or None after `stop_after_steps`."""
    config, phase = self.config, self.phase
    if self.members:
      population_step = steps.compile_population_step(
          config, phase, self.total_steps, self.mesh, self.member_configs, self.vgg_params)
      train_step = lambda state, batch, key: population_step(state, batch, key,
                                                             self.loop.active)
      rng = parallel.to_host(self.state.rng)[0]  # The members share the phase key.
    else:
      train_step = steps.compile_train_step(config, phase, self.total_steps, self.mesh,
                                            self.vgg_params)
      rng = parallel.to_host(self.state.rng)
    # The phase key as saved in the state, in its own buffer: the state's is
    # donated to every step.
    key = parallel.put_replicated(rng, self.mesh)
    step = first_step = self.loop.step
    started = time.perf_counter()
    self.iterator.prefetch()  # The loader's start-up is not input waiting.
    log.info('phase %d: first batch loaded in %.1f s', phase, time.perf_counter() - started)
    step_metrics = monitor_lib.StepMetrics(
        self.monitor, self.progress, config.log_every_steps,
        input_wait=lambda: self.iterator.wait_seconds, input_advice=_input_advice(config))
    save_every = max(0, int(config.checkpoint.save_latest_every_steps))
    try:
      while step < self.total_steps and not self.loop.stopped_early:
        batch = next(self.iterator)
        started = time.perf_counter()
        self.state, device_metrics = train_step(self.state, batch, key)
        if step == first_step:
          jax.block_until_ready(device_metrics)
          log.info('phase %d: first step (compile + run) took %.1f s', phase,
                   time.perf_counter() - started)
        # The next batch loads and moves to the devices while this step runs.
        self.iterator.prefetch()
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
          return None
      step_metrics.flush()
    except monitor_lib.NonFiniteLoss as e:
      raise self._diverged(e) from e
    return step

  def _diverged(self, error: monitor_lib.NonFiniteLoss) -> TrainingDiverged:
    """The error of a NaN loss, naming the checkpoint to resume from."""
    self.manager.wait_until_finished()
    latest = self.manager.latest_step()
    last_good = (self.manager.directory / str(latest) if latest is not None
                 else 'none (no checkpoint of this phase yet)')
    return TrainingDiverged(
        f'phase {self.phase}, step {error.step}: non-finite loss {error.values}. Last '
        f'good checkpoint: {last_good}. Lower the learning rate or check the data, then '
        'run the same command again to resume from it (or delete it to restart the '
        'phase).')

  def _end_of_epoch(self, step: int) -> None:
    """Validation, learning rate / early stopping, samples and the epoch checkpoint."""
    if self.members:
      return self._end_of_population_epoch(step)
    config, phase = self.config, self.phase
    epoch = step // self.steps_per_epoch
    val, sample_sr = validation.validate(
        self.eval_step, state_lib.eval_params(self.state, self.use_ema), self.val_set,
        config, phase)
    self.loop.record_validation(step, epoch, val)
    plateau = self.loop.plateau
    if plateau is not None:
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

  def _end_of_population_epoch(self, step: int) -> None:
    """`_end_of_epoch` of a population: every member validated, tracked and sampled."""
    phase, epoch = self.phase, step // self.steps_per_epoch
    vals, sample_sr = validation.validate_population(
        self.eval_step, state_lib.eval_params(self.state, self.use_ema), self.val_set,
        self.member_configs, phase)
    self.loop.record_validation(step, epoch, vals)
    if phase < 3:
      rates = np.asarray([m.plateau.learning_rate for m in self.loop.members], np.float32)
      if not np.array_equal(rates, parallel.to_host(optim.learning_rate(
          self.state.opt_state))):
        self.state = self.state.replace(opt_state=optim.set_learning_rate(
            self.state.opt_state, parallel.put_members(rates, self.mesh)))
    else:
      rates = [float(state_lib.make_optimizers(c, phase, self.total_steps).gen_schedule(step))
               for c in self.member_configs]
    n = self.val_set.num_samples
    samples = n and (epoch % max(1, self.config.sample_every_epochs) == 0
                     or epoch == self.epochs)
    for k, (member, val, loop) in enumerate(zip(self.members, vals, self.loop.members)):
      self.monitor.val(epoch, step, {**val, 'learning_rate': float(rates[k])}, member=k)
      if self.main:
        self.progress.write(f'[{member.name}] ' + _epoch_line(phase, epoch, val,
                                                                loop.plateau))
      if samples:
        self.monitor.sample_grid(epoch, step, self.val_set.lr[:n], sample_sr[k],
                                 self.val_set.hr[:n], member=k)
    self._save(step, val_loss=[v['loss'] for v in vals] if phase < 3 else None)

  def _hand_on(self, step: int) -> PhaseResult:
    """The phase's result: phases 1-2 their best checkpoint, phase 3 its last state."""
    if self.members:
      return self._hand_on_population(step)
    if self.phase < 3:
      step_dir = run_dir.phase_dir(self.workdir, self.phase) / str(self.loop.best_step)
      self.manager.wait_until_finished()
      params = checkpoints.restore_generator(step_dir, use_ema=self.use_ema)
      handed = self.loop.best_metrics
    else:
      step_dir = run_dir.phase_dir(self.workdir, self.phase) / str(step)
      params = parallel.to_host(state_lib.eval_params(self.state, self.use_ema))
      handed = self.loop.last_val_metrics
    reason = 'early stop' if self.loop.stopped_early else 'last epoch'
    _print(f'Phase {self.phase}: done at step {step} ({reason}); hands on step '
           f'{step_dir.name} (val PSNR {handed["psnr"]:.3f} dB).')
    return PhaseResult(self.phase, params, handed, step_dir)

  def _hand_on_population(self, step: int) -> PhaseResult:
    """Phases 1-2: each member's best checkpoint; phase 3: every member's last state."""
    self.manager.wait_until_finished()
    if self.phase < 3:
      result = self._members_best(self.loop)
    else:
      step_dir = run_dir.phase_dir(self.workdir, self.phase) / str(step)
      result = PhaseResult(self.phase,
                           parallel.to_host(state_lib.eval_params(self.state, self.use_ema)),
                           [m.last_val_metrics for m in self.loop.members], step_dir,
                           [step_dir] * len(self.members))
    for member, loop, handed, step_dir in zip(self.members, self.loop.members,
                                              result.val_metrics, result.step_dirs):
      reason = 'early stop' if loop.stopped_early else 'last epoch'
      _print(f'Phase {self.phase} [{member.name}]: done ({reason}); hands on step '
             f'{step_dir.name} (val PSNR {handed["psnr"]:.3f} dB).')
    return result


def _describe_members(members) -> str:
  """'no population' or 'members gan_weight=0.01; gan_weight=0.1' (names or Members)."""
  names = [m if isinstance(m, str) else m.name for m in members]
  return f'members {"; ".join(names)}' if names else 'no population'


def _input_advice(config) -> str:
  """What gives the training loader more throughput, with this run's values."""
  return (f'Give it more: raise data.num_workers (now {config.data.num_workers}; this '
          f'host has {os.cpu_count()} CPUs), cut more patches per decoded image with '
          f'data.patches_per_image (now {config.data.patches_per_image}), keep decoded '
          f'images on disk with data.decoded_cache_gb (now {config.data.decoded_cache_gb}), '
          'or train on prepared sub-images (srrgan-prepare-data) so each decode is small.')


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
  Each process holds the run directory's lock (`run_lock`) while it trains.
  """
  config_check.check_config(config)
  parallel.initialize_distributed(config.distributed)
  # Orbax reports every save at INFO through absl; keep the console readable.
  logging.getLogger('absl').setLevel(logging.WARNING)
  workdir = pathlib.Path(workdir).expanduser().resolve()
  with run_lock.hold(workdir, jax.process_index()):
    return _run_locked(config, workdir, stop_after_steps)


def _run_locked(config, workdir: pathlib.Path, stop_after_steps) -> dict[str, Any]:
  phases = [int(p) for p in config.phases]
  members = population.members(config)
  fork = population.fork_phase(config)
  mesh = parallel.make_mesh(
      member_devices=int(config.population.member_devices) if members else 1)
  parallel.check_batch_size(int(config.data.batch_size), mesh)
  parallel.check_batch_size(int(config.data.eval_batch_size), mesh,
                            'data.eval_batch_size')
  run_dir.check_run_config(workdir, config)

  _, val_dir = data.resolve_dirs(config)
  eval_set = eval_sets.load_eval_set(val_dir, config, skip_unreadable=True,
                                     max_images=int(config.data.max_val_images))
  val_set = validation.ValidationSet(eval_set, int(config.data.eval_batch_size),
                          int(config.data.num_sample_images), mesh)
  vgg_params = None
  if any(p in (2, 3) for p in phases):
    from srrgan_jax import perceptual
    vgg_params = parallel.put_replicated(
        perceptual_layers_needed(perceptual.load_vgg19_params(config),
                                 config.loss.perceptual_layers), mesh)

  # config.json records the run once a phase really starts (its data and
  # starting weights loaded), so a run that fails before leaves no trace.
  config_written = []

  def record_config():
    if not config_written:
      _write_run_config(workdir, config)
      config_written.append(True)

  summary = {'workdir': str(workdir), 'phases': {}}
  handed_on = None
  for i, phase in enumerate(phases):
    stop = (stop_after_steps or {}).get(phase)
    result = PhaseRun(phase, config, workdir, mesh, val_set, vgg_params,
                      first_phase=(i == 0), handed_on=handed_on,
                      stop_after_steps=stop, on_start=record_config,
                      members=members if members and phase >= fork else ()).run()
    if stop is not None and result.params is None:
      summary['stopped'] = {'phase': phase, 'step': stop}
      return summary
    if result.is_population:
      summary['phases'][phase] = {'members': [
          {'member': m.name, 'checkpoint': str(d), **v}
          for m, d, v in zip(members, result.step_dirs, result.val_metrics)]}
    else:
      summary['phases'][phase] = {'checkpoint': str(result.step_dir), **result.val_metrics}
    handed_on = result

  baseline = validation.bilinear_baseline(val_set, config.scale)
  summary['bilinear'] = baseline
  summary['final'] = handed_on.val_metrics
  if handed_on.is_population:
    finals = [(f'member {m.name}', d, v) for m, d, v in
              zip(members, handed_on.step_dirs, handed_on.val_metrics)]
  else:
    finals = [('generator', handed_on.step_dir, handed_on.val_metrics)]
  crops = (f'on {len(val_set)} held-out {val_set.hr.shape[1]}x{val_set.hr.shape[2]} '
           'centre crops')
  scores = ''.join(f'\nFinal {what} (phase {handed_on.phase}, {step_dir}):\n'
                   f'  validation PSNR {val["psnr"]:.3f} dB, SSIM {val["ssim"]:.4f} {crops}'
                   for what, step_dir, val in finals)
  _print(f'{scores}\n'
         f'  bilinear upsampling of the degraded input: PSNR {baseline["psnr"]:.3f} dB, '
         f'SSIM {baseline["ssim"]:.4f}\n'
         f'Outputs in {workdir}: checkpoints/, logs/ (TensorBoard: tensorboard '
         f'--logdir {workdir / "logs"}), samples/, plots/, config.json.')
  return summary
