"""srrgan-export: ONNX and StableHLO files of the generator, their parity with JAX, infer.py --onnx."""

import pathlib
import subprocess
import sys

import cv2
import jax
import numpy as np
import pytest
import skimage.data

import fake_run
from srrgan_jax import export
from srrgan_jax import inference
from srrgan_jax import models

pytest.importorskip('jax2onnx', reason='the export extra is not installed (README "Exporting")')
ort = pytest.importorskip('onnxruntime', reason='the export extra is not installed')
import onnx  # pylint: disable=g-import-not-at-top,wrong-import-position

from srrgan_jax import onnx_inference  # pylint: disable=g-import-not-at-top,wrong-import-position
from srrgan_jax import onnx_plugins  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = pathlib.Path(__file__).resolve().parent.parent
# onnxruntime and XLA use different convolution algorithms and summation orders.
FP32_TOLERANCE = 1e-5
# float16 weights and activations: stay below one 8-bit level.
FP16_TOLERANCE = 1 / 255
STABLEHLO_TOLERANCE = 1e-6


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  """A tiny run whose selected model (phase 3, step 5) has random EMA weights."""
  return fake_run.save_random_generator(tmp_path_factory.mktemp('run'), 5, seed=1)


@pytest.fixture(scope='module')
def model(run_dir):
  return inference.load_model(workdir=str(run_dir))


@pytest.fixture(scope='module')
def onnx_file(tmp_path_factory, model):
  path = tmp_path_factory.mktemp('onnx') / 'model.onnx'
  export.export(*model, path, format='onnx')
  return path


@pytest.fixture(scope='module')
def onnx_fp16_file(tmp_path_factory, model):
  path = tmp_path_factory.mktemp('onnx16') / 'model_fp16.onnx'
  export.export(*model, path, format='onnx', fp16=True)
  return path


def photo(height, width):
  """A crop of a real photo (skimage's astronaut), RGB float32 in [0, 1]."""
  return skimage.data.astronaut()[100:100 + height, 180:180 + width].astype(np.float32) / 255


def photo_batch(height, width):
  """Two photo crops as an NCHW batch in [0, 1]: the crop and its mirror image."""
  rgb = photo(height, width)
  return np.stack([rgb, rgb[:, ::-1]]).transpose(0, 3, 1, 2).copy()


def jax_forward(model, images_NCHW):
  """What the run's generator computes for NCHW images in [0, 1], via infer.py's forward."""
  config, params = model
  forward = models.GeneratorForward(config).bind(params)
  lr = models.from_unit(images_NCHW.astype(np.float32).transpose(0, 2, 3, 1))
  return models.to_unit(np.asarray(forward(lr))).transpose(0, 3, 1, 2)


def run_onnx(path, images_NCHW):
  session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
  return session.run(None, {'input': images_NCHW})[0]


@pytest.mark.parametrize('height,width', [(32, 48), (16, 16)])
def test_onnx_equals_the_jax_forward_on_a_photo(onnx_file, model, height, width):
  images = photo_batch(height, width)
  got = run_onnx(onnx_file, images)
  expected = jax_forward(model, images)
  assert got.shape == (2, 3, 2 * height, 2 * width) and got.dtype == np.float32
  diff = float(np.abs(got - expected).max())
  print(f'ONNX float32 vs JAX, {height}x{width}: max abs diff {diff:.2e}')
  assert diff <= FP32_TOLERANCE


def test_onnx_has_symbolic_sizes_and_states_its_tiling(onnx_file, model):
  proto = onnx.load(str(onnx_file))
  assert [o.version for o in proto.opset_import if o.domain == ''] == [export.ONNX_OPSET]
  session = ort.InferenceSession(str(onnx_file), providers=['CPUExecutionProvider'])
  assert session.get_inputs()[0].shape == ['batch', 3, '8*h', '8*w']
  assert session.get_outputs()[0].shape == ['batch', 3, '16*h', '16*w']
  metadata = {p.key: p.value for p in proto.metadata_props}
  assert metadata == export.tiling_metadata(model[0])
  # The tiny config trains on 32 px HR patches (16 px LR) and tiles 16 px, overlap 4.
  assert (metadata['scale'], metadata['trained_tile'], metadata['tile'],
          metadata['overlap'], metadata['size_multiple']) == ('2', '16', '16', '4', '8')


def test_fp16_onnx_is_within_the_looser_tolerance(onnx_fp16_file, model):
  images = photo_batch(32, 48)
  got = run_onnx(onnx_fp16_file, images.astype(np.float16))
  assert got.dtype == np.float16
  diff = float(np.abs(got.astype(np.float32) - jax_forward(model, images)).max())
  print(f'ONNX float16 vs JAX float32: max abs diff {diff:.2e}')
  assert diff <= FP16_TOLERANCE
  proto = onnx.load(str(onnx_fp16_file))
  assert {p.key: p.value for p in proto.metadata_props}['precision'] == 'float16'


def test_stablehlo_runs_without_the_model_code(tmp_path, model):
  path = tmp_path / 'model.shlo'
  export.export(*model, path, format='stablehlo')
  images = photo_batch(32, 48)
  np.save(tmp_path / 'in.npy', images)
  script = (
      'import sys, jax, numpy as np\n'
      f'exported = jax.export.deserialize(open({str(path)!r}, "rb").read())\n'
      f'out = exported.call(np.load({str(tmp_path / "in.npy")!r}))\n'
      f'np.save({str(tmp_path / "out.npy")!r}, np.asarray(out))\n'
      'print(exported.in_avals[0].str_short(), "srrgan_jax" in sys.modules, '
      '"flax" in sys.modules)\n')
  result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == ['float32[batch,3,8*h,8*w]', 'False', 'False']
  diff = float(np.abs(np.load(tmp_path / 'out.npy') - jax_forward(model, images)).max())
  print(f'StableHLO round trip vs JAX: max abs diff {diff:.2e}')
  assert diff <= STABLEHLO_TOLERANCE


