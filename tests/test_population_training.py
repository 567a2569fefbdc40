"""Training a population: members equal their single runs, one compile, checkpoints, resume.

One tiny phase-3 population of 3 members that differ in `loss.gan_weight`
(trained once per module) is compared with the single runs of its members,
with an interrupted and resumed copy of itself, and read back per member. A
population that forks at phase 2 (`phase2_perceptual_weight`) is trained
through phase 2 and compared with its members' single runs there.
"""

import json

import jax
import numpy as np
import pytest

import fake_run
from srrgan_jax import checkpoints
from srrgan_jax import errors
from srrgan_jax import parallel
from srrgan_jax import population
from srrgan_jax import run_dir
from srrgan_jax.train import loop
from srrgan_jax.train import loop_state as loop_state_lib
from srrgan_jax.train import optim
from srrgan_jax.train import state as state_lib
from srrgan_jax.train import steps
from srrgan_jax.train.loop_state import LoopState
from srrgan_jax.train.loop_state import PopulationLoopState
from test_train_steps import gradient_tolerance
from test_train_steps import random_batch
from test_train_steps import small_perceptual_config
from test_train_steps import UNIT_ROUNDOFF
from test_train_steps import vgg_params  # pylint: disable=unused-import  (a fixture)

GAN_WEIGHTS = (0.0, 1.0, 10.0)
FORK_WEIGHTS = (0.0, 1e-3)  # phase2_perceptual_weight: the members fork at phase 2.


@pytest.fixture(scope='module')
def population_config(tiny_run_config, tmp_path_factory):
  """Phase 3 alone (2 epochs of 3 steps) from one random generator, 3 gan weights.

  Adam's eps is 1 and the perceptual term weighs 0, as in the 1-vs-4-device
  test of test_train_steps (see there): the step is then a smooth function of
  the gradients, so float32 rounding differences stay rounding-sized.
  """
  config = tiny_run_config.copy_and_resolve_references()
  start = fake_run.save_random_generator(tmp_path_factory.mktemp('start'), 3)
  config.phases = (3,)
  config.init_checkpoint = str(run_dir.latest_checkpoint(start))
  config.adam_eps = 1.0
  config.loss.perceptual_weight = 0.0
  config.population.gan_weight = GAN_WEIGHTS
  return config


