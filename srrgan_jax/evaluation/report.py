"""The comparison table and ranking as console text, results.{md,json,csv} and ranking.json."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path
from typing import Optional, Sequence

from srrgan_jax import files
from srrgan_jax.evaluation.ranking import RankedCheckpoint
from srrgan_jax.evaluation.scoring import METRIC_HIGHER_IS_BETTER
from srrgan_jax.evaluation.scoring import METRIC_NAMES
from srrgan_jax.evaluation.scoring import METRIC_TITLES
from srrgan_jax.evaluation.scoring import MethodResult
from srrgan_jax.evaluation.scoring import Protocol
from srrgan_jax.evaluation.scoring import TestSet


@dataclasses.dataclass
class Row:
  """One line of the comparison table."""
  key: str  # Stable identifier: bilinear, bicubic, phase1_best, phase2_best, srrgan, ...
  label: str  # Human title as in the original table.
  checkpoint: str  # Checkpoint path ('' for the baselines).
  step: Optional[int]
  result: MethodResult
  # What else identifies the row, as JSON data: e.g. {'alpha': 0.5} of an
  # interpolation point.
  details: dict = dataclasses.field(default_factory=dict)
  # The model's name in figures: the label without what the column next to it
  # says (', phase-1 best', ', LPIPS-selected'); default: the label.
  title: str = ''


def _per_image_json(names: Sequence[str], per_image: dict) -> dict:
  return {name: {m: float(per_image[m][i]) for m in METRIC_NAMES}
          for i, name in enumerate(names)}


def build_report(config, protocol: Protocol, test_set: TestSet, rows: Sequence[Row],
                 ranking: Sequence[RankedCheckpoint], *, workdir=None) -> dict:
  """Everything the outputs hold, as plain JSON-able data."""
  return {
      'run_dir': str(workdir) if workdir is not None else '',
      'test_dir': test_set.folder,
      'num_images': len(test_set),
      'scale': int(config.scale),
      'protocol': protocol.as_dict(),
      'protocol_text': protocol.describe(config),
      'rows': [dict(key=r.key, label=r.label, checkpoint=r.checkpoint, step=r.step,
                    **r.result.means, **r.details) for r in rows],
      'per_image': {r.key: _per_image_json(test_set.names, r.result.per_image)
                    for r in rows},
      'ranking': [dict(e.summary(),
                       per_image=_per_image_json(test_set.names, e.result.per_image))
                  for e in ranking],
  }


def format_ranking(entries: Sequence[RankedCheckpoint]) -> str:
  """The full ranking as a fixed-width table (best LPIPS first; members of a population)."""
  members = any(e.member is not None for e in entries)
  lines = [f'{"rank":>4}  {"step":>8}  ' + (f'{"member":>6}  ' if members else '') +
           f'{"LPIPS":>7}  {"PSNR":>8}  {"SSIM":>7}  {"MAE":>7}']
  for e in entries:
    m = e.means
    lines.append(f'{e.rank:>4}  {e.step:>8}  ' + (f'{e.member:>6}  ' if members else '') +
                 f'{m["lpips"]:7.4f}  {m["psnr"]:8.4f}  {m["ssim"]:7.4f}  {m["mae"]:7.4f}')
  return '\n'.join(lines)


def _best_marks(rows: Sequence[dict]) -> dict[str, float]:
  best = {}
  for name in METRIC_NAMES:
    values = [r[name] for r in rows]
    best[name] = max(values) if METRIC_HIGHER_IS_BETTER[name] else min(values)
  return best


def format_table(report: dict) -> str:
  """The comparison table for the console."""
  header = f'{"":34}' + ''.join(f'{METRIC_TITLES[m]:>11}' for m in METRIC_NAMES)
  lines = [header]
  for row in report['rows']:
    lines.append(f'{row["label"]:34}' + ''.join(
        f'{row[m]:11.4f}' for m in METRIC_NAMES))
  return '\n'.join(lines)


def format_markdown(report: dict) -> str:
  """results.md: the table, the protocol beside it, and the ranking."""
  rows = report['rows']
  best = _best_marks(rows) if rows else {}
  out = [f'# Evaluation of {report["run_dir"] or "SR outputs"}', '',
         f'Test images: {report["num_images"]} from `{report["test_dir"]}`, '
         f'x{report["scale"]}.', '']
  out.append('| Model | Checkpoint | ' + ' | '.join(
      METRIC_TITLES[m] + (' ↑' if METRIC_HIGHER_IS_BETTER[m] else ' ↓')
      for m in METRIC_NAMES) + ' |')
  out.append('|---|---|' + '---:|' * len(METRIC_NAMES))
  for row in rows:
    cells = []
    for m in METRIC_NAMES:
      text = f'{row[m]:.4f}'
      cells.append(f'**{text}**' if row[m] == best[m] else text)
    step = '' if row['step'] is None else f'step {row["step"]}'
    out.append(f'| {row["label"]} | {step} | ' + ' | '.join(cells) + ' |')
  out += ['', 'Best value of each column in bold.', '', '## Protocol', '']
  out += [f'- {line}' for line in report['protocol_text']]
  if report['ranking']:
    members = 'members' in report
    out += ['', '## LPIPS ranking of the phase-3 checkpoints', '',
            '| Rank | Step |' + (' Member |' if members else '') + ' LPIPS | PSNR | SSIM | MAE |',
            '|---:|---:|' + ('---:|' if members else '') + '---:|---:|---:|---:|']
    for e in report['ranking']:
      member = f' {e["member"]} |' if members else ''
      out.append(f'| {e["rank"]} | {e["step"]} |{member} {e["lpips"]:.4f} | {e["psnr"]:.4f} '
                 f'| {e["ssim"]:.4f} | {e["mae"]:.4f} |')
    first = report['ranking'][0]
    which = f', member {first["member"]}' if members else ''
    out += ['', f'Selected (lowest LPIPS): step {first["step"]}{which}.']
  if 'members' in report:
    out += ['', '## Population members', '', '| Member | Weights |', '|---:|---|']
    out += [f'| {m["member"]} | {m["name"]} |' for m in report['members']]
    out += ['', 'Non-dominated (no other (member, checkpoint) has both lower LPIPS and '
            'higher PSNR): ' + ', '.join(f'member {e["member"]} step {e["step"]}'
                                         for e in report['frontier']) + '.']
  return '\n'.join(out) + '\n'


_ROW_FIELDS = ('key', 'label', 'step', 'checkpoint', *METRIC_NAMES)


def _protocol_columns(report: dict) -> dict:
  p = report['protocol']
  return {
      'images': 'full (tiled)' if p['crop_size'] == 0 else f'centre crop {p["crop_size"]}',
      'channel': 'Y (BT.601)' if p['y_channel'] else 'RGB',
      'crop_border': p['crop_border'],
      'weights': 'EMA' if p['use_ema'] else 'raw',
      'num_images': report['num_images'],
      'test_dir': report['test_dir'],
  }


def write_report(report: dict, out_dir: Path) -> dict[str, Path]:
  """results.md, results.json, results.csv (protocol columns beside the numbers)."""
  paths = {'markdown': out_dir / 'results.md', 'json': out_dir / 'results.json',
           'csv': out_dir / 'results.csv'}
  files.write_atomic(paths['markdown'], format_markdown(report))
  files.write_atomic(paths['json'], json.dumps(report, indent=2, allow_nan=True) + '\n')
  protocol = _protocol_columns(report)
  table = io.StringIO(newline='')
  details = sorted({k for row in report['rows'] for k in row} - set(_ROW_FIELDS))
  fields = [*_ROW_FIELDS, *details, *protocol]
  writer = csv.DictWriter(table, fieldnames=fields)
  writer.writeheader()
  for row in report['rows']:
    writer.writerow({**{k: row[k] for k in fields if k in row}, **protocol})
  files.write_atomic(paths['csv'], table.getvalue())
  return paths


def write_ranking(report: dict, path: Path) -> Path:
  """ranking.json: every phase-3 checkpoint with its scores, best first."""
  ranking = report['ranking']
  files.write_atomic(path, json.dumps({
      'criterion': 'lowest mean LPIPS',
      'selected': {k: ranking[0][k] for k in ('phase', 'step', 'path', 'member', 'lpips')
                   if k in ranking[0]},
      'test_dir': report['test_dir'], 'num_images': report['num_images'],
      'protocol': report['protocol'], 'protocol_text': report['protocol_text'],
      'ranking': ranking,
  }, indent=2) + '\n')
  return path


def write_json(data: dict, path) -> Path:
  path = Path(path)
  files.write_atomic(path, json.dumps(data, indent=2) + '\n')
  return path
