"""Orbax checkpoints of a run: save/resume per phase, retention, generator loading.

Layout: `workdir/checkpoints/phase{N}/<step>/` with four items:
  state   the `TrainState` pytree (generator, EMA, optimizers, discriminator, key);
  data    the Grain iterator state (one file per process);
  loop    epoch, plateau/early-stopping counters, best validation loss (JSON);
  config  the run's configuration (JSON).
Phases 1-2 keep the best checkpoint by validation loss and the latest one;
phase 3 keeps one every `phase3.save_every_epochs` epochs (all of them, ranked by
LPIPS in evaluation) and the latest. `workdir/selected.json` names the model that
evaluation selected.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
from typing import Any, Iterable, Optional

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from configs import fields
from srrgan_jax import errors
from srrgan_jax import parallel

STATE, DATA, LOOP, CONFIG = 'state', 'data', 'loop', 'config'
SELECTED_FILE = 'selected.json'
VAL_LOSS = 'val_loss'


class CheckpointError(errors.UserError, ValueError):
  """A checkpoint is missing, not an srrgan-jax checkpoint, or incompatible."""


def phase_dir(workdir, phase: int) -> pathlib.Path:
  return pathlib.Path(workdir) / 'checkpoints' / f'phase{phase}'


def config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as plain JSON data (tuples become lists)."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _tuples(value):
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value


def config_from_dict(d: dict[str, Any]) -> ml_collections.ConfigDict:
  """Rebuilds a ConfigDict saved by `config_to_dict` (lists back to tuples)."""
  return ml_collections.ConfigDict(_tuples(d))


def config_differences(saved: dict, current: dict) -> dict[str, tuple[Any, Any]]:
  """{field: (saved, current)} for every field whose value differs."""
  a, b = fields.flatten(saved), fields.flatten(current)
  return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
          if a.get(k) != b.get(k)}


def architecture_differences(saved: dict, current: dict, *, with_disc: bool = True):
  """The config differences that make a checkpoint's parameters unusable."""
  return {k: v for k, v in config_differences(saved, current).items()
          if fields.is_architecture(k, with_disc=with_disc)}


def describe_differences(diffs: dict[str, tuple[Any, Any]]) -> str:
  return '; '.join(f'{k}: checkpoint {a!r} vs config {b!r}' for k, (a, b) in diffs.items())


def check_compatible(saved_config: dict, config: ml_collections.ConfigDict, where,
                     *, with_disc: bool = True) -> None:
  """Raises CheckpointError naming the fields if the architectures differ."""
  diffs = architecture_differences(saved_config, config_to_dict(config),
                                   with_disc=with_disc)
  if diffs:
    raise CheckpointError(
        f'{where}: the checkpoint was made with a different model '
        f'({describe_differences(diffs)}). Use the configuration it was trained '
        'with, or a fresh --workdir.')


def make_manager(workdir, phase: int, *, async_save: bool = True,
                 keep_steps: Iterable[int] = (), read_only: bool = False
                 ) -> ocp.CheckpointManager:
  """The Orbax manager of one phase with that phase's retention rules.

  Phases 1-2 keep the latest and the best by 'val_loss'; phase 3 keeps the
  latest and every step in `keep_steps` (its every-N-epochs checkpoints).
  """
  if read_only:
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
  elif phase in (1, 2):
    options = ocp.CheckpointManagerOptions(
        best_fn=lambda m: m[VAL_LOSS], best_mode='min',
        enable_async_checkpointing=async_save,
        preservation_policy=policies.AnyPreservationPolicy([
            policies.LatestN(n=1),
            # Sorted descending by loss, the last one (lowest) survives.
            policies.BestN(get_metric_fn=lambda m: m[VAL_LOSS], reverse=True, n=1,
                           keep_checkpoints_without_metrics=False),
        ]))
  else:
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=async_save,
        preservation_policy=policies.AnyPreservationPolicy([
            policies.LatestN(n=1), policies.CustomSteps(steps=list(keep_steps))]))
  return ocp.CheckpointManager(
      os.path.abspath(phase_dir(workdir, phase)), options=options,
      item_handlers=_item_handlers())


def _item_handlers():
  import grain  # Imported here: readers of generator weights need no Grain.
  return {STATE: ocp.StandardCheckpointHandler(),
          DATA: grain.checkpoint.CheckpointHandler(),
          LOOP: ocp.JsonCheckpointHandler(), CONFIG: ocp.JsonCheckpointHandler()}


