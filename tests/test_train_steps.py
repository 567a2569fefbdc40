"""Optimizers, plateau logic, loop state and jitted train steps (tiny model, fake CPU devices)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from srrgan_jax import parallel
from srrgan_jax import perceptual
from srrgan_jax import weights
from srrgan_jax.train import loop
from srrgan_jax.train import optim
from srrgan_jax.train import state as state_lib
from srrgan_jax.train import steps
from srrgan_jax.train.loop_state import LoopState


@pytest.fixture(scope='module')
def vgg_params(tmp_path_factory):
  """Random VGG19 weights in the real file layout, as the losses load them."""
  config = small_perceptual_config()
  directory = tmp_path_factory.mktemp('weights')
  config.weights.vgg19_file = str(weights.write_random_weights(directory,
                                                               [weights.VGG19_FILE])[0])
  config.weights.auto_fetch = False
  return loop.perceptual_layers_needed(perceptual.load_vgg19_params(config),
                                       config.loss.perceptual_layers)


def small_perceptual_config():
  """The tiny config with a 2-block VGG perceptual loss: same code path, far cheaper."""
  config = tiny.get_config()
  config.loss.perceptual_layers = ('block1_conv2', 'block2_conv2')
  config.loss.perceptual_layer_weights = (0.5, 0.5)
  return config


def random_batch(config, seed=0):
  """Smooth random HR patches in [-1, 1] and their 2x box-downsampled LR."""
  rng = np.random.default_rng(seed)
  b, p, s = config.data.batch_size, config.data.patch_size, config.scale
  coarse = rng.uniform(-0.9, 0.9, (b, p // 8, p // 8, 3)).astype(np.float32)
  hr = np.asarray(jax.image.resize(coarse, (b, p, p, 3), 'bicubic')).clip(-1, 1)
  lr = hr.reshape(b, p // s, s, p // s, s, 3).mean(axis=(2, 4))
  return {'lr': lr, 'hr': hr}


def test_clip_each_tensor_clips_every_tensor_separately():
  grads = {'big': jnp.full((4,), 1.5), 'small': jnp.array([0.3, 0.4])}  # Norms 3, 0.5.
  tx = optim.clip_each_tensor(1.0)
  clipped, _ = tx.update(grads, tx.init(grads))
  np.testing.assert_allclose(np.linalg.norm(clipped['big']), 1.0, rtol=1e-6)
  np.testing.assert_allclose(clipped['big'], np.full(4, 0.5), rtol=1e-6)
  np.testing.assert_array_equal(clipped['small'], grads['small'])  # Under the norm.
  # Global-norm clipping (the option) scales both together instead.
  tx = optim.clipping(1.0, 'global')
  global_clipped, _ = tx.update(grads, tx.init(grads))
  assert np.linalg.norm(global_clipped['small']) < 0.2


def test_phase3_learning_rate_decays_to_zero_over_all_steps():
  schedule = optim.cosine_schedule(5e-5, 100)
  assert float(schedule(0)) == pytest.approx(5e-5)
  assert float(schedule(50)) == pytest.approx(2.5e-5, rel=1e-5)
  assert float(schedule(100)) == pytest.approx(0.0, abs=1e-12)


def test_plateau_tracker_follows_keras_reduce_on_plateau_and_early_stopping():
  tracker = optim.PlateauTracker(learning_rate=1.0, factor=0.5, patience=2,
                                 min_learning_rate=0.3, early_stop_patience=4,
                                 min_delta=0.01)
  lrs, stops = [], []
  # Epoch 1 best; epoch 2 improves by less than min_delta (a new best for early
  # stopping, but a plateau epoch); then no improvement.
  for epoch, loss in enumerate([1.0, 0.995, 1.2, 1.1, 1.3, 1.4, 1.5], start=1):
    tracker.update(loss, epoch)
    lrs.append(tracker.learning_rate)
    stops.append(tracker.stopped)
    if tracker.stopped:
      break
  assert lrs == [1.0, 1.0, 0.5, 0.5, 0.3, 0.3]  # Halved after 2 plateau epochs, floored.
  assert stops == [False] * 5 + [True]  # 4 epochs without a new best after epoch 2.
  assert tracker.best == 0.995 and tracker.best_epoch == 2
  restored = optim.PlateauTracker.from_dict(tracker.to_dict())
  assert restored == tracker


def test_loop_state_keeps_the_best_epoch_and_round_trips_through_checkpoint_json():
  tracker = optim.PlateauTracker(learning_rate=1.0, factor=0.5, patience=1,
                                 min_learning_rate=0.1, early_stop_patience=1)
  state = LoopState(phase=1, start='random initialisation (seed 0)', plateau=tracker)
  state.record_validation(3, 1, {'loss': 0.5, 'psnr': 20.0})
  state.record_validation(6, 2, {'loss': 0.7, 'psnr': 19.0})
  state.step = 6
  assert (state.best_step, state.best_val_loss, state.epoch) == (3, 0.5, 2)
  assert state.last_val_metrics == {'loss': 0.7, 'psnr': 19.0}
  assert state.plateau.learning_rate == 0.5 and state.stopped_early  # The tracker itself.
  assert state.finished(epochs=10)
  saved = json.loads(json.dumps(state.to_json()))
  # The field names of the checkpoints' loop item, as every run has written them.
  assert list(saved) == ['phase', 'step', 'epoch', 'stopped_early', 'plateau', 'best_step',
                         'best_val_loss', 'best_metrics', 'last_val_metrics', 'start']
  assert saved['stopped_early'] is True and saved['plateau']['learning_rate'] == 0.5
  assert LoopState.from_json(saved) == state
  # Phase 3 has no tracker and hands on its latest epoch.
  adversarial = LoopState(phase=3, start='phase 2 best')
  adversarial.record_validation(3, 1, {'loss': 0.5})
  adversarial.record_validation(6, 2, {'loss': 0.7})
  assert adversarial.best_step == 6 and not adversarial.finished(epochs=3)
  assert LoopState.from_json(json.loads(json.dumps(adversarial.to_json()))) == adversarial


def test_indivisible_global_batch_is_refused_clearly():
  mesh = parallel.make_mesh()
  n = mesh.devices.size  # 4 in the suite; any count above 1 works.
  assert n > 1
  with pytest.raises(ValueError, match=rf'data.batch_size={n + 1} is not divisible by the '
                     rf'{n} devices.*multiple of {n}'):
    parallel.check_batch_size(n + 1, mesh)
  parallel.check_batch_size(2 * n, mesh)  # A multiple passes.


def _one_step(config, phase, devices, vgg, batch):
  mesh = parallel.make_mesh(devices)
  # 6 steps: the tiny run's phase 3 (the loop tests reuse the compiled programs).
  # Initialised on all devices, then copied: one initialisation program.
  before = parallel.to_host(state_lib.create_state(config, phase, 6, parallel.make_mesh()))
  state = parallel.put_replicated(before, mesh)
  step = steps.compile_train_step(config, phase, 6, mesh,
                                  parallel.put_replicated(vgg, mesh) if vgg else None)
  key = parallel.put_replicated(state_lib.phase_key(config, phase), mesh)
  global_batch = parallel.global_batch(batch, mesh)
  assert len(global_batch['hr'].sharding.device_set) == len(devices)
  state, metrics = step(state, global_batch, key)
  return before, parallel.to_host(state), parallel.to_host(metrics)


def _adam_first_moments(opt_state):
  """Adam's mu after one step is (1 - b1) * gradient: the gradients, in the state."""
  found = [s.mu for s in jax.tree.leaves(
      opt_state, is_leaf=lambda x: hasattr(x, 'mu')) if hasattr(s, 'mu')]
  assert len(found) == 1
  return found[0]


