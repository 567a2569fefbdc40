"""Command-line entry points (`train.py`, `eval.py`, `infer.py` and the console scripts).

Every command runs through `run_app`: an error the user can fix (a bad flag, an
unknown config field, any `errors.UserError`) ends it with one line on stderr
and a non-zero exit status; any other exception is a bug and keeps its
traceback. `--verbose` shows the traceback of user errors too.
"""

import os
import re
import sys
import traceback

from absl import app
from absl import flags

from srrgan_jax import errors

_VERBOSE = flags.DEFINE_bool(
    'verbose', False, 'On an error, also print its traceback (for bug reports).')

# `--config.a.b=1` or `--config.a.b 1`: a config override on the command line.
_OVERRIDE = re.compile(r'^--?config\.([A-Za-z0-9_.]+)(=|$)')

_name = ['srrgan']  # The running command's name, the prefix of its error lines.

# --member of infer.py and srrgan-export (resolved by `population_runs.load_model`).
MEMBER_HELP = ('Population runs: the member, by index (0, 1, ...) or by its swept values '
               '(gan_weight=0.1, several comma-separated); default: the member eval.py '
               'selected (lowest LPIPS), at its own LPIPS-best checkpoint.')


def _unknown_override(argv) -> str:
  """The one-line message for the first `--config.FIELD` that the config lacks, or ''."""
  from configs import default  # pylint: disable=import-outside-toplevel
  from configs import fields  # pylint: disable=import-outside-toplevel
  from srrgan_jax import config_check  # pylint: disable=import-outside-toplevel
  # The loaded config when parsing got that far, else the reference recipe.
  config = flags.FLAGS['config'].value if 'config' in flags.FLAGS else None
  known = set(fields.flatten((config or default.get_config()).to_dict()))
  for arg in argv[1:]:
    match = _OVERRIDE.match(arg)
    if match and match.group(1) not in known:
      return config_check.unknown_field_message(match.group(1))
  return ''


def define_config_flag(default_file: str, help_text: str, command: str):
  """The `--config` flag (locked ml-collections file, `--config.field=value` overrides).

  ml-collections applies the overrides to the default file while the flag is
  defined, i.e. on import; an unknown field there ends `command` with one line.
  """
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  try:
    return config_flags.DEFINE_config_file('config', default_file, help_text,
                                           lock_config=True)
  except (AttributeError, KeyError):
    message = _unknown_override(sys.argv)
    if not message:
      raise
    sys.exit(f'{command}: error: {message}')


def _check_config_file() -> None:
  """ml_collections defers a config file's load error to its first use; fail now."""
  if 'config' not in flags.FLAGS:
    return
  try:
    flags.FLAGS['config'].value.keys()
  except OSError as error:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    sys.exit(f'{_name[0]}: error: --config={flags.FLAGS["config"].config_filename}: '
             f'cannot load the config file ({lines[-1]}).')


def parse_flags(argv):
  """absl's flag parsing, with each error as one line and exit status 1."""
  try:
    remaining = flags.FLAGS(argv)
    _check_config_file()
    return remaining
  except flags.Error as error:
    message = ' '.join(str(error).split())
    sys.exit(f'{_name[0]}: error: {message} (see --help).')
  except SyntaxError as error:  # In the --config file.
    sys.exit(f'{_name[0]}: error: {error.filename}:{error.lineno}: {error.msg}; fix the '
             'config file.')
  except (AttributeError, KeyError) as error:  # ml_collections: no such config field.
    message = _unknown_override(argv)
    if not message:
      raise
    if '--verbose' in argv:
      traceback.print_exception(error)
    sys.exit(f'{_name[0]}: error: {message}')


def user_errors_as_one_line(main, user_errors: tuple[type[Exception], ...] = ()):
  """`main`, with a UserError (or one of `user_errors`) printed as one line, exit status 1.

  A usage error (wrong arguments) is one line too, with its own exit status.
  """

  def guarded(argv):
    try:
      return main(argv)
    except app.UsageError as error:  # absl would print the whole --help text.
      print(f'{_name[0]}: error: {error} (see --help).', file=sys.stderr)
      sys.exit(error.exitcode)
    except (errors.UserError, *user_errors) as error:
      if _VERBOSE.value:
        traceback.print_exc()
      sys.exit(f'{_name[0]}: error: {error}')
    except KeyboardInterrupt:  # Ctrl-C (train.py says more: which checkpoint it resumes).
      exit_interrupted(f'{_name[0]}: interrupted; the files it wrote are complete (each is '
                       'written whole). Run the same command again to finish.')

  return guarded


def exit_interrupted(message: str) -> None:
  """Prints `message` (one line) and leaves at once with status 130 (128 + SIGINT).

  Call it once the command's files are complete: the interpreter's teardown is
  skipped, which with JAX's, XLA's and Orbax's threads still alive crashed now
  and then (SIGSEGV, or a traceback from an Orbax thread) on a loaded machine.
  """
  print(message, file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(130)  # pylint: disable=protected-access


def run_app(main, module_name: str, name: str,
            user_errors: tuple[type[Exception], ...] = ()) -> None:
  """Runs `main` under absl as command `name`, `--help` showing `module_name`'s doc and flags.

  Exceptions of `user_errors` types count as user errors besides `errors.UserError`.

  The flags live in the package, not in the script that was started (train.py,
  srrgan-train, ...), so absl would list them only under --helpfull; adopt them.
  """
  _name[0] = name
  module = sys.modules[module_name]
  sys.modules['__main__'].__doc__ = module.__doc__
  for flag in flags.FLAGS.get_flags_for_module(module_name):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS['verbose'])
  app.run(user_errors_as_one_line(main, user_errors), flags_parser=parse_flags)
