"""Upscaling image files and folders with a trained generator (`infer.py`).

Reads what users bring through `image_io` (any size, 8/16-bit, grayscale, alpha,
PNG/TIFF/JPEG/WebP/BMP), runs the generator tile by tile (`tiling`), and writes
the result alike: 16-bit in -> 16-bit out, grayscale in -> grayscale out, alpha
upscaled separately (bicubic) and re-attached.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import jax
import ml_collections
import numpy as np
import tqdm

from srrgan_jax import errors
from srrgan_jax import eval_sets
from srrgan_jax import files
from srrgan_jax import image_io
from srrgan_jax import interpolation
from srrgan_jax import models
from srrgan_jax import population_runs
from srrgan_jax import tiling

COMPUTE_DTYPES = ('float32', 'bfloat16')


class InferenceError(errors.UserError, ValueError):
  """Bad inference options or a model that cannot be used; raised before any work."""


def load_model(*, workdir: str = '', checkpoint: str = '', use_ema: bool = True,
               interpolate: Optional[float] = None, member: str = ''
               ) -> tuple[ml_collections.ConfigDict, dict]:
  """(config, generator params) of a run directory's selected model or a checkpoint.

  interpolate: alpha of the run's network interpolation (`interpolation`)
    instead of its selected model.
  member: of a population run, the member (index or field=value) instead of
    the selected one (`population_runs`).
  """
  if bool(workdir) == bool(checkpoint):
    raise InferenceError('Pass exactly one of --workdir RUN_DIR (the run\'s selected '
                         'model) or --checkpoint PATH.')
  remedy = 'Use the checkpoint together with the run directory it was trained in.'
  if interpolate is not None:
    if not workdir:
      raise InferenceError('--interpolate blends two checkpoints of a run: pass '
                           '--workdir RUN_DIR instead of --checkpoint.')
    return interpolation.load_interpolated(workdir, interpolate, use_ema=use_ema,
                                           member=member, remedy=remedy)
  return population_runs.load_model(workdir=workdir, checkpoint=checkpoint, member=member,
                                    use_ema=use_ema, remedy=remedy)


class Upscaler:
  """A generator plus tiling settings: upscales float RGB images in [0, 1].

  tile=0 runs the whole image in one forward call (recompiles per image size and
  needs memory for the whole image: for benchmarks and small images). Tiling
  settings default to `config.inference`, the batch size to 1 on a CPU.
  `workers` forward calls run at once (`tiling.upscale_tiled`); default 2 for
  the JAX generator on a CPU (one tile keeps the cores only partly busy), else 1.
  `forward` replaces the JAX generator (e.g. `onnx_inference.OnnxForward`;
  `params` are then unused): a callable with GeneratorForward's call signature
  and `size_multiple`.
  """

  def __init__(self, config: ml_collections.ConfigDict, params, *,
               tile: Optional[int] = None, overlap: Optional[int] = None,
               batch_size: Optional[int] = None, margin: Optional[int] = None,
               compute_dtype: Optional[str] = None, forward=None,
               workers: Optional[int] = None):
    inference = config.inference
    self.config = config
    self.scale = int(config.scale)
    self.tile = inference.tile if tile is None else int(tile)
    self.overlap = inference.overlap if overlap is None else int(overlap)
    if batch_size is None:
      # On a CPU a batch is not faster per tile than one tile, and the padded
      # last batch would only waste work.
      batch_size = 1 if jax.default_backend() == 'cpu' else inference.batch_size
    self.batch_size = int(batch_size)
    if workers is None:
      workers = 2 if forward is None and jax.default_backend() == 'cpu' else 1
    self.workers = int(workers)
    self.margin = margin
    if compute_dtype and compute_dtype not in COMPUTE_DTYPES:
      raise InferenceError(f'compute_dtype={compute_dtype!r}: use one of {COMPUTE_DTYPES}.')
    if forward is None:
      self.generator = models.GeneratorForward(config, compute_dtype=compute_dtype)
      self.params = jax.device_put(params)
      forward, self.size_multiple = self.generator.bind(self.params), self.generator.size_multiple
    else:
      self.size_multiple = forward.size_multiple
    self.forward = forward  # lr_BHWC -> HR, both in [-1, 1].
    multiple = self.size_multiple
    if self.tile < 0 or self.tile % multiple:
      raise InferenceError(
          f'--tile {self.tile}: the generator needs tiles that are a multiple of '
          f'{multiple} LR pixels (or 0 for whole-image inference); try 128.')
    if self.tile and not 0 <= self.overlap < self.tile:
      raise InferenceError(f'--overlap {self.overlap}: must be >= 0 and smaller than '
                           f'--tile {self.tile}; try {self.tile // 4}.')
    if self.batch_size < 1:
      raise InferenceError(f'--batch_size {self.batch_size}: must be at least 1.')
    if self.workers < 1:
      raise InferenceError(f'workers={self.workers}: must be at least 1.')

  def num_tiles(self, height: int, width: int) -> int:
    return tiling.count_tiles(height, width, self.tile, self.overlap) if self.tile else 1

  def upscale(self, rgb: np.ndarray, progress: Optional[Callable[[int], None]] = None
              ) -> np.ndarray:
    """(H, W, 3) [0, 1] -> (H*scale, W*scale, 3) float32 in [0, 1]."""
    lr = models.from_unit(np.asarray(rgb, np.float32))
    if self.tile:
      hr = tiling.upscale_tiled(self.forward, lr, scale=self.scale, tile=self.tile,
                                overlap=self.overlap, batch_size=self.batch_size,
                                margin=self.margin, progress=progress,
                                workers=self.workers)
    else:
      hr = tiling.upscale_whole(self.forward, lr, scale=self.scale,
                                multiple=self.size_multiple)
      if progress is not None:
        progress(1)
    return models.to_unit(hr, in_place=True)


def resize_to(pixels: np.ndarray, height: int, width: int, *, smooth: bool = False
              ) -> np.ndarray:
  """Resizes with Lanczos (enlarging) or area averaging (shrinking); clips to [0, 1].

  smooth=True uses bicubic, for alpha masks where Lanczos ringing shows.
  """
  if pixels.shape[:2] == (height, width):
    return pixels
  if height < pixels.shape[0] or width < pixels.shape[1]:
    interpolation = cv2.INTER_AREA
  else:
    interpolation = cv2.INTER_CUBIC if smooth else cv2.INTER_LANCZOS4
  resized = cv2.resize(pixels, (width, height), interpolation=interpolation)
  return np.clip(resized, 0.0, 1.0, out=resized)


def degrade_for_demo(image: image_io.LoadedImage, config: ml_collections.ConfigDict
                     ) -> image_io.LoadedImage:
  """The image as evaluation's deterministic degradation makes it (same per-name seed)."""
  from srrgan_jax import degradation
  scale = int(config.scale)
  if image.height < scale or image.width < scale:
    raise image_io.ImageReadError(f'{image.path}: {image.width}x{image.height} pixels is '
                                  f'too small to degrade by {scale}x.')
  seed = eval_sets.eval_image_seed(image.path, config.degradation)
  rgb = degradation.degrade_deterministic(image.rgb, seed, config.degradation, scale)
  alpha = None
  if image.alpha is not None:
    alpha = resize_to(image.alpha, rgb.shape[0], rgb.shape[1])
  return dataclasses.replace(image, rgb=rgb, alpha=alpha)


