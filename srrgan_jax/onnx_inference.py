"""Running an exported ONNX generator with onnxruntime under the toolkit's tiling.

`infer.py --onnx model.onnx` upscales with the ONNX file instead of a run's
JAX generator: same tile layout and blending (`tiling`), tile size and overlap
from the file's metadata (written by `export.export_onnx`) unless given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import ml_collections
import numpy as np

from srrgan_jax import inference

# What the file's metadata must state for the toolkit to tile it.
_REQUIRED_METADATA = ('scale', 'size_multiple', 'tile', 'overlap')


class OnnxForward:
  """forward(lr_BHWC in [-1, 1]) -> HR in [-1, 1], like `inference.GeneratorForward`.

  The exported model takes and returns NCHW RGB in [0, 1] (float32 or, for an
  fp16 export, float16); this converts both ways around it.
  """

  def __init__(self, path):
    try:
      import onnxruntime  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise inference.InferenceError(
          '--onnx needs onnxruntime: pip install -e ".[export]" (README "Exporting").') from e
    path = Path(path)
    if not path.is_file():
      raise inference.InferenceError(f'{path}: no such ONNX file.')
    try:
      self.session = onnxruntime.InferenceSession(
          str(path), providers=onnxruntime.get_available_providers())
    except Exception as e:  # pylint: disable=broad-except  # onnxruntime's own error types.
      raise inference.InferenceError(f'{path}: not a loadable ONNX model ({e}).') from e
    self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
    missing = [key for key in _REQUIRED_METADATA if key not in self.metadata]
    if missing:
      raise inference.InferenceError(
          f'{path}: its metadata lacks {", ".join(missing)}; --onnx runs models exported '
          'by srrgan-export.')
    self.scale = int(self.metadata['scale'])
    self.size_multiple = int(self.metadata['size_multiple'])
    model_input = self.session.get_inputs()[0]
    self._input_name = model_input.name
    self._input_dtype = np.float16 if model_input.type == 'tensor(float16)' else np.float32

  def __call__(self, lr_BHWC):
    images = ((np.asarray(lr_BHWC, np.float32) + 1.0) * 0.5).transpose(0, 3, 1, 2)
    hr, = self.session.run(None, {self._input_name: images.astype(self._input_dtype)})
    return hr.astype(np.float32).transpose(0, 2, 3, 1) * 2.0 - 1.0


def upscaler(path, *, tile: Optional[int] = None, overlap: Optional[int] = None,
             batch_size: Optional[int] = None) -> inference.Upscaler:
  """An `inference.Upscaler` that runs the ONNX file at `path`.

  Tile size and overlap default to the file's metadata, the batch size to one
  tile per call (onnxruntime on a CPU is not faster per tile with larger batches).
  """
  forward = OnnxForward(path)
  config = ml_collections.ConfigDict({
      'scale': forward.scale,
      'inference': {'tile': int(forward.metadata['tile']),
                    'overlap': int(forward.metadata['overlap']), 'batch_size': 1}})
  return inference.Upscaler(config, None, tile=tile, overlap=overlap,
                            batch_size=1 if batch_size is None else batch_size,
                            forward=forward)
