"""Exporting a trained generator: ONNX (via jax2onnx) and serialized StableHLO (jax.export).

Both files compute the same function, in the convention of ONNX super-resolution
models: an NCHW batch of RGB images in [0, 1] in, the upscaled NCHW RGB batch
in [0, 1] out (the generator's own [-1, 1] range is converted inside). The
weights are constants of the program. Batch, height and width are symbolic:
any batch size, any height and width that are multiples of the generator's
`size_multiple` (8: one factor 2 per stride-2 encoder stage).

fp16: float16 weights, convolutions and input/output tensors; normalisation
statistics, the bilinear base and the output bound stay float32.

GroupNorm and squeeze-excitation normalise over the whole input, so the output
for a pixel depends on the input size; the generator behaves as trained on
inputs of the training patch size. `tiling_metadata` states the tile size and
overlap this toolkit runs (`infer.py`), and the ONNX file carries it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from srrgan_jax import errors
from srrgan_jax import files
from srrgan_jax import models
from srrgan_jax import quiet_logs

FORMATS = ('onnx', 'stablehlo')
# The oldest opset jax2onnx 0.17 writes this network correctly for (at 17 it
# emits ReduceMean with opset 18's axes input, which the ONNX checker rejects).
ONNX_OPSET = 18
# Platforms the StableHLO program is lowered for (jax.export picks at call time).
STABLEHLO_PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')


class ExportError(errors.UserError):
  """Bad export options (format, output path) or a missing optional dependency."""


def _dtype(fp16: bool):
  return np.float16 if fp16 else np.float32


def upscale_function(config: ml_collections.ConfigDict, params, *, fp16: bool = False
                     ) -> Callable[[jax.Array], jax.Array]:
  """f(NCHW RGB in [0, 1]) -> NCHW RGB in [0, 1], upscaled, with `params` baked in."""
  dtype = _dtype(fp16)
  if fp16:
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.compute_dtype = 'float16'
    params = jax.tree.map(lambda p: np.asarray(p, np.float16), params)
  model = models.build_generator(config)

  def upscale(images_NCHW):
    lr = models.from_unit(jnp.transpose(images_NCHW, (0, 2, 3, 1)).astype(jnp.float32))
    hr = model.apply({'params': params}, lr, train=False)
    return jnp.transpose(models.to_unit(hr), (0, 3, 1, 2)).astype(dtype)

  return upscale


def input_spec(config: ml_collections.ConfigDict, *, fp16: bool = False
               ) -> jax.ShapeDtypeStruct:
  """(batch, 3, m*h, m*w) with m the generator's size multiple, all symbolic but 3."""
  multiple = models.build_generator(config).size_multiple
  shape = jax.export.symbolic_shape(f'batch, 3, {multiple}*h, {multiple}*w')
  return jax.ShapeDtypeStruct(shape, _dtype(fp16))


