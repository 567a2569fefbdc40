"""`python train.py`: the three SRRGAN training phases as one command."""

import _thread
import os
import pathlib
import re
import signal
import sys
import threading

from absl import app
from absl import flags

import configs
from srrgan_jax import commands
from srrgan_jax import config_check
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
  config_check.check_config(_CONFIG.value)  # Before importing JAX: bad values fail fast.
  # Before JAX's first computation: faster training convolutions on XLA:CPU.
  _choose_convolutions(_CONFIG.value)
  from srrgan_jax.train import loop  # Imported late so --help stays fast.
  _handle_interrupts(_WORKDIR.value)
  try:
    loop.run(_CONFIG.value, _WORKDIR.value)
  except KeyboardInterrupt:  # Saves have finished, the loader is closed (loop.run).
    commands.exit_interrupted(interrupted_message(_WORKDIR.value))


def _choose_convolutions(config) -> None:
  """XLA:CPU's convolution library for this run's layers (`xla_cpu`).

  A multi-process run takes Eigen unless $SRRGAN_TRAINING_CONVOLUTIONS names a
  library: processes sharing a host would time the probe against each other.
  """
  if config.distributed.initialize:
    os.environ.setdefault(xla_cpu.TRAINING_CONVOLUTIONS_ENV, 'eigen')
  devices = re.search(r'--xla_force_host_platform_device_count=(\d+)',
                      os.environ.get('XLA_FLAGS', ''))
  per_device_batch = max(1, config.data.batch_size // (int(devices[1]) if devices else 1))
  xla_cpu.choose_training_convolutions(
      per_device_batch, config.data.patch_size // config.scale, config.model.stem_channels)


def _handle_interrupts(workdir) -> None:
  """Ctrl-C stops training cleanly (running saves finish); a second one stops at once.

  A KeyboardInterrupt raised inside a garbage-collector callback (JAX has one)
  is swallowed by Python; it is delivered again, outside. Checkpoints are only
  listed once complete, so nothing half-written is ever resumed.
  """
  interrupts = []
  default_hook = sys.unraisablehook

  def on_unraisable(unraisable):
    if issubclass(unraisable.exc_type, KeyboardInterrupt):
      interrupts.clear()
      # From another thread, a moment later: raised while this hook still runs,
      # it would be swallowed again; after it returns the main thread takes it.
      timer = threading.Timer(0.1, _thread.interrupt_main)
      timer.daemon = True
      timer.start()
      return
    default_hook(unraisable)

  sys.unraisablehook = on_unraisable

  def on_interrupt(signum, frame):
    del signum, frame
    if interrupts:
      commands.exit_interrupted(interrupted_message(workdir))
    interrupts.append(True)
    raise KeyboardInterrupt

  signal.signal(signal.SIGINT, on_interrupt)


def interrupted_message(workdir) -> str:
  """The one line after Ctrl-C: the checkpoint a rerun resumes from."""
  from srrgan_jax import run_dir
  latest = run_dir.latest_checkpoint(pathlib.Path(workdir).expanduser().resolve())
  where = f'the last checkpoint is {latest}' if latest else 'no checkpoint was saved yet'
  return (f'train: interrupted; {where}. Run the same command again to resume '
          f'{"from it" if latest else "(the phase starts over)"}.')


def run():
  """Entry point of train.py and the srrgan-train console script."""
  commands.run_app(main, __name__, 'train')
