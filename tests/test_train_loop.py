"""The three-phase run: outputs, phase chaining, exact resume, refusals, NaN stop.

One tiny uninterrupted run (the session fixture `tiny_run`) is the reference the other tests
compare against; jitted steps are reused across runs in this process.
"""

import json
import logging

import jax
import numpy as np
import pytest

from srrgan_jax import checkpoints
from srrgan_jax import data
from srrgan_jax import image_io
from srrgan_jax import run_dir
from srrgan_jax.train import loop


@pytest.fixture
def tiny_config(tiny_run_config):
  """The shared run's config, a fresh copy per test."""
  return tiny_run_config.copy_and_resolve_references()


@pytest.fixture
def full_run(tiny_run):
  return tiny_run


def read_state(step_dir):
  """The whole saved train state of a checkpoint, as numpy arrays."""
  return checkpoints.restore_arrays(step_dir)


def assert_trees_equal(a, b):
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_run_writes_checkpoints_logs_samples_and_plots(full_run, tiny_config):
  workdir, summary = full_run
  steps_per_epoch = tiny_config.data.steps_per_epoch  # 3
  assert set(summary['phases']) == {1, 2, 3}
  # Phase 1: best (by val loss) and latest survive; phase 3: one per epoch.
  phase1 = [s for s, _ in run_dir.list_checkpoints(workdir, 1)]
  best1 = run_dir.best_checkpoint(workdir, 1)[0]
  assert phase1[-1] == 2 * steps_per_epoch and best1 in phase1 and len(phase1) <= 2
  assert [s for s, _ in run_dir.list_checkpoints(workdir, 3)] == [3, 6]
  assert json.loads((workdir / 'config.json').read_text())['model']['stem_channels'] == 8

  train3 = (workdir / 'logs/phase3/train.csv').read_text().splitlines()
  header = train3[0].split(',')
  for column in ('pixel', 'perceptual', 'adversarial', 'pixel_weighted',
                 'perceptual_weighted', 'adversarial_weighted', 'd_loss', 'psnr', 'ssim',
                 'learning_rate', 'd_learning_rate', 'loss', 'input_wait_ms',
                 'input_wait_fraction'):
    assert column in header, column
  assert [int(r.split(',')[0]) for r in train3[1:]] == [1, 2, 3, 4, 5, 6]
  val1 = (workdir / 'logs/phase1/val.csv').read_text().splitlines()
  assert len(val1) == 1 + 2 and 'psnr' in val1[0] and 'ssim' in val1[0]
  assert 'perceptual' in (workdir / 'logs/phase2/val.csv').read_text().splitlines()[0]
  for phase in (1, 2, 3):
    assert list((workdir / f'logs/phase{phase}').glob('events.out.tfevents.*'))
    assert (workdir / f'plots/phase{phase}.png').stat().st_size > 1000
  grid = image_io.read_rgb(workdir / 'samples/phase1_epoch001.png')
  assert grid.shape == (2 * 32 + 4, 3 * 32 + 2 * 4, 3)  # 2 rows of LR | SR | HR.
  assert summary['final']['psnr'] > 0 and summary['bilinear']['psnr'] > 0


def test_phase2_starts_from_phase1_best_and_phase3_from_phase2(full_run, tiny_config):
  workdir, _ = full_run
  best1 = run_dir.best_checkpoint(workdir, 1)[1]
  best1_ema = checkpoints.restore_generator(best1, use_ema=True)
  # Phase 2 takes 3 AdamW steps from phase 1's best EMA weights. One Adam step
  # moves a parameter by at most lr * (1 - b1) / sqrt(1 - b2) = 3.16 lr
  # (Kingma & Ba 2015, section 2.1), plus lr * weight_decay * |p| (AdamW).
  steps, p2 = tiny_config.data.steps_per_epoch, tiny_config.phase2
  assert run_dir.list_checkpoints(workdir, 2)[-1][0] == steps
  bound = steps * p2.learning_rate * ((1 - 0.9) / np.sqrt(1 - 0.999) + p2.weight_decay * 10)
  phase2 = run_dir.list_checkpoints(workdir, 2)[-1][1]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=bound),
               checkpoints.restore_generator(phase2, use_ema=False), best1_ema)
  assert max(np.abs(p).max() for p in jax.tree.leaves(best1_ema)) < 10  # Used above.
  loop2 = checkpoints.read_json(phase2, checkpoints.LOOP)
  assert str(best1) in loop2['start']
  loop3 = checkpoints.read_json(run_dir.list_checkpoints(workdir, 3)[0][1], checkpoints.LOOP)
  assert 'phase 2 best' in loop3['start']


