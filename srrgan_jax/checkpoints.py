"""Orbax checkpoints of one training phase: save, restore, and reading single items.

A phase directory holds one step directory per checkpoint, each with four items:
  state   the `TrainState` pytree (generator, EMA, optimizers, discriminator, key);
  data    the Grain iterator state (one file per process);
  loop    epoch, plateau/early-stopping counters, best validation loss (JSON);
  config  the run's configuration (JSON);
and Orbax's own metrics (the validation loss of phases 1-2). Phases 1-2 keep the
best checkpoint by validation loss and the latest one; phase 3 keeps one every
`phase3.save_every_epochs` epochs and the latest. A population's checkpoint
holds every member (each state leaf has a leading member axis); in phases 1-2
it also records each member's validation loss, and each member's best is kept. Where these directories live
in a run, and which one a command means, is `run_dir`'s business.

Everything is read through Orbax (a read-only manager for a phase, a composite
checkpointer for a step), never by guessing its file names.
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
from typing import Iterable, Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from srrgan_jax import errors
from srrgan_jax import parallel
from srrgan_jax import quiet_logs

STATE, DATA, LOOP, CONFIG = 'state', 'data', 'loop', 'config'
VAL_LOSS = 'val_loss'


def member_val_loss(member: int) -> str:
  """The checkpoint metric holding member `member`'s validation loss (populations)."""
  return f'{VAL_LOSS}_member{member}'


class CheckpointError(errors.UserError, ValueError):
  """A checkpoint is missing, not an srrgan-jax checkpoint, or incompatible."""


class DamagedCheckpointError(CheckpointError):
  """A checkpoint's files are missing or truncated; Orbax cannot read it back."""

  def __init__(self, step_dir, cause: BaseException):
    self.step_dir = pathlib.Path(step_dir)
    lines = str(cause).strip().splitlines()
    self.reason = f'{type(cause).__name__}: {lines[0][:200] if lines else "unreadable"}'
    super().__init__(f'{self.step_dir}: damaged checkpoint ({self.reason}).')


@contextlib.contextmanager
def _reading(step_dir):
  """Turns any failure of Orbax reading `step_dir` into DamagedCheckpointError.

  Orbax and TensorStore raise plain Exceptions (with pages of detail) for
  missing or truncated files.
  """
  try:
    with _quiet_orbax():
      yield
  except CheckpointError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise DamagedCheckpointError(step_dir, e) from e


def _absolute(path) -> pathlib.Path:
  """`path` made absolute: Orbax refuses relative ones (`--workdir runs/x`)."""
  return pathlib.Path(os.path.abspath(os.path.expanduser(path)))


def make_manager(directory, phase: int, *, async_save: bool = True,
                 keep_steps: Iterable[int] = (), members: int = 0) -> ocp.CheckpointManager:
  """The Orbax manager that writes phase `phase` into `directory`.

  Phases 1-2 keep the latest and the best by 'val_loss' (with `members`, the
  best of each member too); phase 3 keeps the latest and every step in
  `keep_steps` (its every-N-epochs checkpoints).
  """
  if phase in (1, 2):
    names = [VAL_LOSS] + [member_val_loss(k) for k in range(members)]
    options = ocp.CheckpointManagerOptions(
        best_fn=lambda m: m[VAL_LOSS], best_mode='min',
        enable_async_checkpointing=async_save,
        preservation_policy=policies.AnyPreservationPolicy([policies.LatestN(n=1)] + [
            # Sorted descending by loss, the last one (lowest) survives.
            policies.BestN(get_metric_fn=lambda m, name=name: m[name], reverse=True, n=1,
                           keep_checkpoints_without_metrics=False)
            for name in names]))
  else:
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=async_save,
        preservation_policy=policies.AnyPreservationPolicy([
            policies.LatestN(n=1), policies.CustomSteps(steps=list(keep_steps))]))
  return ocp.CheckpointManager(_absolute(directory), options=options,
                               item_handlers=_item_handlers())


def _item_handlers():
  import grain  # Imported here: readers of generator weights need no Grain.
  return {STATE: ocp.StandardCheckpointHandler(),
          DATA: grain.checkpoint.CheckpointHandler(),
          LOOP: ocp.JsonCheckpointHandler(), CONFIG: ocp.JsonCheckpointHandler()}


def save(manager: ocp.CheckpointManager, step: int, state, iterator,
         loop_state: dict, config_dict: dict,
         val_loss: Optional[float | Sequence[float]] = None) -> None:
  """Saves (asynchronously if so configured) on every process, as Orbax requires.

  `config_dict` is the run's configuration as JSON data. `val_loss` is one
  value, or a population's one per member (then 'val_loss' is their minimum).

  The state is replicated, so it is written from one host copy: far fewer and
  larger transfers than per-device slices, and the device buffers are free to be
  donated to the next step at once. Orbax writes replicated numpy arrays from
  the primary process only.
  """
  import grain
  host_state = parallel.to_host(state)
  items = {STATE: ocp.args.StandardSave(host_state), LOOP: ocp.args.JsonSave(loop_state),
           CONFIG: ocp.args.JsonSave(config_dict)}
  if iterator is not None:
    items[DATA] = grain.checkpoint.CheckpointSave(iterator)
  metrics = None
  if isinstance(val_loss, (list, tuple)):
    metrics = {VAL_LOSS: float(min(val_loss)),
               **{member_val_loss(k): float(v) for k, v in enumerate(val_loss)}}
  elif val_loss is not None:
    metrics = {VAL_LOSS: float(val_loss)}
  manager.save(step, args=ocp.args.Composite(**items), metrics=metrics)


