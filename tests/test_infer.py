"""infer.py: what users bring (sizes, bit depths, grayscale, alpha, formats, folders), model choice."""

import os
import pathlib
import subprocess
import sys

import cv2
import jax
import numpy as np
import pytest

import fake_run
from configs import tiny
from srrgan_jax import checkpoints
from srrgan_jax import degradation
from srrgan_jax import errors
from srrgan_jax import eval_sets
from srrgan_jax import files
from srrgan_jax import image_io
from srrgan_jax import inference
from srrgan_jax import models
from srrgan_jax import run_dir
from srrgan_jax import tiling
from test_files import fill_disk_after_ten_bytes

REPO = pathlib.Path(__file__).resolve().parent.parent
STEP = 7


@pytest.fixture(scope='module')
def saved_run(tmp_path_factory):
  """A tiny run with one phase-3 checkpoint whose EMA and raw weights differ."""
  return fake_run.save_random_generator(tmp_path_factory.mktemp('run'), STEP, ema_scale=0.5)


@pytest.fixture(scope='module')
def checkpoint(saved_run):
  return str(run_dir.phase_dir(saved_run, 3) / str(STEP))


@pytest.fixture(scope='module')
def upscaler(checkpoint):
  config, params = inference.load_model(checkpoint=checkpoint)
  return inference.Upscaler(config, params)


def write(path, pixels):
  path.parent.mkdir(parents=True, exist_ok=True)
  assert cv2.imwrite(str(path), pixels), path


def random_pixels(shape, dtype=np.uint8, seed=0):
  return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)


def expected_rgb(upscaler, rgb01):
  """The generator's tiled output for a [0, 1] image, computed directly."""
  hr = tiling.upscale_tiled(upscaler.forward, models.from_unit(rgb01), scale=2,
                            tile=upscaler.tile, overlap=upscaler.overlap,
                            batch_size=upscaler.batch_size)
  return models.to_unit(hr)


def test_cli_upscales_a_folder_of_every_kind(tmp_path, checkpoint):
  inputs, outputs = tmp_path / 'in', tmp_path / 'out'
  write(inputs / 'odd.png', random_pixels((21, 37, 3)))
  write(inputs / 'tiny.png', random_pixels((3, 5, 3)))
  write(inputs / 'nested' / 'gray16.png', random_pixels((17, 30), np.uint16))
  write(inputs / 'rgba.png', random_pixels((24, 19, 4)))
  write(inputs / 'deep16.tif', random_pixels((18, 20, 3), np.uint16))
  for suffix in ('.jpg', '.webp', '.bmp'):
    write(inputs / f'photo{suffix}', random_pixels((16, 26, 3)))
  (inputs / 'broken.png').write_bytes(b'not an image')
  result = subprocess.run(
      [sys.executable, str(REPO / 'infer.py'), '-i', str(inputs), '-o', str(outputs),
       '--checkpoint', checkpoint, '--noprogress'],
      capture_output=True, text=True, cwd=REPO, timeout=300)
  assert result.returncode == 1, result.stderr  # One file could not be read.
  assert 'broken.png' in result.stderr and '1 file(s) could not be read' in result.stderr
  assert 'Wrote 8 image(s)' in result.stdout
  expected = {  # name: (shape, dtype)
      'odd.png': ((42, 74, 3), np.uint8), 'tiny.png': ((6, 10, 3), np.uint8),
      'nested/gray16.png': ((34, 60), np.uint16), 'rgba.png': ((48, 38, 4), np.uint8),
      'deep16.tif': ((36, 40, 3), np.uint16), 'photo.jpg': ((32, 52, 3), np.uint8),
      'photo.webp': ((32, 52, 3), np.uint8), 'photo.bmp': ((32, 52, 3), np.uint8)}
  written = sorted(str(p.relative_to(outputs)) for p in outputs.rglob('*') if p.is_file())
  assert written == sorted(expected)
  for name, (shape, dtype) in expected.items():
    pixels = cv2.imread(str(outputs / name), cv2.IMREAD_UNCHANGED)
    assert pixels.shape == shape and pixels.dtype == dtype, name


