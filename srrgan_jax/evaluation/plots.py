"""The evaluation figures: the perception-distortion plane and the zoomed comparison.

Figures are drawn on `matplotlib.figure.Figure` directly (no pyplot): files
only, no display needed, and no process-wide backend switched.
"""

from __future__ import annotations

from pathlib import Path
import re
from typing import Optional, Sequence

import matplotlib
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
import numpy as np

from srrgan_jax import models
from srrgan_jax.evaluation.ranking import RankedCheckpoint
from srrgan_jax.evaluation.ranking import non_dominated
from srrgan_jax.evaluation.report import Row
from srrgan_jax.evaluation.scoring import TestSet

_MARKERS = {'bilinear': ('s', 'tab:gray'), 'bicubic': ('D', 'tab:brown'),
            'phase1_best': ('o', 'tab:green'), 'phase2_best': ('^', 'tab:orange'),
            'srrgan': ('*', 'tab:red')}
# Characters of a comparison panel's title per line (fontsize 8 on a 2.2-inch column).
_TITLE_WIDTH = 30


def _member_colour(member: int):
  """A colour per member, none of them one of the table rows' (tab10) colours."""
  return matplotlib.colormaps['tab20b'](member * 4 % 20 + member // 5 % 4)


def plot_perception_distortion(rows: Sequence[Row], ranking: Sequence[RankedCheckpoint],
                               path: Path, member_names: Optional[dict[int, str]] = None
                               ) -> Path:
  """PSNR vs LPIPS: one point per phase-3 checkpoint and per table row.

  Interpolation rows (with an 'alpha') form one curve, points joined in alpha
  order and labelled with their alpha. With `member_names` (a population run),
  each member's checkpoints have their own colour, its table row is a star of
  that colour, and the non-dominated frontier of all of them is drawn.
  """
  fig = Figure(figsize=(6.4, 4.8), dpi=120)
  ax = fig.subplots()
  curve = [row for row in rows if 'alpha' in row.details]
  if curve:
    lp = [row.result.means['lpips'] for row in curve]
    ps = [row.result.means['psnr'] for row in curve]
    ax.plot(lp, ps, '-o', color='tab:purple', markersize=4, linewidth=1, zorder=2,
            label='network interpolation (phase-2 best to GAN)')
    for row, x, y in zip(curve, lp, ps):
      ax.annotate(f'α={row.details["alpha"]:g}', (x, y), fontsize=6, xytext=(3, -8),
                  textcoords='offset points', color='tab:purple')
  groups = {}  # Member (None for a single run) -> its ranked checkpoints.
  for entry in ranking:
    groups.setdefault(entry.member, []).append(entry)
  for member, entries in sorted(groups.items(), key=lambda item: item[0] or 0):
    colour = 'tab:blue' if member is None else _member_colour(member)
    label = ('phase-3 checkpoints' if member is None else
             f'member {member} ({member_names[member]}) checkpoints')
    lp = [e.means['lpips'] for e in entries]
    ps = [e.means['psnr'] for e in entries]
    ax.scatter(lp, ps, s=18, color=colour, alpha=0.6, label=label)
    for e, x, y in zip(entries, lp, ps):
      ax.annotate(str(e.step), (x, y), fontsize=6, xytext=(3, 2),
                  textcoords='offset points', color=colour)
  if member_names and ranking:
    frontier = non_dominated(ranking)
    ax.plot([e.means['lpips'] for e in frontier], [e.means['psnr'] for e in frontier],
            '--', color='black', linewidth=1, zorder=1, label='non-dominated frontier')
  for row in rows:
    if 'alpha' in row.details:  # Drawn as the curve.
      continue
    marker, colour = _MARKERS.get(row.key, ('x', 'black'))
    if 'member' in row.details:
      marker, colour = '*', _member_colour(row.details['member'])
    means = row.result.means
    ax.scatter([means['lpips']], [means['psnr']], marker=marker, color=colour,
               s=110 if marker == '*' else 50, label=row.label,
               edgecolors='black', linewidths=0.5, zorder=3)
  ax.set_xlabel('LPIPS (lower = better perceptual quality)')
  ax.set_ylabel('PSNR dB (higher = less distortion)')
  ax.set_title('Perception-distortion plane')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc='best')
  fig.tight_layout()
  fig.savefig(path)
  return path