def upscale_image(upscaler: Upscaler, image: image_io.LoadedImage, *,
                  out_size: Optional[tuple[int, int]] = None,
                  progress: Optional[Callable[[int], None]] = None
                  ) -> tuple[np.ndarray, Optional[np.ndarray]]:
  """(rgb, alpha) of the upscaled image, resized to `out_size` (height, width) if given."""
  rgb = upscaler.upscale(image.rgb, progress)
  height, width = rgb.shape[:2]
  if out_size is not None:
    height, width = out_size
    rgb = resize_to(rgb, height, width)
  alpha = None
  if image.alpha is not None:
    alpha = resize_to(image.alpha, height, width, smooth=True)
  return rgb, alpha


@dataclasses.dataclass(frozen=True)
class Job:
  """One input file and where its upscaled version goes."""
  source: Path
  target: Path


def output_suffix(source: Path, ext: str) -> str:
  """The output file extension: the source's for ext='auto', else `ext`."""
  if ext in ('', 'auto'):
    if source.suffix.lower() not in image_io.IMAGE_SUFFIXES:  # e.g. a GIF: refused now,
      raise InferenceError(                                   # not after the model ran.
          f'{source}: cannot write {source.suffix or "suffix-less"} outputs; pass --ext '
          f'with one of {", ".join(s.lstrip(".") for s in image_io.IMAGE_SUFFIXES)}.')
    return source.suffix
  suffix = '.' + ext.lower().lstrip('.')
  if suffix not in image_io.IMAGE_SUFFIXES:
    raise InferenceError(f'--ext {ext}: unsupported output format; use auto or one of '
                         f'{", ".join(s.lstrip(".") for s in image_io.IMAGE_SUFFIXES)}.')
  return suffix


