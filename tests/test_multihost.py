"""Multi-host training: 2 processes x 2 CPU devices train like 1 process x 4 devices.

The two processes talk through `jax.distributed` on localhost (gloo CPU
collectives). They are interrupted mid-phase (`tests/multihost_worker.py`) and
resumed by `train.py` itself; `train.py` as one process with four devices, all
steps in one go, is the reference. Every subprocess is killed when the test ends.
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import cv2
import jax
import numpy as np
import pytest
import skimage.data

from configs import tiny
from srrgan_jax import checkpoints
from srrgan_jax import data
from srrgan_jax import image_io
from srrgan_jax import parallel
from srrgan_jax import run_dir
from srrgan_jax import weights
from srrgan_jax.train import loop
from srrgan_jax.train import monitor

REPO = pathlib.Path(__file__).resolve().parent.parent
# Generous bounds for a busy 2-core machine; a healthy launch takes well under a minute.
LAUNCH_TIMEOUT_S = 240
# Mid epoch 1 of phase 1 (3 steps per epoch), at a periodic save: the first
# launch compiles no validation step, the resumed one validates twice.
STOP_STEP = 2
# Not bit-exact: float sums run in another order. The gradient all-reduce over
# two processes (gloo) adds the per-device parts differently from XLA's
# in-process all-reduce, and XLA:CPU may split a reduction over threads
# differently in a 2-device process. That moves the last bits of some gradients;
# after 6 Adam steps parameters differ by up to ~5e-7 (values up to ~1).
ATOL = 1e-5


def write_photo_tiles(folder: pathlib.Path, photos, size: int) -> None:
  """Two corner tiles of each (4x downscaled) scikit-image photo."""
  folder.mkdir(parents=True)
  for name in photos:
    image = getattr(skimage.data, name)()
    small = cv2.resize(image, (image.shape[1] // 4, image.shape[0] // 4),
                       interpolation=cv2.INTER_AREA)
    for y in (0, small.shape[0] - size):
      image_io.write_image(folder / f'{name}_{y}.png', small[y:y + size, :size])


@pytest.fixture(scope='module')
def photo_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp('multihost_photos')
  write_photo_tiles(root / 'train', ('astronaut', 'coffee', 'chelsea'), 40)
  write_photo_tiles(root / 'val', ('rocket',), 32)
  return root / 'train', root / 'val'


@pytest.mark.parametrize('batch_size,patches_per_image', [(4, 1), (2, 2), (6, 2), (12, 4)])
def test_host_batches_are_the_rows_of_the_global_batch(photo_dirs, batch_size,
                                                       patches_per_image):
  """Host p's batch of a step is rows [p*b, (p+1)*b) of the one-process batch,
  also when a host's rows split an image's patches or it resumes from its state."""
  config = tiny.get_config()
  config.data.batch_size = batch_size
  config.data.patches_per_image = patches_per_image
  train_dir = photo_dirs[0]
  single = data.make_train_iterator(config, train_dir=train_dir)
  hosts = [data.make_train_iterator(config, process_index=p, process_count=2,
                                    train_dir=train_dir) for p in range(2)]
  for step in range(3):
    if step == 2:  # Host 1 restarts from its saved state.
      state = hosts[1].get_state()
      hosts[1].close()
      hosts[1] = data.make_train_iterator(config, process_index=1, process_count=2,
                                          train_dir=train_dir)
      hosts[1].set_state(state)
    expected = next(single)
    parts = [next(host) for host in hosts]
    for key in ('hr', 'lr'):
      assert all(part[key].shape[0] == batch_size // 2 for part in parts)
      np.testing.assert_array_equal(np.concatenate([part[key] for part in parts]),
                                    expected[key], err_msg=f'step {step} {key}')
  for iterator in [single] + hosts:
    iterator.close()


def test_initialize_distributed_passes_the_launch_settings(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, 'is_initialized', lambda: False)
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kw: calls.append(kw))
  dist = tiny.get_config().distributed
  parallel.initialize_distributed(dist)  # Not asked: one process, JAX untouched.
  dist.initialize = True
  parallel.initialize_distributed(dist)  # Everything left to the cluster's detection.
  dist.coordinator_address, dist.num_processes, dist.process_id = 'host0:1234', 4, 3
  parallel.initialize_distributed(dist)
  assert calls == [{}, {'coordinator_address': 'host0:1234', 'num_processes': 4,
                        'process_id': 3}]

  def no_cluster(**kwargs):
    raise ValueError('coordinator_address should be defined.')

  monkeypatch.setattr(jax.distributed, 'initialize', no_cluster)
  with pytest.raises(ValueError, match='coordinator_address=HOST:PORT'):
    parallel.initialize_distributed(dist)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


class Processes:
  """Subprocesses started together; waited for with a deadline and always killed."""

  def __init__(self, launches, log_dir: pathlib.Path):
    """`launches`: one (log name, command, environment) per process."""
    self.procs, self.logs = [], []
    try:
      for name, command, env in launches:
        log = open(log_dir / f'{name}.log', 'w+', encoding='utf-8')
        self.logs.append(log)
        # Own process group: the kill below takes any child the process started.
        self.procs.append(subprocess.Popen(command, env=env, cwd=REPO, stdout=log,
                                           stderr=subprocess.STDOUT,
                                           start_new_session=True))
    except BaseException:
      self.__exit__()
      raise

  def outputs(self) -> list[str]:
    texts = []
    for log in self.logs:
      log.seek(0)
      texts.append(log.read())
    return texts

  def wait(self, timeout: float) -> list[str]:
    """The outputs once all exit 0; fails at the first failure or the deadline."""
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in self.procs):
      failed = [p for p in self.procs if p.poll() not in (None, 0)]
      if failed or time.monotonic() > deadline:
        break  # A lone survivor would wait for its peer until the deadline.
      time.sleep(0.2)
    codes = [p.poll() for p in self.procs]
    if codes != [0] * len(codes):
      tails = '\n'.join(f'--- process {i} (exit {c}):\n{out[-3000:]}'
                        for i, (c, out) in enumerate(zip(codes, self.outputs())))
      pytest.fail(f'multi-process launch failed or timed out after {timeout} s:\n{tails}')
    return self.outputs()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    for p in self.procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
      p.wait()
    for log in self.logs:
      log.close()


def saved_state(step_dir: pathlib.Path):
  return checkpoints.restore_arrays(step_dir)


def test_two_processes_train_and_resume_like_one_process(photo_dirs, tmp_path):
  train_dir, val_dir = photo_dirs
  weights_dir = tmp_path / 'weights'
  weights.write_random_weights(weights_dir, [weights.VGG19_FILE])
  config = tiny.get_config()
  config.phases = (1,)
  config.data.train_dir, config.data.val_dir = str(train_dir), str(val_dir)
  config_json = tmp_path / 'config.json'
  config_json.write_text(json.dumps(run_dir.config_to_dict(config)))
  # train.py reads its configuration from a config file, like users do.
  config_file = tmp_path / 'multihost_config.py'
  config_file.write_text(
      'import json, pathlib\nfrom srrgan_jax import run_dir\n\n\n'
      'def get_config():\n  return run_dir.config_from_dict(json.loads('
      f'pathlib.Path({str(config_json)!r}).read_text()))\n')
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(REPO),
             XLA_FLAGS='--xla_force_host_platform_device_count=2',
             SRRGAN_WEIGHTS_DIR=str(weights_dir), SRRGAN_CACHE_DIR=str(tmp_path / 'cache'))
  four_devices = dict(env, XLA_FLAGS='--xla_force_host_platform_device_count=4')
  multi, single = tmp_path / 'two_processes', tmp_path / 'one_process'
  train_py = [sys.executable, 'train.py', '--config', str(config_file), '--workdir']

  def distributed(i):
    return ['--config.distributed.initialize=True',
            f'--config.distributed.coordinator_address={coordinator}',
            '--config.distributed.num_processes=2', f'--config.distributed.process_id={i}']

  coordinator = f'localhost:{free_port()}'
  interrupted = [(f'interrupted_{i}', [
      sys.executable, 'tests/multihost_worker.py', str(config_json), str(multi),
      coordinator, str(i), '1', str(STOP_STEP)], env) for i in range(2)]
  # The reference, meanwhile: one process with 4 devices, all 6 steps in one go.
  reference = [('one_process', train_py + [str(single)], four_devices)]
  with Processes(interrupted + reference, tmp_path) as launch:
    outputs = launch.wait(LAUNCH_TIMEOUT_S)
  for output in outputs[:2]:
    assert 'evaluation refused' in output and 'single host' in output
  # Data positions were saved per process: one process cannot take over.
  one_takes_over = tmp_path / 'one_takes_over'
  shutil.copytree(multi, one_takes_over)
  with pytest.raises(checkpoints.CheckpointError, match='saved by 2 process'):
    loop.run(config, one_takes_over)

  coordinator = f'localhost:{free_port()}'
  resumed = [(f'resumed_{i}', train_py + [str(multi)] + distributed(i), env)
             for i in range(2)]
  with Processes(resumed, tmp_path) as launch:
    resumed = launch.wait(LAUNCH_TIMEOUT_S)
  assert f'Phase 1: resuming at step {STOP_STEP}' in resumed[0]
  assert 'Phase 1:' not in resumed[1] and 'Final generator' not in resumed[1]

  ours, theirs = (run_dir.list_checkpoints(w, 1) for w in (multi, single))
  assert [s for s, _ in ours] == [s for s, _ in theirs]
  max_difference = 0.0
  a, b = saved_state(ours[-1][1]), saved_state(theirs[-1][1])
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=0, atol=ATOL)
    max_difference = max(max_difference, float(np.max(np.abs(
        np.asarray(x, np.float64) - np.asarray(y, np.float64)), initial=0.0)))
  print(f'max |2 processes - 1 process| over the train state: {max_difference:.3g}')
  # Each process saved its own data-iterator position; Orbax wrote the rest once.
  assert sorted(p.name for p in (ours[-1][1] / 'data').glob('process_*')) == [
      'process_0-of-2.json', 'process_1-of-2.json']

  # Only process 0 logged: one row per step across both launches, one TensorBoard
  # file per launch, and the same losses as the one-process run.
  logs, reference = (monitor.read_csv(w / 'logs/phase1/train.csv') for w in (multi, single))
  np.testing.assert_array_equal(logs['step'], np.arange(1, 7))
  np.testing.assert_allclose(logs['loss'], reference['loss'], rtol=1e-5)
  assert len(list((multi / 'logs/phase1').glob('events.out.tfevents.*'))) == 2
  np.testing.assert_array_equal(monitor.read_csv(multi / 'logs/phase1/val.csv')['epoch'],
                                [1, 2])
  assert sorted(p.name for p in (multi / 'samples').iterdir()) == [
      'phase1_epoch001.png', 'phase1_epoch002.png']
  assert (multi / 'plots/phase1.png').is_file()
