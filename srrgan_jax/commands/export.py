"""`srrgan-export --workdir RUN --format onnx -o model.onnx`: export the generator.

  srrgan-export --workdir runs/quickstart --format onnx -o model.onnx
  srrgan-export --workdir runs/quickstart --format onnx --fp16 -o model_fp16.onnx
  srrgan-export --checkpoint runs/x/checkpoints/phase3/4000 --format stablehlo -o model.shlo
  srrgan-export --workdir runs/population --member gan_weight=0.05 -o model.onnx
  python -m srrgan_jax.commands.export ...   (the same)

Exports the run's selected model as infer.py uses it (EMA weights unless --raw;
of a population run, the selected member unless --member names one) as ONNX
(via jax2onnx) or as a serialized StableHLO program (jax.export). Both take
NCHW RGB batches in [0, 1] and return the upscaled batch in [0, 1]; height and
width must be multiples of 8; run them on tiles of the trained size (README
"Exporting").
"""

from absl import app
from absl import flags
from absl import logging

from srrgan_jax import commands

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Training run directory: exports its selected model.')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'A checkpoint step directory (or checkpoints/phaseN directory) '
    'instead of --workdir.')
_RAW = flags.DEFINE_bool(
    'raw', False, 'Export the raw generator weights instead of their EMA.')
_MEMBER = flags.DEFINE_string('member', None, commands.MEMBER_HELP)
_FORMAT = flags.DEFINE_string(
    'format', 'onnx', 'onnx (for onnxruntime, OpenVINO, TensorRT, chaiNNer) or stablehlo '
    '(a jax.export program for JAX serving).')
_OUTPUT = flags.DEFINE_string('output', None, 'The file to write.', short_name='o')
_FP16 = flags.DEFINE_bool(
    'fp16', False, 'float16 weights, convolutions and input/output tensors (half the file '
    'size; for GPUs).')

flags.mark_flags_as_required(['output'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax's restore chatter is not news here.
  # Imported late so --help stays fast.
  from srrgan_jax import export
  from srrgan_jax import inference
  export.check_format(_FORMAT.value)  # Both before loading a model.
  export.check_output_path(_OUTPUT.value)
  config, params = inference.load_model(workdir=_WORKDIR.value or '',
                                        checkpoint=_CHECKPOINT.value or '',
                                        use_ema=not _RAW.value,
                                        member=_MEMBER.value or '')
  export.export(config, params, _OUTPUT.value, format=_FORMAT.value, fp16=_FP16.value)
  hints = export.tiling_metadata(config, fp16=_FP16.value)
  print(f'Wrote {_OUTPUT.value} ({_FORMAT.value}, x{hints["scale"]}, {hints["precision"]}): '
        f'NCHW RGB in [0, 1]; height and width multiples of {hints["size_multiple"]}; run '
        f'{hints["tile"]}px tiles overlapping by {hints["overlap"]}px (trained on '
        f'{hints["trained_tile"]}px).')


def run():
  """Entry point of the srrgan-export console script."""
  commands.run_app(main, __name__, 'srrgan-export')


if __name__ == '__main__':
  run()
