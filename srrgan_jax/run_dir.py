"""The layout of a run directory, which checkpoint a path means, and whether it fits a config.

  WORKDIR/config.json                         the configuration of the latest command
  WORKDIR/checkpoints/phase{1,2,3}/<step>/    Orbax checkpoints (see `checkpoints`)
  WORKDIR/checkpoints/damaged/phaseN-<step>/  checkpoints found damaged, set aside
  WORKDIR/selected.json                       the model evaluation selected
  WORKDIR/.lock.process<i>                    held while training (see `run_lock`)

A phase hands on its best checkpoint: the lowest validation loss in phases 1-2;
in phase 3 the one named in selected.json, else the latest. `check_fits` is the
one test of a checkpoint against a configuration; training (resume, start
weights), evaluation and inference all load generators through
`load_generator`, which applies it.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
from typing import Any, Optional

import jax
import ml_collections
import numpy as np

from configs import fields
from srrgan_jax import checkpoints
from srrgan_jax import config_check
from srrgan_jax import errors
from srrgan_jax import files
from srrgan_jax import models
from srrgan_jax import population
from srrgan_jax.checkpoints import CheckpointError

CONFIG_FILE = 'config.json'
SELECTED_FILE = 'selected.json'
PHASES = (1, 2, 3)
# What to do about a checkpoint that does not fit, unless the caller knows better.
DEFAULT_REMEDY = 'Use the configuration it was trained with, or a fresh --workdir.'


# ---------------------------------------------------------------------------
# Configurations as JSON.


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


def _read_json(path: pathlib.Path) -> dict:
  """A run file's JSON; CheckpointError naming the file if it is damaged."""
  try:
    data = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise CheckpointError(f'{path}: unreadable ({e}); restore it, or delete it if the '
                          'run\'s checkpoints still hold their configuration.') from e
  if not isinstance(data, dict):
    raise CheckpointError(f'{path}: not a JSON object; restore or delete it.')
  return data


def _write_json(path: pathlib.Path, data: dict) -> None:
  files.write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + '\n')


# ---------------------------------------------------------------------------
# config.json and selected.json.


def write_config(workdir, config: ml_collections.ConfigDict) -> pathlib.Path:
  """Records the run's configuration (process 0 writes; the others only return the path)."""
  workdir = pathlib.Path(workdir)
  path = workdir / CONFIG_FILE
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    _write_json(path, config_to_dict(config))
  return path


def check_run_config(workdir, config: ml_collections.ConfigDict) -> None:
  """Refuses a run directory whose checkpoints were made with another model, naming the fields.

  A config.json without checkpoints (a run that failed before its first save)
  protects nothing and is simply replaced.
  """
  path = pathlib.Path(workdir) / CONFIG_FILE
  if path.is_file() and has_checkpoints(workdir):
    check_fits(config, path, saved_config=_read_json(path), with_disc=True)


def read_config(workdir) -> ml_collections.ConfigDict:
  """The configuration a run was trained with (config.json, else its latest checkpoint's)."""
  workdir = pathlib.Path(workdir)
  if not workdir.is_dir():
    raise CheckpointError(f'{workdir}: run directory does not exist; pass the '
                          '--workdir of a training run.')
  path = workdir / CONFIG_FILE
  if path.is_file():
    config = config_from_dict(_read_json(path))
    try:  # A hand-edited config.json is named here, not deep in evaluation.
      config_check.check_config(config, known_fields_only=False)
    except errors.ConfigError as e:
      raise CheckpointError(f'{path}: {e}') from e
    return config
  for phase in reversed(PHASES):
    found = list_checkpoints(workdir, phase)
    if found:
      return config_from_dict(_step_config(found[-1][1]))
  raise CheckpointError(
      f'{workdir}: not a training run (no {CONFIG_FILE} and no checkpoints under '
      f'{workdir / "checkpoints"}/phase{{1,2,3}}); train first (python train.py '
      '--workdir ...) or pass the run directory that holds them.')


def read_selected(workdir) -> Optional[dict]:
  """The contents of `workdir/selected.json`, or None.

  'member' is the selected member of a population run, None for a single run
  (and in files written before populations existed).
  """
  path = pathlib.Path(workdir) / SELECTED_FILE
  if not path.is_file():
    return None
  return {'member': None, **_read_json(path)}


