"""Device prefetching: same batches in the same order, exact resume, input-wait telemetry."""

import logging
import time

import jax
import numpy as np
import pytest

from configs import tiny
from srrgan_jax import data
from srrgan_jax import parallel
from srrgan_jax.train import device_prefetch
from srrgan_jax.train import monitor as monitor_lib
import tiny_run


@pytest.fixture(scope='module')
def config(tmp_path_factory):
  root = tmp_path_factory.mktemp('prefetch_data')
  tiny_run.write_photos(root / 'train', 4, (40, 48), seed=3)
  c = tiny.get_config()
  c.data.train_dir = str(root / 'train')
  return c


def _prefetcher(config, mesh):
  return device_prefetch.DevicePrefetcher(
      data.make_train_iterator(config), lambda b: parallel.global_batch(b, mesh))


def _host_batches(config, count):
  plain = data.make_train_iterator(config)
  batches = [next(plain) for _ in range(count)]
  plain.close()
  return batches


def _assert_same(device_batch, host_batch):
  for name in ('lr', 'hr'):
    np.testing.assert_array_equal(np.asarray(device_batch[name]), host_batch[name])


def test_batches_come_out_identical_and_in_order_on_the_devices(config):
  mesh = parallel.make_mesh()
  expected = _host_batches(config, 5)
  prefetcher = _prefetcher(config, mesh)
  prefetcher.prefetch()
  got = []
  for _ in range(5):
    got.append(next(prefetcher))
    prefetcher.prefetch()  # Always one batch ahead, as in the training loop.
  prefetcher.close()
  for device_batch, host_batch in zip(got, expected):
    assert device_batch['hr'].sharding == parallel.batch_sharding(mesh)
    assert len(device_batch['hr'].sharding.device_set) == jax.device_count()
    _assert_same(device_batch, host_batch)


def test_state_excludes_the_prefetched_batch_so_resuming_loses_nothing(config):
  mesh = parallel.make_mesh()
  expected = _host_batches(config, 4)
  first = _prefetcher(config, mesh)
  next(first), next(first)
  first.prefetch()  # Batch 2 is on the devices but not handed out.
  saved = first.get_state()
  _assert_same(next(first), expected[2])
  first.close()
  resumed = _prefetcher(config, mesh)
  resumed.set_state(saved)
  _assert_same(next(resumed), expected[2])
  _assert_same(next(resumed), expected[3])
  # set_state drops batches prefetched for the old position.
  resumed.prefetch()
  resumed.set_state(saved)
  _assert_same(next(resumed), expected[2])
  resumed.close()


class _SlowSource:
  """Host batches that take `delay` seconds each (a loader that cannot keep up)."""

  def __init__(self, delay):
    self.delay, self.count = delay, 0

  def __next__(self):
    time.sleep(self.delay)
    self.count += 1
    return {'x': np.full((4, 2), self.count, np.float32)}

  def get_state(self):
    return {'count': self.count}

  def set_state(self, state):
    self.count = state['count']


class _Recorder:
  """Stands in for PhaseMonitor and the progress bar."""

  phase = 1

  def __init__(self):
    self.rows, self.postfix = [], None

  def train(self, step, values):
    self.rows.append((step, dict(values)))

  def set_postfix(self, values, refresh):
    del refresh
    self.postfix = values


def _run_steps(delay, step_seconds, steps):
  prefetcher = device_prefetch.DevicePrefetcher(_SlowSource(delay), lambda b: b)
  recorder = _Recorder()
  metrics = monitor_lib.StepMetrics(recorder, recorder, log_every=steps,
                                    input_wait=lambda: prefetcher.wait_seconds,
                                    input_advice='Raise data.num_workers.')
  prefetcher.prefetch()
  for step in range(1, steps + 1):
    next(prefetcher)
    time.sleep(step_seconds)  # The "device step".
    prefetcher.prefetch()
    metrics.push(step, {'loss': np.float32(1.0)})
  metrics.flush()
  return recorder


def test_a_slow_loader_is_reported_as_input_bound(caplog):
  with caplog.at_level(logging.WARNING):
    recorder = _run_steps(delay=0.05, step_seconds=0.005, steps=6)
  (step, row), = recorder.rows
  assert step == 6 and row['input_wait_fraction'] > 0.6
  assert 40 < row['input_wait_ms'] < 200
  assert recorder.postfix['input'].endswith('%')
  warning, = [r.getMessage() for r in caplog.records if 'input-bound' in r.getMessage()]
  assert 'phase 1 is input-bound' in warning and 'Raise data.num_workers.' in warning


def test_a_fast_loader_is_not_input_bound(caplog):
  with caplog.at_level(logging.WARNING):
    recorder = _run_steps(delay=0.0, step_seconds=0.03, steps=6)
  (_, row), = recorder.rows
  assert row['input_wait_fraction'] < monitor_lib.INPUT_BOUND_FRACTION
  assert not [r for r in caplog.records if 'input-bound' in r.getMessage()]
