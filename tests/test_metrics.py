"""PSNR/SSIM/MAE agree with scikit-image on real photos and obey their conventions."""

import functools

import cv2
import jax
import numpy as np
import pytest
import skimage.color
import skimage.data
import skimage.metrics

from srrgan_jax import metrics

TOLERANCE = 1e-4


def _degrade(rgb_u8: np.ndarray, seed: int) -> np.ndarray:
  """A realistic distorted copy: blur, 2x down/up, noise, JPEG (float [0, 1])."""
  height, width = rgb_u8.shape[:2]
  x = cv2.GaussianBlur(rgb_u8, (5, 5), 1.0)
  x = cv2.resize(x, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
  x = cv2.resize(x, (width, height), interpolation=cv2.INTER_CUBIC)
  noise = np.random.default_rng(seed).normal(0, 6, x.shape)
  x = np.clip(x + noise, 0, 255).astype(np.uint8)
  _, encoded = cv2.imencode('.jpg', x, [cv2.IMWRITE_JPEG_QUALITY, 70])
  return cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED).astype(np.float64) / 255.0


@pytest.fixture(scope='module')
def photo_pairs():
  """(reference, distorted) float64 [0, 1] pairs of real photos, odd sizes kept."""
  pairs = []
  for seed, name in enumerate(('astronaut', 'chelsea', 'coffee')):
    rgb_u8 = getattr(skimage.data, name)()[:200, :264]  # Non-square on purpose.
    pairs.append((rgb_u8.astype(np.float64) / 255.0, _degrade(rgb_u8, seed)))
  return pairs


def _skimage_psnr(a, b):
  return skimage.metrics.peak_signal_noise_ratio(a, b, data_range=1.0)


def _skimage_ssim(a, b):
  channel_axis = -1 if a.ndim == 3 else None
  return skimage.metrics.structural_similarity(
      a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
      data_range=1.0, channel_axis=channel_axis)


def _y(rgb):
  """Independent BT.601 luma: skimage's rgb2ycbcr gives Y in [16, 235]."""
  return skimage.color.rgb2ycbcr(rgb)[..., 0] / 255.0


@pytest.mark.parametrize('crop_border', [0, 2])
def test_psnr_ssim_match_skimage_rgb(photo_pairs, crop_border):
  c = crop_border
  for reference, distorted in photo_pairs:
    cropped = lambda x: x[c:x.shape[0] - c, c:x.shape[1] - c] if c else x
    expected_psnr = _skimage_psnr(cropped(reference), cropped(distorted))
    expected_ssim = _skimage_ssim(cropped(reference), cropped(distorted))
    got_psnr = float(metrics.psnr(reference, distorted, crop_border=c))
    got_ssim = float(metrics.ssim(reference, distorted, crop_border=c))
    assert abs(got_psnr - expected_psnr) < TOLERANCE, (got_psnr, expected_psnr)
    assert abs(got_ssim - expected_ssim) < TOLERANCE, (got_ssim, expected_ssim)
    assert 15 < got_psnr < 40 and 0.3 < got_ssim < 0.99  # Really degraded copies.


def test_psnr_ssim_match_skimage_y_channel(photo_pairs):
  for reference, distorted in photo_pairs:
    expected_psnr = _skimage_psnr(_y(reference)[2:-2, 2:-2], _y(distorted)[2:-2, 2:-2])
    expected_ssim = _skimage_ssim(_y(reference)[2:-2, 2:-2], _y(distorted)[2:-2, 2:-2])
    got_psnr = float(metrics.psnr(reference, distorted, crop_border=2, y_channel=True))
    got_ssim = float(metrics.ssim(reference, distorted, crop_border=2, y_channel=True))
    assert abs(got_psnr - expected_psnr) < TOLERANCE, (got_psnr, expected_psnr)
    assert abs(got_ssim - expected_ssim) < TOLERANCE, (got_ssim, expected_ssim)


def test_y_channel_convention():
  corners = np.array([[[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0]]], np.float32)
  np.testing.assert_allclose(
      np.asarray(metrics.rgb_to_y(corners))[..., 0],
      [[16 / 255, 235 / 255, (16 + 65.481) / 255, (16 + 128.553) / 255]], atol=1e-6)


def test_batched_jit_and_numpy_agree(photo_pairs):
  references = np.stack([r[:96, :128] for r, _ in photo_pairs]).astype(np.float32)
  distorted = np.stack([d[:96, :128] for _, d in photo_pairs]).astype(np.float32)
  for metric in (metrics.psnr, metrics.ssim):
    jitted = jax.jit(functools.partial(metric, crop_border=2, y_channel=True))
    batched = np.asarray(jitted(references, distorted))
    assert batched.shape == (3,)
    singles = [float(metric(r, d, crop_border=2, y_channel=True))
               for r, d in zip(references, distorted)]
    np.testing.assert_allclose(batched, singles, rtol=1e-5)
  mae = np.asarray(metrics.mae(references * 2 - 1, distorted * 2 - 1))
  np.testing.assert_allclose(
      mae, np.abs(references - distorted).mean(axis=(1, 2, 3)) * 2, rtol=1e-5)


def test_identical_images():
  image = skimage.data.astronaut()[:64, :64].astype(np.float32) / 255.0
  batch = np.stack([image, image[::-1]])
  assert np.all(np.isposinf(np.asarray(metrics.psnr(batch, batch))))
  np.testing.assert_allclose(np.asarray(metrics.ssim(batch, batch)), 1.0, atol=1e-6)
  assert float(metrics.mae(image, image)) == 0.0
  # A known value: a uniform error of 0.1 is 20 dB.
  np.testing.assert_allclose(float(metrics.psnr(image * 0 + 0.5, image * 0 + 0.6)),
                             20.0, atol=1e-4)


def test_bad_shapes_are_clear_errors():
  with pytest.raises(ValueError, match='different shapes'):
    metrics.psnr(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))
  with pytest.raises(ValueError, match='smaller than the 11x11'):
    metrics.ssim(np.zeros((16, 16, 3)), np.zeros((16, 16, 3)), crop_border=4)
  with pytest.raises(ValueError, match='crop_border'):
    metrics.psnr(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), crop_border=4)
