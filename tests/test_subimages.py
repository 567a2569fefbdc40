"""`srrgan-prepare-data`: overlapping sub-images, bit depth kept, failures reported."""

import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np

from srrgan_jax import image_io
from srrgan_jax import tiling
from test_degradation import photo_like

REPO = Path(__file__).resolve().parent.parent


def console_script(name):
  """The command line that runs console script `name` as pyproject.toml installs it."""
  with open(REPO / 'pyproject.toml', 'rb') as f:
    module, function = tomllib.load(f)['project']['scripts'][name].split(':')
  return [sys.executable, '-c', f'import {module}; {module}.{function}()']


def test_prepare_command_cuts_overlapping_subimages(tmp_path):
  source = tmp_path / 'hr'
  image_io.write_image(source / 'wide.png', photo_like(40, 70), bit_depth=16)
  image_io.write_image(source / 'sub' / 'tiny.png', photo_like(20, 20, 1))
  (source / 'bad.png').write_bytes(b'nope')
  assert tiling.tile_starts(70, 32, 32 - 16) == [0, 16, 32, 38]
  assert tiling.tile_starts(40, 32, 32 - 16) == [0, 8]
  assert tiling.tile_starts(20, 32, 32 - 16) == [0]
  output = subprocess.run(
      console_script('srrgan-prepare-data') + [
          '--input', str(source), '--output', str(tmp_path / 'out'), '--crop', '32',
          '--step', '16', '--workers', '2'],
      capture_output=True, text=True, cwd=REPO, check=False)
  assert output.returncode == 1 and 'bad.png' in output.stderr  # Reported; the others done.
  assert '2 images -> 9 sub-images' in output.stdout
  cuts = sorted(p.relative_to(tmp_path / 'out').as_posix()
                for p in (tmp_path / 'out').rglob('*.png'))
  assert len(cuts) == 9 and 'sub/tiny_s001.png' in cuts
  first = image_io.read_image(tmp_path / 'out' / 'wide_s001.png')
  assert first.bit_depth == 16 and first.rgb.shape == (32, 32, 3)
  np.testing.assert_allclose(first.rgb, image_io.read_rgb(source / 'wide.png')[:32, :32])
  last = image_io.read_rgb(tmp_path / 'out' / 'wide_s008.png')
  np.testing.assert_allclose(last, image_io.read_rgb(source / 'wide.png')[8:40, 38:70])


def test_prepare_command_bad_input_is_one_line(tmp_path):
  command = console_script('srrgan-prepare-data')
  missing = subprocess.run(command + ['--input', str(tmp_path / 'nowhere'), '--output',
                                      str(tmp_path / 'out')],
                           capture_output=True, text=True, cwd=REPO, check=False)
  assert missing.returncode == 1
  assert missing.stderr.strip() == (f'srrgan-prepare-data: error: {tmp_path / "nowhere"}: '
                                    'image folder does not '
                                    'exist; check the path.')
  bad_step = subprocess.run(command + ['--input', str(tmp_path), '--output', str(tmp_path),
                                       '--step', '0'],
                            capture_output=True, text=True, cwd=REPO, check=False)
  assert bad_step.returncode != 0 and '--step' in bad_step.stderr
  assert 'Traceback' not in bad_step.stderr


def test_huge_header_is_reported_and_the_rest_is_cut(tmp_path):
  from srrgan_jax import subimages
  from test_image_io import huge_header_png
  source = tmp_path / 'hr'
  image_io.write_image(source / 'a.png', photo_like(32, 32))
  huge_header_png(source / 'b_huge.png')
  image_io.write_image(source / 'c.png', photo_like(32, 32, 1))
  done, written, failures = subimages.extract_subimages(
      source, tmp_path / 'out', crop=32, step=32, workers=1)
  assert (done, written) == (2, 2)
  assert len(failures) == 1 and 'b_huge.png: too large to decode' in failures[0]


def test_output_inside_input_is_not_cut_again(tmp_path):
  from srrgan_jax import subimages
  source = tmp_path / 'hr'
  image_io.write_image(source / 'a.png', photo_like(64, 32))
  first = subimages.extract_subimages(source, source / 'sub', crop=32, step=32, workers=1)
  second = subimages.extract_subimages(source, source / 'sub', crop=32, step=32, workers=1)
  assert first == second == (1, 2, [])
  assert sorted(p.name for p in (source / 'sub').iterdir()) == ['a_s001.png', 'a_s002.png']