def test_fp16_stablehlo_round_trip_equals_the_fp16_function(tmp_path, model):
  path = tmp_path / 'model_fp16.shlo'
  export.export(*model, path, format='stablehlo', fp16=True)
  exported = jax.export.deserialize(path.read_bytes())
  images = photo_batch(16, 24).astype(np.float16)
  got = np.asarray(exported.call(images))
  expected = np.asarray(jax.jit(export.upscale_function(*model, fp16=True))(images))
  assert got.dtype == np.float16
  np.testing.assert_array_equal(got, expected)


def test_tiled_onnx_equals_tiled_jax(onnx_file, model):
  rgb = photo(40, 57)  # Several 16 px tiles, a ragged right edge.
  onnx_upscaler = onnx_inference.upscaler(onnx_file)
  assert (onnx_upscaler.tile, onnx_upscaler.overlap) == (16, 4)  # From the metadata.
  got = onnx_upscaler.upscale(rgb)
  expected = inference.Upscaler(*model, batch_size=1).upscale(rgb)
  diff = float(np.abs(got - expected).max())
  print(f'Tiled ONNX vs tiled JAX: max abs diff {diff:.2e}')
  assert got.shape == (80, 114, 3) and diff <= FP32_TOLERANCE


def test_infer_cli_runs_an_onnx_file(tmp_path, onnx_file, model):
  rgb8 = (photo(24, 40) * 255).round().astype(np.uint8)
  cv2.imwrite(str(tmp_path / 'in.png'), rgb8[:, :, ::-1])
  result = subprocess.run(
      [sys.executable, str(REPO / 'infer.py'), '-i', str(tmp_path / 'in.png'), '-o',
       str(tmp_path / 'out.png'), '--onnx', str(onnx_file), '--noprogress'],
      capture_output=True, text=True, cwd=REPO, timeout=300)
  assert result.returncode == 0, result.stderr
  got = cv2.imread(str(tmp_path / 'out.png'))[:, :, ::-1].astype(np.float32) / 255
  expected = inference.Upscaler(*model, batch_size=1).upscale(rgb8.astype(np.float32) / 255)
  assert got.shape == (48, 80, 3)
  np.testing.assert_allclose(got, expected, atol=0.51 / 255)  # 8-bit rounding.


def test_infer_onnx_refuses_a_second_model(tmp_path, onnx_file, run_dir):
  with pytest.raises(inference.InferenceError, match='--onnx .* drop --workdir'):
    inference.run(tmp_path, tmp_path / 'out', onnx=str(onnx_file), workdir=str(run_dir))


def test_onnx_file_without_the_toolkit_metadata_is_refused(tmp_path, onnx_file):
  proto = onnx.load(str(onnx_file))
  del proto.metadata_props[:]
  onnx.save(proto, str(tmp_path / 'bare.onnx'))
  with pytest.raises(inference.InferenceError, match='metadata lacks scale, size_multiple'):
    onnx_inference.OnnxForward(tmp_path / 'bare.onnx')


def test_upsampling_plugin_finds_integer_factors():
  _, h, w = jax.export.symbolic_shape('b, 8*h, w')
  factor = onnx_plugins._upsampling_factor  # pylint: disable=protected-access
  assert [factor(2 * h, h), factor(4 * w, w), factor(32, 16), factor(h, h)] == [2, 4, 2, 1]
  assert [factor(h + 1, h), factor(h, 2 * h), factor(24, 16), factor(8, 16)] == [None] * 4


def run_export_cli(*args):
  return subprocess.run([sys.executable, '-m', 'srrgan_jax.commands.export', *args],
                        capture_output=True, text=True, cwd=REPO, timeout=300)


def test_export_cli_writes_the_selected_model(tmp_path, run_dir, onnx_file):
  result = run_export_cli('--workdir', str(run_dir), '--format', 'onnx', '-o',
                          str(tmp_path / 'cli.onnx'))
  assert result.returncode == 0, result.stderr
  assert 'run 16px tiles overlapping by 4px' in result.stdout
  # The same model as the library export of the run's selected EMA weights.
  images = photo_batch(16, 24)
  np.testing.assert_array_equal(run_onnx(tmp_path / 'cli.onnx', images),
                                run_onnx(onnx_file, images))


@pytest.mark.parametrize('case', ['no model', 'unknown format', 'unwritable output'])
def test_export_cli_errors_are_one_line(tmp_path, run_dir, case):
  (tmp_path / 'a_file').write_text('')
  empty_run = tmp_path / 'untrained_run'
  (empty_run / 'checkpoints').mkdir(parents=True)
  args, message = {
      'no model': (['--workdir', str(empty_run), '-o', str(tmp_path / 'm.onnx')],
                   str(empty_run)),
      'unknown format': (['--workdir', str(run_dir), '--format', 'tflite', '-o',
                          str(tmp_path / 'm.tflite')],
                         "--format 'tflite': unknown; use one of onnx, stablehlo"),
      'unwritable output': (['--workdir', str(run_dir), '-o',
                             str(tmp_path / 'a_file' / 'm.onnx')],
                            'cannot write the output here'),
  }[case]
  result = run_export_cli(*args)
  assert result.returncode == 1
  assert result.stderr.strip().count('\n') == 0 and message in result.stderr, result.stderr
  assert result.stderr.startswith('srrgan-export: error: ')


def test_an_output_folder_is_refused(tmp_path):
  with pytest.raises(export.ExportError, match='is a folder; give a file name'):
    export.check_output_path(tmp_path)
