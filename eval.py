"""Thin entry point; see `srrgan_jax/commands/evaluate.py` and README.md."""

from srrgan_jax.commands import evaluate

if __name__ == '__main__':
  evaluate.run()
