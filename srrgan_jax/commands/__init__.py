"""Command-line entry points (`train.py`, `eval.py`, `infer.py` and the console scripts)."""

import sys

from absl import app
from absl import flags


def run_app(main, module_name: str) -> None:
  """Runs `main` under absl, with `--help` showing `module_name`'s doc and flags.

  The flags live in the package, not in the script that was started (train.py,
  srrgan-train, ...), so absl would list them only under --helpfull; adopt them.
  """
  module = sys.modules[module_name]
  sys.modules['__main__'].__doc__ = module.__doc__
  for flag in flags.FLAGS.get_flags_for_module(module_name):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main)
