"""Degradation: reference numbers, determinism, every random branch, real JPEG, noise statistics."""

import collections

import cv2
import numpy as np
import pytest

from configs import default
from srrgan_jax import degradation


def photo_like(height, width, seed=0):
  """Smooth colour structure plus fine texture in [0, 1]: JPEG and blur act as on photos."""
  rng = np.random.default_rng(seed)
  coarse = cv2.resize(rng.random((height // 8 + 2, width // 8 + 2, 3), np.float32),
                      (width, height), interpolation=cv2.INTER_CUBIC)
  texture = rng.normal(0, 0.05, (height, width, 3)).astype(np.float32)
  return np.clip(0.15 + 0.7 * coarse + texture, 0, 1).astype(np.float32)


def cfg(**overrides):
  c = default.get_config().degradation
  for key, value in overrides.items():
    setattr(c, key, value)
  return c


def psnr(a, b):
  return 10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2))


@pytest.mark.parametrize('scale', [2, 4])
@pytest.mark.parametrize('mode', ['stochastic', 'deterministic'])
def test_shapes_ranges_dtypes(scale, mode):
  hr = photo_like(37, 50)  # Odd sizes: LR is floor(H / scale) x floor(W / scale).
  for index in range(6):
    if mode == 'stochastic':
      lr = degradation.degrade_stochastic(hr, np.random.default_rng([0, index]), cfg(), scale)
    else:
      lr = degradation.degrade_deterministic(hr, index, cfg(), scale)
    assert lr.shape == (37 // scale, 50 // scale, 3)
    assert lr.dtype == np.float32
    assert lr.min() >= 0.0 and lr.max() <= 1.0


def test_stochastic_is_reproducible_from_seed_and_index():
  hr = photo_like(48, 48)
  first, params = degradation.degrade_stochastic(
      hr, np.random.default_rng([7, 123]), cfg(), 2, return_params=True)
  again, params_again = degradation.degrade_stochastic(
      hr, np.random.default_rng([7, 123]), cfg(), 2, return_params=True)
  other = degradation.degrade_stochastic(hr, np.random.default_rng([7, 124]), cfg(), 2)
  np.testing.assert_array_equal(first, again)
  assert params == params_again
  assert not np.array_equal(first, other)


def test_every_branch_of_every_choice_is_drawn_within_spec_ranges():
  c = cfg()
  seen = collections.defaultdict(set)
  for index in range(400):
    p = degradation.draw_stochastic_params(np.random.default_rng([0, index]), c)
    seen['blur'].add((p['blur'], p['blur_kernel']))
    seen['resize'].add(p['resize'])
    seen['order'].add(p['order'])
    seen['noise'].add(p['noise'])
    seen['jpeg'].add(p['jpeg_quality'] is None)
    if p['blur'] == 'gaussian':
      assert 0.2 <= p['blur_sigma'] <= 1.2
    if p['noise'] == 'gaussian':
      assert 1 / 255 <= p['noise_std'] <= 15 / 255
    else:
      assert 10 <= p['poisson_scale'] <= 60
    if p['jpeg_quality'] is not None:
      seen['quality'].add(p['jpeg_quality'])
  assert seen['blur'] == {('gaussian', (3, 3)), ('gaussian', (5, 5)), ('gaussian', (7, 7)),
                          ('box', (3, 3)), ('box', (5, 5))}
  assert seen['resize'] == {'bilinear', 'bicubic', 'area'}
  assert seen['order'] == {('noise', 'jpeg'), ('jpeg', 'noise')}
  assert seen['noise'] == {'gaussian', 'poisson'}
  assert seen['jpeg'] == {True, False}
  assert min(seen['quality']) == 60 and max(seen['quality']) == 95  # Inclusive range.


def test_branch_frequencies_follow_config_probabilities():
  c = cfg(gaussian_blur_prob=0.9, jpeg_prob=0.2)
  draws = [degradation.draw_stochastic_params(np.random.default_rng([1, i]), c)
           for i in range(1000)]
  assert np.mean([p['blur'] == 'gaussian' for p in draws]) == pytest.approx(0.9, abs=0.04)
  assert np.mean([p['jpeg_quality'] is not None for p in draws]) == pytest.approx(0.2, abs=0.04)


@pytest.mark.parametrize('params', [
    dict(blur='gaussian', blur_kernel=(7, 7), blur_sigma=1.2, resize='bicubic',
         order=('noise', 'jpeg'), noise='poisson', poisson_scale=10.0, jpeg_quality=60),
    dict(blur='box', blur_kernel=(5, 5), blur_sigma=None, resize='bilinear',
         order=('jpeg', 'noise'), noise='gaussian', noise_std=15 / 255, jpeg_quality=None),
])
def test_each_branch_applies(params):
  hr = photo_like(64, 64)
  lr = degradation.apply_degradation(hr, params, 2, np.random.default_rng(0), cfg())
  clean = cv2.resize(hr, (32, 32), interpolation=cv2.INTER_AREA)
  assert lr.shape == (32, 32, 3) and lr.dtype == np.float32
  assert 15 < psnr(lr, clean) < 40  # Degraded, but still the same picture.


def test_deterministic_mode_is_repeatable_and_uses_spec_numbers():
  hr = photo_like(64, 80)
  c = cfg()
  first, params = degradation.degrade_deterministic(hr, 42, c, 2, return_params=True)
  np.testing.assert_array_equal(first, degradation.degrade_deterministic(hr, 42, c, 2))
  assert not np.array_equal(first, degradation.degrade_deterministic(hr, 43, c, 2))
  assert params == dict(blur='gaussian', blur_kernel=(5, 5), blur_sigma=1.0, resize='area',
                        order=('noise', 'jpeg'), noise='gaussian',
                        noise_std=pytest.approx(10 / 255), jpeg_quality=75)
  # Same as blur, area downsampling, noise and JPEG by hand with the same noise draws.
  rng = np.random.default_rng(42)
  blurred = cv2.GaussianBlur(hr, (5, 5), 1.0, borderType=cv2.BORDER_REFLECT_101)
  small = cv2.resize(blurred, (40, 32), interpolation=cv2.INTER_AREA)
  noisy = small + rng.standard_normal(small.shape, dtype=np.float32) * np.float32(10 / 255)
  expected = np.clip(degradation.jpeg_roundtrip(noisy, 75), 0, 1)
  np.testing.assert_allclose(first, expected, atol=1.5 / 255)


def test_jpeg_really_compresses_worse_as_quality_falls():
  img = photo_like(96, 96, seed=3)
  qualities = (95, 75, 40, 10)
  outputs = [degradation.jpeg_roundtrip(img, q) for q in qualities]
  scores = [psnr(out, img) for out in outputs]
  assert all(a > b for a, b in zip(scores, scores[1:])), scores

  def blockiness(x):  # Jumps across 8px block edges relative to jumps inside blocks.
    jumps = np.abs(np.diff(x.mean(axis=2), axis=1)).mean(axis=0)
    at_edges = jumps[7::8].mean()
    inside = np.delete(jumps, np.s_[7::8]).mean()
    return at_edges / inside

  assert blockiness(outputs[-1]) > 1.3 * blockiness(img)
  assert blockiness(outputs[-1]) > blockiness(outputs[0])
  assert outputs[0].dtype == np.float32
  quantised = np.round(outputs[1] * 255)
  np.testing.assert_allclose(outputs[1] * 255, quantised, atol=1e-3)  # Decoded uint8.


def test_noise_statistics():
  flat = np.full((64, 64, 3), 0.5, np.float32)
  rng = np.random.default_rng(0)
  poisson = degradation._add_noise(flat, {'noise': 'poisson', 'poisson_scale': 20.0}, rng)
  assert poisson.dtype == np.float32
  assert poisson.mean() == pytest.approx(0.5, abs=0.01)
  assert poisson.var() == pytest.approx(0.5 / 20, rel=0.1)  # Var(P(l)/s) = l / s^2.
  np.testing.assert_allclose(poisson * 20, np.round(poisson * 20), atol=1e-4)  # Counts / s.
  gauss = degradation._add_noise(flat, {'noise': 'gaussian', 'noise_std': 0.05}, rng)
  assert gauss.std() == pytest.approx(0.05, rel=0.05)


def test_noise_and_jpeg_equal_their_plain_formulas_bit_for_bit():
  """The in-place forms the loader uses round exactly as the written-out maths."""
  img = photo_like(40, 48, seed=4) * 1.2 - 0.1  # Over- and undershoots, as after bicubic.
  for seed in range(4):
    std, scale = 0.01 + 0.01 * seed, 10.0 + 15 * seed
    got = degradation._add_noise(img, {'noise': 'gaussian', 'noise_std': std},
                                 np.random.default_rng(seed))
    noise = np.random.default_rng(seed).standard_normal(img.shape, dtype=np.float32)
    np.testing.assert_array_equal(got, img + noise * np.float32(std))
    got = degradation._add_noise(img, {'noise': 'poisson', 'poisson_scale': scale},
                                 np.random.default_rng(seed))
    counts = np.random.default_rng(seed).poisson(np.maximum(img, 0.0) * scale)
    np.testing.assert_array_equal(got, (counts * (1.0 / scale)).astype(np.float32))
    assert got.dtype == np.float32
    quality = 60 + 10 * seed
    levels = np.clip(np.floor(img * np.float32(255) + np.float32(0.5)), 0, 255)
    ok, encoded = cv2.imencode('.jpg', levels.astype(np.uint8)[..., ::-1],
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
    want = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1] / np.float32(255)
    assert ok
    np.testing.assert_allclose(degradation.jpeg_roundtrip(img, quality), want, atol=1e-7)


def test_blurs_and_downsampling():
  hr = photo_like(40, 40)
  np.testing.assert_allclose(degradation.gaussian_taps(5, 1.0),
                             cv2.getGaussianKernel(5, 1.0)[:, 0], rtol=1e-5)
  flat = np.full((16, 16, 3), 0.6, np.float32)
  for method in ('bilinear', 'bicubic', 'area'):
    small = degradation.resize_down(hr, 4, method)
    assert small.shape == (10, 10, 3)
    np.testing.assert_allclose(degradation.resize_down(flat, 2, method), 0.6, atol=1e-6)
  box = {'blur': 'box', 'blur_kernel': (5, 5)}
  np.testing.assert_allclose(degradation._blur(flat, box, cv2.BORDER_REFLECT_101), 0.6,
                             atol=1e-6)
  zero_padded = degradation._blur(flat, box, cv2.BORDER_CONSTANT)  # TF 'SAME' padding.
  assert zero_padded[0, 0, 0] == pytest.approx(0.6 * 9 / 25)
  assert zero_padded[8, 8, 0] == pytest.approx(0.6)


def test_reproduce_original_code_switch():
  c = cfg(reproduce_original_code=True)
  draws = [degradation.draw_stochastic_params(np.random.default_rng([0, i]), c)
           for i in range(50)]
  gaussian = [p for p in draws if p['blur'] == 'gaussian']
  assert gaussian and all(p['blur_kernel'] == (3, 7) for p in gaussian)
  hr = photo_like(32, 32)
  sigmas = {degradation.degrade_deterministic(hr, seed, c, 2, return_params=True)[1]['blur_sigma']
            for seed in range(20)}
  assert len(sigmas) == 20 and min(sigmas) >= 0.0 and max(sigmas) <= 1.0
  # Same seed, same sigma and LR: the original's randomness made reproducible.
  np.testing.assert_array_equal(degradation.degrade_deterministic(hr, 5, c, 2),
                                degradation.degrade_deterministic(hr, 5, c, 2))
  # 3 wide x 7 tall: a vertical line spreads over 3 columns, a horizontal one over 7 rows.
  line = np.zeros((15, 15, 3), np.float32)
  line[7, :] = 1.0
  spread = degradation._blur(line, {'blur': 'gaussian', 'blur_kernel': (3, 7),
                                    'blur_sigma': 1.2}, cv2.BORDER_CONSTANT)
  assert np.count_nonzero(spread[:, 7, 0] > 1e-6) == 7
  assert np.count_nonzero(spread[7, :, 0] > 1e-6) == 15
