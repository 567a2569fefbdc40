"""Folder scoring: SR images against the ground truths of the same name."""

import jax
import numpy as np
import pytest

from srrgan_jax import evaluation
from srrgan_jax import image_io
from srrgan_jax import models

from evaluation_data import ATOL
from evaluation_data import direct_scores
from evaluation_data import env  # pylint: disable=unused-import  (a fixture)
from evaluation_data import write_photos


def test_folder_scoring_matches_metrics(env, tmp_path):
  hr_dir, sr_dir = tmp_path / 'hr', tmp_path / 'sr'
  write_photos(hr_dir, ('rocket', 'coffee'), (44, 52))
  write_photos(hr_dir / 'sub', ('chelsea',), (44, 52))
  for path in image_io.list_images(hr_dir):
    hr = image_io.read_rgb(path)
    low = jax.image.resize(hr, (22, 26, 3), 'linear', antialias=True)
    target = sr_dir / path.relative_to(hr_dir).with_suffix('.jpg')  # Suffix may differ.
    image_io.write_image(target, np.clip(jax.image.resize(low, hr.shape, 'cubic'), 0, 1))
  lines = []
  scores = evaluation.score_folders(sr_dir, hr_dir, crop_border=0, y_channel=True,
                                    log=lines.append)
  assert scores['num_images'] == 3 and not scores['unmatched_hr']
  assert set(scores['per_image']) == {'coffee', 'rocket', 'sub/chelsea'}
  sr = models.from_unit(np.stack([image_io.read_rgb(sr_dir / 'sub' / 'chelsea.jpg')]))
  hr = models.from_unit(np.stack([image_io.read_rgb(hr_dir / 'sub' / 'chelsea.png')]))
  direct = direct_scores(sr, hr, crop_border=0, y_channel=True)
  for name in evaluation.METRIC_NAMES:
    assert scores['per_image']['sub/chelsea'][name] == pytest.approx(
        float(direct[name][0]), abs=ATOL[name])
  assert scores['mean']['psnr'] == pytest.approx(
      np.mean([s['psnr'] for s in scores['per_image'].values()]))

  image_io.write_image(sr_dir / 'rocket.jpg', np.zeros((44, 50, 3)))
  with pytest.raises(evaluation.EvaluationError,
                     match=r'rocket\.jpg is 44x50 but its ground truth .*rocket\.png is 44x52'):
    evaluation.score_folders(sr_dir, hr_dir)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(evaluation.EvaluationError, match='no images found.*--sr_dir'):
    evaluation.score_folders(tmp_path / 'empty', hr_dir)