def plan_jobs(input_path, output_path, *, suffix: str = '', ext: str = 'auto') -> list[Job]:
  """Maps the input file or folder (recursively) to output paths.

  A folder keeps its sub-folder layout under OUTPUT. A single file goes to OUTPUT
  if that names an image file, else into the folder OUTPUT. Output names are
  `<stem><suffix><ext>`.
  """
  source_root, output_root = Path(input_path), Path(output_path)
  if not source_root.exists():
    raise InferenceError(f'{source_root}: input file or folder does not exist.')

  def target_name(source: Path) -> str:
    return source.stem + suffix + output_suffix(source, ext)

  if source_root.is_dir():
    if output_root.is_file():
      raise InferenceError(f'{output_root}: is a file, but the input {source_root} is a '
                           'folder; pass an output folder.')
    jobs = [Job(s, output_root / s.relative_to(source_root).parent / target_name(s))
            for s in image_io.list_images(source_root)]
  elif output_root.suffix.lower() in image_io.IMAGE_SUFFIXES and not output_root.is_dir():
    if ext not in ('', 'auto'):
      output_root = output_root.with_suffix(output_suffix(source_root, ext))
    jobs = [Job(source_root, output_root)]
  else:
    jobs = [Job(source_root, output_root / target_name(source_root))]
  by_target = {}
  for job in jobs:
    # samefile also catches a hard link of the input (same inode, another name).
    if job.target.resolve() == job.source.resolve() or (
        job.target.exists() and os.path.samefile(job.target, job.source)):
      raise InferenceError(f'{job.source}: the output would replace the input; choose '
                           'another output folder or a --suffix.')
    if job.target in by_target:
      raise InferenceError(f'{by_target[job.target].source} and {job.source} would both be '
                           f'written to {job.target}; use --ext auto or rename one.')
    by_target[job.target] = job
  return jobs


def check_writable(jobs: Sequence[Job]) -> None:
  """Fails before any work if an output could not be written.

  Probes, with a temporary file, the nearest existing folder of every output
  (folders are created only when an image is written).
  """
  for job in jobs:
    if job.target.is_dir():
      raise InferenceError(f'{job.target}: is a folder, cannot write the image there.')
  for folder in sorted({job.target.parent for job in jobs}):
    existing = folder
    while not existing.exists() and existing != existing.parent:
      existing = existing.parent
    if not existing.is_dir():
      raise InferenceError(f'{folder}: cannot create the output folder because '
                           f'{existing} is a file; choose another output path.')
    try:
      files.probe_writable(existing)
    except OSError as e:
      raise InferenceError(f'{folder}: cannot write the output here ({e.strerror or e}); '
                           'choose another output path or fix its permissions.') from e


def _kept(job: Job, overwrite: bool) -> bool:
  """True if the job's output exists whole and is not to be replaced.

  Outputs are written atomically, but a file cut short by an older version or
  another tool is not trusted: it is reported and written again.
  """
  if overwrite or not job.target.exists():
    return False
  if not image_io.is_complete(job.target):
    print(f'{job.target}: incomplete (an interrupted write?); writing it again.',
          file=sys.stderr)
    return False
  return True


@dataclasses.dataclass
class Summary:
  """What `upscale_files` did."""
  written: list[Path] = dataclasses.field(default_factory=list)
  existing: list[Path] = dataclasses.field(default_factory=list)  # Kept: no --overwrite.
  failed: list[tuple[Path, str]] = dataclasses.field(default_factory=list)


