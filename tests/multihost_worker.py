"""One process of the two-process training test in `test_multihost.py` (not a test).

    python tests/multihost_worker.py CONFIG_JSON WORKDIR COORDINATOR PROCESS_ID \
        STOP_PHASE STOP_STEP

Joins `jax.distributed` through the run's own `config.distributed` and sets up
XLA:CPU as train.py does, trains with `loop.run` until STOP_STEP of STOP_PHASE
(an interruption), then checks that evaluation refuses to run on several
processes. The caller sets XLA_FLAGS/JAX_PLATFORMS (fake CPU devices) and
SRRGAN_WEIGHTS_DIR.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from srrgan_jax import evaluation  # pylint: disable=g-import-not-at-top
from srrgan_jax import run_dir
from srrgan_jax import xla_cpu
from srrgan_jax.train import loop


def main(config_json, workdir, coordinator, process_id, stop_phase, stop_step):
  xla_cpu.use_eigen_convolutions()  # Same convolutions as train.py: same numbers.
  config = run_dir.config_from_dict(json.loads(pathlib.Path(config_json).read_text()))
  dist = config.distributed
  dist.initialize = True
  dist.coordinator_address = coordinator
  dist.num_processes = 2
  dist.process_id = int(process_id)
  summary = loop.run(config, workdir, stop_after_steps={int(stop_phase): int(stop_step)})
  assert summary.get('stopped') == {'phase': int(stop_phase), 'step': int(stop_step)}, summary
  try:
    evaluation.require_single_host()
  except evaluation.EvaluationError as e:
    print(f'evaluation refused: {e}', flush=True)
  else:
    raise AssertionError('evaluation accepted a 2-process launch')


if __name__ == '__main__':
  main(*sys.argv[1:])
