"""The host-side state of a training phase (or population), saved as JSON with every checkpoint.

What the loop keeps between steps besides the device state: its position
(step, epoch), the plateau / early-stopping tracker of phases 1-2, the best
validation result so far and where the phase's generator started. `to_json`
and `from_json` give the checkpoint's `loop` item with the same fields (and
names) as every checkpoint written so far.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from srrgan_jax.train import optim


@dataclasses.dataclass
class LoopState:
  """Position, plateau tracker and best result of one phase (see module doc)."""
  phase: int
  start: str  # Where the phase's generator came from (for people reading checkpoints).
  step: int = 0  # Steps taken in the phase when last saved.
  epoch: int = 0  # Finished epochs.
  plateau: Optional[optim.PlateauTracker] = None  # Phases 1-2: learning rate, early stop.
  best_step: Optional[int] = None  # Phases 1-2: lowest validation loss; phase 3: latest.
  best_val_loss: Optional[float] = None
  best_metrics: Optional[dict[str, float]] = None  # Validation metrics at `best_step`.
  last_val_metrics: Optional[dict[str, float]] = None  # Of the latest epoch.

  @property
  def stopped_early(self) -> bool:
    return self.plateau is not None and self.plateau.stopped

  def finished(self, epochs: int) -> bool:
    """True once the phase stopped early or ran all its `epochs`."""
    return self.stopped_early or self.epoch >= epochs

  def record_validation(self, step: int, epoch: int, val: dict[str, float]) -> None:
    """Takes one epoch's validation metrics (with 'loss'); the plateau tracker too."""
    self.epoch, self.last_val_metrics = epoch, val
    if self.phase == 3 or self.best_val_loss is None or val['loss'] < self.best_val_loss:
      self.best_step, self.best_val_loss, self.best_metrics = step, val['loss'], val
    if self.plateau is not None:
      self.plateau.update(val['loss'], epoch)

  def to_json(self) -> dict[str, Any]:
    return {
        'phase': self.phase, 'step': self.step, 'epoch': self.epoch,
        'stopped_early': self.stopped_early,
        'plateau': self.plateau.to_dict() if self.plateau else None,
        'best_step': self.best_step, 'best_val_loss': self.best_val_loss,
        'best_metrics': self.best_metrics, 'last_val_metrics': self.last_val_metrics,
        'start': self.start}

  @classmethod
  def from_json(cls, saved: dict[str, Any]) -> 'LoopState':
    # 'stopped_early' is the tracker's `stopped`, saved for people reading the file.
    plateau = saved.get('plateau')
    return cls(
        phase=int(saved['phase']), start=saved['start'], step=int(saved['step']),
        epoch=int(saved['epoch']),
        plateau=optim.PlateauTracker.from_dict(plateau) if plateau else None,
        best_step=saved.get('best_step'), best_val_loss=saved.get('best_val_loss'),
        best_metrics=saved.get('best_metrics'),
        last_val_metrics=saved.get('last_val_metrics'))


@dataclasses.dataclass
class PopulationLoopState:
  """The host state of a population phase: one `LoopState` per member.

  The members step together (one position, `step` and `epoch`); each keeps
  its own plateau tracker, early stop and best result. The phase stops early
  once every member has.
  """
  phase: int
  start: str
  members: list[LoopState]
  names: list[str]  # The members' names (`population.Member.name`), in member order.
  step: int = 0
  epoch: int = 0

  @property
  def stopped_early(self) -> bool:
    return all(m.stopped_early for m in self.members)

  @property
  def active(self) -> list[bool]:
    """Per member: still training (not stopped early)."""
    return [not m.stopped_early for m in self.members]

  def finished(self, epochs: int) -> bool:
    return self.stopped_early or self.epoch >= epochs

  def record_validation(self, step: int, epoch: int, vals: list[dict[str, float]]) -> None:
    """Takes every member's validation metrics of one epoch (see `LoopState`).

    A member that stopped early keeps its tracker and best as they were.
    """
    self.epoch = epoch
    for member, val in zip(self.members, vals):
      if member.stopped_early:
        member.epoch, member.last_val_metrics = epoch, val
      else:
        member.record_validation(step, epoch, val)

  def to_json(self) -> dict[str, Any]:
    members = []
    for name, member in zip(self.names, self.members):
      member.step = self.step
      members.append({'name': name, **member.to_json()})
    return {'phase': self.phase, 'step': self.step, 'epoch': self.epoch,
            'stopped_early': self.stopped_early, 'start': self.start, 'members': members}

  @classmethod
  def from_json(cls, saved: dict[str, Any]) -> 'PopulationLoopState':
    return cls(phase=int(saved['phase']), start=saved['start'],
               members=[LoopState.from_json(m) for m in saved['members']],
               names=[m['name'] for m in saved['members']],
               step=int(saved['step']), epoch=int(saved['epoch']))


def from_json(saved: dict[str, Any]):
  """The `LoopState` or `PopulationLoopState` a checkpoint's loop item holds."""
  if 'members' in saved:
    return PopulationLoopState.from_json(saved)
  return LoopState.from_json(saved)
