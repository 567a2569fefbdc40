"""XLA:CPU settings that make the training steps faster.

XLA:CPU hands convolutions to YNNPACK by default. Its weight-gradient
convolutions (a 3x3 kernel gradient is a convolution with a 128x128 window)
can be several times slower than XLA's own Eigen convolutions, or faster: it
depends on the CPU and the per-device batch (`conv_probe`). Forward and
input-gradient convolutions run at about the same speed with either.
`choose_training_convolutions()` picks the library by a one-off measurement
cached per CPU (`$SRRGAN_TRAINING_CONVOLUTIONS` overrides it);
`use_eigen_convolutions()` sets Eigen unconditionally.
Upscaling uses Eigen's convolutions (`use_inference_convolutions`).

XLA reads its flags once, when JAX starts its CPU backend: call these before
the first JAX computation of the process.

Nothing here reaches GPUs or TPUs: the flag is an XLA:CPU option (the GPU and
TPU compilers do not read it), and it is not even set when `JAX_PLATFORMS`
names an accelerator first. The project sets no thread counts for XLA; the
loader's OpenCV threads are its own (`data.num_threads`, one per worker).
"""

from __future__ import annotations

import os

from absl import logging

from srrgan_jax import errors

# Removes convolutions from the op kinds XLA:CPU gives to YNNPACK.
EIGEN_CONVOLUTIONS_FLAG = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'


def use_eigen_convolutions() -> None:
  """Adds `EIGEN_CONVOLUTIONS_FLAG` to $XLA_FLAGS unless the YNN fusion types are set there.

  A user's own `--xla_cpu_experimental_ynn_fusion_type=...` wins. Does nothing
  when `$JAX_PLATFORMS` puts an accelerator first (e.g. 'cuda' or 'tpu,cpu'),
  and has no effect on GPUs/TPUs, nor after JAX has started its CPU backend.
  """
  if _cpu_first() and not _user_sets_convolutions():
    _add_eigen_flag()


# $SRRGAN_TRAINING_CONVOLUTIONS: 'probe' (default: measure once per CPU), or a library.
TRAINING_CONVOLUTIONS_ENV = 'SRRGAN_TRAINING_CONVOLUTIONS'
TRAINING_CONVOLUTIONS = ('probe', 'eigen', 'ynnpack')


def choose_training_convolutions(per_device_batch: int, lr_size: int,
                                 channels: int) -> str | None:
  """Sets the convolution library of this process's XLA:CPU programs for training.

  `$SRRGAN_TRAINING_CONVOLUTIONS` = 'eigen' or 'ynnpack' forces one; 'probe'
  (or unset) takes `conv_probe`'s cached measurement for a 3x3 `channels` conv
  on `per_device_batch` images of `lr_size` pixels, measuring it once in a child
  process on a cache miss. Returns the library, or None where nothing is chosen:
  an accelerator first in `$JAX_PLATFORMS`, or the user's own
  `--xla_cpu_experimental_ynn_fusion_type` in `$XLA_FLAGS` (which wins).
  Raises errors.ConfigError (a ValueError) for another value of the variable.
  """
  setting = os.environ.get(TRAINING_CONVOLUTIONS_ENV, '').strip().lower() or 'probe'
  if setting not in TRAINING_CONVOLUTIONS:
    raise errors.ConfigError(
        f'${TRAINING_CONVOLUTIONS_ENV}={os.environ[TRAINING_CONVOLUTIONS_ENV]!r} is not '
        f'one of {", ".join(TRAINING_CONVOLUTIONS)}; unset it to measure once per CPU.')
  if not _cpu_first() or _user_sets_convolutions():
    return None
  if setting == 'probe':
    from srrgan_jax import conv_probe  # pylint: disable=g-import-not-at-top
    setting, _ = conv_probe.cached_choice(per_device_batch, lr_size, channels)
    logging.info('XLA:CPU training convolutions: %s (by the probe for this CPU, per-device '
                 'batch %d; $%s overrides).', setting, per_device_batch,
                 TRAINING_CONVOLUTIONS_ENV)
  if setting == 'eigen':
    _add_eigen_flag()
  return setting


def _cpu_first() -> bool:
  """False when `$JAX_PLATFORMS` names an accelerator first ('cuda', 'tpu,cpu', ...)."""
  platforms = os.environ.get('JAX_PLATFORMS', '').strip()
  return not platforms or platforms.split(',')[0].strip().lower() == 'cpu'


def _user_sets_convolutions() -> bool:
  return 'xla_cpu_experimental_ynn_fusion_type' in os.environ.get('XLA_FLAGS', '')


def _add_eigen_flag() -> None:
  flags = os.environ.get('XLA_FLAGS', '')
  os.environ['XLA_FLAGS'] = f'{flags} {EIGEN_CONVOLUTIONS_FLAG}'.strip()


def use_inference_convolutions() -> None:
  """XLA:CPU settings for upscaling (`infer.py`): Eigen's convolutions, as in training.

  Chosen by measuring the full-size generator's forward pass on a 2-core AMD
  EPYC (AVX2) shared with other jobs, so by CPU time, in interleaved runs: with
  Eigen, a whole 512 px image took 7-9% less CPU time than with XLA's
  default YNNPACK convolutions and kept both cores busier; 128 px tiles took
  the same within 2%. oneDNN (`--xla_cpu_use_onednn`) and the
  concurrency-optimized scheduler changed nothing beyond 3%. On a 2-core Intel
  Xeon with AVX-512, idle, YNNPACK was 4-6% faster (tiled and whole 512 px
  images). Eigen is never more than 6% slower on either, and its
  weight-gradient convolutions are far faster on both, so one setting serves
  training and inference.
  Same rules as `use_eigen_convolutions` (a user's own setting wins; nothing on
  accelerators; call before JAX starts its CPU backend).
  """
  use_eigen_convolutions()
