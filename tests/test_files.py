"""Atomic writes leave the old file or the whole new one, never a temporary; folder probes."""

import errno
import os
import stat

import pytest

from srrgan_jax import files


def fill_disk_after_ten_bytes(monkeypatch):
  """Files written through `files` fail after their first ten bytes, as on a full disk."""
  real_open = open

  def open_on_full_disk(*args, **kwargs):
    handle = real_open(*args, **kwargs)
    real_write = handle.write

    def write(contents):
      real_write(contents[:10])
      handle.flush()
      raise OSError(errno.ENOSPC, 'No space left on device')

    handle.write = write
    return handle

  monkeypatch.setattr(files, 'open', open_on_full_disk, raising=False)


def test_a_write_replaces_the_file_whole_with_the_usual_permissions(tmp_path):
  target = tmp_path / 'new' / 'folder' / 'run.json'
  files.write_atomic(target, '{"a": 1}\n')
  files.write_atomic(target, b'{"a": 2}\n')
  assert target.read_text() == '{"a": 2}\n'
  assert sorted(p.name for p in target.parent.iterdir()) == ['run.json']
  umask = os.umask(0)
  os.umask(umask)
  # Not the owner-only mode of a tempfile: others may read outputs as any new file.
  assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_file_and_names_the_reason(tmp_path, monkeypatch):
  target = tmp_path / 'out.bin'
  target.write_bytes(b'old')
  fill_disk_after_ten_bytes(monkeypatch)
  with pytest.raises(files.WriteError, match=rf'^{tmp_path}: writing out.bin \(2,000 bytes\) '
                     r'failed \(No space left on device\); free space or choose another'):
    files.write_atomic(target, bytes(2000))
  with pytest.raises(files.WriteError) as raised:  # No size given: none in the message.
    with files.atomic_file(target) as handle:
      handle.write(b'x' * 20)
  assert 'writing out.bin failed' in str(raised.value)
  assert raised.value.strerror == 'No space left on device'  # For callers' own wording.
  assert target.read_bytes() == b'old' and os.listdir(tmp_path) == ['out.bin']


def test_an_error_in_the_block_leaves_no_temporary_and_passes_through(tmp_path):
  with pytest.raises(ValueError, match='encoder broke'):
    with files.atomic_file(tmp_path / 'model.onnx') as handle:
      handle.write(b'half')
      raise ValueError('encoder broke')
  assert not list(tmp_path.iterdir())


def test_an_unusable_folder_is_named(tmp_path):
  (tmp_path / 'a_file').write_text('')
  with pytest.raises(files.WriteError, match=rf'^{tmp_path / "a_file"}: cannot write x.png '
                     r'there \(.*\); fix the folder or choose another'):
    files.write_atomic(tmp_path / 'a_file' / 'x.png', b'')
  with pytest.raises(OSError):
    files.probe_writable(tmp_path / 'a_file')
  files.probe_writable(tmp_path)
  assert os.listdir(tmp_path) == ['a_file']  # The probe leaves nothing behind.
