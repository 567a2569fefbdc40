"""Thin entry point; see `srrgan_jax/commands/infer.py` and README.md."""

from srrgan_jax.commands import infer

if __name__ == '__main__':
  infer.run()