# Float32 unit roundoff: one rounding changes a value by at most this fraction.
UNIT_ROUNDOFF = 2.0**-24


def longest_sum(config) -> int:
  """An upper bound on the terms of any single float32 sum in a phase-3 step.

  The longest reductions run over positions of the global batch: the
  discriminator sees real and fake HR images (2 * batch * patch^2 pixels);
  channel sums of the tiny networks (9 * channels) are far shorter.
  """
  return 2 * config.data.batch_size * config.data.patch_size**2


def gradient_tolerance(config) -> float:
  """The relative error two float32 evaluations of one step's gradients may show.

  Summing n terms in float32 in any order is within n * u of the exact sum,
  relative to the sum of the terms' magnitudes (Higham, Accuracy and Stability
  of Numerical Algorithms, 2nd ed., section 4.2). Splitting a batch over devices
  changes the order of every batch and spatial sum, so each of two runs is
  within that bound of the exact gradients, whatever the CPU or its threads.
  The magnitudes that are summed are activations and activation gradients of
  the whole network, not the (possibly cancelled) value of one tensor: a bias
  of a one-channel map sums thousands of per-pixel terms of both signs to a
  small number. So the bound is applied to the network's whole gradient vector,
  in the 2-norm: |g1 - g4| <= n * u * |g1| (n from `longest_sum`).
  """
  return longest_sum(config) * UNIT_ROUNDOFF


