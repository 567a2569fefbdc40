"""Real-ESRGAN degradation: kernels, every random branch, determinism, sizes, statistics."""

import collections
import math

import cv2
import numpy as np
import pytest

from configs import default
from configs import tiny
from srrgan_jax import data
from srrgan_jax import degradation
from srrgan_jax import degradation_realesrgan as resrgan
from srrgan_jax import image_io
from srrgan_jax import training_degradation
from tests.test_degradation import photo_like


def cfg(**overrides):
  """The default degradation block with model='realesrgan' and `realesrgan` overrides."""
  c = default.get_config().degradation
  c.model = 'realesrgan'
  for key, value in overrides.items():
    setattr(c.realesrgan, key, value)
  return c


def high_frequency_energy(img):
  """Mean squared Laplacian: falls as an image gets smoother."""
  return float(np.mean(cv2.Laplacian(img.astype(np.float32), cv2.CV_32F) ** 2))


@pytest.mark.parametrize('size', [7, 13, 21])
def test_kernels_sum_to_one_and_have_the_requested_size(size):
  kernels = [resrgan.blur_kernel(family, size, 2.0, 0.8, 0.7, beta)
             for family in ('gaussian', 'generalized', 'plateau') for beta in (0.6, 1.8)]
  kernels += [resrgan.sinc_kernel(size, cutoff) for cutoff in (math.pi / 5, math.pi / 2)]
  for kernel in kernels:
    assert kernel.shape == (size, size) and kernel.dtype == np.float32
    assert kernel.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-7)  # Point-symmetric.
    assert np.unravel_index(np.argmax(kernel), kernel.shape) == (size // 2, size // 2)


def test_kernel_shapes():
  # An isotropic Gaussian is the outer product of the 1-D Gaussian taps.
  iso = resrgan.blur_kernel('gaussian', 9, 1.3, 1.3)
  taps = degradation.gaussian_taps(9, 1.3)
  np.testing.assert_allclose(iso, np.outer(taps, taps), atol=1e-6)
  # Generalized with beta 1 is the Gaussian.
  np.testing.assert_allclose(resrgan.blur_kernel('generalized', 9, 2.0, 1.0, 0.4, 1.0),
                             resrgan.blur_kernel('gaussian', 9, 2.0, 1.0, 0.4), atol=1e-7)
  # Anisotropic: sigma_x along x (columns); rotating by pi/2 swaps the axes.
  wide = resrgan.blur_kernel('gaussian', 15, 3.0, 0.8, 0.0)
  assert wide[7, 10] > 10 * wide[10, 7]
  np.testing.assert_allclose(resrgan.blur_kernel('gaussian', 15, 3.0, 0.8, math.pi / 2),
                             wide.T, atol=1e-7)
  # Plateau: flatter top than a Gaussian of the same sigma, heavier tails.
  plateau = resrgan.blur_kernel('plateau', 21, 2.0, 2.0, 0.0, 2.0)
  gauss = resrgan.blur_kernel('gaussian', 21, 2.0, 2.0)
  assert plateau[10, 11] / plateau[10, 10] > gauss[10, 11] / gauss[10, 10]
  assert plateau[10, 20] > gauss[10, 20]
  # Generalized beta < 1: a cusp at the centre and heavier tails than beta > 1.
  peaky = resrgan.blur_kernel('generalized', 21, 2.0, 2.0, 0.0, 0.5)
  flat = resrgan.blur_kernel('generalized', 21, 2.0, 2.0, 0.0, 3.0)
  assert peaky[10, 11] / peaky[10, 10] < 0.8 < 0.99 < flat[10, 11] / flat[10, 10]
  assert peaky[10, 20] > 100 * flat[10, 20]


def test_separable_isotropic_blur_equals_the_2d_filter():
  img = photo_like(40, 52)
  for size, sigma in ((7, 0.4), (15, 1.7), (21, 3.0)):
    blur = {'kernel': 'iso', 'size': size, 'sigma_x': sigma, 'sigma_y': sigma,
            'rotation': 0.0, 'beta': 1.0}
    np.testing.assert_allclose(resrgan.blur_image(img, blur),
                               resrgan.filter_image(img, resrgan.kernel_from_params(blur)),
                               atol=2e-6)


def test_sinc_kernel_is_a_low_pass_with_its_cutoff():
  kernel = resrgan.sinc_kernel(21, math.pi / 3)
  response = np.abs(np.fft.fft2(kernel, (256, 256)))
  freqs = np.fft.fftfreq(256) * 2 * math.pi  # Radians per pixel.
  assert response[0, 0] == pytest.approx(1.0, abs=1e-5)
  passband = response[0, np.abs(freqs) < 0.6 * math.pi / 3].mean()
  stopband = response[0, np.abs(freqs) > 1.5 * math.pi / 3].mean()
  assert passband > 0.85 and stopband < 0.1
  # A wider cutoff keeps more of the high frequencies.
  wide = np.abs(np.fft.fft2(resrgan.sinc_kernel(21, 0.9 * math.pi), (256, 256)))
  assert wide[0, 80] > response[0, 80] + 0.8


def collect_branches(params_list):
  seen = collections.defaultdict(set)
  for p in params_list:
    for name in ('stage1', 'stage2'):
      stage = p[name]
      seen[f'{name}_present'].add(stage is not None)
      if stage is None:
        continue
      blur = stage['blur']
      seen[f'{name}_blur'].add('none' if blur is None else blur['kernel'])
      if blur is not None and blur['kernel'] != 'sinc' and blur['kernel'] not in ('iso',
                                                                                   'aniso'):
        seen[f'{name}_beta_below_one'].add(blur['beta'] < 1)
      seen[f'{name}_resize'].add(stage['resize'])
      seen[f'{name}_mode'].add(stage['resize_mode'])
      seen[f'{name}_noise'].add(stage['noise'])
      seen[f'{name}_gray'].add(stage['gray_noise'])
    final = p['final']
    seen['final_sinc'].add(final['sinc'] is not None)
    seen['final_order'].add(final['order'])
    seen['final_mode'].add(final['resize_mode'])
  return seen


def test_every_branch_of_every_choice_is_drawn_within_range():
  c = cfg(second_stage_prob=0.5)  # The default (1.0) never skips stage 2.
  r = c.realesrgan
  draws = [resrgan.draw_params(np.random.default_rng([0, i]), c) for i in range(1500)]
  seen = collect_branches(draws)
  kernels = set(r.kernel_list) | {'sinc'}
  assert seen['stage1_blur'] == kernels
  assert seen['stage2_blur'] == kernels | {'none'}
  for name in ('stage1', 'stage2'):
    assert seen[f'{name}_resize'] == {'up', 'down', 'keep'}
    assert seen[f'{name}_mode'] == {'area', 'bilinear', 'bicubic'}
    assert seen[f'{name}_noise'] == {'gaussian', 'poisson'}
    assert seen[f'{name}_gray'] == {True, False}
    assert seen[f'{name}_beta_below_one'] == {True, False}
  assert seen['stage2_present'] == {True, False}
  assert seen['final_sinc'] == {True, False}
  assert seen['final_order'] == {('resize_sinc', 'jpeg'), ('jpeg', 'resize_sinc')}
  assert seen['final_mode'] == {'area', 'bilinear', 'bicubic'}
  # Frequencies follow the configured probabilities.
  kinds = collections.Counter(p['stage1']['blur']['kernel'] for p in draws)
  assert kinds['sinc'] / len(draws) == pytest.approx(r.sinc_prob, abs=0.03)
  assert kinds['iso'] / len(draws) == pytest.approx(0.9 * 0.45, abs=0.05)
  resizes = collections.Counter(p['stage1']['resize'] for p in draws)
  assert resizes['down'] / len(draws) == pytest.approx(0.7, abs=0.05)
  # Every number within its range.
  for p in draws:
    s1, s2, final = p['stage1'], p['stage2'], p['final']
    blur = s1['blur']
    assert blur['size'] in r.kernel_range
    if blur['kernel'] == 'sinc':
      bounds = r.sinc_cutoff_range_large if blur['size'] >= 13 else r.sinc_cutoff_range
      assert bounds[0] <= blur['cutoff'] <= bounds[1]
    else:
      assert r.blur_sigma[0] <= min(blur['sigma_x'], blur['sigma_y'])
      assert max(blur['sigma_x'], blur['sigma_y']) <= r.blur_sigma[1]
      assert r.rotation_range[0] <= blur['rotation'] <= r.rotation_range[1]
      if blur['kernel'].startswith('plateau'):
        assert r.betap_range[0] <= blur['beta'] <= r.betap_range[1]
    assert r.resize_range[0] <= s1['resize_factor'] <= r.resize_range[1]
    assert r.jpeg_range[0] <= s1['jpeg_quality'] <= r.jpeg_range[1]
    if s1['noise'] == 'gaussian':
      assert r.noise_range[0] <= s1['noise_sigma'] <= r.noise_range[1]
    else:
      assert r.poisson_scale_range[0] <= s1['poisson_scale'] <= r.poisson_scale_range[1]
    if s2 is not None:
      assert r.resize_range2[0] <= s2['resize_factor'] <= r.resize_range2[1]
      if s2['blur'] is not None and s2['blur']['kernel'] != 'sinc':
        assert s2['blur']['sigma_x'] <= r.blur_sigma2[1]
    if final['sinc'] is not None:
      assert r.final_sinc_cutoff_range[0] <= final['sinc']['cutoff'] <= math.pi
    assert r.jpeg_range2[0] <= final['jpeg_quality'] <= r.jpeg_range2[1]


ONE_HOT = {name: tuple(float(n == name) for n in cfg().realesrgan.kernel_list)
           for name in cfg().realesrgan.kernel_list}

FORCED = [  # (realesrgan overrides, check on the drawn params)
    (dict(sinc_prob=1.0, sinc_prob2=1.0, second_blur_prob=1.0),
     lambda p: p['stage1']['blur']['kernel'] == p['stage2']['blur']['kernel'] == 'sinc'),
    *[(dict(sinc_prob=0.0, kernel_prob=probs),
       lambda p, name=name: p['stage1']['blur']['kernel'] == name)
      for name, probs in ONE_HOT.items()],
    (dict(second_stage_prob=0.0), lambda p: p['stage2'] is None),
    (dict(second_blur_prob=0.0), lambda p: p['stage2']['blur'] is None),
    (dict(final_sinc_prob=0.0), lambda p: p['final']['sinc'] is None),
    (dict(final_sinc_prob=1.0), lambda p: p['final']['sinc']['kernel'] == 'sinc'),
    (dict(resize_prob=(1, 0, 0), resize_prob2=(1, 0, 0)),
     lambda p: p['stage1']['resize'] == p['stage2']['resize'] == 'up'),
    (dict(resize_prob=(0, 1, 0), resize_prob2=(0, 1, 0)),
     lambda p: p['stage1']['resize'] == p['stage2']['resize'] == 'down'),
    (dict(resize_prob=(0, 0, 1), resize_prob2=(0, 0, 1)),
     lambda p: p['stage1']['resize_factor'] == p['stage2']['resize_factor'] == 1.0),
    (dict(gaussian_noise_prob=0.0, gaussian_noise_prob2=0.0, gray_noise_prob=1.0,
          gray_noise_prob2=1.0),
     lambda p: {p['stage1']['noise'], p['stage2']['noise']} == {'poisson'}
     and p['stage1']['gray_noise'] and p['stage2']['gray_noise']),
    (dict(gaussian_noise_prob=1.0, gaussian_noise_prob2=1.0, gray_noise_prob=0.0,
          gray_noise_prob2=0.0),
     lambda p: {p['stage1']['noise'], p['stage2']['noise']} == {'gaussian'}
     and not p['stage1']['gray_noise']),
    (dict(resize_before_jpeg_prob=1.0), lambda p: p['final']['order'][0] == 'resize_sinc'),
    (dict(resize_before_jpeg_prob=0.0), lambda p: p['final']['order'][0] == 'jpeg'),
    (dict(beta_below_one_prob=1.0, sinc_prob=0.0, kernel_prob=ONE_HOT['generalized_aniso']),
     lambda p: p['stage1']['blur']['beta'] <= 1.0),
    (dict(beta_below_one_prob=0.0, sinc_prob=0.0, kernel_prob=ONE_HOT['plateau_iso']),
     lambda p: p['stage1']['blur']['beta'] >= 1.0),
]


@pytest.mark.parametrize('overrides,check', FORCED)
def test_forced_probabilities_pick_their_branch_and_run(overrides, check):
  c = cfg(**overrides)
  hr = photo_like(36, 44)
  for index in range(4):
    lr, params = resrgan.degrade(hr, np.random.default_rng([1, index]), c, 2,
                                 return_params=True)
    assert check(params), params
    assert lr.shape == (18, 22, 3) and lr.dtype == np.float32
    assert 0.0 <= lr.min() and lr.max() <= 1.0


def test_same_seed_and_index_give_the_identical_lr():
  hr = photo_like(64, 64)
  first, params = resrgan.degrade(hr, np.random.default_rng([7, 123]), cfg(), 4,
                                  return_params=True)
  again, params_again = resrgan.degrade(hr, np.random.default_rng([7, 123]), cfg(), 4,
                                        return_params=True)
  np.testing.assert_array_equal(first, again)
  assert params == params_again
  assert not np.array_equal(first, resrgan.degrade(hr, np.random.default_rng([7, 124]),
                                                   cfg(), 4))
  # The same through the data pipeline's sample function.
  c = default.get_config()
  c.degradation.model = 'realesrgan'
  kwargs = dict(seed=3, patch_size=32, scale=2, augment_cfg=c.augment,
                degradation_cfg=training_degradation.plain_config(c.degradation),
                return_params=True)
  pixels = (photo_like(60, 70) * 255).astype(np.uint8)
  hr, lr, sample_params = data.training_sample(pixels, 5, **kwargs)
  hr2, lr2, sample_params2 = data.training_sample(pixels, 5, **kwargs)
  np.testing.assert_array_equal(lr, lr2)
  assert sample_params == sample_params2 and sample_params['model'] == 'realesrgan'
  assert hr.shape == (32, 32, 3) and lr.shape == (16, 16, 3)


@pytest.mark.parametrize('scale', [2, 4])
@pytest.mark.parametrize('height,width', [(64, 64), (37, 50), (33, 31)])
def test_lr_size_is_exactly_hr_over_scale(height, width, scale):
  hr = photo_like(height, width)
  extremes = [dict(), dict(resize_prob=(1, 0, 0), resize_range=(1.5, 1.5)),
              dict(resize_prob=(0, 1, 0), resize_range=(0.15, 0.15),
                   resize_prob2=(0, 1, 0), resize_range2=(0.3, 0.3))]
  for overrides in extremes:
    for index in range(3):
      lr = resrgan.degrade(hr, np.random.default_rng([2, index]), cfg(**overrides), scale)
      assert lr.shape == (height // scale, width // scale, 3)
      np.testing.assert_allclose(lr * 255, np.rint(lr * 255), atol=1e-3)  # 8-bit levels.


def test_more_blur_gives_lower_high_frequency_energy():
  hr = photo_like(96, 96)
  energies = [high_frequency_energy(resrgan.filter_image(
      hr, resrgan.blur_kernel('gaussian', 21, sigma, sigma))) for sigma in (0.3, 1.0, 3.0)]
  assert energies[0] > 2 * energies[1] > 4 * energies[2]
  # Through the whole model: only the stage-1 sigma differs.
  quiet = dict(sinc_prob=0.0, kernel_prob=ONE_HOT['iso'], resize_prob=(0, 0, 1),
               noise_range=(0.0, 0.0), gaussian_noise_prob=1.0, jpeg_range=(100, 100),
               jpeg_range2=(100, 100), second_stage_prob=0.0, final_sinc_prob=0.0)
  lrs = [resrgan.degrade(hr, np.random.default_rng([0, 1]), cfg(blur_sigma=(s, s), **quiet), 2)
         for s in (0.2, 1.5, 3.0)]
  lr_energies = [high_frequency_energy(lr) for lr in lrs]
  assert lr_energies[0] > lr_energies[1] > lr_energies[2]


def test_noise_std_is_close_to_the_drawn_sigma():
  rng = np.random.default_rng(0)
  flat = np.full((256, 256, 3), 0.5, np.float32)
  for sigma in (5.0, 20.0):
    noise = resrgan.add_gaussian_noise(flat, sigma, False, rng) - flat
    assert noise.std() == pytest.approx(sigma / 255, rel=0.03)
    assert abs(np.corrcoef(noise[..., 0].ravel(), noise[..., 1].ravel())[0, 1]) < 0.05
  gray = resrgan.add_gaussian_noise(flat, 10.0, True, rng) - flat
  assert gray.std() == pytest.approx(10 / 255, rel=0.03)
  np.testing.assert_array_equal(gray[..., 0], gray[..., 2])  # One value for all channels.
  # Poisson: a ramp uses all 256 levels, so the peak count is 256 and the std at
  # intensity x is scale * sqrt(x / 256).
  ramp = np.tile((np.arange(256, dtype=np.float32) / 255)[None, :, None], (2048, 1, 3))
  for scale in (0.5, 2.0):
    noise = resrgan.add_poisson_noise(ramp, scale, False, rng) - ramp
    assert noise[:, 128].std() == pytest.approx(scale * math.sqrt(128 / 255 / 256), rel=0.04)
  # Through the model: a flat image, stage-1 gray Gaussian noise (gray: OpenCV's
  # JPEG subsamples chroma, not luma), near-lossless JPEG, area downsampling.
  only_noise = dict(sinc_prob=0.0, kernel_prob=ONE_HOT['iso'], blur_sigma=(0.01, 0.01),
                    resize_prob=(0, 0, 1), resize_modes=('area',), gaussian_noise_prob=1.0,
                    noise_range=(16.0, 24.0), gray_noise_prob=1.0, jpeg_range=(100, 100),
                    jpeg_range2=(100, 100), second_stage_prob=0.0, final_sinc_prob=0.0)
  for seed in range(3):
    lr, params = resrgan.degrade(np.full((512, 512, 3), 0.5, np.float32),
                                 np.random.default_rng(seed), cfg(**only_noise), 2,
                                 return_params=True)
    # Area x2 averages 4 independent values: std / 2.
    drawn = params['stage1']['noise_sigma'] / 255
    assert lr.std() == pytest.approx(drawn / 2, rel=0.05)


def test_usm_sharpened_target():
  step = np.zeros((64, 64, 3), np.float32)
  step[:, 32:] = 0.6
  step[:, :32] = 0.3
  sharp = training_degradation.usm_sharpen(step, 0.5, 51, 10)
  assert sharp[:, 31].mean() < 0.3 - 0.02 and sharp[:, 32].mean() > 0.6 + 0.02  # Overshoot.
  np.testing.assert_allclose(sharp[:, 0], 0.3, atol=0.02)  # Far from the edge: almost as is.
  flat = np.full((40, 40, 3), 0.4, np.float32)
  np.testing.assert_allclose(training_degradation.usm_sharpen(flat, 0.5, 51, 10), flat)
  np.testing.assert_allclose(training_degradation.usm_sharpen(step, 0.5, 51, 255), step)
  # The LR comes from the unsharpened HR; only the target changes.
  hr = photo_like(48, 48)
  plain = cfg()
  sharpened = cfg()
  sharpened.sharpen_target = True
  target, lr, _ = training_degradation.degrade_training(hr, np.random.default_rng(4), plain, 2)
  target_s, lr_s, _ = training_degradation.degrade_training(hr, np.random.default_rng(4),
                                                            sharpened, 2)
  np.testing.assert_array_equal(lr, lr_s)
  np.testing.assert_array_equal(target, hr)
  assert high_frequency_energy(target_s) > high_frequency_energy(hr)
  assert 0.0 <= target_s.min() and target_s.max() <= 1.0


def test_original_model_stays_the_default():
  c = default.get_config().degradation
  assert c.model == 'original' and not c.sharpen_target
  hr = photo_like(40, 40)
  _, lr, params = training_degradation.degrade_training(hr, np.random.default_rng([0, 3]), c, 2)
  expected = degradation.degrade_stochastic(hr, np.random.default_rng([0, 3]), c, 2)
  np.testing.assert_array_equal(lr, expected)
  assert params['blur'] in ('gaussian', 'box')


@pytest.mark.parametrize('field,value,message', [
    ('model', 'bsrgan', "degradation.model='bsrgan'"),
    ('realesrgan.kernel_range', (7, 8), 'degradation.realesrgan.kernel_range=(7, 8)'),
    ('realesrgan.kernel_list', ('iso', 'disk'), "['disk'] unknown"),
    ('realesrgan.kernel_prob', (0.5, 0.5), 'degradation.realesrgan.kernel_prob'),
    ('realesrgan.resize_prob', (0, 0, 0), 'degradation.realesrgan.resize_prob'),
    ('realesrgan.resize_range', (1.2, 1.5), 'low <= 1 <= high'),
    ('realesrgan.blur_sigma', (2.0, 1.0), 'degradation.realesrgan.blur_sigma'),
    ('realesrgan.betap_range2', (1.5, 2.0), 'degradation.realesrgan.betap_range2'),
    ('realesrgan.jpeg_range2', (30, 101), 'at most 100'),
    ('realesrgan.resize_modes', ('lanczos',), 'degradation.realesrgan.resize_modes'),
    ('usm_kernel_size', 50, 'degradation.usm_kernel_size=50'),
])
def test_bad_config_names_the_field(field, value, message):
  c = cfg()
  block = c
  *parents, name = field.split('.')
  for parent in parents:
    block = getattr(block, parent)
  setattr(block, name, value)
  with pytest.raises(training_degradation.DegradationConfigError) as info:
    training_degradation.plain_config(c)
  assert message in str(info.value)


def test_training_batches_use_the_configured_model(tmp_path):
  image_io.write_image(tmp_path / 'only.png', photo_like(48, 56))
  c = tiny.get_config()
  c.degradation.model = 'realesrgan'
  c.degradation.sharpen_target = True
  iterator = data.make_train_iterator(c, train_dir=str(tmp_path))
  try:
    batch = next(iterator)
  finally:
    iterator.close()
  pixels = data.decode_pixels(str(tmp_path / 'only.png'))
  for index in range(c.data.batch_size):
    hr, lr = data.training_sample(
        pixels, index, seed=c.seed, patch_size=32, scale=2, augment_cfg=c.augment,
        degradation_cfg=training_degradation.plain_config(c.degradation))
    np.testing.assert_allclose(batch['lr'][index], 2 * lr - 1, atol=1e-6)
    np.testing.assert_array_equal(batch['hr'][index], np.rint(hr * 255))
  c.degradation.realesrgan.kernel_range = (8,)
  with pytest.raises(training_degradation.DegradationConfigError,
                     match='degradation.realesrgan.kernel_range'):
    data.make_train_iterator(c, train_dir=str(tmp_path))
