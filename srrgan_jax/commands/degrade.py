"""`srrgan-degrade -i IMAGE -o DIR`: see what training makes of an image.

  srrgan-degrade -i photo.png -o preview                  # both models, 8 samples each
  srrgan-degrade -i photo.png -o preview --models=realesrgan --num=16 --config.scale=4
  python -m srrgan_jax.commands.degrade -i photo.png -o preview \\
      --config=configs/quickstart.py --config.degradation.sharpen_target=True

Degrades a centre crop of IMAGE (--crop, default the config's data.patch_size)
N times with each degradation model and writes into DIR: <model>/sample_NNN.png
(the LR exactly as training makes it) with <model>/sample_NNN.json (the drawn
parameters), params.txt (one line per sample), hr.png (the HR target, sharpened
with degradation.sharpen_target) and grid.png (one row per model: the HR, then
the LRs enlarged with nearest-neighbour to the HR size).
"""

import pathlib

from absl import app
from absl import flags

import configs
from srrgan_jax import commands

_DEFAULT_CONFIG = str(pathlib.Path(configs.__file__).parent / 'default.py')

_CONFIG = commands.define_config_flag(
    _DEFAULT_CONFIG, 'Configuration file (ml-collections) whose scale and degradation '
    'are previewed; override fields with --config.field=value.', 'srrgan-degrade')
_INPUT = flags.DEFINE_string('input', None, 'HR image file.', short_name='i')
_OUTPUT = flags.DEFINE_string('output', None, 'Output folder.', short_name='o')
_MODELS = flags.DEFINE_list(
    'models', ['original', 'realesrgan'], 'Degradation models to preview, in grid row '
    'order.')
_NUM = flags.DEFINE_integer('num', 8, 'Samples per model.')
_CROP = flags.DEFINE_integer(
    'crop', None, 'HR centre-crop side in pixels (default: the config\'s '
    'data.patch_size); 0 = the whole image.')
_SEED = flags.DEFINE_integer(
    'seed', None, 'Sample i draws from numpy default_rng([seed, i]) (default: the '
    'config\'s seed).')

flags.mark_flags_as_required(['input', 'output'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from srrgan_jax import degradation_preview  # Imported late so --help stays fast.
  config = _CONFIG.value
  crop = int(config.data.patch_size) if _CROP.value is None else _CROP.value
  seed = int(config.seed) if _SEED.value is None else _SEED.value
  files = degradation_preview.write_preview(
      _INPUT.value, _OUTPUT.value, config, models=_MODELS.value, num_samples=_NUM.value,
      crop=crop, seed=seed)
  print(f'{_NUM.value} samples x {len(_MODELS.value)} model(s) in {_OUTPUT.value}: '
        f'{files["grid"].name}, {files["params"].name}, <model>/sample_NNN.png/.json')


def run():
  """Entry point of the srrgan-degrade console script."""
  commands.run_app(main, __name__, 'srrgan-degrade')


if __name__ == '__main__':
  run()