def read_json_items(manager: ocp.CheckpointManager, step: int) -> tuple[dict, dict]:
  """(loop_state, config_dict) of a saved step; DamagedCheckpointError if unreadable."""
  with _reading(pathlib.Path(manager.directory) / str(step)):
    restored = manager.restore(step, args=ocp.args.Composite(
        **{LOOP: ocp.args.JsonRestore(), CONFIG: ocp.args.JsonRestore()}))
  return restored[LOOP], restored[CONFIG]


def check_process_count(step_dir) -> None:
  """Raises unless `step_dir`'s data positions were saved by as many processes as run now.

  Each process saves its own Grain iterator position, so a phase can only be
  resumed mid-way by the same number of processes.
  """
  step_dir = pathlib.Path(step_dir)
  saved = {p.name.rsplit('-of-', 1)[1].split('.')[0]
           for p in (step_dir / DATA).glob('process_*-of-*.json')}
  if not saved:
    return
  count = int(max(saved))
  if count != jax.process_count():
    raise CheckpointError(
        f'{step_dir}: saved by {count} process(es), but this run has '
        f'{jax.process_count()}. Each process saved its own data position: resume '
        f'with {count} processes, or start the phase over in a fresh --workdir '
        '(phase bests of earlier phases can be given as --config.init_checkpoint).')


def restore(manager: ocp.CheckpointManager, step: int, abstract_state, iterator):
  """Restores the train state (placed as `abstract_state`'s shardings) and the iterator.

  `abstract_state` is a pytree of `jax.ShapeDtypeStruct` with shardings.
  Returns (state, loop_state, config_dict); raises DamagedCheckpointError if the
  files are missing or truncated.
  """
  import grain
  items = {STATE: ocp.args.StandardRestore(abstract_state),
           LOOP: ocp.args.JsonRestore(), CONFIG: ocp.args.JsonRestore()}
  if iterator is not None:
    items[DATA] = grain.checkpoint.CheckpointRestore(iterator)
  with _reading(pathlib.Path(manager.directory) / str(step)):
    restored = manager.restore(step, args=ocp.args.Composite(**items))
  return restored[STATE], restored[LOOP], restored[CONFIG]


# ---------------------------------------------------------------------------
# Reading finished checkpoints.


def _quiet_orbax():
  """Hides Orbax's warnings about items a read leaves alone (expected here)."""
  return quiet_logs.quiet('absl')


def finished_steps(directory) -> list[tuple[int, dict]]:
  """(step, metrics) of every finished checkpoint in a phase directory, oldest first.

  Unfinished saves (a process killed mid-save) are not listed.
  """
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return []
  with _quiet_orbax():
    manager = ocp.CheckpointManager(
        _absolute(directory),
        options=ocp.CheckpointManagerOptions(read_only=True, create=False))
    try:
      return [(step, dict(manager.metadata(step).metrics or {}))
              for step in sorted(manager.all_steps())]
    finally:
      manager.close()


def val_loss(metrics: dict) -> Optional[float]:
  """The validation loss saved with a checkpoint, or None (phase 3, or NaN)."""
  value = metrics.get(VAL_LOSS)
  return None if value is None or math.isnan(value) else float(value)


def _step_checkpointer() -> ocp.Checkpointer:
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler(
      **{STATE: ocp.PyTreeCheckpointHandler(), LOOP: ocp.JsonCheckpointHandler(),
         CONFIG: ocp.JsonCheckpointHandler()}))


def item_names(step_dir) -> set[str]:
  """The items of a checkpoint step directory, as Orbax lists them.

  A folder without Orbax's step metadata lists its sub-folders.
  """
  with _quiet_orbax():
    return set(_step_checkpointer().metadata(_absolute(step_dir)).item_handlers or {})


def read_json(step_dir, item: str) -> dict:
  """A JSON item (`LOOP` or `CONFIG`) of a checkpoint, restored alone."""
  with _quiet_orbax():
    restored = _step_checkpointer().restore(
        _absolute(step_dir), args=ocp.args.Composite(**{item: ocp.args.JsonRestore()}))
  return restored[item]


def restore_arrays(step_dir, keys: Optional[Sequence[str]] = None) -> dict:
  """Entries of a checkpoint's train state (all, or `keys`) as numpy arrays.

  Restores nothing else: reading the EMA generator does not load the
  optimizer states or the discriminator.
  """
  step_dir = _absolute(step_dir)
  checkpointer = _step_checkpointer()
  with _quiet_orbax():
    try:
      tree = checkpointer.metadata(step_dir).item_metadata[STATE].tree
    except (FileNotFoundError, ValueError, KeyError, AttributeError, TypeError) as e:
      raise CheckpointError(f'{step_dir}: unreadable train-state item ({e}).') from e
    found = sorted(tree) if isinstance(tree, dict) else []
    missing = [key for key in keys or () if key not in found]
    if not found or missing:
      raise CheckpointError(
          f'{step_dir}: the train state has no {", ".join(map(repr, missing))} (found '
          f'{found or "?"}); not an srrgan-jax generator checkpoint.')
    target = {key: tree[key] for key in (keys or tree)}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                                target)
    restored = checkpointer.restore(step_dir, args=ocp.args.Composite(**{
        STATE: ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                      partial_restore=True)}))
  return restored[STATE]


def restore_generator(step_dir, *, use_ema: bool = True):
  """Reads only the (EMA) generator parameters of a checkpoint as numpy arrays."""
  key = 'ema_params' if use_ema else 'params'
  return restore_arrays(step_dir, [key])[key]