def test_outputs_are_the_tiled_generator_output_at_full_depth(tmp_path, upscaler):
  source = tmp_path / 'in16.png'
  write(source, random_pixels((21, 34, 3), np.uint16, seed=1))
  target = tmp_path / 'out' / 'in16.png'
  summary = inference.upscale_files(upscaler, [inference.Job(source, target)],
                                    show_progress=False)
  assert summary.written == [target]
  got = image_io.read_image(target)
  assert got.bit_depth == 16
  expected = expected_rgb(upscaler, image_io.read_rgb(source))
  np.testing.assert_allclose(got.rgb, expected, atol=0.6 / 65535)


def test_grayscale_stays_grayscale_and_alpha_is_upscaled_separately(tmp_path, upscaler):
  gray = random_pixels((19, 22), seed=2)
  rgba = random_pixels((18, 25, 4), seed=3)
  rgba[:, :, 3] = np.linspace(0, 255, 25, dtype=np.uint8)[None, :]  # Smooth alpha ramp.
  write(tmp_path / 'gray.png', gray)
  write(tmp_path / 'rgba.png', rgba)
  jobs = inference.plan_jobs(tmp_path, tmp_path / 'out')
  inference.upscale_files(upscaler, jobs, show_progress=False)
  gray_out = image_io.read_image(tmp_path / 'out' / 'gray.png')
  assert gray_out.grayscale and gray_out.rgb.shape == (38, 44, 3)
  expected = expected_rgb(upscaler, np.repeat(gray[:, :, None] / 255, 3, 2).astype(np.float32))
  np.testing.assert_allclose(gray_out.rgb[:, :, 0], expected.mean(axis=2), atol=0.6 / 255)
  rgba_out = image_io.read_image(tmp_path / 'out' / 'rgba.png')
  expected_alpha = cv2.resize(rgba[:, :, 3].astype(np.float32) / 255, (50, 36),
                              interpolation=cv2.INTER_CUBIC)
  np.testing.assert_allclose(rgba_out.alpha, np.clip(expected_alpha, 0, 1), atol=0.6 / 255)
  # The colour channels come from the generator, unaffected by alpha.
  rgb = rgba[:, :, 2::-1].astype(np.float32) / 255
  np.testing.assert_allclose(rgba_out.rgb, expected_rgb(upscaler, rgb), atol=0.6 / 255)


@pytest.mark.parametrize('outscale,shape', [(1.5, (32, 56)), (3, (63, 111)), (0.5, (10, 18))])
def test_outscale_sets_the_final_size_relative_to_the_input(tmp_path, upscaler, outscale,
                                                            shape):
  write(tmp_path / 'a.png', random_pixels((21, 37, 4), seed=4))
  jobs = inference.plan_jobs(tmp_path / 'a.png', tmp_path / 'out')
  inference.upscale_files(upscaler, jobs, outscale=outscale, show_progress=False)
  out = image_io.read_image(tmp_path / 'out' / 'a.png')
  assert out.rgb.shape[:2] == shape and out.alpha.shape == shape


def test_degrade_restores_the_evaluation_degradation_of_the_input(tmp_path, upscaler):
  clean = random_pixels((30, 41, 3), seed=5)
  write(tmp_path / 'clean.png', clean)
  jobs = inference.plan_jobs(tmp_path / 'clean.png', tmp_path / 'out')
  inference.upscale_files(upscaler, jobs, degrade=True, show_progress=False)
  out = image_io.read_image(tmp_path / 'out' / 'clean.png')
  hr = image_io.read_rgb(tmp_path / 'clean.png')
  config = upscaler.config
  lr = degradation.degrade_deterministic(
      hr, eval_sets.eval_image_seed('clean.png', config.degradation), config.degradation, 2)
  assert lr.shape == (15, 20, 3) and out.rgb.shape == (30, 40, 3)
  np.testing.assert_allclose(out.rgb, expected_rgb(upscaler, lr), atol=0.6 / 255)
  inference.upscale_files(upscaler, jobs, degrade=True, outscale=1, overwrite=True,
                          show_progress=False)
  assert cv2.imread(str(tmp_path / 'out' / 'clean.png')).shape == clean.shape


