"""`srrgan-degrade`: the preview files, their reproducibility, and one-line errors."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import tiny
from srrgan_jax import image_io
from srrgan_jax import training_degradation
from tests.test_degradation import photo_like


REPO = str(pathlib.Path(__file__).resolve().parents[1])


def run_degrade(*args):
  cmd = [sys.executable, '-m', 'srrgan_jax.commands.degrade', '--config=configs/tiny.py',
         *args]
  return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                        env={**os.environ, 'PYTHONPATH': REPO}, timeout=300)


@pytest.fixture(name='photo')
def photo_fixture(tmp_path):
  path = tmp_path / 'photo.png'
  image_io.write_image(path, photo_like(41, 50))
  return path


def test_preview_writes_samples_params_and_grid(photo, tmp_path):
  out = tmp_path / 'preview'
  result = run_degrade('-i', str(photo), '-o', str(out), '--num=2', '--crop=32',
                       '--seed=5')
  assert result.returncode == 0, result.stderr
  config = tiny.get_config()  # scale 2
  hr = image_io.read_rgb(out / 'hr.png')
  np.testing.assert_allclose(hr, image_io.read_rgb(photo)[4:36, 9:41], atol=1 / 255)
  for model in ('original', 'realesrgan'):
    cfg = training_degradation.plain_config(config.degradation, model=model)
    for index in range(2):
      lr = image_io.read_rgb(out / model / f'sample_{index:03d}.png')
      params = json.loads((out / model / f'sample_{index:03d}.json').read_text())
      _, expected, drawn = training_degradation.degrade_training(
          hr, np.random.default_rng([5, index]), cfg, 2)
      assert lr.shape == (16, 16, 3)
      # Same (seed, index), same draw; the PNG holds the LR to 8 bits.
      assert params == json.loads(json.dumps(drawn))
      np.testing.assert_allclose(lr, expected, atol=0.5 / 255 + 1e-6)
  lines = (out / 'params.txt').read_text().splitlines()
  assert len(lines) == 4 and lines[2].startswith('realesrgan/sample_000.png: stage1: blur ')
  grid = image_io.read_rgb(out / 'grid.png')
  assert grid.shape == (2 * 36 - 4, 3 * 36 - 4, 3)
  np.testing.assert_allclose(grid[:32, :32], hr, atol=1 / 255)


@pytest.mark.parametrize('args,message', [
    (['--crop=64'], '50x41 pixels is smaller than the 64x64 crop'),
    (['--num=0'], '--num=0'),
    (['--models=original,bsrgan'], "degradation.model='bsrgan'"),
    (['--config.degradation.realesrgan.kernel_range=(7,8)'],
     'degradation.realesrgan.kernel_range=(7, 8)'),
])
def test_bad_input_is_one_line(photo, tmp_path, args, message):
  result = run_degrade('-i', str(photo), '-o', str(tmp_path / 'x'), *args)
  assert result.returncode != 0
  assert message in result.stderr and 'Traceback' not in result.stderr


def test_missing_image_is_one_line(tmp_path):
  result = run_degrade('-i', str(tmp_path / 'nope.png'), '-o', str(tmp_path / 'y'))
  assert result.returncode != 0
  assert 'nope.png' in result.stderr and 'Traceback' not in result.stderr
