"""jax2onnx converter plugin for the generator's bilinear upsampling (`jax.image.resize`).

jax2onnx (0.17) lowers `jax.image.resize` only without antialiasing and only
for static shapes. The generator's global residual calls it with JAX's
default antialias=True and, in an export with symbolic height and width,
symbolic sizes. Antialiasing changes only downsampling (the triangle kernel is
widened by 1/scale when scale < 1), so an upsampling resize with it is the
plain bilinear resize: ONNX `Resize` (linear, half_pixel), given by constant
per-axis scales, which also works for symbolic sizes.

Importing this module registers the plugin; it replaces jax2onnx's resize
lowering for this process and hands every case it does not handle back to it.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx_ir as ir
from jax2onnx._compat.jax import ShapedArray
from jax2onnx.plugins._ir_shapes import _ensure_value_metadata
from jax2onnx.plugins._ir_shapes import _stamp_type_and_shape
from jax2onnx.plugins.jax.image import resize as jax2onnx_resize
from jax2onnx.plugins.plugin_system import register_primitive

_LINEAR_METHODS = ('linear', 'bilinear', 'trilinear', 'triangle')


def _upsampling_factor(out_dim, in_dim) -> Optional[int]:
  """The integer k with out_dim == k * in_dim (static or symbolic), else None."""
  if isinstance(in_dim, int) and isinstance(out_dim, int):
    return out_dim // in_dim if in_dim and out_dim % in_dim == 0 else None
  try:
    factor = out_dim // in_dim
  except Exception:  # pylint: disable=broad-except  # Symbolic division not exact.
    return None
  if not isinstance(factor, (int, np.integer)) or factor < 1:
    return None
  return int(factor) if out_dim == in_dim * factor else None


def _method_name(method) -> str:
  return (method.name if hasattr(method, 'name') else str(method)).lower()


@register_primitive(
    jaxpr_primitive=jax2onnx_resize.ImageResizePlugin._PRIM.name,  # pylint: disable=protected-access
    jax_doc='https://docs.jax.dev/en/latest/_autosummary/jax.image.resize.html',
    onnx=[{'component': 'Resize', 'doc': 'https://onnx.ai/onnx/operators/onnx__Resize.html'}],
    since='srrgan-jax',
    context='primitives.jax_image',
    component='resize',
    testcases=[],
)
class UpsamplingResizePlugin(jax2onnx_resize.ImageResizePlugin):
  """Bilinear upsampling by integer factors (antialias ignored), static or symbolic sizes."""

  @staticmethod
  def abstract_eval(image, *, shape, method='linear', **params):
    del method, params
    return ShapedArray(tuple(shape), image.dtype)  # Keeps symbolic sizes symbolic.

  def lower(self, ctx, eqn):
    image_var, out_var = eqn.invars[0], eqn.outvars[0]
    in_shape, out_shape = tuple(image_var.aval.shape), tuple(out_var.aval.shape)
    factors = [_upsampling_factor(o, i) for o, i in zip(out_shape, in_shape)]
    linear = _method_name(eqn.params.get('method', 'linear')) in _LINEAR_METHODS
    if not linear or None in factors:
      if all(isinstance(d, int) for d in in_shape + out_shape):
        return super().lower(ctx, eqn)
      raise NotImplementedError(
          f'resize {in_shape} -> {out_shape} ({eqn.params.get("method")}): only bilinear '
          'upsampling by integer factors is lowered for symbolic sizes.')
    image = ctx.get_value_for_var(image_var, name_hint=ctx.fresh_name('resize_input'))
    roi = ctx.builder.add_initializer_from_array(
        name=ctx.fresh_name('resize_roi'), array=np.zeros((0,), np.float32))
    scales = ctx.builder.add_initializer_from_array(
        name=ctx.fresh_name('resize_scales'), array=np.asarray(factors, np.float32))
    out = ctx.builder.Resize(image, roi, scales, _outputs=[ctx.fresh_name('resize_out')],
                             mode='linear', coordinate_transformation_mode='half_pixel')
    out.type = ir.TensorType(image.dtype)
    _stamp_type_and_shape(out, out_shape)
    _ensure_value_metadata(ctx, out)
    ctx.bind_value_for_var(out_var, out)
    return None