@pytest.fixture(scope='module')
def population_run(population_config, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('population')
  summary = loop.run(population_config.copy_and_resolve_references(), workdir)
  return workdir, summary


def final_state(workdir):
  return checkpoints.restore_arrays(run_dir.list_checkpoints(workdir, 3)[-1][1])


def flat(tree) -> np.ndarray:
  """Every parameter of a pytree in one vector."""
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def update_error(start, reference, candidate) -> float:
  """|candidate's update - reference's update| / |reference's update|, over all parameters."""
  ref, got = flat(reference) - flat(start), flat(candidate) - flat(start)
  return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


def max_abs_difference(a, b) -> float:
  return float(max(np.abs(x - y).max() for x, y in zip(jax.tree.leaves(a),
                                                         jax.tree.leaves(b))))


def storage_tolerance(steps_run: int, start, reference) -> float:
  """The `update_error` that storing the parameters in float32 allows, over `steps_run` steps.

  Each step stores every parameter rounded, within u|p| of the exact p + update,
  and its EMA within about 2u|ema| (decay * ema, (1 - decay) * p and their sum
  are rounded): two runs' stored values may differ by 4u|p| per step whatever
  their updates, 4 n u |p| / |update| of the update. This exceeds 1 at phase 2's
  learning rate (1e-5: most updates are below the weights' float32 spacing).
  """
  update = np.linalg.norm(flat(reference) - flat(start))
  return float(4 * steps_run * UNIT_ROUNDOFF * np.linalg.norm(flat(reference)) / update)


def test_changing_loss_weights_or_learning_rates_does_not_recompile(vgg_params):
  config = small_perceptual_config()
  mesh = parallel.make_mesh()
  vgg = parallel.put_replicated(vgg_params, mesh)
  jitted = steps.jit_train_step(config, 2, 6, mesh)
  state = state_lib.create_state(config, 2, 6, mesh)
  batch = parallel.global_batch(random_batch(config), mesh)
  key = parallel.put_replicated(state_lib.phase_key(config, 2), mesh)
  compiled = []  # Compilations held by the program after each step.
  for weight, gan_weight, g_learning_rate in ((1e-3, 0.05, 5e-5), (0.5, 0.5, 1e-4),
                                              (2.0, 5.0, 1e-3)):
    changed = config.copy_and_resolve_references()
    changed.loss.phase2_perceptual_weight, changed.loss.gan_weight = weight, gan_weight
    changed.phase3.g_learning_rate = g_learning_rate
    assert steps.jit_train_step(changed, 2, 6, mesh) is jitted  # The same program...
    state, metrics = steps.compile_train_step(changed, 2, 6, mesh, vgg)(state, batch, key)
    assert float(metrics['perceptual_weighted']) == pytest.approx(
        weight * float(metrics['perceptual']), rel=1e-6)  # ...with the new value.
    compiled.append(jitted._cache_size())  # pylint: disable=protected-access
  # Other tests of this process may have compiled the program before; new
  # weights after the first step compile nothing.
  assert compiled[0] >= 1 and compiled[1:] == [compiled[0]] * 2, compiled
  # A traced field does make a new program.
  changed.adam_eps = 1e-3
  assert steps.jit_train_step(changed, 2, 6, mesh) is not jitted


@pytest.fixture(scope='module')
def single_runs(population_config, tmp_path_factory):
  """The final phase-3 states of the single runs with each member's weights."""
  finals = []
  for member in population.members(population_config):
    workdir = tmp_path_factory.mktemp(f'single{member.index}')
    loop.run(population.member_config(population_config, member), workdir)
    finals.append(final_state(workdir))
  return finals


def test_each_member_equals_the_single_run_with_its_weights(population_config,
                                                            population_run, single_runs):
  """Acceptance: member k's phase-3 generator is the single run with member k's weights.

  The population's step is the members' step under `jax.vmap`: the same
  arithmetic, but XLA batches the members' convolutions (grouped
  convolutions), which sums in another order. Each step's gradients are
  therefore within the float32 summation bound of `gradient_tolerance` of the
  single run's; with the smooth Adam of `population_config` the update of
  every parameter follows its gradients, so over n steps the members' whole
  updates (final - start, in the 2-norm) differ by at most n times that bound.
  A member compared with another member's single run must fail the same check.
  """
  workdir, summary = population_run
  members = population.members(population_config)
  start = checkpoints.restore_generator(population_config.init_checkpoint, use_ema=False)
  ours = final_state(workdir)
  steps_run = run_dir.list_checkpoints(workdir, 3)[-1][0]
  tolerance = steps_run * gradient_tolerance(population_config)
  # The three single runs differ only in traced values: one compiled step.
  jitted = steps.jit_train_step(population.member_config(population_config, members[0]),
                                3, steps_run, parallel.make_mesh())
  assert jitted._cache_size() == 1  # pylint: disable=protected-access

  measured, update_errors, controls = {}, {}, []
  for k, single in enumerate(single_runs):
    member = state_lib.member_state(ours, k)
    for name in ('params', 'ema_params'):
      error = update_error(start, single[name], member[name])
      assert error <= tolerance, (k, name, error, tolerance)
    update_errors[members[k].name] = error
    measured[members[k].name] = max_abs_difference(member['params'], single['params'])
    # Negative control: another member's single run is outside the bound.
    other = single_runs[(k + 1) % len(single_runs)]
    controls.append(update_error(start, other['params'], member['params']))
  print(f'population vs single runs after {steps_run} steps: max abs difference of the '
        f'generator {measured}, update error {update_errors} (bound {tolerance:.3g}); '
        f'against another member\'s single run: {controls}')
  assert min(controls) > tolerance
  finals = summary['phases'][3]['members']
  assert [f['member'] for f in finals] == [m.name for m in members]


def test_a_population_of_one_equals_the_single_run(population_config, single_runs,
                                                   tmp_path):
  """P = 1 is still the vmapped step: the same bound as above applies (and is met)."""
  config = population_config.copy_and_resolve_references()
  config.population.gan_weight = (GAN_WEIGHTS[1],)
  loop.run(config, tmp_path)
  ours = state_lib.member_state(final_state(tmp_path), 0)
  start = checkpoints.restore_generator(config.init_checkpoint, use_ema=False)
  tolerance = 6 * gradient_tolerance(config)
  error = update_error(start, single_runs[1]['params'], ours['params'])
  print(f'population of 1 vs the single run: max abs difference '
        f'{max_abs_difference(ours, single_runs[1])}, update error {error}')
  assert error <= tolerance
  assert update_error(start, single_runs[0]['params'], ours['params']) > tolerance


def test_one_checkpoint_holds_every_member(population_config, population_run):
  workdir, _ = population_run
  saved = run_dir.list_checkpoints(workdir, 3)
  assert [s for s, _ in saved] == [3, 6]
  step_dir = saved[-1][1]
  names = [m.name for m in population.members(population_config)]
  assert run_dir.population_members(step_dir) == names
  state = checkpoints.restore_arrays(step_dir)
  assert all(x.shape[0] == len(names) for x in jax.tree.leaves(state))
  loop_json = checkpoints.read_json(step_dir, checkpoints.LOOP)
  assert [m['best_step'] for m in loop_json['members']] == [6, 6, 6]
  for k in range(len(names)):
    _, params = run_dir.load_generator(step_dir, member=k)
    jax.tree.map(np.testing.assert_array_equal, params,
                 state_lib.member_state(state['ema_params'], k))
  with pytest.raises(checkpoints.CheckpointError, match='population checkpoint of 3 '
                     'members.*0: gan_weight=0; 1: gan_weight=1;.*--member'):
    run_dir.load_generator(step_dir)
  with pytest.raises(checkpoints.CheckpointError, match='no member 3'):
    run_dir.load_generator(step_dir, member=3)
  val = (workdir / 'logs/phase3/val.csv').read_text().splitlines()
  assert val[0].startswith('epoch,step,member,') and len(val) == 1 + 2 * len(names)
  assert (workdir / 'samples/phase3_epoch001_member2.png').is_file()


def test_an_interrupted_population_resumes_bit_for_bit(population_config, population_run,
                                                       tmp_path):
  reference, _ = population_run
  workdir = tmp_path / 'resumed'
  config = population_config.copy_and_resolve_references()
  assert 'stopped' in loop.run(config, workdir, stop_after_steps={3: 4})
  loop.run(config, workdir)
  ours, theirs = final_state(workdir), final_state(reference)
  jax.tree.map(np.testing.assert_array_equal, ours, theirs)
  # Another population cannot continue these checkpoints.
  config.population.gan_weight = (0.0, 1.0)
  with pytest.raises(checkpoints.CheckpointError, match='saved with members gan_weight=0; '
                     'gan_weight=1; gan_weight=10, this run has members'):
    loop.run(config, tmp_path / 'resumed', stop_after_steps={3: 5})


def test_each_member_has_its_own_plateau_and_early_stop():
  def tracker():
    return optim.PlateauTracker(learning_rate=1.0, factor=0.5, patience=1,
                                min_learning_rate=0.1, early_stop_patience=1)

  loop_state = PopulationLoopState(phase=2, start='phase 1 best', names=['a', 'b'],
                                   members=[LoopState(2, 'phase 1 best', plateau=tracker())
                                            for _ in range(2)])
  loop_state.record_validation(3, 1, [{'loss': 1.0}, {'loss': 1.0}])
  loop_state.record_validation(6, 2, [{'loss': 0.5}, {'loss': 2.0}])  # b stops.
  assert loop_state.active == [True, False] and not loop_state.stopped_early
  loop_state.record_validation(9, 3, [{'loss': 0.4}, {'loss': 0.1}])  # b stays stopped.
  a, b = loop_state.members
  assert (a.best_step, b.best_step) == (9, 3) and b.best_val_loss == 1.0
  assert (a.plateau.learning_rate, b.plateau.learning_rate) == (1.0, 0.5)
  loop_state.step = 9
  saved = json.loads(json.dumps(loop_state.to_json()))
  assert [m['name'] for m in saved['members']] == ['a', 'b']
  assert loop_state_lib.from_json(saved) == loop_state
  loop_state.record_validation(12, 4, [{'loss': 0.5}, {'loss': 0.1}])  # a stops too.
  assert loop_state.stopped_early and loop_state.finished(epochs=10)


def test_a_stopped_member_keeps_its_state_while_the_others_train():
  config = small_perceptual_config()
  config.population.gan_weight = (0.01, 0.1)
  mesh = parallel.make_mesh()
  member_configs = [population.member_config(config, m)
                    for m in population.members(config)]
  before = state_lib.create_population(config, 1, 6, mesh, 2)
  before_host = parallel.to_host(before)
  step = steps.compile_population_step(config, 1, 6, mesh, member_configs)
  key = parallel.put_replicated(state_lib.phase_key(config, 1), mesh)
  batch = parallel.global_batch(random_batch(config), mesh)
  after, metrics = step(before, batch, key, np.array([True, False]))
  after = parallel.to_host(after)
  assert metrics['loss'].shape == (2,)
  jax.tree.map(np.testing.assert_array_equal, state_lib.member_state(after, 1),
               state_lib.member_state(before_host, 1))
  assert int(after.step[0]) == 1 and int(after.step[1]) == 0
  assert not np.array_equal(after.params['stem']['kernel'][0],
                            before_host.params['stem']['kernel'][0])


def test_members_spread_over_device_groups_train_as_on_every_device():
  """member_devices=2: each pair of devices holds one member and splits the batch."""
  config = small_perceptual_config()
  config.adam_eps = 1.0  # A smooth first step (see population_config).
  config.population.gan_weight = (0.01, 0.1)
  member_configs = [population.member_config(config, m)
                    for m in population.members(config)]
  batch, results = random_batch(config), []
  for member_devices in (1, 2):
    mesh = parallel.make_mesh(member_devices=member_devices)
    assert dict(mesh.shape) == {'member': member_devices, 'data': 4 // member_devices}
    state = state_lib.create_population(config, 1, 6, mesh, 2)
    step = steps.compile_population_step(config, 1, 6, mesh, member_configs)
    key = parallel.put_replicated(state_lib.phase_key(config, 1), mesh)
    state, _ = step(state, parallel.global_batch(batch, mesh), key, np.ones(2, bool))
    assert state.params['stem']['kernel'].sharding.spec[0] == 'member'
    evaluate = steps.compile_population_eval_step(config, mesh, 2)
    eval_batch = {**batch, 'mask': np.ones(len(batch['lr']), np.float32)}
    sums, sr = evaluate(state.ema_params, parallel.global_batch(eval_batch, mesh))
    assert sr.shape[:2] == (2, len(batch['lr'])) and sums['count'].shape == (2,)
    results.append(parallel.to_host(state))
  start = parallel.to_host(state_lib.create_population(config, 1, 6, parallel.make_mesh(),
                                                       2))
  for k in range(2):
    error = update_error(*(state_lib.member_state(s, k).params
                           for s in (start, results[0], results[1])))
    assert error <= gradient_tolerance(config), error
  with pytest.raises(errors.ConfigError, match=r'population.member_devices=3 does not '
                     r'divide the 4 devices'):
    parallel.make_mesh(member_devices=3)
  with pytest.raises(errors.ConfigError, match=r'data.batch_size=3 is not divisible by '
                     r'the 2 devices of each of the 2 member groups'):
    parallel.check_batch_size(3, parallel.make_mesh(member_devices=2))


class _PhaseThreeStarted(Exception):
  """Ends a run once phase 3's state exists (phase-3 training is tested above)."""


def test_a_phase2_sweep_trains_phase1_once_and_each_member_goes_on_from_its_own_best(
    tiny_run_config, tmp_path, monkeypatch):
  """A `phase2_perceptual_weight` population of 2: phases 1-2 of 2 steps, phase 3's start.

  Phase 1 is one shared model; phase 2 trains both members from its best, and
  member k's phase 2 is the single run with member k's weight from that
  checkpoint: within the bound of `test_each_member_equals_the_single_run_with_
  its_weights` (Adam's eps is 1 for the same reason) plus `storage_tolerance`,
  and outside it from the other member's single run. Phase 3 must start each
  member from its own phase-2 best: the generator its state is created with is
  compared exactly, and the run ends there (no phase-3 step is compiled).
  """
  config = tiny_run_config.copy_and_resolve_references()
  config.data.steps_per_epoch = 2
  # One encoder stage and one VGG tap: the same code paths, 40% less compile time.
  config.model.encoder_channels, config.model.decoder_channels = (8,), (8,)
  config.loss.perceptual_layers, config.loss.perceptual_layer_weights = ('block1_conv2',), (1.,)
  config.phase1.epochs = config.phase2.epochs = 1
  config.adam_eps = 1.0
  # Updates far above the weights' float32 spacing (storage_tolerance 1e-4, not 1.4).
  config.phase2.learning_rate = 0.1
  config.population.phase2_perceptual_weight = FORK_WEIGHTS
  members = population.members(config)
  starts = {}  # Phase -> (params, ema_params) the population state was created with.
  create_population = state_lib.create_population

  def recording_create_population(config, phase, *args, **kwargs):
    state = create_population(config, phase, *args, **kwargs)
    starts[phase] = parallel.to_host((state.params, state.ema_params))  # Before donation.
    if phase == 3:
      raise _PhaseThreeStarted
    return state

  monkeypatch.setattr(state_lib, 'create_population', recording_create_population)
  workdir = tmp_path / 'population'
  with pytest.raises(_PhaseThreeStarted):
    loop.run(config.copy_and_resolve_references(), workdir)

  # Phase 1 ran once: one checkpoint, of a single model.
  [(_, phase1_dir)] = run_dir.list_checkpoints(workdir, 1)
  assert run_dir.population_members(phase1_dir) == []
  shared = checkpoints.restore_arrays(phase1_dir)
  start = shared['ema_params' if config.eval_use_ema else 'params']
  # Phase 2 holds both members, stacked; each started from phase 1's best.
  [(steps_run, phase2_dir)] = run_dir.list_checkpoints(workdir, 2)
  assert run_dir.population_members(phase2_dir) == [m.name for m in members]
  stacked = checkpoints.restore_arrays(phase2_dir)
  for name in ('params', 'ema_params'):
    assert ([x.shape for x in jax.tree.leaves(stacked[name])]
            == [(2,) + x.shape for x in jax.tree.leaves(shared[name])])
  for k in range(2):
    for started in starts[2]:
      jax.tree.map(np.testing.assert_array_equal, state_lib.member_state(started, k), start)
  assert max_abs_difference(*(state_lib.member_state(stacked['params'], k)
                              for k in range(2))) > 0
  # Phase 3 starts each member (generator and EMA) from its own phase-2 best.
  bests = checkpoints.read_json(phase2_dir, checkpoints.LOOP)['members']
  for k, member in enumerate(bests):
    best_dir = run_dir.phase_dir(workdir, 2) / str(member['best_step'])
    best = checkpoints.restore_generator(best_dir, use_ema=config.eval_use_ema)
    for started in starts[3]:
      jax.tree.map(np.testing.assert_array_equal, state_lib.member_state(started, k),
                   state_lib.member_state(best, k))
  # Member k's phase 2 is the single run with its weight from the same start, and
  # not the other member's (whose generator differs by far more than the bound).
  singles = []
  for member in members:
    single_config = population.member_config(config, member)
    single_config.phases = (2,)
    single_config.init_checkpoint = str(phase1_dir)
    loop.run(single_config, tmp_path / f'single{member.index}')
    singles.append(checkpoints.restore_arrays(
        run_dir.list_checkpoints(tmp_path / f'single{member.index}', 2)[-1][1]))
  update_errors, tolerances, controls = [], [], []
  for k, single in enumerate(singles):
    member = state_lib.member_state(stacked, k)
    for name in ('params', 'ema_params'):
      update_errors.append(update_error(start, single[name], member[name]))
      tolerances.append(steps_run * gradient_tolerance(config)
                        + storage_tolerance(steps_run, start, single[name]))
      assert update_errors[-1] <= tolerances[-1], (k, name, update_errors[-1], tolerances[-1])
    controls.append(update_error(start, singles[1 - k]['params'], member['params']))
  print(f'phase-2 members vs their single runs (params, EMA): update errors {update_errors}, '
        f'bounds {tolerances}; against the other member\'s single run: {controls}')
  assert min(controls) > max(tolerances)
