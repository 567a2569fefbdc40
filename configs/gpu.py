"""GPU/TPU recipe: the reference system with bfloat16 compute and a loader sized to the host.

Same model, losses, schedules and data as `default.py`, except:
- The generator computes in bfloat16 (its parameters, optimizer state and EMA
  stay float32): the accelerators' matrix units run bfloat16 several times
  faster than float32, and the generator is most of every phase's FLOPs. The
  discriminator keeps float32, as the original did;
  `--config.disc.compute_dtype=bfloat16` makes phase 3 faster still.
- The loader uses every CPU core of the host but two (the trainer and JAX) as
  worker processes, and cuts 4 patches per decoded image: decoding a ~1 MP photo
  costs more than everything else a patch needs, and an accelerator trains
  thousands of samples per second (README "Can my machine feed my
  accelerator?"). Batches then hold 4 patches of each photo instead of 16
  different photos; set `--config.data.patches_per_image=1` to keep the
  reference's sampling where the host is fast enough.

  python train.py --config=configs/gpu.py --workdir=runs/gpu
"""

import os

from configs import default


def get_config():
  """Returns the accelerator configuration."""
  c = default.get_config()
  c.model.compute_dtype = 'bfloat16'  # Mixed precision: bfloat16 compute, float32 params.
  c.data.num_workers = max(1, (os.cpu_count() or 4) - 2)  # All cores but the trainer's.
  c.data.patches_per_image = 4  # A decode feeds 4 patches: ~2x patches per CPU-second.
  return c
