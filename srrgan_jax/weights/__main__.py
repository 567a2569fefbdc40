"""`python -m srrgan_jax.weights ...`: the srrgan-weights command."""

from srrgan_jax.commands import weights

if __name__ == '__main__':
  weights.run()
