"""VGG19 features and LPIPS on random weights written in the real npz format."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from lpips_j import lpips as lpips_j

from configs import tiny
from srrgan_jax import cache
from srrgan_jax import perceptual
from srrgan_jax import weights


lpips = jax.jit(perceptual.lpips)  # One compile per shape for the whole module.


@pytest.fixture(scope='module')
def weights_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp('weights')
  weights.write_random_weights(directory)
  return directory


@pytest.fixture
def config(weights_dir, tmp_path, monkeypatch):
  monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(weights_dir))
  monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path / 'empty_cache'))
  return tiny.get_config()


@pytest.fixture
def no_hub(monkeypatch):
  """Fails the test if lpips-j tries its Hugging Face download."""
  def refuse(*args, **kwargs):
    raise AssertionError('lpips-j hub download attempted')
  monkeypatch.setattr(lpips_j, 'hf_hub_download', refuse)


def photo_batch(size=32):
  """A detailed real photo (astronaut) at `size` px, in [0,1]."""
  image = cv2.resize(skimage.data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
  return image.astype(np.float32) / 255.0


# --- VGG19.


def test_caffe_preprocess_is_keras_caffe_mode():
  rgb = jnp.array([[[[0.2, -0.4, 1.0]]]])  # [-1,1] -> [0,255]: (153, 76.5, 255).
  np.testing.assert_allclose(perceptual.caffe_preprocess(rgb)[0, 0, 0],
                             [255 - 103.939, 76.5 - 116.779, 153 - 123.68], rtol=1e-6)


def test_reshape_max_pool_matches_flax_max_pool_values_and_gradients():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  odd = jax.random.normal(jax.random.key(2), (1, 7, 9, 3))
  np.testing.assert_array_equal(perceptual._max_pool_2x2(odd),
                                nn.max_pool(odd, (2, 2), strides=(2, 2)))
  x = jax.random.normal(jax.random.key(0), (2, 8, 12, 5))
  np.testing.assert_array_equal(perceptual._max_pool_2x2(x),
                                nn.max_pool(x, (2, 2), strides=(2, 2)))
  weights_ = jax.random.normal(jax.random.key(1), (2, 4, 6, 5))
  ours = jax.grad(lambda v: jnp.sum(perceptual._max_pool_2x2(v) * weights_))(x)
  flax_grad = jax.grad(lambda v: jnp.sum(nn.max_pool(v, (2, 2), strides=(2, 2)) * weights_))(x)
  np.testing.assert_array_equal(ours, flax_grad)


def test_first_conv_matches_direct_computation(config):
  params = perceptual.load_vgg19_params(config)
  x = np.random.default_rng(0).uniform(-1, 1, (1, 6, 5, 3)).astype(np.float32)
  bgr = (x[0] + 1) * 127.5
  bgr = bgr[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
  padded = np.pad(bgr, ((1, 1), (1, 1), (0, 0)))  # 'SAME' = zero pad 1.
  kernel = np.asarray(params['block1_conv1']['kernel'])
  expected = np.zeros((6, 5, 64), np.float32)
  for dy in range(3):
    for dx in range(3):
      expected += padded[dy:dy + 6, dx:dx + 5] @ kernel[dy, dx]
  expected = np.maximum(expected + np.asarray(params['block1_conv1']['bias']), 0)
  got = perceptual.vgg19_features(params, jnp.asarray(x), ['block1_conv1'])['block1_conv1']
  np.testing.assert_allclose(got[0], expected, rtol=1e-4, atol=1e-3)


def test_features_shapes_and_only_needed_layers_run(config):
  params = perceptual.load_vgg19_params(config)
  x = jnp.zeros((2, 32, 32, 3))
  layers = config.loss.perceptual_layers
  features = jax.eval_shape(lambda p, x: perceptual.vgg19_features(p, x, layers), params, x)
  shapes = {k: v.shape for k, v in features.items()}
  assert shapes == {'block2_conv2': (2, 16, 16, 128), 'block3_conv4': (2, 8, 8, 256),
                    'block4_conv4': (2, 4, 4, 512), 'block5_conv4': (2, 2, 2, 512)}

  def convs(layers):
    jaxpr = jax.make_jaxpr(lambda p, x: perceptual.vgg19_features(p, x, layers))(params, x)
    return sum(e.primitive.name == 'conv_general_dilated' for e in jaxpr.jaxpr.eqns)
  assert convs(['block2_conv2']) == 4
  assert convs(['block5_conv4', 'block2_conv2']) == 16
  with pytest.raises(ValueError, match='unknown VGG19 layers'):
    perceptual.vgg19_features(params, x, ['relu5_4'])


def test_weights_are_read_once(config, monkeypatch):
  reads = []
  real_load = weights.load_npz
  monkeypatch.setattr(weights, 'load_npz', lambda *a: reads.append(a) or real_load(*a))
  first = perceptual.load_vgg19_params(config)
  second = perceptual.load_vgg19_params(config)
  assert len(reads) <= 1  # Zero if an earlier test already loaded this file.
  assert first['block4_conv1']['kernel'] is second['block4_conv1']['kernel']
  assert perceptual.load_lpips_params(config)['vgg']['conv1_1']['kernel'] is (
      perceptual.load_lpips_params(config)['vgg']['conv1_1']['kernel'])


# --- LPIPS.


def readme_lpips(flat, x0, x1):
  """LPIPS written from the steps in README "Pretrained weights", independent of lpips-j."""
  shift = jnp.array([-0.030, -0.088, -0.188])
  scale = jnp.array([0.458, 0.448, 0.450])

  def taps(x):
    h, out = (x - shift) / scale, []
    for layer, _, _ in weights.VGG16_CONVS:
      if layer.endswith('_1') and layer != 'conv1_1':
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), 'VALID')
      h = jax.lax.conv_general_dilated(h, flat[f'{layer}/kernel'], (1, 1), 'SAME',
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      h = jax.nn.relu(h + flat[f'{layer}/bias'])
      if layer in ('conv1_2', 'conv2_2', 'conv3_3', 'conv4_3', 'conv5_3'):
        out.append(h)
    return out

  total = 0.0
  for i, (f0, f1) in enumerate(zip(taps(x0), taps(x1))):
    f0 = f0 / (jnp.sqrt(jnp.sum(f0**2, -1, keepdims=True)) + 1e-10)
    f1 = f1 / (jnp.sqrt(jnp.sum(f1**2, -1, keepdims=True)) + 1e-10)
    total += jnp.mean(jnp.sum(flat[f'lin{i}'] * (f0 - f1)**2, -1), axis=(1, 2))
  return total


@pytest.fixture
def distortions():
  """The photo, then blur sigma 0.5/1/2, then noise std 0.02/0.05/0.1, in [-1,1]."""
  image = photo_batch()
  noise = np.random.default_rng(0).standard_normal(image.shape).astype(np.float32)
  variants = [image] + [cv2.GaussianBlur(image, (0, 0), s) for s in (0.5, 1.0, 2.0)]
  variants += [np.clip(image + s * noise, 0, 1) for s in (0.02, 0.05, 0.1)]
  reference = np.stack([image] * len(variants))
  return jnp.asarray(reference * 2 - 1), jnp.asarray(np.stack(variants) * 2 - 1)


def test_lpips_is_zero_for_identical_images_and_grows_with_distortion(config, distortions,
                                                                     no_hub):
  params = perceptual.load_lpips_params(config)
  reference, distorted = distortions
  same = lpips(params, reference, reference)
  assert same.shape == (7,)
  np.testing.assert_allclose(same, 0.0, atol=1e-7)
  d = np.asarray(lpips(params, reference, distorted))
  assert abs(d[0]) < 1e-7
  assert d[1] < d[2] < d[3], f'LPIPS not increasing with blur: {d[1:4]}'
  assert d[4] < d[5] < d[6], f'LPIPS not increasing with noise: {d[4:]}'
  assert d[1] > 0 and d[4] > 0


def test_lpips_matches_readme_definition(config, distortions, no_hub):
  params = perceptual.load_lpips_params(config)
  flat = {k: jnp.asarray(v) for k, v in
          weights.load_npz(weights.weights_file(weights.LPIPS_FILE)).items()}
  reference, distorted = distortions
  shuffled = distorted[::-1]  # Also pairs of unrelated images.
  got = lpips(params, shuffled, distorted)
  want = jax.jit(readme_lpips)(flat, shuffled, distorted)
  assert float(jnp.max(want)) > 1e-4
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def test_lpips_rejects_images_its_trunk_cannot_take(config):
  params = perceptual.load_lpips_params(config)
  with pytest.raises(ValueError, match='at least 16x16'):
    perceptual.lpips(params, jnp.zeros((1, 8, 32, 3)), jnp.zeros((1, 8, 32, 3)))
