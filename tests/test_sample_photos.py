"""The built-in sample photos: real colour photos, copied once, with their provenance."""

import numpy as np

from configs import tiny
from srrgan_jax import data
from srrgan_jax import image_io
from srrgan_jax import sample_photos


def test_sample_photos_are_real_colour_photos_with_provenance(tmp_path, monkeypatch):
  monkeypatch.setenv('SRRGAN_CACHE_DIR', str(tmp_path))
  root = sample_photos.sample_photos_dir()
  assert root == tmp_path / 'sample_photos'
  train, val = data.resolve_dirs(tiny.get_config())
  assert (train, val) == (root / 'train', root / 'val')
  train_names = {p.name for p in image_io.list_images(train)}
  val_names = {p.name for p in image_io.list_images(val)}
  assert len(train_names) >= 6 and len(val_names) >= 2 and not train_names & val_names
  provenance = (root / 'PROVENANCE.md').read_text()
  for name in train_names | val_names:
    assert name in provenance
    height, width = image_io.image_size(next(root.glob(f'*/{name}')))
    assert min(height, width) >= 256  # Enough for the reference 256px patches.
  pixels = data.decode_pixels(str(val / 'coffee.png')).astype(np.float32)
  assert np.abs(pixels[..., 0] - pixels[..., 2]).mean() > 10  # Colour, not gray.
  assert sample_photos.sample_photos_dir() == root  # Cached: second call reuses the folder.