def test_existing_outputs_are_kept_unless_overwrite(tmp_path, upscaler):
  write(tmp_path / 'a.png', random_pixels((16, 16, 3)))
  target = tmp_path / 'out' / 'a.png'
  write(target, np.zeros((2, 2, 3), np.uint8))
  jobs = inference.plan_jobs(tmp_path / 'a.png', tmp_path / 'out')
  summary = inference.upscale_files(upscaler, jobs, show_progress=False)
  assert summary.existing == [target] and not summary.written
  assert cv2.imread(str(target)).shape == (2, 2, 3)
  summary = inference.upscale_files(upscaler, jobs, overwrite=True, show_progress=False)
  assert summary.written == [target] and cv2.imread(str(target)).shape == (32, 32, 3)


def test_output_names_keep_folders_and_follow_suffix_and_ext(tmp_path):
  write(tmp_path / 'in' / 'a.png', random_pixels((4, 4, 3)))
  write(tmp_path / 'in' / 'x' / 'b.jpg', random_pixels((4, 4, 3)))
  jobs = inference.plan_jobs(tmp_path / 'in', tmp_path / 'out', suffix='_x2', ext='png')
  assert [j.target for j in jobs] == [tmp_path / 'out' / 'a_x2.png',
                                      tmp_path / 'out' / 'x' / 'b_x2.png']
  one = inference.plan_jobs(tmp_path / 'in' / 'a.png', tmp_path / 'result.webp')
  assert one[0].target == tmp_path / 'result.webp'
  into_folder = inference.plan_jobs(tmp_path / 'in' / 'a.png', tmp_path / 'dir', ext='tif')
  assert into_folder[0].target == tmp_path / 'dir' / 'a.tif'
  write(tmp_path / 'in' / 'a.jpg', random_pixels((4, 4, 3)))
  with pytest.raises(inference.InferenceError, match='both be written'):
    inference.plan_jobs(tmp_path / 'in', tmp_path / 'out', ext='png')
  with pytest.raises(inference.InferenceError, match='replace the input'):
    inference.plan_jobs(tmp_path / 'in', tmp_path / 'in')
  with pytest.raises(inference.InferenceError, match='--ext'):
    inference.plan_jobs(tmp_path / 'in', tmp_path / 'out', ext='gif')


def test_unusable_output_path_fails_before_any_work(tmp_path):
  write(tmp_path / 'in' / 'a.png', random_pixels((4, 4, 3)))
  (tmp_path / 'file').write_text('a file, not a folder')
  # The checkpoint does not exist: the output check must come first.
  with pytest.raises(inference.InferenceError, match='is a file'):
    inference.run(tmp_path / 'in', tmp_path / 'file' / 'out', checkpoint='/nonexistent')
  with pytest.raises(inference.InferenceError, match='is a file'):
    inference.run(tmp_path / 'in', tmp_path / 'file', checkpoint='/nonexistent')
  with pytest.raises(inference.InferenceError, match='does not exist'):
    inference.run(tmp_path / 'missing', tmp_path / 'out', checkpoint='/nonexistent')
  assert not (tmp_path / 'out').exists()


def test_run_dir_gives_the_selected_ema_weights_and_raw_the_trained_ones(saved_run, checkpoint):
  with pytest.raises(inference.InferenceError, match='exactly one'):
    inference.load_model(workdir=str(saved_run), checkpoint=checkpoint)
  run_dir.write_selected(saved_run, 3, STEP, {'lpips': 0.3})
  _, ema = inference.load_model(workdir=str(saved_run))
  _, raw = inference.load_model(checkpoint=checkpoint, use_ema=False)
  for e, r in zip(jax.tree.leaves(ema), jax.tree.leaves(raw)):
    np.testing.assert_array_equal(e, r * 0.5)
  with pytest.raises(checkpoints.CheckpointError, match='no such'):
    inference.load_model(checkpoint=str(saved_run / 'nope'))