def upscale_files(upscaler: Upscaler, jobs: Sequence[Job], *, outscale: Optional[float] = None,
                  overwrite: bool = False, degrade: bool = False,
                  show_progress: bool = True) -> Summary:
  """Upscales every job; unreadable inputs are reported and skipped."""
  summary = Summary()
  bar = tqdm.tqdm(jobs, unit='image', disable=not show_progress, file=sys.stderr)
  warned_alpha = False
  for job in bar:
    bar.set_postfix_str(job.source.name, refresh=False)
    if _kept(job, overwrite):
      bar.write(f'{job.target}: exists, kept (pass --overwrite to replace it).')
      summary.existing.append(job.target)
      continue
    try:
      image = image_io.read_image(job.source)
      out_size = None
      if outscale is not None:  # Relative to the file, also with --degrade.
        out_size = (max(1, round(image.height * outscale)),
                    max(1, round(image.width * outscale)))
      if degrade:
        image = degrade_for_demo(image, upscaler.config)
    except image_io.ImageReadError as e:
      bar.write(f'Skipped: {e}')
      summary.failed.append((job.source, str(e)))
      continue
    tiles = upscaler.num_tiles(image.height, image.width)
    with tqdm.tqdm(total=tiles, unit='tile', leave=False, file=sys.stderr,
                   disable=not show_progress or len(jobs) > 1 or tiles < 2) as tile_bar:
      rgb, alpha = upscale_image(upscaler, image, out_size=out_size, progress=tile_bar.update)
    if alpha is not None and job.target.suffix.lower() in ('.jpg', '.jpeg', '.bmp') \
        and not warned_alpha:
      bar.write(f'{job.target}: {job.target.suffix} has no alpha channel; transparency '
                'is dropped (use --ext png to keep it).')
      warned_alpha = True
    image_io.write_image(job.target, rgb, alpha, bit_depth=image.bit_depth,
                         grayscale=image.grayscale, icc_profile=image.icc_profile)
    summary.written.append(job.target)
  return summary


def run(input_path, output_path, *, workdir: str = '', checkpoint: str = '',
        use_ema: bool = True, tile: Optional[int] = None, overlap: Optional[int] = None,
        batch_size: Optional[int] = None, outscale: Optional[float] = None,
        degrade: bool = False, suffix: str = '', ext: str = 'auto', overwrite: bool = False,
        compute_dtype: Optional[str] = None, show_progress: bool = True,
        onnx: str = '', interpolate: Optional[float] = None, member: str = '') -> Summary:
  """Upscales a file or folder with a run's selected model, a checkpoint or an ONNX file.

  Everything that can be checked (paths, options, the model) is checked before
  the first image is processed.
  """
  if outscale is not None and not outscale > 0:
    raise InferenceError(f'--outscale {outscale}: must be a positive factor.')
  if onnx and (workdir or checkpoint or degrade or compute_dtype or member or
               interpolate is not None):
    raise InferenceError(f'--onnx {onnx}: runs the exported file alone; drop --workdir, '
                         '--checkpoint, --member, --interpolate, --degrade (needs the '
                         'run\'s config) and --compute_dtype (the file has its own '
                         'precision).')
  jobs = plan_jobs(input_path, output_path, suffix=suffix, ext=ext)
  check_writable(jobs)
  existing = [job.target for job in jobs if _kept(job, overwrite)]
  todo = [job for job in jobs if job.target not in existing]
  if todo and Path(input_path).is_file():  # One file: refuse it before loading a model.
    try:
      image_io.read_image(input_path)
    except image_io.ImageReadError as e:
      raise InferenceError(str(e)) from e
  summary = Summary()
  # The model is loaded, so checked, even when every output exists already: a
  # wrong --workdir, --checkpoint or --member is an error on every run.
  if onnx:
    from srrgan_jax import onnx_inference  # onnxruntime loads only when asked for.
    upscaler = onnx_inference.upscaler(onnx, tile=tile, overlap=overlap,
                                       batch_size=batch_size)
  else:
    config, params = load_model(workdir=workdir, checkpoint=checkpoint, use_ema=use_ema,
                                interpolate=interpolate, member=member)
  if todo:
    if not onnx:
      upscaler = Upscaler(config, params, tile=tile, overlap=overlap,
                          batch_size=batch_size, compute_dtype=compute_dtype)
    # `todo` holds only outputs to write (missing, incomplete, or --overwrite).
    summary = upscale_files(upscaler, todo, outscale=outscale, overwrite=True,
                            degrade=degrade, show_progress=show_progress)
  summary.existing[:0] = existing
  kept = (f'{len(summary.existing)} existing output(s) kept (--overwrite replaces them).'
          if summary.existing else '')
  print(f'Wrote {len(summary.written)} image(s) to {output_path}. {kept}'.rstrip())
  if summary.failed:
    print(f'{len(summary.failed)} file(s) could not be read and were skipped:',
          file=sys.stderr)
    for path, _ in summary.failed:
      print(f'  {path}', file=sys.stderr)
  return summary