def tiling_metadata(config: ml_collections.ConfigDict, *, fp16: bool = False
                    ) -> dict[str, str]:
  """What a user of the exported model needs to know, as ONNX metadata_props."""
  multiple = models.build_generator(config).size_multiple
  scale = int(config.scale)
  tile, overlap = int(config.inference.tile), int(config.inference.overlap)
  return {
      'scale': str(scale),
      'layout': 'NCHW',
      'channels': 'RGB',
      'range': '0-1',
      'precision': 'float16' if fp16 else 'float32',
      'size_multiple': str(multiple),
      'trained_tile': str(int(config.data.patch_size) // scale),
      'tile': str(tile),
      'overlap': str(overlap),
      'usage': (f'Input height and width must be multiples of {multiple}. GroupNorm '
                'normalises over the whole input, so outputs depend on the input '
                f'size: run {tile}x{tile} tiles overlapping by {overlap} pixels and '
                'blend them (srrgan-jax infer.py --onnx does).'),
  }


def check_format(format: str) -> None:  # pylint: disable=redefined-builtin
  """Raises ExportError unless `format` is one of FORMATS."""
  if format not in FORMATS:
    raise ExportError(f'--format {format!r}: unknown; use one of {", ".join(FORMATS)}.')


def check_output_path(path) -> Path:
  """Fails before any work unless a file can be written at `path` (folders are created)."""
  path = Path(path)
  if path.is_dir():
    raise ExportError(f'{path}: is a folder; give a file name, e.g. {path / "model.onnx"}.')
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    files.probe_writable(path.parent)
  except OSError as e:
    raise ExportError(f'{path}: cannot write the output here ({e.strerror or e}); choose '
                      'another path or fix its permissions.') from e
  return path


def export_stablehlo(config: ml_collections.ConfigDict, params, path, *,
                     fp16: bool = False) -> jax.export.Exported:
  """Writes the serialized `jax.export` program; load it with `jax.export.deserialize`."""
  exported = jax.export.export(jax.jit(upscale_function(config, params, fp16=fp16)),
                               platforms=STABLEHLO_PLATFORMS)(input_spec(config, fp16=fp16))
  files.write_atomic(path, exported.serialize())
  return exported


def _anchor_tile_counts(upscale, multiple: int):
  """`upscale` plus a strided slice of its input of shape (batch, 3, h, w).

  jax2onnx computes a symbolic size at run time from a tensor that has it as a
  dimension; the input has only m*h and m*w, but the generator's mean over
  H*W and its bottleneck need h and w themselves. The slice gives them; it is
  a few bytes and its only consumers are Shape nodes.
  """
  def anchored(images_NCHW):
    jax.lax.slice(images_NCHW, (0, 0, 0, 0), images_NCHW.shape, (1, 1, multiple, multiple))
    return upscale(images_NCHW)
  return anchored


def _conv_kernels_to_fp16(model) -> None:
  """Stores float32 kernels of float16 Conv nodes as float16 (in place, onnx_ir model).

  jax2onnx 0.17 writes every floating-point initializer it creates as float32
  (meant for float64), including the transposed kernels of flax Conv layers,
  which leaves Conv nodes with float16 data and float32 weights: an invalid
  model.
  """
  import onnx_ir as ir  # pylint: disable=g-import-not-at-top
  for node in model.graph.all_nodes():
    if node.op_type != 'Conv' or node.outputs[0].dtype != ir.DataType.FLOAT16:
      continue
    kernel = node.inputs[1]
    if kernel.const_value is not None and kernel.dtype == ir.DataType.FLOAT:
      kernel.const_value = ir.tensor(kernel.const_value.numpy().astype(np.float16),
                                     name=kernel.name)
      kernel.type = ir.TensorType(ir.DataType.FLOAT16)




def export_onnx(config: ml_collections.ConfigDict, params, path, *, fp16: bool = False,
                opset: int = ONNX_OPSET):
  """Writes the generator as one self-contained ONNX file; returns its ModelProto."""
  try:
    import jax2onnx  # pylint: disable=g-import-not-at-top
    import onnx  # pylint: disable=g-import-not-at-top
    import onnx_ir as ir  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ExportError(f'ONNX export needs the export extra ({e.name} is missing): '
                      'pip install -e ".[export]" && pip install --no-deps '
                      '"jax2onnx>=0.17.1,<0.18" (README "Exporting").') from e
  from srrgan_jax import onnx_plugins  # pylint: disable=g-import-not-at-top,unused-import
  multiple = models.build_generator(config).size_multiple
  upscale = _anchor_tile_counts(upscale_function(config, params, fp16=fp16), multiple)
  with quiet_logs.quiet('onnx_ir'):  # One warning per shape-less helper value.
    model = jax2onnx.to_onnx(upscale, [input_spec(config, fp16=fp16)],
                             model_name='srrgan_generator', opset=opset,
                             return_mode='ir', input_names=['input'],
                             output_names=['output'])
    if fp16:
      _conv_kernels_to_fp16(model)
    proto = ir.to_proto(model)
  proto.producer_name = 'srrgan-jax'
  proto.doc_string = (f'SRRGAN generator, x{config.scale}: NCHW RGB in [0, 1] -> NCHW RGB '
                      'in [0, 1].')
  for key, value in tiling_metadata(config, fp16=fp16).items():
    proto.metadata_props.add(key=key, value=value)
  onnx.checker.check_model(proto)
  with files.atomic_file(path) as handle:  # One file: the weights are far below 2 GB.
    onnx.save_model(proto, handle)
  return proto


def export(config: ml_collections.ConfigDict, params, path, *, format: str,  # pylint: disable=redefined-builtin
           fp16: bool = False):
  """Exports in `format` ('onnx' or 'stablehlo') to `path`, checked before any work."""
  check_format(format)
  path = check_output_path(path)
  if format == 'onnx':
    return export_onnx(config, params, path, fp16=fp16)
  return export_stablehlo(config, params, path, fp16=fp16)