def test_mismatched_architecture_is_a_clear_error(saved_run, tmp_path):
  """A checkpoint whose weights do not fit its own config (e.g. edited by hand)."""
  broken = tmp_path / 'broken'
  config = tiny.get_config()
  config.model.stem_channels = 16
  manager = checkpoints.make_manager(run_dir.phase_dir(broken, 3), 3, async_save=False)
  params = checkpoints.restore_arrays(run_dir.phase_dir(saved_run, 3) / str(STEP))
  checkpoints.save(manager, STEP, params, None, {}, run_dir.config_to_dict(config))
  manager.wait_until_finished()
  manager.close()
  with pytest.raises(checkpoints.CheckpointError,
                     match=r'do not fit.*stem 16.*head_0/conv/kernel has shape \(3, 3, 8, 8\), '
                     r'expected \(3, 3, 16, 16\).*together with the run directory'):
    inference.load_model(workdir=str(broken))


def test_bad_tiling_options_are_rejected(checkpoint):
  config, params = inference.load_model(checkpoint=checkpoint)
  with pytest.raises(inference.InferenceError, match='multiple of 8'):
    inference.Upscaler(config, params, tile=20)
  with pytest.raises(inference.InferenceError, match='overlap'):
    inference.Upscaler(config, params, tile=16, overlap=16)
  with pytest.raises(inference.InferenceError, match='compute_dtype'):
    inference.Upscaler(config, params, compute_dtype='float16')
  with pytest.raises(inference.InferenceError, match='workers=0'):
    inference.Upscaler(config, params, workers=0)


def test_two_concurrent_tiles_on_a_cpu_give_the_one_at_a_time_image(checkpoint):
  config, params = inference.load_model(checkpoint=checkpoint)
  upscaler = inference.Upscaler(config, params, tile=16, overlap=4)
  assert (upscaler.batch_size, upscaler.workers) == (1, 2)  # The CPU defaults.
  rgb = random_pixels((37, 45, 3), seed=8).astype(np.float32) / 255
  assert upscaler.num_tiles(37, 45) == 12
  one_at_a_time = models.to_unit(tiling.upscale_tiled(
      upscaler.forward, models.from_unit(rgb), scale=2, tile=16, overlap=4, batch_size=1))
  # The same compiled program on the same tiles, blended in the same order.
  np.testing.assert_allclose(upscaler.upscale(rgb), one_at_a_time, rtol=0, atol=1e-6)


def test_whole_image_mode_agrees_with_tiles_and_bfloat16_is_applied(checkpoint):
  config, params = inference.load_model(checkpoint=checkpoint)
  rgb = random_pixels((16, 16, 3), seed=6).astype(np.float32) / 255
  tiled = inference.Upscaler(config, params, tile=16, batch_size=1).upscale(rgb)
  whole = inference.Upscaler(config, params, tile=0).upscale(rgb)
  np.testing.assert_allclose(whole, tiled, atol=1e-5)  # One tile == the whole image.
  # Lowering (not compiling: slow on CPU) shows the convolutions run in bfloat16.
  bf16 = models.GeneratorForward(config, compute_dtype='bfloat16')
  assert 'bf16' in bf16.lower(params, (1, 16, 16, 3)).as_text()


def test_a_hard_link_of_the_input_is_never_the_output(tmp_path):
  write(tmp_path / 'in' / 'a.png', random_pixels((4, 4, 3)))
  before = (tmp_path / 'in' / 'a.png').read_bytes()
  (tmp_path / 'out').mkdir()
  os.link(tmp_path / 'in' / 'a.png', tmp_path / 'out' / 'a.png')
  with pytest.raises(inference.InferenceError, match='the output would replace the input'):
    inference.run(tmp_path / 'in', tmp_path / 'out', overwrite=True, checkpoint='/nonexistent')
  assert (tmp_path / 'in' / 'a.png').read_bytes() == before


def test_a_wrong_model_is_an_error_even_when_every_output_exists(tmp_path, checkpoint):
  write(tmp_path / 'in' / 'a.png', random_pixels((16, 16, 3)))
  inference.run(tmp_path / 'in', tmp_path / 'out', checkpoint=checkpoint, show_progress=False)
  summary = inference.run(tmp_path / 'in', tmp_path / 'out', checkpoint=checkpoint,
                          show_progress=False)
  assert not summary.written and [p.name for p in summary.existing] == ['a.png']
  with pytest.raises(errors.UserError, match='nonexistent'):
    inference.run(tmp_path / 'in', tmp_path / 'out', checkpoint=str(tmp_path / 'nonexistent'),
                  show_progress=False)


