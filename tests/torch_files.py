"""Writers of `torch.save` files (both formats) and of hand-made pickles, without torch.

The files are laid out as torch lays them out, so the torch-free reader and the
converters are tested on the real formats; `Global` and `Reduce` also build the
malicious pickles the reader must refuse.
"""

import collections
import dataclasses
import io
import pickle
import zipfile

import ml_dtypes
import numpy as np


class Global:
  """A pickle GLOBAL `module name` written without importing the module (torch)."""

  def __init__(self, module, name):
    self.module, self.name = module, name

  def __call__(self, *args):  # pickle only reduces with callables.
    raise TypeError('stand-in only')


REBUILD_TENSOR = Global('torch._utils', '_rebuild_tensor_v2')
_STORAGE_TYPES = {np.dtype(np.uint8): Global('torch', 'ByteStorage'),
                  np.dtype(np.float32): Global('torch', 'FloatStorage'),
                  np.dtype(np.int64): Global('torch', 'LongStorage'),
                  np.dtype(ml_dtypes.bfloat16): Global('torch', 'BFloat16Storage')}


@dataclasses.dataclass
class Storage:
  key: str
  flat: np.ndarray


class Reduce:
  """Pickles as a call `fn(*args)` (REDUCE), the way torch pickles its tensors."""

  def __init__(self, fn, args):
    self.fn, self.args = fn, args

  def __reduce__(self):
    return self.fn, self.args


def tensor(storage, offset, shape, stride):
  return Reduce(REBUILD_TENSOR, (storage, offset, tuple(shape), tuple(stride), False,
                                 collections.OrderedDict()))


class TorchPickler(pickle._Pickler):  # The Python pickler lets us add a dispatch entry.
  """Writes `Global`s as GLOBAL opcodes and `Storage`s as torch's persistent ids."""
  dispatch = dict(pickle._Pickler.dispatch)

  def _save_global(self, obj):
    self.write(pickle.GLOBAL + f'{obj.module}\n{obj.name}\n'.encode())
    self.memoize(obj)

  dispatch[Global] = _save_global

  def persistent_id(self, obj):
    if isinstance(obj, Storage):
      return ('storage', _STORAGE_TYPES[obj.flat.dtype], obj.key, 'cpu', obj.flat.size, None)
    return None


def pickle_bytes(obj, protocol=2) -> bytes:
  """`obj` pickled with `Global`s written as real globals."""
  out = io.BytesIO()
  TorchPickler(out, protocol=protocol).dump(obj)
  return out.getvalue()


def _tensors_and_storages(state):
  """One storage per array (keys sorted as torch writes them); plain tensors."""
  storages, tensors = [], collections.OrderedDict()
  for i, (name, array) in enumerate(state.items()):
    array = np.ascontiguousarray(array)
    storage = Storage(str(10000000 + i), array.reshape(-1))
    storages.append(storage)
    strides = tuple(s // array.itemsize for s in array.strides)
    tensors[name] = tensor(storage, 0, array.shape, strides)
  return tensors, storages


def legacy_headers(out):
  for header in (0x1950a86a20f9469cfc6c, 1001,
                 {'protocol_version': 1001, 'little_endian': True,
                  'type_sizes': {'short': 2, 'int': 4, 'long': 4}}):
    pickle.dump(header, out, protocol=2)


def legacy_file(obj, storages=()) -> bytes:
  """A torch<1.6 `torch.save` file: 5 pickles, then each storage as int64 count + bytes."""
  out = io.BytesIO()
  legacy_headers(out)
  TorchPickler(out, protocol=2).dump(obj)
  pickle.dump([s.key for s in storages], out, protocol=2)
  for storage in storages:
    out.write(np.int64(storage.flat.size).tobytes())
    out.write(storage.flat.tobytes())
  return out.getvalue()


def legacy_torch_bytes(state):
  """A state dict of arrays as a torch<1.6 `torch.save` file."""
  return legacy_file(*_tensors_and_storages(state))


def zip_file(obj, storages=()) -> bytes:
  """A torch>=1.6 `torch.save` file: archive/data.pkl plus archive/data/<key>."""
  out = io.BytesIO()
  with zipfile.ZipFile(out, 'w') as zf:
    zf.writestr('archive/data.pkl', pickle_bytes(obj))
    for storage in storages:
      zf.writestr(f'archive/data/{storage.key}', storage.flat.tobytes())
  return out.getvalue()


def zip_torch_bytes(state):
  """A state dict of arrays as a torch>=1.6 `torch.save` file."""
  return zip_file(*_tensors_and_storages(state))


def one_view_file(flat, offset, shape, stride):
  """A legacy torch file holding one tensor `t` that views `flat` with these strides."""
  storage = Storage('0', flat)
  return legacy_file({'t': tensor(storage, offset, shape, stride)}, [storage])
