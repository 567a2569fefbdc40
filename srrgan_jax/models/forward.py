"""The generator as training, evaluation and inference run it.

Images enter and leave the generator in [-1, 1] ("model range"); files and
metrics use [0, 1]. `from_unit` and `to_unit` are the one pair of conversions.
`generate` is the one forward pass (training passes a dropout key);
`GeneratorForward` jits it once per configuration, with the parameters as an
argument, so every checkpoint of a run reuses the same compiled program.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import jax
import ml_collections
import numpy as np

from srrgan_jax.models.generator import Generator
from srrgan_jax.models.generator import build_generator


def from_unit(x):
  """[0, 1] images -> the model range [-1, 1] (numpy or jax, dtype kept)."""
  return x * 2 - 1


def to_unit(x, *, in_place: bool = False):
  """The model range [-1, 1] -> [0, 1] images, clipped (numpy or jax, also under jit).

  in_place=True overwrites a numpy array instead of allocating two more of its
  size (an upscaled canvas can be the largest array of a run).
  """
  if in_place:
    x += 1
    x *= 0.5
    return np.clip(x, 0, 1, out=x)
  return ((x + 1) * 0.5).clip(0, 1)


def generate(model: Generator, params, lr_BHWC, *, dropout_key: Optional[jax.Array] = None):
  """HR images from LR images, both in [-1, 1].

  With `dropout_key` the generator runs in training mode (spatial dropout drawn
  from that key); without it, deterministically.
  """
  if dropout_key is None:
    return model.apply({'params': params}, lr_BHWC, train=False)
  return model.apply({'params': params}, lr_BHWC, train=True, rngs={'dropout': dropout_key})


class GeneratorForward:
  """forward(params, lr_BHWC in [-1, 1]) -> HR in [-1, 1], compiled ahead of time per shape.

  The parameters are an argument of the compiled program, not constants baked
  into it: compiling stays fast for the full-size model and one program serves
  every checkpoint. Tiled inference uses a single input shape; whole-image
  inference keeps the programs of the last few.
  """

  _MAX_COMPILED = 4

  def __init__(self, config: ml_collections.ConfigDict, *,
               compute_dtype: Optional[str] = None):
    if compute_dtype:
      config = ml_collections.ConfigDict(config.to_dict())
      config.model.compute_dtype = compute_dtype
    model = build_generator(config)
    self.size_multiple = model.size_multiple
    self._apply = jax.jit(lambda params, lr: generate(model, params, lr))
    self._compiled = {}

  @property
  def compiled_shapes(self) -> list[tuple[int, ...]]:
    """The input shapes whose programs are kept (each was compiled once)."""
    return list(self._compiled)

  def lower(self, params, shape: Sequence[int]):
    """The program for float32 inputs of `shape`, lowered but not compiled."""
    return self._apply.lower(params, jax.ShapeDtypeStruct(tuple(shape), np.float32))

  def compiled(self, params, shape: Sequence[int]):
    """The executable for float32 inputs of `shape` (compiled on first use)."""
    shape = tuple(shape)
    if shape not in self._compiled:
      if len(self._compiled) >= self._MAX_COMPILED:
        self._compiled.pop(next(iter(self._compiled)))
      self._compiled[shape] = self.lower(params, shape).compile()
    return self._compiled[shape]

  def flops(self, params, shape: Sequence[int]) -> float:
    """FLOPs of one call on `shape`, from XLA's cost analysis of the compiled program."""
    analysis = self.compiled(params, shape).cost_analysis()
    if isinstance(analysis, (list, tuple)):  # Older jax: one dict per device.
      analysis = analysis[0]
    return float(analysis['flops'])

  def __call__(self, params, lr_BHWC):
    return self.compiled(params, np.shape(lr_BHWC))(params, lr_BHWC)

  def bind(self, params) -> Callable[[Any], jax.Array]:
    """lr_BHWC -> HR with these parameters (moved to the device once)."""
    return functools.partial(self, jax.device_put(params))