def test_a_partial_output_is_written_again_and_writes_are_atomic(tmp_path, checkpoint,
                                                                monkeypatch, capsys):
  write(tmp_path / 'in' / 'a.png', random_pixels((16, 16, 3)))
  write(tmp_path / 'in' / 'b.jpg', random_pixels((16, 16, 3)))
  inference.run(tmp_path / 'in', tmp_path / 'out', checkpoint=checkpoint, show_progress=False)
  whole = {name: (tmp_path / 'out' / name).read_bytes() for name in ('a.png', 'b.jpg')}
  for name, contents in whole.items():  # As a full disk left them with an older version.
    (tmp_path / 'out' / name).write_bytes(contents[:len(contents) // 2])
  summary = inference.run(tmp_path / 'in', tmp_path / 'out', checkpoint=checkpoint,
                          show_progress=False)
  assert sorted(p.name for p in summary.written) == ['a.png', 'b.jpg']
  assert 'out/a.png: incomplete (an interrupted write?); writing it again.' in (
      capsys.readouterr().err)
  for name, contents in whole.items():
    assert (tmp_path / 'out' / name).read_bytes() == contents
  # A write that fails (full disk) leaves neither a partial file nor a temporary one.
  fill_disk_after_ten_bytes(monkeypatch)
  (tmp_path / 'out' / 'a.png').unlink()
  with pytest.raises(files.WriteError, match=r'out: writing a.png .*No space left'):
    inference.run(tmp_path / 'in', tmp_path / 'out', checkpoint=checkpoint,
                  show_progress=False)
  assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['b.jpg']


def test_single_unreadable_or_unwritable_inputs_are_refused_before_the_model(tmp_path):
  from test_image_io import huge_header_png
  huge = huge_header_png(tmp_path / 'huge.png')
  with pytest.raises(inference.InferenceError, match='huge.png: too large to decode'):
    inference.run(huge, tmp_path / 'out', checkpoint='/nonexistent')
  gif = tmp_path / 'anim.gif'
  gif.write_bytes(b'GIF89a')
  with pytest.raises(inference.InferenceError, match=r'anim.gif: cannot write .gif outputs; '
                     'pass --ext'):
    inference.run(gif, tmp_path / 'out', checkpoint='/nonexistent')
  assert not (tmp_path / 'out').exists()


def test_a_folder_with_an_oversized_image_does_the_others(tmp_path, checkpoint):
  from test_image_io import huge_header_png
  write(tmp_path / 'in' / 'a.png', random_pixels((16, 16, 3)))
  huge_header_png(tmp_path / 'in' / 'b_huge.png')
  write(tmp_path / 'in' / 'c.png', random_pixels((16, 16, 3)))
  summary = inference.run(tmp_path / 'in', tmp_path / 'out', checkpoint=checkpoint,
                          show_progress=False)
  assert [p.name for p in summary.written] == ['a.png', 'c.png']
  assert [(p.name, 'too large to decode' in why) for p, why in summary.failed] == [
      ('b_huge.png', True)]


def test_exif_orientation_and_icc_profile_carry_to_the_output(tmp_path, checkpoint):
  import PIL.Image
  import PIL.ImageCms
  icc = PIL.ImageCms.ImageCmsProfile(PIL.ImageCms.createProfile('sRGB')).tobytes()
  exif = PIL.Image.Exif()
  exif[0x0112] = 6  # Stored sideways: a quarter turn clockwise shows it upright.
  (tmp_path / 'in').mkdir()
  for suffix in ('.png', '.jpg', '.tif'):
    PIL.Image.fromarray(random_pixels((16, 24, 3))).save(
        tmp_path / 'in' / f'phone{suffix}', exif=exif, icc_profile=icc)
  inference.run(tmp_path / 'in', tmp_path / 'out', checkpoint=checkpoint, show_progress=False)
  for suffix in ('.png', '.jpg', '.tif'):
    with PIL.Image.open(tmp_path / 'out' / f'phone{suffix}') as out:
      assert out.size == (32, 48), suffix  # (width, height) of the upright image, x2.
      assert out.info.get('icc_profile') == icc, suffix
