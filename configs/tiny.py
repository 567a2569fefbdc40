"""Tiny configuration for tests: a few channels, 32px patches, a handful of steps."""

from configs import default


def get_config():
  """Returns the test configuration (seconds per phase on a CPU)."""
  c = default.get_config()
  m = c.model
  m.stem_channels = 8  # Narrow stem/head/tail.
  m.num_head_blocks = 1  # One head block.
  m.encoder_channels = (8, 16, 16)  # Three stride-2 stages, narrow.
  m.num_bottleneck_blocks = 1  # One bottleneck block.
  m.decoder_channels = (16, 8, 8)  # Three decoder stages, narrow.
  m.num_tail_blocks = 1  # One tail block.
  m.se_ratio = 4  # Keep at least 2 squeeze channels.
  m.groupnorm_groups = 4  # Groups that divide the narrow widths.
  c.disc.channels = (8, 16, 16, 16)  # Narrow PatchGAN.
  c.data.patch_size = 32  # HR 32 -> LR 16.
  c.data.batch_size = 4  # Divisible by 1, 2 and 4 devices.
  c.data.eval_batch_size = 4  # Validation batch.
  c.data.patches_per_image = 2  # Two patches per decode.
  c.data.num_workers = 0  # In-process loading in tests.
  c.data.steps_per_epoch = 3  # Three steps per epoch.
  c.data.max_val_images = 2  # Two validation images.
  c.data.num_sample_images = 2  # Two sample-grid rows.
  c.phase1.epochs = 2  # Pixel epochs.
  c.phase2.epochs = 1  # Perceptual epochs.
  c.phase3.epochs = 2  # Adversarial epochs.
  c.phase3.save_every_epochs = 1  # One checkpoint per epoch.
  c.sample_every_epochs = 1  # Grid every epoch.
  c.log_every_steps = 1  # Log every step.
  c.checkpoint.save_latest_every_steps = 2  # Frequent resume checkpoints.
  c.checkpoint.async_save = False  # Deterministic test timing.
  c.inference.tile = 16  # Small tiles.
  c.inference.overlap = 4  # Small overlap.
  c.inference.batch_size = 4  # Tiles per call.
  c.weights.auto_fetch = False  # Tests never download: they write random weights.
  return c
