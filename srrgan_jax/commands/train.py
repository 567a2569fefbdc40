"""`python train.py`: the three SRRGAN training phases as one command."""

import pathlib

from absl import app
from absl import flags

import configs
from srrgan_jax import config_check
from srrgan_jax import commands
from srrgan_jax import xla_cpu

_QUICKSTART = str(pathlib.Path(configs.__file__).parent / 'quickstart.py')

_CONFIG = commands.define_config_flag(
    _QUICKSTART, 'Training configuration file (ml-collections); override fields with '
    '--config.field=value.', 'train')
_WORKDIR = flags.DEFINE_string(
    'workdir', 'runs/quickstart', 'Run directory: checkpoints, logs, samples, plots. '
    'Running again with the same workdir resumes.')
_PRINT_CONFIG = flags.DEFINE_bool(
    'print_config', False, 'Print the resolved configuration and exit.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _PRINT_CONFIG.value:
    print(_CONFIG.value)
    return
  # Before JAX's first computation: faster training convolutions on XLA:CPU.
  xla_cpu.use_eigen_convolutions()
  from srrgan_jax.train import loop  # Imported late so --help stays fast.
  config_check.check_config(_CONFIG.value)
  loop.run(_CONFIG.value, _WORKDIR.value)


def run():
  """Entry point of train.py and the srrgan-train console script."""
  commands.run_app(main, __name__, 'train')