def save(manager: ocp.CheckpointManager, step: int, state, iterator,
         loop_state: dict, config: ml_collections.ConfigDict,
         val_loss: Optional[float] = None) -> None:
  """Saves (asynchronously if so configured) on every process, as Orbax requires.

  The state is replicated, so it is written from one host copy: far fewer and
  larger transfers than per-device slices, and the device buffers are free to be
  donated to the next step at once. Orbax writes replicated numpy arrays from
  the primary process only.
  """
  import grain
  host_state = parallel.to_host(state)
  items = {STATE: ocp.args.StandardSave(host_state), LOOP: ocp.args.JsonSave(loop_state),
           CONFIG: ocp.args.JsonSave(config_to_dict(config))}
  if iterator is not None:
    items[DATA] = grain.checkpoint.CheckpointSave(iterator)
  metrics = None if val_loss is None else {VAL_LOSS: float(val_loss)}
  manager.save(step, args=ocp.args.Composite(**items), metrics=metrics)


def read_json_items(manager: ocp.CheckpointManager, step: int) -> tuple[dict, dict]:
  """(loop_state, config_dict) of a saved step."""
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
  Returns (state, loop_state, config_dict).
  """
  import grain
  items = {STATE: ocp.args.StandardRestore(abstract_state),
           LOOP: ocp.args.JsonRestore(), CONFIG: ocp.args.JsonRestore()}
  if iterator is not None:
    items[DATA] = grain.checkpoint.CheckpointRestore(iterator)
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  return restored[STATE], restored[LOOP], restored[CONFIG]


def _is_step_dir(path: pathlib.Path) -> bool:
  return path.is_dir() and path.name.isdigit() and (path / STATE).is_dir()


def list_checkpoints(workdir, phase: int) -> list[tuple[int, pathlib.Path]]:
  """Every finished checkpoint of a phase as (step, path), oldest first."""
  directory = phase_dir(workdir, phase)
  if not directory.is_dir():
    return []
  steps = sorted(int(p.name) for p in directory.iterdir() if _is_step_dir(p))
  return [(s, directory / str(s)) for s in steps]


def _val_loss(step_dir: pathlib.Path) -> Optional[float]:
  # Orbax keeps the metrics passed to `save` in the step's metrics item.
  for candidate in (step_dir / 'metrics' / 'metrics', step_dir / 'metrics'):
    if candidate.is_file():
      try:
        value = json.loads(candidate.read_text()).get(VAL_LOSS)
      except (OSError, ValueError, AttributeError):
        return None
      return None if value is None or math.isnan(value) else float(value)
  return None


def read_selected(workdir) -> Optional[dict]:
  """The contents of `workdir/selected.json`, or None."""
  path = pathlib.Path(workdir) / SELECTED_FILE
  if not path.is_file():
    return None
  return json.loads(path.read_text())


def best_checkpoint(workdir, phase: int) -> Optional[tuple[int, pathlib.Path]]:
  """The (step, path) a phase hands on: lowest val loss (phases 1-2), selected or latest (3)."""
  found = list_checkpoints(workdir, phase)
  if not found:
    return None
  selected = read_selected(workdir)
  if selected and int(selected.get('phase', -1)) == phase:
    for step, path in found:
      if step == int(selected['step']):
        return step, path
  scored = [(loss, step, path) for step, path in found
            if (loss := _val_loss(path)) is not None]
  if phase in (1, 2) and scored:
    _, step, path = min(scored, key=lambda t: (t[0], t[1]))
    return step, path
  return found[-1]


def write_selected(workdir, phase: int, step: int, info: Optional[dict] = None) -> pathlib.Path:
  """Records the model evaluation selected (e.g. the LPIPS-best phase-3 checkpoint)."""
  path = pathlib.Path(workdir) / SELECTED_FILE
  if jax.process_index() == 0:
    record = {'phase': int(phase), 'step': int(step),
              'path': str(phase_dir(workdir, phase) / str(step)), **(info or {})}
    tmp = path.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + '\n')
    os.replace(tmp, path)  # Atomic: readers never see half a file.
  return path


def _step_config(step_dir: pathlib.Path) -> dict:
  config_file = step_dir / CONFIG / 'metadata'
  candidates = [config_file] + sorted((step_dir / CONFIG).glob('*'))
  for candidate in candidates:
    if candidate.is_file():
      try:
        data = json.loads(candidate.read_text())
      except ValueError:
        continue
      if isinstance(data, dict) and 'model' in data:
        return data
  raise CheckpointError(
      f'{step_dir}: no srrgan-jax configuration found in this checkpoint (missing '
      f'{CONFIG}/ item); it was not written by srrgan-jax training.')


def _resolve(path_or_workdir, phase: Optional[int], step: Optional[int]) -> pathlib.Path:
  """The step directory meant by a run dir, a phase dir or a step dir."""
  path = pathlib.Path(path_or_workdir).expanduser()
  if not path.exists():
    raise CheckpointError(f'{path}: no such checkpoint or run directory.')
  if _is_step_dir(path):
    return path
  if path.is_dir() and path.name.startswith('phase') and path.parent.name == 'checkpoints':
    workdir, phase = path.parent.parent, phase or int(path.name[len('phase'):])
  elif (path / 'checkpoints').is_dir():
    workdir = path
  else:
    raise CheckpointError(
        f'{path}: not an srrgan-jax checkpoint: expected a run directory (with '
        'checkpoints/), a checkpoints/phaseN directory or a checkpoint step '
        f'directory (with a {STATE}/ item).')
  if phase is None:
    selected = read_selected(workdir)
    if selected:
      phase, step = int(selected['phase']), int(selected['step']) if step is None else step
    else:
      phase = next((p for p in (3, 2, 1) if list_checkpoints(workdir, p)), None)
      if phase is None:
        raise CheckpointError(f'{workdir}: the run has no checkpoints yet; train first.')
  found = dict(list_checkpoints(workdir, phase))
  if not found:
    raise CheckpointError(f'{workdir}: phase {phase} has no checkpoints.')
  if step is None:
    best = best_checkpoint(workdir, phase)
    if phase == 3 and not read_selected(workdir):
      best = max(found.items())
    return best[1]
  if step not in found:
    raise CheckpointError(
        f'{workdir}: phase {phase} has no checkpoint at step {step}; available '
        f'steps: {sorted(found)}.')
  return found[step]


def restore_generator(step_dir, *, use_ema: bool = True):
  """Reads only the (EMA) generator parameters of a checkpoint as numpy arrays."""
  step_dir = pathlib.Path(step_dir)
  key = 'ema_params' if use_ema else 'params'
  state_dir = (step_dir / STATE).resolve()
  checkpointer = ocp.PyTreeCheckpointer()
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  # Orbax warns that a lone item has no step metadata; that is expected here.
  absl_logger.setLevel(logging.ERROR)
  try:
    tree_metadata = checkpointer.metadata(state_dir).item_metadata.tree
  except (FileNotFoundError, ValueError) as e:
    raise CheckpointError(f'{step_dir}: unreadable train-state item ({e}).') from e
  finally:
    absl_logger.setLevel(level)
  if not isinstance(tree_metadata, dict) or key not in tree_metadata:
    raise CheckpointError(
        f'{step_dir}: the train state has no {key!r} (found '
        f'{sorted(tree_metadata) if isinstance(tree_metadata, dict) else "?"}); '
        'not an srrgan-jax generator checkpoint.')
  target = {key: tree_metadata[key]}
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  restored = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
      item=target, restore_args=restore_args, partial_restore=True))
  return restored[key]


def load_generator(path_or_workdir, *, phase: Optional[int] = None,
                   step: Optional[int] = None, use_ema: bool = True):
  """(config, generator params) of a checkpoint; restores nothing else.

  `path_or_workdir` is a run directory (-> the model named in selected.json, else
  phase 3's latest, else the best of phase 2, else of phase 1), a
  `checkpoints/phaseN` directory (-> that phase's best) or a step directory.
  """
  step_dir = _resolve(path_or_workdir, phase, step)
  config = config_from_dict(_step_config(step_dir))
  return config, restore_generator(step_dir, use_ema=use_ema)


def load_generator_for(config: ml_collections.ConfigDict, step_dir, *,
                       use_ema: bool = True):
  """Generator params of `step_dir`, checked against `config`'s architecture."""
  step_dir = _resolve(step_dir, None, None)
  check_compatible(_step_config(step_dir), config, step_dir, with_disc=False)
  return restore_generator(step_dir, use_ema=use_ema), step_dir
