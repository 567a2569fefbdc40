"""Orbax checkpoints of a phase: saving, retention, resuming the data iterator, reading items."""

import jax
import numpy as np
import pytest

from configs import tiny
from srrgan_jax import checkpoints
from srrgan_jax import parallel
from srrgan_jax import run_dir

from fake_run import counting_iterator
from fake_run import save_run
from fake_run import small_state


def jax_abstract(tree):
  sharding = parallel.replicated(parallel.make_mesh())
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      tree)


def test_state_iterator_and_loop_state_round_trip(tmp_path):
  config = tiny.get_config()
  manager = checkpoints.make_manager(tmp_path, 1, async_save=False)
  iterator = counting_iterator()
  for _ in range(5):
    next(iterator)
  state = small_state(2.0, step=5)
  checkpoints.save(manager, 5, state, iterator, {'epoch': 1, 'plateau': {'wait': 2}},
                   run_dir.config_to_dict(config), val_loss=0.1)
  expected_next = next(iterator)
  fresh = counting_iterator()
  abstract = parallel.to_host(state)
  restored, loop_state, saved_config = checkpoints.restore(
      manager, 5, jax_abstract(abstract), fresh)
  assert next(fresh) == expected_next == 5  # The data stream continues exactly.
  np.testing.assert_array_equal(restored.params['stem']['kernel'],
                                state.params['stem']['kernel'])
  assert int(restored.step) == 5 and restored.disc_params is None
  assert loop_state == {'epoch': 1, 'plateau': {'wait': 2}}
  assert run_dir.config_from_dict(saved_config) == config


def test_finished_steps_and_single_items_are_read_through_orbax(tmp_path):
  save_run(tmp_path)
  phase1 = run_dir.phase_dir(tmp_path, 1)
  # Retention kept the best (step 6) and the latest (step 9); their metrics came along.
  assert checkpoints.finished_steps(phase1) == [(6, {'val_loss': 0.3}), (9, {'val_loss': 0.4})]
  assert checkpoints.finished_steps(tmp_path / 'nowhere') == []
  (phase1 / '12.orbax-checkpoint-tmp-1').mkdir()  # A save cut short by a killed process.
  assert [s for s, _ in checkpoints.finished_steps(phase1)] == [6, 9]
  assert checkpoints.val_loss({'val_loss': float('nan')}) is None
  assert checkpoints.val_loss({}) is None and checkpoints.val_loss({'val_loss': 1}) == 1.0

  step_dir = phase1 / '6'
  assert {checkpoints.STATE, checkpoints.LOOP, checkpoints.CONFIG} <= checkpoints.item_names(
      step_dir)
  assert checkpoints.STATE not in checkpoints.item_names(tmp_path)  # A run directory.
  assert checkpoints.read_json(step_dir, checkpoints.LOOP) == {'epoch': 6, 'best_step': None}
  assert run_dir.config_from_dict(
      checkpoints.read_json(step_dir, checkpoints.CONFIG)) == tiny.get_config()
  arrays = checkpoints.restore_arrays(step_dir)
  assert arrays['params']['stem']['kernel'][0, 0, 0, 0] == 6.0 and int(arrays['step']) == 6
  ema = checkpoints.restore_generator(step_dir)
  assert ema['stem']['kernel'][0, 0, 0, 0] == 106.0 and 'step' not in ema
  assert isinstance(ema['output_conv']['bias'], np.ndarray)
  with pytest.raises(checkpoints.CheckpointError, match=r"train state has no 'disc'"):
    checkpoints.restore_arrays(step_dir, ['disc'])


def test_a_relative_run_directory_reads_like_an_absolute_one(tmp_path, monkeypatch):
  """`eval.py --workdir runs/x` passes relative step folders; Orbax takes only absolute ones."""
  save_run(tmp_path / 'runs' / 'x')
  monkeypatch.chdir(tmp_path)
  step_dir = run_dir.phase_dir('runs/x', 1) / '6'
  assert not step_dir.is_absolute()
  assert checkpoints.STATE in checkpoints.item_names(step_dir)
  assert checkpoints.read_json(step_dir, checkpoints.LOOP) == {'epoch': 6, 'best_step': None}
  assert checkpoints.restore_generator(step_dir)['stem']['kernel'][0, 0, 0, 0] == 106.0
  assert [s for s, _ in checkpoints.finished_steps(step_dir.parent)] == [6, 9]
