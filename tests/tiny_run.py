"""The tiny three-phase training run that several test modules share.

Trained once per session (conftest's `tiny_run` fixture): the train-loop tests
compare resumed and partial runs against it, the evaluation tests rank and
score its checkpoints. Tests that change a run work on a copy.
"""

import numpy as np

from configs import tiny
from srrgan_jax import image_io
from srrgan_jax import weights


def write_photos(folder, count, size, seed):
  """Smooth random colour images (gradients + blobs) that a model can learn from."""
  rng = np.random.default_rng(seed)
  folder.mkdir(parents=True)
  yy, xx = np.mgrid[0:size[0], 0:size[1]] / max(size)
  for i in range(count):
    channels = []
    for _ in range(3):
      fx, fy, phase = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 6.3)
      channels.append(0.5 + 0.4 * np.sin(fx * 6.3 * xx + phase) * np.cos(fy * 6.3 * yy))
    image_io.write_image(folder / f'img{i}.png', np.stack(channels, -1).astype(np.float32))


def make_config(root):
  """The tiny config on fresh photo folders and random VGG19 weights under `root`.

  Phases 1-3 of 2, 1 and 2 epochs of 3 steps; phase 3 keeps a checkpoint per
  epoch (steps 3 and 6). A 2-block VGG keeps the perceptual loss (same code
  path) cheap on CPU.
  """
  write_photos(root / 'train', 6, (40, 48), seed=0)
  write_photos(root / 'val', 3, (36, 36), seed=1)
  vgg_file = weights.write_random_weights(root / 'weights', [weights.VGG19_FILE])[0]
  config = tiny.get_config()
  config.data.train_dir = str(root / 'train')
  config.data.val_dir = str(root / 'val')
  config.weights.vgg19_file = str(vgg_file)
  config.weights.auto_fetch = False  # A missing file must fail, never download.
  config.loss.perceptual_layers = ('block1_conv2', 'block2_conv2')
  config.loss.perceptual_layer_weights = (0.5, 0.5)
  return config
