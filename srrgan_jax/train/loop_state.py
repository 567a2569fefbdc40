"""The host-side state of a training phase, saved as JSON with every checkpoint.

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
