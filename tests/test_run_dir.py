"""The run directory: config.json, selected.json, which checkpoint a path means, fit checks."""

import json

import jax
import numpy as np
import pytest

from configs import tiny
from srrgan_jax import models
from srrgan_jax import run_dir
from srrgan_jax.checkpoints import CheckpointError

from fake_run import save_run


@pytest.fixture
def saved_run(tmp_path):
  """A run directory with checkpoints in all three phases."""
  return save_run(tmp_path / 'run')


def test_phase12_keep_best_and_latest_phase3_keeps_its_epochs(saved_run):
  assert [s for s, _ in run_dir.list_checkpoints(saved_run, 1)] == [6, 9]
  assert run_dir.best_checkpoint(saved_run, 1)[0] == 6  # Lowest validation loss.
  assert run_dir.best_checkpoint(saved_run, 2)[0] == 3
  assert [s for s, _ in run_dir.list_checkpoints(saved_run, 3)] == [3, 6]
  assert run_dir.best_checkpoint(saved_run, 3)[0] == 6  # No selection: the latest.
  assert run_dir.list_checkpoints(saved_run / 'nowhere', 1) == []
  assert run_dir.best_checkpoint(saved_run / 'nowhere', 1) is None


def test_load_generator_resolves_run_phase_and_step_directories(saved_run):
  config, params = run_dir.load_generator(saved_run)  # No selection: phase 3 latest.
  np.testing.assert_array_equal(params['stem']['kernel'], np.full((3, 3, 3, 8), 106.0))
  assert config.model.encoder_channels == (8, 16, 16)  # Tuples come back as tuples.
  _, raw = run_dir.load_generator(saved_run, use_ema=False)
  assert raw['stem']['kernel'][0, 0, 0, 0] == 6.0
  _, best1 = run_dir.load_generator(saved_run / 'checkpoints' / 'phase1')
  assert best1['stem']['kernel'][0, 0, 0, 0] == 106.0  # Phase 1 best is step 6.
  _, best1 = run_dir.load_generator(saved_run, phase=1, step=9)
  assert best1['stem']['kernel'][0, 0, 0, 0] == 109.0
  _, step_dir_params = run_dir.load_generator(saved_run / 'checkpoints/phase2/6')
  assert step_dir_params['stem']['kernel'][0, 0, 0, 0] == 106.0

  path = run_dir.write_selected(saved_run, 3, 3, {'lpips': 0.25})
  assert run_dir.read_selected(saved_run)['lpips'] == 0.25 and path.is_file()
  _, selected = run_dir.load_generator(saved_run)
  assert selected['stem']['kernel'][0, 0, 0, 0] == 103.0
  assert run_dir.best_checkpoint(saved_run, 3)[0] == 3


def test_load_generator_errors_are_clear(saved_run, tmp_path):
  with pytest.raises(CheckpointError, match='no such checkpoint'):
    run_dir.load_generator(tmp_path / 'missing')
  foreign = tmp_path / 'foreign'
  foreign.mkdir()
  (foreign / 'model.h5').write_text('not ours')
  with pytest.raises(CheckpointError, match='not an srrgan-jax checkpoint'):
    run_dir.load_generator(foreign)
  with pytest.raises(CheckpointError, match=r'no checkpoint at step 4.*\[6, 9\]'):
    run_dir.load_generator(saved_run, phase=1, step=4)
  empty_run = tmp_path / 'empty_run'
  (empty_run / 'checkpoints').mkdir(parents=True)
  with pytest.raises(CheckpointError, match='no checkpoints yet'):
    run_dir.load_generator(empty_run)