def figure_indices(test_set: TestSet, count: int) -> list[int]:
  """The first `count` test images (stable across runs) for the figure."""
  return list(range(min(count, len(test_set))))


def zoom_box(hr_HWC: np.ndarray, fraction: float = 0.25) -> tuple[int, int, int]:
  """(top, left, side) of the most detailed square patch: where zooming shows most."""
  height, width = hr_HWC.shape[:2]
  side = max(8, int(min(height, width) * fraction))
  gray = hr_HWC.mean(axis=2)
  detail = np.abs(np.diff(gray, axis=0))[:, :-1] + np.abs(np.diff(gray, axis=1))[:-1]
  best, best_score = (0, 0), -1.0
  stride = max(1, side // 4)
  for top in range(0, height - side + 1, stride):
    for left in range(0, width - side + 1, stride):
      score = detail[top:top + side - 1, left:left + side - 1].sum()
      if score > best_score:
        best, best_score = (top, left), score
  return best[0], best[1], side


def _to_display(x_HWC: np.ndarray) -> np.ndarray:
  return models.to_unit(np.asarray(x_HWC, np.float32))


def wrap_title(title: str, width: int = _TITLE_WIDTH) -> str:
  """`title` on lines of at most `width` characters, broken after a space or a comma.

  Member names have no spaces ('gan_weight=0.1,pixel_weight=2'), so a comma is a
  break too; a longer unbroken piece keeps a line of its own.
  """
  lines = ['']
  for piece in re.findall(r'[^ ,]+[ ,]*|[ ,]+', title):
    if lines[-1] and len(lines[-1] + piece.rstrip()) > width:
      lines.append('')
    lines[-1] += piece
  return '\n'.join(line.rstrip() for line in lines)


def plot_comparison(test_set: TestSet, rows: Sequence[Row], indices: Sequence[int],
                    path: Path) -> Path:
  """Writes `comparison_figure` to `path`."""
  comparison_figure(test_set, rows, indices).savefig(path)
  return path


def comparison_figure(test_set: TestSet, rows: Sequence[Row],
                      indices: Sequence[int]) -> Figure:
  """LR input | bilinear | each model | HR, with a zoomed patch row under each image."""
  # Rows that kept no outputs (e.g. interpolation points) are not shown.
  shown = [r for r in rows if r.key != 'bicubic' and
           all(i in r.result.kept_outputs for i in indices)]
  columns = len(shown) + 2
  fig = Figure(figsize=(2.2 * columns, 4.4 * len(indices)), dpi=110)
  axes = fig.subplots(2 * len(indices), columns, squeeze=False)
  for n, index in enumerate(indices):
    hr = test_set.hr[index]
    scale = hr.shape[0] // test_set.lr[index].shape[0]
    lr_nearest = np.repeat(np.repeat(test_set.lr[index], scale, 0), scale, 1)
    panels = [('LR input', lr_nearest, None)]
    for r in shown:
      sr = r.result.kept_outputs[index]
      psnr = r.result.per_image['psnr'][index]
      lp = r.result.per_image['lpips'][index]
      panels.append((wrap_title(r.title or r.label), sr, f'{psnr:.2f} dB / {lp:.3f}'))
    panels.append(('HR ground truth', hr, 'PSNR / LPIPS'))
    top, left, side = zoom_box(hr)
    for col, (title, image, subtitle) in enumerate(panels):
      full_ax, zoom_ax = axes[2 * n, col], axes[2 * n + 1, col]
      full_ax.imshow(_to_display(image), interpolation='nearest')
      full_ax.add_patch(Rectangle((left - 0.5, top - 0.5), side, side, fill=False,
                                  edgecolor='yellow', linewidth=1.0))
      full_ax.set_title(title if n == 0 else '', fontsize=8)
      zoom_ax.imshow(_to_display(image[top:top + side, left:left + side]),
                     interpolation='nearest')
      if subtitle:
        zoom_ax.set_xlabel(subtitle, fontsize=7)
      for ax in (full_ax, zoom_ax):
        ax.set_xticks([])
        ax.set_yticks([])
    axes[2 * n, 0].set_ylabel(test_set.names[index], fontsize=7)
  fig.tight_layout()
  return fig
