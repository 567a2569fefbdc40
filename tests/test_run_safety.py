"""A run directory survives what users do to it: two trainings at once, a failed first
run, a damaged checkpoint, a changed batch size, a full disk, Ctrl-C."""

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from srrgan_jax import checkpoints
from srrgan_jax import errors
from srrgan_jax import run_dir
from srrgan_jax import run_lock
from srrgan_jax.commands import train as train_command
from srrgan_jax.train import loop


def _holder(workdir, process_index=0):
  """A separate process that holds the run directory's lock until it is killed."""
  code = ('import sys, time; from srrgan_jax import run_lock\n'
          f'with run_lock.hold({str(workdir)!r}, {process_index}):\n'
          '  print("held", flush=True); time.sleep(600)')
  holder = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == 'held'
  return holder


def test_a_second_training_on_one_run_directory_is_refused(tmp_path, tiny_run_config):
  workdir = tmp_path / 'run'
  holder = _holder(workdir)
  try:
    with pytest.raises(run_lock.RunDirectoryInUse, match=rf'{workdir}: in use by process '
                       rf'{holder.pid} on host '):
      with run_lock.hold(workdir):
        pass
    with pytest.raises(run_lock.RunDirectoryInUse, match=str(holder.pid)):
      loop.run(tiny_run_config.copy_and_resolve_references(), workdir)
    with run_lock.hold(workdir, process_index=1):  # Another host's process: its own lock.
      pass
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # The dead holder's lock is stale: taken over at once.
  with run_lock.hold(workdir) as path:
    assert json.loads(path.read_text())['pid'] == os.getpid()
  with run_lock.hold(workdir):  # And released on leaving the block.
    pass


def test_a_failed_first_run_leaves_no_config_and_does_not_poison_the_directory(
    tmp_path, tiny_run_config):
  config = tiny_run_config.copy_and_resolve_references()
  config.data.train_dir = str(tmp_path / 'no_such_folder')
  workdir = tmp_path / 'run'
  with pytest.raises(errors.UserError, match='no_such_folder'):
    loop.run(config, workdir)
  assert not (workdir / run_dir.CONFIG_FILE).exists()
  # A config.json without checkpoints (e.g. from an older version) protects nothing.
  other = tiny_run_config.copy_and_resolve_references()
  other.model.stem_channels = 16
  run_dir.write_config(workdir, other)
  run_dir.check_run_config(workdir, tiny_run_config)  # No refusal.


def _damage(step_dir):
  """Truncates the largest file of a checkpoint's train state."""
  files = [p for p in (step_dir / checkpoints.STATE).rglob('*') if p.is_file()]
  largest = max(files, key=lambda p: p.stat().st_size)
  largest.write_bytes(largest.read_bytes()[:100])
  return largest


