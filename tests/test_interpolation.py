"""Network interpolation: exact ends, the blend in between, infer.py --interpolate, errors."""

import jax
import numpy as np
import pytest

import fake_run
from srrgan_jax import image_io
from srrgan_jax import inference
from srrgan_jax import interpolation
from srrgan_jax import run_dir


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize('use_ema', [True, False])
def test_ends_are_exactly_the_phase2_best_and_the_phase3_model(tiny_run, use_ema):
  workdir = tiny_run[0]
  _, phase2 = run_dir.load_generator(workdir, phase=2, use_ema=use_ema)
  _, phase3 = run_dir.load_generator(workdir, phase=3, use_ema=use_ema)
  # The two ends differ, so equality below is not an accident of equal weights.
  assert any(not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(phase2), jax.tree.leaves(phase3)))
  _, at0 = interpolation.load_interpolated(workdir, 0.0, use_ema=use_ema)
  _, at1 = interpolation.load_interpolated(workdir, 1, use_ema=use_ema)
  _assert_trees_equal(at0, phase2)
  _assert_trees_equal(at1, phase3)
  _, middle = interpolation.load_interpolated(workdir, 0.25, use_ema=use_ema)
  for m, a, b in zip(*map(jax.tree.leaves, (middle, phase2, phase3))):
    assert m.dtype == np.float32
    np.testing.assert_allclose(m, 0.75 * a + 0.25 * b, rtol=1e-6, atol=1e-7)


def test_the_ends_are_the_checkpoint_phase3_started_from_and_the_selected_one(tiny_run):
  ends = interpolation.find_endpoints(tiny_run[0])
  assert ends.phase2 == run_dir.best_checkpoint(tiny_run[0], 2)
  phase3 = run_dir.list_checkpoints(tiny_run[0], 3)
  assert ends.phase3 == phase3[-1]  # No selected.json yet: the latest.
  assert interpolation.find_endpoints(tiny_run[0], phase3[0][0]).phase3 == phase3[0]
  assert ends.as_dict()['phase2']['step'] == ends.phase2[0]


def test_infer_interpolate_upscales_with_the_blend(tiny_run, tmp_path):
  workdir = str(tiny_run[0])
  rng = np.random.default_rng(0)
  image_io.write_image(tmp_path / 'in.png', rng.random((20, 28, 3), dtype=np.float32))

  def upscale(name, **model):
    inference.run(tmp_path / 'in.png', tmp_path / f'{name}.png', tile=0,
                  show_progress=False, **model)
    return image_io.read_rgb(tmp_path / f'{name}.png')

  phase2_dir = str(run_dir.best_checkpoint(workdir, 2)[1])
  np.testing.assert_array_equal(upscale('a0', workdir=workdir, interpolate=0.0),
                                upscale('p2', checkpoint=phase2_dir))
  np.testing.assert_array_equal(upscale('a1', workdir=workdir, interpolate=1.0),
                                upscale('p3', workdir=workdir))
  half = upscale('a05', workdir=workdir, interpolate=0.5)
  assert not np.array_equal(half, upscale('p2_again', checkpoint=phase2_dir))


def test_bad_alpha_and_runs_without_an_end_are_clear_errors(tiny_run, tmp_path):
  for alpha in (-0.1, 1.5, float('nan'), 'x'):
    with pytest.raises(interpolation.InterpolationError, match='from 0 .* to 1'):
      interpolation.check_alpha(alpha)
  with pytest.raises(interpolation.InterpolationError, match='--interpolation_steps 1'):
    interpolation.alphas(1)
  assert interpolation.alphas(5) == [0.0, 0.25, 0.5, 0.75, 1.0]

  only_phase3 = fake_run.save_random_generator(tmp_path / 'gan_only', 7)
  with pytest.raises(interpolation.InterpolationError,
                     match=r'gan_only: no phase-2 checkpoint.*phases=\(1, 2, 3\)'):
    interpolation.load_interpolated(only_phase3, 0.5)
  no_phase3 = tmp_path / 'no_gan'
  fake_run.save_steps(no_phase3, 2, [(3, 0.2)])
  with pytest.raises(interpolation.InterpolationError, match='no_gan: no phase-3 checkpoint'):
    interpolation.find_endpoints(no_phase3)
  with pytest.raises(inference.InferenceError, match='--interpolate.*--workdir'):
    inference.load_model(checkpoint=str(run_dir.latest_checkpoint(tiny_run[0])),
                         interpolate=0.5)
