"""`python eval.py`: LPIPS ranking + comparison table of a run, or scoring of SR folders.

Two modes:
  python eval.py --workdir RUN_DIR [--test_dir DIR] [--out DIR]
      ranks every phase-3 checkpoint by mean LPIPS on the test folder, records the
      best as the run's selected model (infer.py then uses it), and writes the
      comparison table (bilinear, bicubic, phase-1 best, phase-2 best, selected
      GAN) as results.{md,json,csv} plus ranking.json, perception_distortion.png
      and comparison.png into --out (default RUN_DIR/eval). --interpolation_steps N
      adds the network interpolation between the phase-2 best and the selected GAN
      at N evenly spaced alphas (table rows, a curve in the plot). Of a population
      run, every (member, checkpoint) is ranked and the table has a row per member.
  python eval.py --sr_dir DIR --hr_dir DIR [--json FILE]
      scores existing SR images against ground truths of the same file name.

Protocol options (both modes): --full_images (tiled inference on whole images)
or centre crops of --crop_size (default: the run's data.val_crop_size, else its
data.patch_size: 256 in the original protocol); --y_channel (BT.601 luma, as
BasicSR) or RGB; --crop_border (default: the scale). MAE is on [-1, 1] RGB, LPIPS is VGG16 v0.1.
"""

from absl import app
from absl import flags
from absl import logging as absl_logging

from srrgan_jax import commands

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Training run directory to evaluate (rank + table mode).')
_TEST_DIR = flags.DEFINE_string(
    'test_dir', None, 'Folder of HR test images (e.g. BSDS100); LR inputs are made '
    'with the deterministic degradation. Default: the run\'s data.test_dir, else its '
    'validation photos.')
_OUT = flags.DEFINE_string(
    'out', None, 'Output folder for tables and plots (default: WORKDIR/eval).')
_SR_DIR = flags.DEFINE_string(
    'sr_dir', None, 'Folder of super-resolved images to score (folder mode).')
_HR_DIR = flags.DEFINE_string(
    'hr_dir', None, 'Folder of ground-truth images, matched to --sr_dir by file name '
    '(the suffix may differ).')
_JSON = flags.DEFINE_string(
    'json', None, 'Folder mode: JSON file for the scores (default: SR_DIR/scores.json).')
_FULL_IMAGES = flags.DEFINE_bool(
    'full_images', False, 'Score whole images (generator run with tiled inference) '
    'instead of centre crops.')
_CROP_SIZE = flags.DEFINE_integer(
    'crop_size', 0, 'HR centre-crop side. Run mode: 0 = the run\'s data.val_crop_size, '
    'else its data.patch_size (256 = the original protocol). Folder mode: 0 = full images.')
_Y_CHANNEL = flags.DEFINE_bool(
    'y_channel', False, 'PSNR/SSIM on the ITU-R BT.601 Y channel '
    '(16/255 + (65.481 R + 128.553 G + 24.966 B)/255) instead of RGB.')
_CROP_BORDER = flags.DEFINE_integer(
    'crop_border', -1, 'Pixels dropped on each side before PSNR/SSIM; -1 = the scale.')
_SCALE = flags.DEFINE_integer(
    'scale', 2, 'Folder mode: the upscaling factor (sets the default --crop_border).')
_RAW = flags.DEFINE_bool(
    'raw', False, 'Use the raw generator weights instead of their EMA.')
_LPIPS_FILE = flags.DEFINE_string(
    'lpips_file', '', 'lpips_vgg16.npz to use (default: $SRRGAN_WEIGHTS_DIR or the '
    'cache; see python -m srrgan_jax.weights --help).')
_FIGURE_IMAGES = flags.DEFINE_integer(
    'figure_images', 3, 'Test images shown in comparison.png.')
_INTERPOLATION_STEPS = flags.DEFINE_integer(
    'interpolation_steps', 0, 'Run mode: also score the network interpolation '
    '(1 - alpha) * phase-2 best + alpha * selected GAN at this many evenly spaced alphas '
    'in [0, 1] (e.g. 5: 0, 0.25, ..., 1): rows of the table and a curve in '
    'perception_distortion.png. 0 = none.')

def _default_test_dir(workdir) -> str:
  """The run's test folder, else its validation photos (with a note)."""
  from srrgan_jax import data
  from srrgan_jax import run_dir
  config = run_dir.read_config(workdir)
  if config.data.test_dir:
    return config.data.test_dir
  _, val_dir = data.resolve_dirs(config)
  print(f'note: no --test_dir and no data.test_dir in the run config; scoring the '
        f'validation photos {val_dir} (not a held-out test set).')
  return str(val_dir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  folder_mode = _SR_DIR.value is not None or _HR_DIR.value is not None
  if folder_mode == (_WORKDIR.value is not None):
    raise app.UsageError('Give either --workdir RUN_DIR (rank + table) or '
                         '--sr_dir DIR --hr_dir DIR (folder scoring).')
  if not flags.FLAGS['verbosity'].present:
    # Orbax logs every restore (and a harmless missing-metadata warning) via absl;
    # one line per checkpoint is printed here instead. --verbosity=0 shows them.
    absl_logging.set_verbosity(absl_logging.ERROR)
  from configs import default
  from srrgan_jax import evaluation
  if folder_mode:
    if not (_SR_DIR.value and _HR_DIR.value):
      raise app.UsageError('Folder scoring needs both --sr_dir and --hr_dir.')
    if _INTERPOLATION_STEPS.value:
      raise app.UsageError('--interpolation_steps needs a run\'s checkpoints: use it '
                           'with --workdir, not with --sr_dir/--hr_dir.')
    config = default.get_config()
    config.scale = _SCALE.value
    config.weights.lpips_file = _LPIPS_FILE.value
    scores = evaluation.score_folders(
        _SR_DIR.value, _HR_DIR.value, config=config, crop_size=_CROP_SIZE.value,
        y_channel=_Y_CHANNEL.value, crop_border=_CROP_BORDER.value)
    print(evaluation.format_folder_scores(scores))
    path = evaluation.write_json(scores, _JSON.value or f'{_SR_DIR.value}/scores.json')
    print(f'Written: {path}')
    return
  if _INTERPOLATION_STEPS.value:  # Named before the run is read.
    from srrgan_jax import interpolation
    interpolation.alphas(_INTERPOLATION_STEPS.value)
  test_dir = _TEST_DIR.value or _default_test_dir(_WORKDIR.value)
  evaluation.evaluate_run(
      _WORKDIR.value, test_dir, out_dir=_OUT.value,
      full_images=_FULL_IMAGES.value, crop_size=_CROP_SIZE.value,
      y_channel=_Y_CHANNEL.value, crop_border=_CROP_BORDER.value,
      use_ema=not _RAW.value, lpips_file=_LPIPS_FILE.value,
      num_figure_images=_FIGURE_IMAGES.value,
      interpolation_steps=_INTERPOLATION_STEPS.value)


def run():
  """Entry point of eval.py and the srrgan-eval console script."""
  commands.run_app(main, __name__, 'eval')
