"""Shared by the evaluation tests: tiny real photos, stand-in weights, direct recomputation."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data

from configs import tiny
from srrgan_jax import cache
from srrgan_jax import image_io
from srrgan_jax import metrics
from srrgan_jax import models
from srrgan_jax import perceptual
from srrgan_jax import weights

# Table numbers are means of float32 per-image values; recomputation order differs.
ATOL = {'psnr': 1e-3, 'ssim': 1e-5, 'mae': 1e-5, 'lpips': 1e-5}


def write_photos(folder: Path, names, size, stride=3, suffix='.png'):
  """Real photos, subsampled to a few dozen pixels (keeps detail, stays tiny)."""
  for name in names:
    pixels = getattr(skimage.data, name)()[90:90 + size[0] * stride:stride,
                                           120:120 + size[1] * stride:stride]
    image_io.write_image(folder / f'{name}{suffix}', pixels / 255.0)


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  """Random stand-in weights via $SRRGAN_WEIGHTS_DIR and tiny photo folders."""
  root = tmp_path_factory.mktemp('evaluation')
  weights.write_random_weights(root / 'weights')
  write_photos(root / 'train', ('astronaut', 'chelsea'), (64, 64))
  write_photos(root / 'val', ('coffee',), (48, 48))
  # 44x52: not a multiple of the crop, the tile or the generator's size multiple.
  write_photos(root / 'test', ('rocket', 'astronaut', 'coffee'), (44, 52))
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv(weights.WEIGHTS_DIR_ENV, str(root / 'weights'))
    patch.setenv(cache.CACHE_DIR_ENV, str(root / 'cache'))
    yield root


def direct_scores(sr, hr, *, crop_border, y_channel=False):
  """Per-image metrics computed straight from the library functions."""
  sr = jnp.clip(jnp.asarray(sr), -1, 1)
  hr = jnp.asarray(hr)
  sr01, hr01 = models.to_unit(sr), models.to_unit(hr)
  return {
      'psnr': np.asarray(metrics.psnr(sr01, hr01, crop_border=crop_border,
                                      y_channel=y_channel)),
      'ssim': np.asarray(metrics.ssim(sr01, hr01, crop_border=crop_border,
                                      y_channel=y_channel)),
      'mae': np.asarray(metrics.mae(sr, hr)),
      'lpips': np.asarray(perceptual.lpips(perceptual.load_lpips_params(tiny.get_config()),
                                           sr, hr)),
  }