def test_damaged_checkpoint_batch_size_change_and_full_disk(tmp_path, tiny_run_config,
                                                            monkeypatch, capsys):
  config = tiny_run_config.copy_and_resolve_references()
  config.phases = (1,)
  workdir = tmp_path / 'run'
  loop.run(config, workdir, stop_after_steps={1: 4})
  assert [s for s, _ in run_dir.list_checkpoints(workdir, 1)] == [3, 4]

  # A mid-phase checkpoint's data position needs the same batch size.
  bigger = config.copy_and_resolve_references()
  bigger.data.batch_size = 8
  with pytest.raises(checkpoints.CheckpointError,
                     match=r'phase1/4: phase 1 was saved mid-way with data.batch_size=4, '
                     r'now 8'):
    loop.run(bigger, workdir)

  # A damaged latest checkpoint is set aside (kept) and the previous one resumed;
  # a full disk at the next save is one error naming the folder.
  damaged_file = _damage(workdir / 'checkpoints/phase1/4')
  truncated = damaged_file.read_bytes()
  real_save = checkpoints.save

  def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(checkpoints, 'save', full_disk)
  capsys.readouterr()
  with pytest.raises(loop.CheckpointSaveError,
                     match=rf'{workdir}/checkpoints/phase1: no space left to save step 4 '
                     r'\(No space left on device\); a checkpoint needs about .* MiB'):
    loop.run(config, workdir)
  out = capsys.readouterr().out
  assert ('Phase 1: checkpoint step 4 is damaged' in out and 'moved it to '
          f'{workdir}/checkpoints/damaged/phase1-4; trying step 3.' in out)
  assert 'resuming at step 3' in out
  moved = workdir / 'checkpoints/damaged/phase1-4' / damaged_file.relative_to(
      workdir / 'checkpoints/phase1/4')
  assert moved.read_bytes() == truncated  # Kept as it was, for inspection.

  monkeypatch.setattr(checkpoints, 'save', real_save)
  # An asynchronous save that runs out of space reports it when the run waits for it.
  real_make = checkpoints.make_manager

  def make_manager_on_full_disk(*args, **kwargs):
    manager = real_make(*args, **kwargs)
    real_wait, failed = manager.wait_until_finished, []

    def wait():
      real_wait()
      if not failed:
        failed.append(True)
        raise OSError(errno.ENOSPC, 'No space left on device')

    manager.wait_until_finished = wait
    return manager

  monkeypatch.setattr(checkpoints, 'make_manager', make_manager_on_full_disk)
  with pytest.raises(loop.CheckpointSaveError, match=r'phase1: no space left to save step 4'):
    loop.run(config, workdir, stop_after_steps={1: 4})
  monkeypatch.setattr(checkpoints, 'make_manager', real_make)
  loop.run(config, workdir)  # Resumes and finishes the phase.
  assert [s for s, _ in run_dir.list_checkpoints(workdir, 1)][-1] == 6
  assert json.loads((workdir / 'config.json').read_text())['phases'] == [1]


def test_ctrl_c_message_names_the_checkpoint_to_resume_from(tmp_path):
  assert train_command.interrupted_message(tmp_path) == (
      'train: interrupted; no checkpoint was saved yet. Run the same command again to '
      'resume (the phase starts over).')


def test_ctrl_c_during_training_prints_one_line(tmp_path, tiny_run_config):
  """SIGINT to train.py after its first checkpoint: one line naming it, exit 130."""
  workdir = tmp_path / 'run'
  repo = pathlib.Path(__file__).resolve().parent.parent
  process = subprocess.Popen(
      [sys.executable, str(repo / 'train.py'), f'--config={repo / "configs/tiny.py"}',
       f'--workdir={workdir}', '--config.phases=(1,)', '--config.phase1.epochs=50',
       f'--config.data.train_dir={tiny_run_config.data.train_dir}',
       f'--config.data.val_dir={tiny_run_config.data.val_dir}'],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  # Orbax renames a checkpoint to its step number once it is complete.
  while time.time() < deadline and not list(workdir.glob('checkpoints/phase1/[0-9]')):
    time.sleep(0.5)
  process.send_signal(signal.SIGINT)
  try:
    _, stderr = process.communicate(timeout=90)
  except subprocess.TimeoutExpired:  # Some library swallowed it: a user presses again,
    process.send_signal(signal.SIGINT)  # which stops at once with the same line.
    _, stderr = process.communicate(timeout=60)
  assert process.returncode == 130, stderr
  assert 'Traceback' not in stderr
  last = stderr.strip().splitlines()[-1]
  assert last.startswith(f'train: interrupted; the last checkpoint is {workdir}/checkpoints/'
                         'phase1/') and last.endswith('Run the same command again to '
                                                      'resume from it.')


def test_ctrl_c_in_any_other_command_is_one_line_and_status_130():
  """infer.py, eval.py and the other commands share the handler of `commands.run_app`."""
  script = ('from srrgan_jax import commands\n'
            'def main(argv):\n'
            '  raise KeyboardInterrupt\n'
            'commands.user_errors_as_one_line(main)([])\n'
            'print("not reached")\n')
  result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          cwd=pathlib.Path(__file__).resolve().parent.parent, timeout=120,
                          check=False)
  assert result.returncode == 130, result.stderr
  assert result.stderr.strip().splitlines() == [
      'srrgan: interrupted; the files it wrote are complete (each is written whole). Run '
      'the same command again to finish.']
  assert 'not reached' not in result.stdout