def write_selected(workdir, phase: int, step: int, info: Optional[dict] = None,
                   member: Optional[int] = None) -> pathlib.Path:
  """Records the model evaluation selected (e.g. the LPIPS-best phase-3 checkpoint).

  member: the index of the selected member in a population checkpoint.
  """
  path = pathlib.Path(workdir) / SELECTED_FILE
  if jax.process_index() == 0:
    _write_json(path, {'phase': int(phase), 'step': int(step),
                             'path': str(phase_dir(workdir, phase) / str(step)),
                             'member': None if member is None else int(member),
                             **(info or {})})
  return path


# ---------------------------------------------------------------------------
# Finding checkpoints.


def phase_of(step_dir) -> Optional[int]:
  """The phase of a step directory `.../checkpoints/phaseN/STEP`, or None elsewhere."""
  name = pathlib.Path(step_dir).parent.name
  return int(name[len('phase'):]) if name.startswith('phase') else None


def phase_dir(workdir, phase: int) -> pathlib.Path:
  return pathlib.Path(workdir) / 'checkpoints' / f'phase{phase}'


def list_checkpoints(workdir, phase: int) -> list[tuple[int, pathlib.Path]]:
  """Every finished checkpoint of a phase as (step, path), oldest first."""
  directory = phase_dir(workdir, phase)
  return [(step, directory / str(step)) for step, _ in checkpoints.finished_steps(directory)]


def best_checkpoint(workdir, phase: int) -> Optional[tuple[int, pathlib.Path]]:
  """The (step, path) a phase hands on: lowest val loss (phases 1-2), selected or latest (3)."""
  directory = phase_dir(workdir, phase)
  found = checkpoints.finished_steps(directory)
  if not found:
    return None
  selected = read_selected(workdir)
  if selected and int(selected.get('phase', -1)) == phase:
    for step, _ in found:
      if step == int(selected['step']):
        return step, directory / str(step)
  scored = [(loss, step) for step, metrics in found
            if (loss := checkpoints.val_loss(metrics)) is not None]
  if phase in (1, 2) and scored:
    _, step = min(scored)
    return step, directory / str(step)
  return found[-1][0], directory / str(found[-1][0])


def has_checkpoints(workdir) -> bool:
  """True if any phase of the run has a finished checkpoint."""
  return latest_checkpoint(workdir) is not None


def latest_checkpoint(workdir) -> Optional[pathlib.Path]:
  """The newest finished checkpoint of the run's latest phase that has one, or None."""
  for phase in reversed(PHASES):
    found = list_checkpoints(workdir, phase)
    if found:
      return found[-1][1]
  return None


def set_aside(step_dir) -> pathlib.Path:
  """Moves a damaged checkpoint out of its phase to checkpoints/damaged/ (kept, not deleted).

  Process 0 moves it; every process returns the new place.
  """
  step_dir = pathlib.Path(step_dir)
  damaged = step_dir.parent.parent / 'damaged'
  target = damaged / f'{step_dir.parent.name}-{step_dir.name}'
  number = 1
  while target.exists():  # An earlier damaged copy of the same step is kept too.
    number += 1
    target = damaged / f'{step_dir.parent.name}-{step_dir.name}-{number}'
  if jax.process_index() == 0:
    damaged.mkdir(parents=True, exist_ok=True)
    os.replace(step_dir, target)
  return target


def _is_step_dir(path: pathlib.Path) -> bool:
  return path.is_dir() and checkpoints.STATE in checkpoints.item_names(path)


def resolve(path_or_workdir, phase: Optional[int] = None,
            step: Optional[int] = None) -> pathlib.Path:
  """The step directory meant by a run dir, a phase dir or a step dir.

  A run directory means the model named in selected.json, else phase 3's
  latest, else the best of phase 2, else of phase 1; a `checkpoints/phaseN`
  directory means that phase's best.
  """
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
        f'directory (with a {checkpoints.STATE}/ item).')
  if phase is None:
    selected = read_selected(workdir)
    if selected:
      phase, step = int(selected['phase']), int(selected['step']) if step is None else step
    else:
      phase = next((p for p in reversed(PHASES) if list_checkpoints(workdir, p)), None)
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


# ---------------------------------------------------------------------------
# Does a checkpoint fit a configuration?


def _param_shapes(tree) -> dict[str, tuple]:
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return {jax.tree_util.keystr(path, simple=True, separator='/'): tuple(np.shape(leaf))
          for path, leaf in leaves}


def _generator_shapes(config: ml_collections.ConfigDict) -> dict[str, tuple]:
  return _generator_shapes_of(json.dumps(config_to_dict(config), sort_keys=True))


