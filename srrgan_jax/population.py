"""Loss-weight populations: which members a run trains, and how a member is named.

A population sweeps loss weights (and phase-3 learning rates) given in the
config's `population` block, e.g. `--config.population.gan_weight='(0.01,0.1)'`.
Several swept fields form a grid (every combination) or, with
`population.mode='zip'`, the i-th values go together. Members train as one
program; the phases before the first one whose settings they differ in
(`fork_phase`) are trained once and shared. Without swept fields there is no
population and a run is a single model.

Pure config logic, no JAX: the training loop, evaluation and inference use it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Optional

import ml_collections

from srrgan_jax import config_check
from srrgan_jax import errors

# Population field -> the config field it sweeps, in the order members are enumerated.
SWEEPABLE = {
    'phase2_perceptual_weight': 'loss.phase2_perceptual_weight',
    'pixel_weight': 'loss.pixel_weight',
    'perceptual_weight': 'loss.perceptual_weight',
    'gan_weight': 'loss.gan_weight',
    'g_learning_rate': 'phase3.g_learning_rate',
    'd_learning_rate': 'phase3.d_learning_rate',
}
# The one phase that reads each swept field: members are identical before it (and
# differ after it only through the weights it hands on).
READ_IN_PHASE = {'phase2_perceptual_weight': 2, 'pixel_weight': 3, 'perceptual_weight': 3,
                 'gan_weight': 3, 'g_learning_rate': 3, 'd_learning_rate': 3}
_LEARNING_RATES = ('g_learning_rate', 'd_learning_rate')
MODES = ('grid', 'zip')


@dataclasses.dataclass(frozen=True)
class Member:
  """One member: its position in the population and its swept values."""
  index: int
  values: dict[str, float]  # Config field ('loss.gan_weight') -> this member's value.

  @property
  def name(self) -> str:
    """'gan_weight=0.1,pixel_weight=20': the swept values, short field names."""
    return ','.join(f'{field.rsplit(".", 1)[-1]}={value:g}'
                    for field, value in self.values.items())


def swept(config: ml_collections.ConfigDict) -> dict[str, tuple]:
  """{population field: its values} of the fields the config sweeps."""
  block = config.get('population')
  if block is None:
    return {}
  return {name: tuple(block[name]) for name in SWEEPABLE if block.get(name) is not None}


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first population field that cannot work."""
  sweeps = swept(config)
  block = config.get('population')
  if block is None:
    return
  if block.mode not in MODES:
    _fail('mode', block.mode, f'one of {", ".join(map(repr, MODES))}')
  for name, values in sweeps.items():
    positive = name in _LEARNING_RATES
    if not values:
      _fail(name, values, 'a non-empty tuple of values, e.g. "(0.01,0.1)"; leave it unset '
            'to not sweep it')
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
             and (v > 0 if positive else v >= 0) for v in values)
    if not ok:
      _fail(name, values, f'a tuple of numbers {"> 0" if positive else ">= 0"}')
    if len(set(values)) != len(values):
      _fail(name, values, 'a tuple of distinct values (each member must differ)')
    phase = READ_IN_PHASE[name]
    if phase not in tuple(config.phases):
      _fail(name, values, f'left unset: it sweeps a phase-{phase} setting and '
            f'config.phases={tuple(config.phases)} runs no phase {phase}')
  if block.mode == 'zip' and len({len(v) for v in sweeps.values()}) > 1:
    lengths = ', '.join(f'{n}: {len(v)}' for n, v in sweeps.items())
    _fail('mode', 'zip', f"used with swept tuples of one length (got {lengths}), or use "
          "'grid'")
  devices = block.member_devices
  if not (isinstance(devices, int) and devices >= 1):
    _fail('member_devices', devices, 'an integer >= 1')
  count = size(config)
  if devices > 1 and not count:
    _fail('member_devices', devices, '1 when no field is swept')
  if count and count % devices:
    _fail('member_devices', devices, f'a divisor of the population size ({count} members)')


