"""Checkpoint saving, retention, resume of the data iterator, and generator loading."""

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from srrgan_jax import checkpoints
from srrgan_jax import parallel
from srrgan_jax.train.state import TrainState


def small_state(value: float, step: int = 0, with_disc: bool = False) -> TrainState:
  """A stand-in train state (small arrays; the layout of the real one)."""
  params = {'stem': {'kernel': jnp.full((3, 3, 3, 2), value)}, 'out': {'bias': jnp.zeros(2)}}
  state = TrainState(step=jnp.array(step, jnp.int32), params=params,
                     ema_params={'stem': {'kernel': jnp.full((3, 3, 3, 2), value + 100)},
                                 'out': {'bias': jnp.ones(2)}},
                     opt_state={'mu': jnp.zeros(2)}, rng=jnp.array([0, 7], jnp.uint32))
  if with_disc:
    state = state.replace(disc_params={'w': jnp.ones(4)}, disc_stats={'u': jnp.ones(4)},
                          disc_opt_state={'mu': jnp.zeros(4)})
  return parallel.put_replicated(state, parallel.make_mesh())


def counting_iterator():
  return iter(grain.MapDataset.range(1000).to_iter_dataset())


def save_steps(workdir, phase, steps_and_losses, *, keep_steps=(), config=None):
  config = config or tiny.get_config()
  manager = checkpoints.make_manager(workdir, phase, async_save=True, keep_steps=keep_steps)
  iterator = counting_iterator()
  for step, val_loss in steps_and_losses:
    checkpoints.save(manager, step, small_state(float(step), step, phase == 3), iterator,
                     {'epoch': step, 'best_step': None}, config, val_loss=val_loss)
  manager.wait_until_finished()  # Async saves must be complete before exit.
  manager.close()


@pytest.fixture
def run_dir(tmp_path):
  """A run directory with checkpoints in all three phases."""
  save_steps(tmp_path, 1, [(3, 0.5), (4, None), (6, 0.3), (7, None), (9, 0.4)])
  save_steps(tmp_path, 2, [(3, 0.2), (6, 0.25)])
  save_steps(tmp_path, 3, [(2, None), (3, None), (5, None), (6, None)], keep_steps=(3, 6))
  return tmp_path


def test_phase12_keep_best_and_latest_phase3_keeps_its_epochs(run_dir):
  assert [s for s, _ in checkpoints.list_checkpoints(run_dir, 1)] == [6, 9]
  assert checkpoints.best_checkpoint(run_dir, 1)[0] == 6  # Lowest validation loss.
  assert checkpoints.best_checkpoint(run_dir, 2)[0] == 3
  assert [s for s, _ in checkpoints.list_checkpoints(run_dir, 3)] == [3, 6]
  assert checkpoints.list_checkpoints(run_dir / 'nowhere', 1) == []


def test_state_iterator_and_loop_state_round_trip(tmp_path):
  config = tiny.get_config()
  manager = checkpoints.make_manager(tmp_path, 1, async_save=False)
  iterator = counting_iterator()
  for _ in range(5):
    next(iterator)
  state = small_state(2.0, step=5)
  checkpoints.save(manager, 5, state, iterator, {'epoch': 1, 'plateau': {'wait': 2}},
                   config, val_loss=0.1)
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
  assert checkpoints.config_from_dict(saved_config) == config


def jax_abstract(tree):
  sharding = parallel.replicated(parallel.make_mesh())
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      tree)


def test_load_generator_resolves_run_phase_and_step_directories(run_dir):
  config, params = checkpoints.load_generator(run_dir)  # No selection: phase 3 latest.
  np.testing.assert_array_equal(params['stem']['kernel'], np.full((3, 3, 3, 2), 106.0))
  assert config.model.encoder_channels == (8, 16, 16)  # Tuples come back as tuples.
  _, raw = checkpoints.load_generator(run_dir, use_ema=False)
  assert raw['stem']['kernel'][0, 0, 0, 0] == 6.0
  _, best1 = checkpoints.load_generator(run_dir / 'checkpoints' / 'phase1')
  assert best1['stem']['kernel'][0, 0, 0, 0] == 106.0  # Phase 1 best is step 6.
  _, best1 = checkpoints.load_generator(run_dir, phase=1, step=9)
  assert best1['stem']['kernel'][0, 0, 0, 0] == 109.0
  _, step_dir_params = checkpoints.load_generator(run_dir / 'checkpoints/phase2/6')
  assert step_dir_params['stem']['kernel'][0, 0, 0, 0] == 106.0

  path = checkpoints.write_selected(run_dir, 3, 3, {'lpips': 0.25})
  assert checkpoints.read_selected(run_dir)['lpips'] == 0.25 and path.is_file()
  _, selected = checkpoints.load_generator(run_dir)
  assert selected['stem']['kernel'][0, 0, 0, 0] == 103.0
  assert checkpoints.best_checkpoint(run_dir, 3)[0] == 3


def test_load_generator_errors_are_clear(run_dir, tmp_path):
  with pytest.raises(checkpoints.CheckpointError, match='no such checkpoint'):
    checkpoints.load_generator(tmp_path / 'missing')
  foreign = tmp_path / 'foreign'
  foreign.mkdir()
  (foreign / 'model.h5').write_text('not ours')
  with pytest.raises(checkpoints.CheckpointError, match='not an srrgan-jax checkpoint'):
    checkpoints.load_generator(foreign)
  with pytest.raises(checkpoints.CheckpointError, match=r'no checkpoint at step 4.*\[6, 9\]'):
    checkpoints.load_generator(run_dir, phase=1, step=4)
  empty_run = tmp_path / 'empty_run'
  (empty_run / 'checkpoints').mkdir(parents=True)
  with pytest.raises(checkpoints.CheckpointError, match='no checkpoints yet'):
    checkpoints.load_generator(empty_run)


def test_architecture_mismatch_names_fields_and_ignores_compute_dtype():
  saved = checkpoints.config_to_dict(tiny.get_config())
  config = tiny.get_config()
  config.model.compute_dtype = 'bfloat16'  # Mixed precision: same parameters.
  config.phase1.learning_rate = 1.0  # Not architecture.
  checkpoints.check_compatible(saved, config, 'ckpt')
  config.model.encoder_channels = (8, 16, 32)
  config.disc.channels = (8, 16, 16, 32)
  with pytest.raises(checkpoints.CheckpointError,
                     match=r'disc.channels: .*model.encoder_channels: checkpoint '
                           r'\[8, 16, 16\] vs config \[8, 16, 32\]'):
    checkpoints.check_compatible(saved, config, 'ckpt')
  # A generator taken over by a new phase 3 keeps only the generator's fields.
  only_disc = tiny.get_config()
  only_disc.disc.channels = (8, 16, 16, 32)
  checkpoints.check_compatible(saved, only_disc, 'ckpt', with_disc=False)