def test_interrupted_runs_resume_bit_for_bit(full_run, tiny_config, tmp_path, caplog):
  """Stops in phase 1 and in phase 3 (plus a half-written checkpoint, as after
  `kill -9`), resumes each time: every phase ends with the identical state."""
  reference, ref_summary = full_run
  workdir = tmp_path / 'resumed'
  assert 'stopped' in loop.run(tiny_config, workdir, stop_after_steps={1: 4})
  # An unfinished Orbax save left behind by a killed process is ignored.
  (workdir / 'checkpoints/phase1/5.orbax-checkpoint-tmp-1').mkdir()
  assert 'stopped' in loop.run(tiny_config, workdir, stop_after_steps={3: 4})
  summary = loop.run(tiny_config, workdir)
  for phase in (1, 2, 3):
    ours = run_dir.list_checkpoints(workdir, phase)
    theirs = run_dir.list_checkpoints(reference, phase)
    assert [s for s, _ in ours] == [s for s, _ in theirs]
    assert_trees_equal(read_state(ours[-1][1]), read_state(theirs[-1][1]))
  assert summary['final'] == ref_summary['final']
  steps_logged = [int(r.split(',')[0]) for r in
                  (workdir / 'logs/phase1/train.csv').read_text().splitlines()[1:]]
  assert steps_logged == [1, 2, 3, 4, 5, 6]  # No duplicate rows after resuming.
  # Running the finished command again trains nothing and reports the same; each phase
  # warns only of the changed settings it reads.
  changed = tiny_config.copy_and_resolve_references()
  changed.loss.phase2_perceptual_weight, changed.loss.gan_weight = 0.5, 0.25
  caplog.set_level(logging.WARNING, logger=loop.__name__)
  assert loop.run(changed, workdir)['final'] == ref_summary['final']
  assert [r.getMessage() for r in caplog.records if 'changed settings' in r.getMessage()] == [
      'phase 2 continues with changed settings: loss.phase2_perceptual_weight: checkpoint '
      f'{tiny_config.loss.phase2_perceptual_weight!r} vs config 0.5',
      'phase 3 continues with changed settings: loss.gan_weight: checkpoint '
      f'{tiny_config.loss.gan_weight!r} vs config 0.25']


def test_phase3_alone_from_init_checkpoint_equals_the_chained_run(full_run, tiny_config,
                                                                   tmp_path):
  reference, _ = full_run
  config = tiny_config.copy_and_resolve_references()
  config.phases = (3,)
  config.init_checkpoint = str(reference / 'checkpoints' / 'phase2')  # Its best step.
  workdir = tmp_path / 'phase3_only'
  loop.run(config, workdir)
  ours, theirs = (run_dir.list_checkpoints(w, 3) for w in (workdir, reference))
  loop3 = checkpoints.read_json(ours[0][1], checkpoints.LOOP)
  assert loop3['start'].startswith('init_checkpoint')
  assert_trees_equal(read_state(ours[-1][1]), read_state(theirs[-1][1]))


def test_resuming_with_another_model_names_the_fields(full_run, tiny_config):
  workdir, _ = full_run
  config = tiny_config.copy_and_resolve_references()
  config.model.stem_channels = 16
  with pytest.raises(checkpoints.CheckpointError, match=r'model.stem_channels: '
                     r'checkpoint 8 vs config 16'):
    loop.run(config, workdir)


def test_later_phase_without_a_predecessor_is_refused(tiny_config, tmp_path):
  config = tiny_config.copy_and_resolve_references()
  config.phases = (2,)
  with pytest.raises(checkpoints.CheckpointError, match='Run phase 1 first'):
    loop.run(config, tmp_path / 'empty')


def test_nan_loss_stops_naming_the_step_and_last_checkpoint(tiny_config, tmp_path,
                                                            monkeypatch):
  real_iterator = data.make_train_iterator

  class PoisonedIterator:
    """Passes batches through, but the third one's input is NaN."""

    def __init__(self, inner):
      self.inner, self.count = inner, 0

    def __next__(self):
      batch = next(self.inner)
      self.count += 1
      if self.count == 3:
        batch = dict(batch, lr=np.full_like(batch['lr'], np.nan))
      return batch

    def get_state(self):
      return self.inner.get_state()

    def close(self):
      self.inner.close()

  monkeypatch.setattr(data, 'make_train_iterator',
                      lambda *a, **k: PoisonedIterator(real_iterator(*a, **k)))
  config = tiny_config.copy_and_resolve_references()
  config.phases = (1,)
  with pytest.raises(FloatingPointError,
                     match=r'phase 1, step 3: non-finite loss.*phase1/2\b'):
    loop.run(config, tmp_path / 'nan')
