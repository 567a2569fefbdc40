"""XLA:CPU settings that make the full-size training steps faster.

XLA:CPU hands convolutions to YNNPACK by default. Its weight-gradient
convolutions (a 3x3 kernel gradient is a convolution with a 128x128 window)
run about 1.6x slower than XLA's own Eigen convolutions on this project's
networks: with convolutions left to Eigen, a full-size training step takes about
20% less CPU time (phase 1 and phase 3, batch 4; see `bench/train.py`).
Upscaling uses Eigen's convolutions too (`use_inference_convolutions`).

XLA reads its flags once, when JAX starts its CPU backend: call
`use_eigen_convolutions()` before the first JAX computation of the process.

Nothing here reaches GPUs or TPUs: the flag is an XLA:CPU option (the GPU and
TPU compilers do not read it), and it is not even set when `JAX_PLATFORMS`
names an accelerator first. The project sets no thread counts for XLA; the
loader's OpenCV threads are its own (`data.num_threads`, one per worker).
"""

import os

# Removes convolutions from the op kinds XLA:CPU gives to YNNPACK.
EIGEN_CONVOLUTIONS_FLAG = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'


def use_eigen_convolutions() -> None:
  """Adds `EIGEN_CONVOLUTIONS_FLAG` to $XLA_FLAGS unless the YNN fusion types are set there.

  A user's own `--xla_cpu_experimental_ynn_fusion_type=...` wins. Does nothing
  when `$JAX_PLATFORMS` puts an accelerator first (e.g. 'cuda' or 'tpu,cpu'),
  and has no effect on GPUs/TPUs, nor after JAX has started its CPU backend.
  """
  platforms = os.environ.get('JAX_PLATFORMS', '').strip()
  if platforms and platforms.split(',')[0].strip().lower() != 'cpu':
    return
  flags = os.environ.get('XLA_FLAGS', '')
  if 'xla_cpu_experimental_ynn_fusion_type' in flags:
    return
  os.environ['XLA_FLAGS'] = f'{flags} {EIGEN_CONVOLUTIONS_FLAG}'.strip()


def use_inference_convolutions() -> None:
  """XLA:CPU settings for upscaling (`infer.py`): Eigen's convolutions, as in training.

  Chosen by measuring the full-size generator's forward pass on a 2-core AMD
  EPYC (AVX2) shared with other jobs, so by CPU time, in interleaved runs: with
  Eigen, a whole 512 px image took 7-9% less CPU time than with XLA's
  default YNNPACK convolutions and kept both cores busier; 128 px tiles took
  the same within 2%. oneDNN (`--xla_cpu_use_onednn`) and the
  concurrency-optimized scheduler changed nothing beyond 3%. YNNPACK was never
  the faster one by more than that here, and its weight-gradient convolutions
  are far slower on this CPU, so one setting serves training and inference.
  Same rules as `use_eigen_convolutions` (a user's own setting wins; nothing on
  accelerators; call before JAX starts its CPU backend).
  """
  use_eigen_convolutions()
