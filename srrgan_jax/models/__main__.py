"""`python -m srrgan_jax.models --config configs/default.py`: Keras-like summaries.

Prints every top-level block of the generator and discriminator with its output
shape and parameter count, and each network's totals. Shapes come from
`jax.eval_shape`, so nothing is computed and the full-size model prints in seconds.
"""

import math
import pathlib

from absl import app
from absl import flags
from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags

import configs
from srrgan_jax.models import discriminator
from srrgan_jax.models import generator

_DEFAULT_CONFIG = str(pathlib.Path(configs.__file__).parent / 'default.py')


def count_params(tree) -> int:
  """Number of scalars in a (possibly abstract) pytree of arrays."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _trace_blocks(module: nn.Module, input_shape, **call_kwargs):
  """Abstract variables and [(name, type, output shape)] of the top-level blocks."""
  blocks = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    path = context.module.scope.path if context.module.scope else ()
    if context.method_name == '__call__' and len(path) == 1:
      blocks.append((path[0], type(context.module).__name__, tuple(out.shape)))
    return out

  def init(key):
    with nn.intercept_methods(record):
      return module.init_with_output(key, jnp.zeros(input_shape, jnp.float32),
                                     **call_kwargs)

  out, variables = jax.eval_shape(init, jax.random.key(0))
  return blocks, variables, tuple(out.shape)


def summarize(module: nn.Module, title: str, input_shape, **call_kwargs) -> str:
  """A Keras `summary()`-like table of `module` applied to `input_shape`."""
  blocks, variables, out_shape = _trace_blocks(module, input_shape, **call_kwargs)
  params = variables.get('params', {})
  state = {k: v for k, v in variables.items() if k != 'params'}
  rows = [(name, kind, str(shape), f'{count_params(params.get(name, {})):,}')
          for name, kind, shape in blocks]
  rows.append(('(output)', type(module).__name__, str(out_shape), ''))
  header = ('Block', 'Type', 'Output shape', 'Params')
  widths = [max(len(r[i]) for r in rows + [header]) + 2 for i in range(4)]
  width = sum(widths)

  def fmt(row):
    return ''.join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + row[3].rjust(
        widths[3] - 2)

  lines = [f'{title}, input {tuple(input_shape)}', '_' * width, fmt(header), '=' * width]
  lines += [fmt(r) for r in rows]
  lines += ['=' * width,
            f'Total trainable params: {count_params(params):,}',
            f'Non-trainable state (spectral-norm u, sigma): {count_params(state):,}',
            '_' * width]
  return '\n'.join(lines)


def model_summaries(config: ml_collections.ConfigDict, batch: int = 1) -> str:
  """Summaries of the generator and the discriminator at the configured patch size."""
  lr_shape = (batch,) + generator.default_lr_shape(config)[1:]
  hr_shape = (batch, config.data.patch_size, config.data.patch_size, 3)
  gen = generator.build_generator(config)
  disc = discriminator.build_discriminator(config)
  return '\n\n'.join([
      summarize(gen, f'Generator x{config.scale}, compute {config.model.compute_dtype}',
                lr_shape),
      summarize(disc, f'Discriminator, compute {config.disc.compute_dtype}', hr_shape),
  ])


def main():
  # Flags are defined only when run as a program, so importing this module (the
  # tests do) cannot clash with the entry points' own --config flag.
  config = config_flags.DEFINE_config_file(
      'config', _DEFAULT_CONFIG, 'Configuration file (ml-collections); override '
      'fields with --config.field=value.', lock_config=True)
  batch = flags.DEFINE_integer('batch', 1, 'Batch size of the example input.')

  def print_summaries(argv):
    if len(argv) > 1:
      raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    logging.set_verbosity(logging.WARNING)  # Hide JAX's backend-probing notices.
    print(model_summaries(config.value, batch.value))

  app.run(print_summaries)


if __name__ == '__main__':
  main()