def assert_same_gradients(reference, candidate, tolerance, name):
  """Normwise relative agreement of two gradient pytrees (see `gradient_tolerance`)."""
  ref = np.concatenate([np.ravel(x) for x in jax.tree.leaves(reference)])
  got = np.concatenate([np.ravel(x) for x in jax.tree.leaves(candidate)])
  error = np.linalg.norm(got - ref) / np.linalg.norm(ref)
  assert error <= tolerance, (
      f'{name}: gradients differ by {error:.3g} of their norm, over the float32 '
      f'summation bound {tolerance:.3g}')
  return error


def _gradients(state):
  return {name: _adam_first_moments(getattr(state, name))
          for name in ('opt_state', 'disc_opt_state')}


def _check_parameters_follow_the_gradients(config, before, one, four, gradients, tolerance):
  """New parameters differ by no more than the gradients' rounding allows.

  With Adam's eps = 1 (see the test) the first step moves a parameter by
  lr * m / (|m| + 1), whose derivative in m is at most 1: so |p1 - p4| is at
  most lr * |m1 - m4| plus the rounding of p + step (4 units of |p|), with
  |m1 - m4| <= T = tolerance * |m| from the gradient check.
  """
  for params, opt, lr in (('params', 'opt_state', config.phase3.g_learning_rate),
                          ('disc_params', 'disc_opt_state', config.phase3.d_learning_rate)):
    # mu = (1 - b1) * m after one step; Adam's bias correction divides it back out.
    m = np.concatenate([np.ravel(x) for x in jax.tree.leaves(gradients[opt])])
    bound_t = tolerance * np.linalg.norm(m) / (1 - config.phase3.b1)
    p1 = np.concatenate([np.ravel(x) for x in jax.tree.leaves(getattr(one, params))])
    p4 = np.concatenate([np.ravel(x) for x in jax.tree.leaves(getattr(four, params))])
    allowed = 4 * UNIT_ROUNDOFF * np.abs(p1) + lr * bound_t
    assert np.all(np.abs(p1 - p4) <= allowed), (params, float(np.abs(p1 - p4).max()))
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(),
                                         one.params, before.params))
  assert max(changed) > 1e-5  # The step did update the generator.


