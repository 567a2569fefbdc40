"""`python infer.py -i INPUT -o OUTPUT`: upscale (and restore) an image or a folder.

  python infer.py -i photo.png -o photo_x2.png --workdir runs/quickstart
  python infer.py -i photos/ -o upscaled/ --checkpoint runs/x/checkpoints/phase3/4000
  python infer.py -i photo.png -o photo_x2.png --onnx model.onnx   # srrgan-export's file

--workdir uses the run's selected model (LPIPS-best, see eval.py; else the
latest phase-3 checkpoint, else the best earlier one), EMA weights unless --raw;
--interpolate ALPHA blends it with the phase-2 best (network interpolation).
Of a population run (several loss weightings trained together), --member picks
the member (default: the LPIPS-selected one).
Images are upscaled in overlapping tiles blended with Hann windows (README
"Upscaling"); --tile 0 runs each image whole.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from srrgan_jax import commands
from srrgan_jax import xla_cpu

_INPUT = flags.DEFINE_string(
    'input', None, 'Image file or folder (searched recursively).', short_name='i')
_OUTPUT = flags.DEFINE_string(
    'output', None, 'Output image file, or folder (sub-folders of an input folder are '
    'kept).', short_name='o')
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Training run directory: uses its selected model.')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'A checkpoint step directory (or checkpoints/phaseN directory) '
    'instead of --workdir.')
_ONNX = flags.DEFINE_string(
    'onnx', None, 'An ONNX file written by srrgan-export instead of --workdir: run with '
    'onnxruntime and this tool\'s tiling (tile size and overlap from the file).')
_RAW = flags.DEFINE_bool(
    'raw', False, 'Use the raw generator weights instead of their EMA.')
_MEMBER = flags.DEFINE_string('member', None, commands.MEMBER_HELP)
_INTERPOLATE = flags.DEFINE_float(
    'interpolate', None, 'With --workdir: network interpolation ALPHA in [0, 1], the '
    'generator (1 - ALPHA) * phase-2 best + ALPHA * the selected phase-3 model (0: '
    'smooth, least distortion; 1: the sharp GAN).')
_TILE = flags.DEFINE_integer(
    'tile', None, 'LR tile size, a multiple of 8 (default: the run\'s '
    'config.inference.tile, 128 for the reference recipe); 0 = whole images.')
_OVERLAP = flags.DEFINE_integer(
    'overlap', None, 'LR overlap of neighbouring tiles (default: the run\'s '
    'config.inference.overlap, 32).')
_BATCH_SIZE = flags.DEFINE_integer(
    'batch_size', None, 'Tiles per forward call; memory grows with it (default: the '
    'run\'s config.inference.batch_size on accelerators, 1 on a CPU where batches '
    'are not faster).')
_OUTSCALE = flags.DEFINE_float(
    'outscale', None, 'Final size relative to the input file (e.g. 1.5 or 3; with '
    '--degrade, 1 gives back the input\'s size): the model output is resized with '
    'Lanczos (enlarging) or area averaging (shrinking). Default: the model\'s scale.')
_DEGRADE = flags.DEFINE_bool(
    'degrade', False, 'First degrade each (clean) input with the deterministic '
    'evaluation degradation (blur, downscale, noise, JPEG), then restore it.')
_SUFFIX = flags.DEFINE_string(
    'suffix', '', 'Appended to each output file name stem, e.g. _x2.')
_EXT = flags.DEFINE_string(
    'ext', 'auto', 'Output format: auto (same as the input), png, jpg, webp, bmp, tif.')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Replace existing output files (default: keep them, skip).')
_COMPUTE_DTYPE = flags.DEFINE_enum(
    'compute_dtype', None, ['float32', 'bfloat16'], 'Generator compute precision '
    '(default: the run\'s model.compute_dtype).')
_PROGRESS = flags.DEFINE_bool('progress', True, 'Show progress bars.')

flags.mark_flags_as_required(['input', 'output'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax's restore chatter is not news here.
  xla_cpu.use_inference_convolutions()  # Before JAX starts its CPU backend.
  # Imported late so --help stays fast.
  from srrgan_jax import inference
  from srrgan_jax import interpolation
  if _INTERPOLATE.value is not None:  # Named before anything else is looked at.
    interpolation.check_alpha(_INTERPOLATE.value)
  summary = inference.run(
      _INPUT.value, _OUTPUT.value, workdir=_WORKDIR.value or '',
      checkpoint=_CHECKPOINT.value or '', use_ema=not _RAW.value, tile=_TILE.value,
      overlap=_OVERLAP.value, batch_size=_BATCH_SIZE.value, outscale=_OUTSCALE.value,
      degrade=_DEGRADE.value, suffix=_SUFFIX.value, ext=_EXT.value,
      overwrite=_OVERWRITE.value, compute_dtype=_COMPUTE_DTYPE.value,
      show_progress=_PROGRESS.value, onnx=_ONNX.value or '',
      interpolate=_INTERPOLATE.value, member=_MEMBER.value or '')
  if summary.failed:
    sys.exit(1)


def run():
  """Entry point of infer.py and the srrgan-infer console script."""
  commands.run_app(main, __name__, 'infer')