@functools.lru_cache(maxsize=4)  # Evaluation checks every checkpoint of a run.
def _generator_shapes_of(config_json: str) -> dict[str, tuple]:
  model = models.build_generator(config_from_dict(json.loads(config_json)))
  side = model.size_multiple  # Parameter shapes do not depend on the input size.
  lr = jax.ShapeDtypeStruct((1, side, side, 3), np.float32)
  return _param_shapes(jax.eval_shape(lambda x: model.init(jax.random.key(0), x), lr)['params'])


def check_fits(config: ml_collections.ConfigDict, where, *, saved_config: Optional[dict] = None,
               params=None, with_disc: bool = False, remedy: str = DEFAULT_REMEDY) -> None:
  """Raises CheckpointError unless a checkpoint fits the architecture of `config`.

  saved_config: the configuration the checkpoint was made with (JSON data); the
    fields that differ in the generator (and with `with_disc` the
    discriminator) are named.
  params: generator parameters; every parameter whose shape differs from what
    `config` builds is counted and the first ones named.
  remedy: the sentence that tells the user what to do instead.
  """
  if saved_config is not None:
    diffs = architecture_differences(saved_config, config_to_dict(config),
                                     with_disc=with_disc)
    if diffs:
      raise CheckpointError(
          f'{where}: the checkpoint was made with another architecture '
          f'({describe_differences(diffs)}). {remedy}')
  if params is not None:
    expected, found = _generator_shapes(config), _param_shapes(params)
    problems = []
    for name in sorted(set(expected) | set(found)):
      if name not in found:
        problems.append(f'{name} missing')
      elif name not in expected:
        problems.append(f'{name} unexpected')
      elif expected[name] != found[name]:
        problems.append(f'{name} has shape {found[name]}, expected {expected[name]}')
    if problems:
      m = config.model
      raise CheckpointError(
          f'{where}: its generator weights do not fit the architecture of the config '
          f'(stem {m.stem_channels}, encoder {tuple(m.encoder_channels)}, decoder '
          f'{tuple(m.decoder_channels)}, scale {config.scale}): {len(problems)} '
          f'parameters differ, e.g. {"; ".join(problems[:3])}. {remedy}')


def _step_config(step_dir: pathlib.Path) -> dict:
  if checkpoints.CONFIG not in checkpoints.item_names(step_dir):
    raise CheckpointError(
        f'{step_dir}: no srrgan-jax configuration found in this checkpoint (missing '
        f'{checkpoints.CONFIG}/ item); it was not written by srrgan-jax training.')
  return checkpoints.read_json(step_dir, checkpoints.CONFIG)


def population_members(step_dir, saved_config: Optional[dict] = None) -> list[str]:
  """The member names of a checkpoint that holds a population ([] for a single model).

  A phase from the population's fork phase on holds every member, in
  `population.members` order; earlier phases are shared single models.
  """
  step_dir = pathlib.Path(step_dir)
  config = config_from_dict(saved_config or _step_config(step_dir))
  phase = phase_of(step_dir)
  if phase is None or not population.holds_members(config, phase):
    return []
  return [m.name for m in population.members(config)]


def load_generator(path_or_workdir, *, phase: Optional[int] = None,
                   step: Optional[int] = None, use_ema: bool = True,
                   config: Optional[ml_collections.ConfigDict] = None,
                   remedy: str = DEFAULT_REMEDY, member: Optional[int] = None
                   ) -> tuple[ml_collections.ConfigDict, Any]:
  """(config, generator params) of a checkpoint (see `resolve`); restores nothing else.

  Without `config` the checkpoint's own configuration is returned; with it, the
  checkpoint must have been made with the same generator, and `config` is
  returned. Either way the parameters are checked against the configuration.
  A population checkpoint holds every member: `member` (an index) picks one,
  and is required there.
  """
  step_dir = resolve(path_or_workdir, phase, step)
  saved = _step_config(step_dir)
  if config is None:
    config = config_from_dict(saved)
  else:
    check_fits(config, step_dir, saved_config=saved, remedy=remedy)
  params = checkpoints.restore_generator(step_dir, use_ema=use_ema)
  names = population_members(step_dir, saved)
  listing = '; '.join(f'{k}: {name}' for k, name in enumerate(names))
  if names and member is None:
    raise CheckpointError(f'{step_dir}: a population checkpoint of {len(names)} members '
                          f'({listing}); name the member to load (infer.py --member K).')
  if member is not None:
    if not names:
      raise CheckpointError(f'{step_dir}: not a population checkpoint (one model); '
                            'load it without a member.')
    if not 0 <= member < len(names):
      raise CheckpointError(f'{step_dir}: no member {member}; the members are {listing}.')
    params = jax.tree.map(lambda x: x[member], params)
  check_fits(config, step_dir, params=params, remedy=remedy)
  return config, params