def test_phase3_step_on_four_devices_equals_one_device(vgg_params):
  """Data parallelism: the same global batch gives the same step on 1 and 4 devices.

  Every tolerance is derived from float32 rounding (`gradient_tolerance`), not
  from one machine's observed noise, and the same assertions reject the two
  ways data parallelism goes wrong: gradients summed instead of averaged over
  devices, and a device computing on another device's rows.

  Two settings keep the step a smooth function of the batch, so that rounding
  stays rounding (both measured on an AMD EPYC, where they moved the
  generator's gradients by 2e-3 and 5e-4 of their norm with the batch split):
  - The perceptual term weighs 0 in the gradients (its value is still compared).
    It is a mean |VGG(sr) - VGG(hr)| over post-ReLU features, and about half of
    those are exactly 0 in both images: terms sitting on the kink of |.|, where
    a rounding-sized change of a pre-activation switches a term's gradient on
    or off at full size. That is a property of the loss, not of the batch split;
    the batch mean that data parallelism must get right is the same code path
    for every term and is checked on the pixel and adversarial terms.
  - Adam's eps is 1. With the default (1e-7) the first step, lr * m / (|m| + eps),
    is a sign function: discriminator gradients within rounding of zero flip to
    +-lr, and the generator is then judged by another discriminator.
  """
  config = small_perceptual_config()
  config.adam_eps = 1.0
  config.loss.perceptual_weight = 0.0
  vgg, batch = vgg_params, random_batch(config)
  tolerance = gradient_tolerance(config)
  before, one, m1 = _one_step(config, 3, jax.devices()[:1], vgg, batch)
  _, four, m4 = _one_step(config, 3, jax.devices(), vgg, batch)
  g1, g4 = _gradients(one), _gradients(four)
  errors = {name: assert_same_gradients(g1[name], g4[name], tolerance, name) for name in g1}
  print(f'1 vs 4 devices, gradient error / norm: {errors} (bound {tolerance:.3g})')

  _check_parameters_follow_the_gradients(config, before, one, four, g1, tolerance)
  # EMA and spectral-norm state are elementwise/power iterations of the above.
  for name in ('ema_params', 'disc_stats'):
    assert_same_gradients(getattr(one, name), getattr(four, name), tolerance, name)
  assert int(one.step) == int(four.step) == 1
  # Losses are means of non-negative terms (relative bound n * u); PSNR is
  # 10 log10 of one (absolute bound 10 / ln 10 * n * u dB); SSIM a mean of
  # per-pixel values in [-1, 1] (absolute bound n * u).
  for k in ('loss', 'd_loss', 'pixel', 'perceptual', 'adversarial'):
    np.testing.assert_allclose(m1[k], m4[k], rtol=tolerance, err_msg=k)
  np.testing.assert_allclose(m1['psnr'], m4['psnr'], rtol=0, atol=10 / np.log(10) * tolerance)
  np.testing.assert_allclose(m1['ssim'], m4['ssim'], rtol=0, atol=tolerance)
  assert m1['pixel_weighted'] == pytest.approx(20 * m1['pixel'], rel=1e-6)
  assert m1['learning_rate'] == pytest.approx(config.phase3.g_learning_rate)

  # Negative controls. Gradients summed over the 4 devices instead of averaged:
  for name in g1:
    summed = jax.tree.map(lambda g: 4 * g, g4[name])
    with pytest.raises(AssertionError, match='float32 summation bound'):
      assert_same_gradients(g1[name], summed, tolerance, name)
  # The last device's rows replaced by the first device's (a wrong shard offset):
  quarter = config.data.batch_size // 4
  wrong = {k: np.concatenate([v[:-quarter], v[:quarter]]) for k, v in batch.items()}
  _, misplaced, _ = _one_step(config, 3, jax.devices()[:1], vgg, wrong)
  for name, g in _gradients(misplaced).items():
    with pytest.raises(AssertionError, match='float32 summation bound'):
      assert_same_gradients(g1[name], g, tolerance, name)


def test_phase1_steps_lower_the_loss_and_take_a_new_learning_rate():
  config = small_perceptual_config()
  mesh = parallel.make_mesh()
  state = state_lib.create_state(config, 1, 6, mesh)
  step = steps.compile_train_step(config, 1, 6, mesh)
  key = parallel.put_replicated(state_lib.phase_key(config, 1), mesh)
  batch = parallel.global_batch(random_batch(config, seed=1), mesh)
  losses = []
  for _ in range(12):
    state, metrics = step(state, batch, key)
    losses.append(float(metrics['loss']))
  assert losses[-1] < 0.8 * losses[0]
  assert int(state.step) == 12
  assert float(metrics['learning_rate']) == pytest.approx(config.phase1.learning_rate)
  # The injected learning rate can be changed between steps without recompiling.
  new_lr = parallel.put_replicated(np.float32(1e-6), mesh)
  state = state.replace(opt_state=optim.set_learning_rate(state.opt_state, new_lr))
  state, metrics = step(state, batch, key)
  assert float(metrics['learning_rate']) == pytest.approx(1e-6)
