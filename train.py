"""Thin entry point; see `srrgan_jax/commands/train.py` and README.md."""

from srrgan_jax.commands import train

if __name__ == '__main__':
  train.run()
