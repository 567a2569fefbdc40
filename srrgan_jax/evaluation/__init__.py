"""Evaluation: LPIPS ranking of GAN checkpoints, the comparison table, plots, folder scoring.

  scoring     the protocol, the test set, per-image PSNR/SSIM/MAE/LPIPS
  ranking     upscalers (baselines, the run's generator), LPIPS ranking of phase 3
  report      console tables, results.{md,json,csv}, ranking.json
  plots       perception-distortion plane, zoomed comparison figure
  folders     scoring existing SR images against ground truths
  comparison  `evaluate_run`: all of the above for a training run
"""

from srrgan_jax.evaluation.comparison import evaluate_run
from srrgan_jax.evaluation.folders import format_folder_scores
from srrgan_jax.evaluation.folders import score_folders
from srrgan_jax.evaluation.ranking import GeneratorRunner
from srrgan_jax.evaluation.ranking import RankedCheckpoint
from srrgan_jax.evaluation.report import write_json
from srrgan_jax.evaluation.scoring import METRIC_NAMES
from srrgan_jax.evaluation.scoring import EvaluationError
from srrgan_jax.evaluation.scoring import Protocol
from srrgan_jax.evaluation.scoring import load_test_set
from srrgan_jax.evaluation.scoring import make_protocol
from srrgan_jax.evaluation.scoring import require_single_host

__all__ = [
    'METRIC_NAMES', 'EvaluationError', 'GeneratorRunner', 'Protocol', 'RankedCheckpoint',
    'evaluate_run', 'format_folder_scores', 'load_test_set', 'make_protocol',
    'require_single_host', 'score_folders', 'write_json'
]