def _fail(name: str, value, allowed: str):
  config_check.reject(f'population.{name}', value, allowed)


def members(config: ml_collections.ConfigDict) -> list[Member]:
  """The members in training order ([] when the config sweeps nothing)."""
  sweeps = swept(config)
  if not sweeps:
    return []
  fields = [SWEEPABLE[name] for name in sweeps]
  if config.population.mode == 'zip':
    combos = zip(*sweeps.values())
  else:
    combos = itertools.product(*sweeps.values())
  return [Member(i, dict(zip(fields, (float(v) for v in combo))))
          for i, combo in enumerate(combos)]


def size(config: ml_collections.ConfigDict) -> int:
  """Number of members; 0 without a population."""
  return len(members(config))


def fork_phase(config: ml_collections.ConfigDict) -> Optional[int]:
  """The first phase whose members differ (earlier phases are shared), or None."""
  sweeps = swept(config)
  return min(READ_IN_PHASE[name] for name in sweeps) if sweeps else None


def holds_members(config: ml_collections.ConfigDict, phase: int) -> bool:
  """True if `phase`'s checkpoints hold every member (a leading member axis on each leaf)."""
  fork = fork_phase(config)
  return fork is not None and phase >= fork


def affects_phase(config: ml_collections.ConfigDict, field: str, phase: int) -> bool:
  """False if `field` (dotted) is a sweepable setting that training `phase` does not read.

  A swept value (`population.gan_weight`) and the setting it sweeps
  (`loss.gan_weight`) are read only in their `READ_IN_PHASE`, and the setting
  not even there while the config sweeps it (each member brings its own value).
  """
  for name, target in SWEEPABLE.items():
    if field == f'population.{name}':
      return READ_IN_PHASE[name] == phase
    if field == target:
      return READ_IN_PHASE[name] == phase and name not in swept(config)
  return True


def member_config(config: ml_collections.ConfigDict, member: Member
                  ) -> ml_collections.ConfigDict:
  """The single-run config of `member`: its values applied, no population."""
  out = ml_collections.ConfigDict(config.to_dict())
  for field, value in member.values.items():
    block, name = field.split('.')
    out[block][name] = value
  for name in SWEEPABLE:
    out.population[name] = None
  return out


def select(config: ml_collections.ConfigDict, spec: str) -> Member:
  """The member named by `spec`: an index ('2') or 'gan_weight=0.1[,field=value]'.

  Field names may be short ('gan_weight') or full ('loss.gan_weight').
  """
  all_members = members(config)
  listing = '; '.join(f'{m.index}: {m.name}' for m in all_members)
  if not all_members:
    raise errors.ConfigError(f'--member {spec}: this run has no population (a single '
                             'model); leave --member out.')
  spec = spec.strip()
  if spec.isdigit():
    index = int(spec)
    if index >= len(all_members):
      raise errors.ConfigError(f'--member {spec}: the population has members 0 to '
                               f'{len(all_members) - 1} ({listing}).')
    return all_members[index]
  wanted = {}
  for part in spec.split(','):
    name, sep, text = part.partition('=')
    name = name.strip()
    field = SWEEPABLE.get(name, name)
    try:
      if not sep or field not in SWEEPABLE.values():
        raise ValueError
      wanted[field] = float(text)
    except ValueError:
      raise errors.ConfigError(
          f'--member {spec}: expected an index or field=value pairs of swept fields '
          f'({", ".join(SWEEPABLE)}); members: {listing}.') from None
  matching = [m for m in all_members
              if all(f in m.values and math.isclose(m.values[f], v, rel_tol=1e-9)
                     for f, v in wanted.items())]
  if len(matching) != 1:
    found = 'no member has' if not matching else f'{len(matching)} members have'
    raise errors.ConfigError(f'--member {spec}: {found} these values; members: {listing}.')
  return matching[0]