def test_run_config_is_written_read_and_guarded(saved_run, tmp_path):
  config = tiny.get_config()
  config.phase1.learning_rate = 0.5
  path = run_dir.write_config(saved_run, config)
  assert json.loads(path.read_text())['phase1']['learning_rate'] == 0.5
  assert run_dir.read_config(saved_run) == config
  run_dir.check_run_config(saved_run, tiny.get_config())  # Not architecture: accepted.
  config.model.stem_channels = 16
  with pytest.raises(CheckpointError, match=r'config\.json: .*another architecture '
                     r'\(model\.stem_channels: checkpoint 8 vs config 16\)'):
    run_dir.check_run_config(saved_run, config)
  path.unlink()  # Without config.json the latest checkpoint's configuration is used.
  assert run_dir.read_config(saved_run) == tiny.get_config()
  with pytest.raises(CheckpointError, match='does not exist'):
    run_dir.read_config(tmp_path / 'nowhere')
  (tmp_path / 'bare').mkdir()
  with pytest.raises(CheckpointError, match='not a training run'):
    run_dir.read_config(tmp_path / 'bare')


def test_architecture_mismatch_names_fields_and_ignores_compute_dtype():
  saved = run_dir.config_to_dict(tiny.get_config())
  config = tiny.get_config()
  config.model.compute_dtype = 'bfloat16'  # Mixed precision: same parameters.
  config.phase1.learning_rate = 1.0  # Not architecture.
  run_dir.check_fits(config, 'ckpt', saved_config=saved, with_disc=True)
  config.model.encoder_channels = (8, 16, 32)
  config.disc.channels = (8, 16, 16, 32)
  with pytest.raises(CheckpointError,
                     match=r'disc.channels: .*model.encoder_channels: checkpoint '
                           r'\[8, 16, 16\] vs config \[8, 16, 32\]'):
    run_dir.check_fits(config, 'ckpt', saved_config=saved, with_disc=True)
  # A generator taken over by a new phase 3 keeps only the generator's fields.
  only_disc = tiny.get_config()
  only_disc.disc.channels = (8, 16, 16, 32)
  run_dir.check_fits(only_disc, 'ckpt', saved_config=saved)


def test_parameters_that_do_not_fit_are_named():
  config = tiny.get_config()
  shapes = jax.eval_shape(lambda: models.init_generator(config, jax.random.key(0)))
  run_dir.check_fits(config, 'ckpt', params=shapes['params'])
  bigger_stem = tiny.get_config()
  bigger_stem.model.stem_channels = 16
  with pytest.raises(CheckpointError, match=r'ckpt: its generator weights do not fit .*'
                     r'stem 16.*head_0/conv/kernel has shape \(3, 3, 8, 8\), expected '
                     r'\(3, 3, 16, 16\).*Use the configuration it was trained with'):
    run_dir.check_fits(bigger_stem, 'ckpt', params=shapes['params'])
  # Foreign parameters (e.g. a hand-made tree): named by parameter.
  other = tiny.get_config()
  other.model.encoder_channels = (8, 16, 32)
  other.model.decoder_channels = (32, 8, 8)
  foreign = jax.eval_shape(lambda: models.init_generator(other, jax.random.key(0)))
  with pytest.raises(CheckpointError,
                     match=r'foreign.ckpt: .*bottleneck_0/conv1/kernel has shape '
                     r'\(3, 3, 32, 32\), expected \(3, 3, 16, 16\)'):
    run_dir.check_fits(config, 'foreign.ckpt', params=foreign['params'], remedy='Fix it.')


def test_load_generator_refuses_a_checkpoint_of_another_architecture(saved_run):
  config = tiny.get_config()
  config.phase3.learning_rate = 0.5  # Not architecture: the caller's config comes back.
  assert run_dir.load_generator(saved_run, config=config)[0] is config
  config = tiny.get_config()
  config.model.stem_channels = 16
  with pytest.raises(CheckpointError, match=r'another architecture \(model\.stem_channels: '
                     r'checkpoint 8 vs config 16\)\. Evaluate elsewhere\.'):
    run_dir.load_generator(saved_run, config=config, remedy='Evaluate elsewhere.')
