"""CPU quickstart: the reference system shrunk to run all phases in ~5-6 min on 2 cores.

Same losses, optimizers and block structure as `default.py`; half-width
generator (4x fewer FLOPs, so 4x more steps fit in the same minutes), smaller
patches, batches and step counts, and the built-in sample photos as data. This
is what `python train.py` runs with no arguments.
"""

from configs import default


def get_config():
  """Returns the quickstart configuration."""
  c = default.get_config()
  m = c.model
  m.stem_channels = 32  # Half the reference widths: steps ~4x cheaper on a CPU.
  m.encoder_channels = (32, 64, 128)  # Half of (64, 128, 256).
  m.decoder_channels = (64, 32, 32)  # Half of (128, 64, 64).
  m.groupnorm_groups = 16  # Same channels per group as 32 groups at full width.
  m.output_activation = 'clip'  # tanh(bilinear + r) starts below bilinear; clip does not.
  m.zero_init_output = True  # Start exactly at bilinear; short runs only improve on it.
  c.data.patch_size = 64  # HR 64 -> LR 32 patches keep CPU steps short.
  c.data.batch_size = 4  # Small global batch (XLA:CPU scales badly with batch).
  c.data.eval_batch_size = 4  # Validation batch.
  c.data.val_crop_size = 256  # Score 256 px crops: 64 px ones are too noisy to steer LR.
  c.data.patches_per_image = 2  # Few patches per decode: batches mix more photos.
  c.data.num_workers = 0  # In-process loading: 2 cores are busy with the model.
  c.data.steps_per_epoch = 25  # Short epochs so plateau/early-stop logic runs.
  c.data.max_val_images = 4  # Validation images (held-out sample photos).
  c.phase1.epochs = 60  # Pixel-loss epochs (1500 steps).
  c.phase1.plateau_patience = 4  # Epochs are short: react sooner than the reference.
  c.phase1.early_stop_patience = 8  # Stop when 200 steps bring nothing.
  c.phase2.epochs = 2  # Perceptual epochs.
  c.phase3.epochs = 2  # Adversarial epochs.
  c.phase3.save_every_epochs = 1  # Checkpoint every epoch (all ranked later).
  c.sample_every_epochs = 5  # Sample grid period.
  c.log_every_steps = 5  # Logging period.
  c.checkpoint.save_latest_every_steps = 100  # Resume checkpoint period.
  c.ema_decay = 0.99  # Short runs need a faster EMA.
  return c
