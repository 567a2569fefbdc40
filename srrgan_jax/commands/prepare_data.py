"""`srrgan-prepare-data --input DIR --output DIR`: cut large images into sub-images.

Cuts large HR images (e.g. DIV2K_train_HR) into overlapping --crop x --crop
sub-images every --step px, saved as PNG, so training decodes ~10x fewer pixels
per patch. Bit depth, gray and alpha are kept; sub-folders are mirrored. Point
data.train_dir at the output folder. Exits with status 1 if an image failed (the
others are still done).
"""

import sys

from absl import app
from absl import flags

from srrgan_jax import commands
from srrgan_jax import subimages

_INPUT = flags.DEFINE_string('input', None, 'Folder of HR images (recursive).')
_OUTPUT = flags.DEFINE_string('output', None, 'Folder for the sub-images.')
_CROP = flags.DEFINE_integer('crop', 480, 'Sub-image size in px.', lower_bound=1)
_STEP = flags.DEFINE_integer(
    'step', 240, 'Distance between sub-images in px (< crop: overlap).', lower_bound=1)
_WORKERS = flags.DEFINE_integer(
    'workers', 0, 'Parallel threads; 0 = one per CPU core.', lower_bound=0)
_COMPRESSION = flags.DEFINE_integer(
    'compression', 3, 'PNG compression level 0-9 (3: fast, as BasicSR).',
    lower_bound=0, upper_bound=9)

flags.mark_flags_as_required(['input', 'output'])


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  done, written, failures = subimages.extract_subimages(
      _INPUT.value, _OUTPUT.value, crop=_CROP.value, step=_STEP.value,
      workers=_WORKERS.value, compression=_COMPRESSION.value)
  for message in failures:
    print(f'srrgan-prepare-data: error: {message}', file=sys.stderr)
  print(f'{done} images -> {written} sub-images of at most {_CROP.value}x{_CROP.value} '
        f'in {_OUTPUT.value}; {len(failures)} failed.')
  return 1 if failures else 0


def run():
  """Entry point of the srrgan-prepare-data console script."""
  # OSError: an unwritable output folder, a full disk.
  commands.run_app(main, __name__, 'srrgan-prepare-data', user_errors=(OSError,))
