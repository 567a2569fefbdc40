"""Reading a population run: which member a command means, and that member's generator.

A population run (see `population`) saves the phases before its fork phase as
single-model checkpoints, and each later checkpoint once for all members:
every train-state leaf has a leading member axis, in `population.members`
order. Evaluation records the LPIPS-selected (member, checkpoint) and each
member's own LPIPS-best checkpoint in selected.json; commands take a member by
index or by its swept values (`--member 2`, `--member gan_weight=0.1`), and
default to the selected one.
"""

from __future__ import annotations

from typing import Any, Optional

import ml_collections

from srrgan_jax import errors
from srrgan_jax import population
from srrgan_jax import run_dir


class MemberError(errors.UserError, ValueError):
  """A member was asked of a run or checkpoint that has none, or none was selected."""


def selected_member_steps(workdir) -> dict[int, int]:
  """{member: step of its LPIPS-best phase-3 checkpoint} recorded by evaluation, or {}."""
  selected = run_dir.read_selected(workdir) or {}
  return {int(entry['member']): int(entry['step'])
          for entry in selected.get('member_bests', ())}


def choose_member(config: ml_collections.ConfigDict, spec: str = '',
                  workdir=None) -> Optional[population.Member]:
  """The member `spec` names, else the run's selected member; None for a single run."""
  found = population.members(config)
  if spec or not found:
    return population.select(config, spec) if spec else None
  selected = run_dir.read_selected(workdir) if workdir else None
  if selected and selected.get('member') is not None:
    return found[int(selected['member'])]
  listing = '; '.join(f'{m.index}: {m.name}' for m in found)
  raise MemberError(
      f'{workdir or "this checkpoint"}: a population of {len(found)} members ({listing}) '
      'and no member selected yet; run eval.py --workdir RUN_DIR to select the '
      'LPIPS-best one, or pass --member with an index or the member\'s values '
      '(e.g. --member 0).')


def load_model(*, workdir: str = '', checkpoint: str = '', member: str = '',
               phase: Optional[int] = None, use_ema: bool = True,
               remedy: str = run_dir.DEFAULT_REMEDY
               ) -> tuple[ml_collections.ConfigDict, Any]:
  """(config, generator params) of a run's selected model or a checkpoint, by member.

  A population checkpoint gives the member named by `member` (index or
  field=value), else the run's selected member; with --workdir that member's
  own LPIPS-best checkpoint. `member` on a single run or on a checkpoint all
  members share is an error.
  """
  path = workdir or checkpoint
  step_dir = run_dir.resolve(path, phase)
  saved = run_dir._step_config(step_dir)  # pylint: disable=protected-access
  config = run_dir.config_from_dict(saved)
  phase = run_dir.phase_of(step_dir)
  if not population.holds_members(config, phase):
    if member and population.size(config):
      raise MemberError(
          f'--member {member}: {step_dir} is a phase-{phase} checkpoint, which all members '
          f'share (they differ from phase {population.fork_phase(config)} on); leave '
          '--member out.')
    if member:
      population.select(config, member)  # Names the single run.
    return run_dir.load_generator(step_dir, use_ema=use_ema, remedy=remedy)
  chosen = choose_member(config, member, workdir)
  if workdir and phase == 3:  # The member's LPIPS-best, once evaluated.
    best = selected_member_steps(workdir).get(chosen.index)
    if best is not None:
      step_dir = run_dir.resolve(workdir, phase, best)
  return run_dir.load_generator(step_dir, use_ema=use_ema, config=config, remedy=remedy,
                                member=chosen.index)
