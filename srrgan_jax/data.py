"""Image folders -> training batches: the Grain training pipeline.

Training (`make_train_iterator`) is a Grain pipeline:

  file paths -> seeded shuffle (new order every epoch) -> this host's patch
  references -> batch -> load + crop + augment + degrade -> prefetch in
  `config.data.num_workers` processes.

Global batch `s` holds samples `[s*B, (s+1)*B)` of the global stream (B =
`data.batch_size`); host `p` of `P` builds its rows `[p*B/P, (p+1)*B/P)`, so the
hosts' batches of a step are exactly the one-host batch of that step. Sample
number `index` of the global stream comes from record `index //
patches_per_image` of the shuffled file list and draws all its randomness from
`np.random.default_rng([seed, index, stream])` (stream 0: crop/flips/colour,
stream 1: degradation), so `training_sample` rebuilds any sample exactly. The
batches depend neither on the worker count nor on the host count.

A batch is {'lr': float32 in [-1, 1], 'hr': uint8}: the HR target travels as
the 8-bit rounding of the float patch (at most 0.5/255 from it; the train step
maps it to [-1, 1] on the devices), a quarter of the float32 bytes to copy
between processes and to the accelerators. Worker processes build their
batches directly in shared memory, which Grain then hands to the trainer by
name. Of an 8-bit PNG only the top rows that the batch's crops of it need are
decoded (PNG rows are compressed in order; the crop rows are drawn from the
header's height before decoding, so the samples are the same as from the
whole image). With `data.decoded_cache_gb` > 0 the decoded images are kept on
disk and memory-mapped in later epochs (`decoded_cache`).

Evaluation sets live in `eval_sets`, the built-in sample photos in
`sample_photos`, the sub-image preparation in `subimages`.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import functools
import gc
import math
import sys
import weakref
from pathlib import Path
from typing import Any, Optional, Sequence

from absl import flags
from absl import logging
import cv2
import grain
from grain import multiprocessing as grain_multiprocessing
import numpy as np

from srrgan_jax import augment
from srrgan_jax import decoded_cache
from srrgan_jax import errors
from srrgan_jax import image_io
from srrgan_jax import sample_photos
from srrgan_jax import training_degradation

# Shuffling a tiny list with Grain's index_shuffle costs milliseconds per
# element; repeating the list up to this length makes it microseconds.
_MIN_SHUFFLE_LENGTH = 1024
_AUGMENT_STREAM, _DEGRADE_STREAM = 0, 1


class TrainingDataError(ValueError, errors.UserError):
  """The training folder or the data config cannot make training batches."""


# ----------------------------------------------------------------------------
# Folders and files.


def resolve_dirs(config) -> tuple[Path, Path]:
  """(train_dir, val_dir) of the config; '' means the built-in sample photos."""
  samples = None
  if not config.data.train_dir or not config.data.val_dir:
    samples = sample_photos.sample_photos_dir()
  train_dir = Path(config.data.train_dir) if config.data.train_dir else samples / 'train'
  val_dir = Path(config.data.val_dir) if config.data.val_dir else samples / 'val'
  return train_dir, val_dir


@dataclasses.dataclass(frozen=True)
class ImageScan:
  """The usable training images of a folder and those skipped, with the reason."""
  folder: str
  paths: tuple[str, ...]
  skipped: tuple[tuple[str, str], ...]  # (path, why)
  heights: tuple[int, ...]  # Of `paths`, upright, from the headers.


@functools.lru_cache(maxsize=8)
def scan_training_images(folder: str, patch_size: int) -> ImageScan:
  """Lists `folder` (recursive) and keeps images that open and hold a patch.

  Reads headers only, so truncated files pass here; the loader reports and
  replaces those when decoding fails. Logs every skipped file and the counts.
  """
  usable, heights, skipped = [], [], []
  for path in image_io.list_images(folder):  # Raises naming a missing/empty folder.
    try:
      height, width = image_io.image_size(path)
    except image_io.ImageReadError as e:
      skipped.append((str(path), str(e)))
      continue
    if height < patch_size or width < patch_size:
      skipped.append((str(path), f'{path}: {width}x{height} pixels is smaller than '
                      f'the {patch_size}x{patch_size} training patch; remove it or '
                      'lower data.patch_size.'))
      continue
    usable.append(str(path))
    heights.append(height)
  for _, why in skipped:
    logging.warning('Skipping training image: %s', why)
  logging.info('Training images in %s: %d used, %d skipped.', folder, len(usable),
               len(skipped))
  if not usable:
    raise TrainingDataError(f'{folder}: none of its {len(skipped)} images is usable for '
                     f'{patch_size}px training patches (see the warnings above).')
  return ImageScan(str(folder), tuple(usable), tuple(skipped), tuple(heights))


def decode_pixels(path: str) -> np.ndarray:
  """Decodes to RGB (H, W, 3) keeping the integer type (uint8/uint16) or float32.

  Training cuts patches from this and converts only them to float, which is
  ~35% faster than `image_io.read_rgb` on DIV2K frames. Gray is replicated,
  alpha dropped and the EXIF orientation applied, as in `image_io`.
  """
  return image_io.decode_raw(path, cv2.IMREAD_COLOR_RGB | cv2.IMREAD_ANYDEPTH)


def _pixels_of(path: str, cache: Optional[decoded_cache.DecodedCache]) -> np.ndarray:
  """The whole decoded image, from the decoded-image cache when there is one."""
  pixels = decode_pixels(path) if cache is None else cache.load(path, decode_pixels)
  pixels.flags.writeable = False
  return pixels


def make_decoded_cache(config) -> Optional[decoded_cache.DecodedCache]:
  """The decoded-image cache `data.decoded_cache_gb` asks for, or None when it is 0."""
  gb = float(config.data.decoded_cache_gb)
  if gb == 0:
    return None
  folder = config.data.decoded_cache_dir or decoded_cache.default_folder()
  return decoded_cache.DecodedCache(folder, gb)


# ----------------------------------------------------------------------------
# Training samples.


def _plain(config_block) -> Any:
  """A picklable, fast-to-read copy of a ConfigDict block for worker processes."""
  return argparse.Namespace(**config_block.to_dict())


def sample_rng(seed: int, sample_index: int, stream: int) -> np.random.Generator:
  """The generator of one of a sample's random streams (_AUGMENT_STREAM, _DEGRADE_STREAM)."""
  return np.random.default_rng([seed % 2**64, sample_index, stream])


def crop_bottom(height: int, sample_index: int, *, seed: int, patch_size: int) -> int:
  """How many top rows of a `height`-row image sample `sample_index`'s crop needs."""
  rng = sample_rng(seed, sample_index, _AUGMENT_STREAM)
  return augment.random_top(height, patch_size, rng) + patch_size


def training_sample(pixels: np.ndarray, sample_index: int, *, seed: int,
                    patch_size: int, scale: int, augment_cfg, degradation_cfg,
                    height: Optional[int] = None, return_params: bool = False):
  """HR patch and its LR, float32 in [0, 1], for global sample `sample_index`.

  `pixels` is the decoded image (`decode_pixels`) of the sample's record, or
  its top `crop_bottom(height, ...)` rows or more, with `height` its full height.
  """
  rng = sample_rng(seed, sample_index, _AUGMENT_STREAM)
  patch, geometry = augment.random_geometry(pixels, patch_size, rng, augment_cfg,
                                            height=height, return_params=True)
  hr, colour = augment.colour_jitter(jitter_input(patch), rng, augment_cfg,
                                     return_params=True)
  hr, lr, degrade = training_degradation.degrade_training(
      hr, sample_rng(seed, sample_index, _DEGRADE_STREAM), degradation_cfg, scale)
  if return_params:
    return hr, lr, {**geometry, **colour, **degrade}
  return hr, lr


def jitter_input(patch: np.ndarray) -> np.ndarray:
  """The patch as colour jitter takes it: 8/16-bit as they are, anything else in [0, 1]."""
  if patch.dtype in (np.uint8, np.uint16):
    return patch  # Colour jitter scales these in its first pass.
  return image_io.to_unit_float(patch)  # Clips float pixels; names other types.


def hr_to_uint8(hr: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
  """An HR patch in [0, 1] rounded to the nearest of 0..255 (error <= 0.5/255)."""
  if out is None:
    out = np.empty(hr.shape, np.uint8)
  cv2.convertScaleAbs(hr, dst=out, alpha=255.0)  # Rounds to nearest, saturates.
  return out


class _PatchRefs(grain.MapDataset):
  """Sample j of this host -> (path, global sample index), patches_per_image per record.

  The host's samples are its rows of each global batch, a contiguous block: the
  hosts of a step together load exactly the one-host batch, in the same order
  (so on the same devices), and each reads only its share of the records.
  """

  _MUTATES_ELEMENT_SPEC = True

  def __init__(self, parent: grain.MapDataset, patches_per_image: int, host_batch: int,
               process_index: int, process_count: int):
    super().__init__(parent)
    self._per_image = patches_per_image
    self._host_batch = host_batch
    self._process_index = process_index
    self._process_count = process_count

  def __len__(self) -> int:
    return sys.maxsize

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    step, row = divmod(index, self._host_batch)
    sample = (step * self._process_count + self._process_index) * self._host_batch + row
    return self._parent[sample // self._per_image], sample

  def __str__(self) -> str:
    return f'_PatchRefs(patches_per_image={self._per_image})'


class _LoadBatch(grain.transforms.Map):
  """[(path, sample index)] -> {'lr': float32 in [-1, 1], 'hr': uint8} batches."""

  def __init__(self, config, paths: Sequence[str], heights: Sequence[int] = ()):
    self._seed = int(config.seed)
    self._patch = int(config.data.patch_size)
    self._scale = int(config.scale)
    self._augment = _plain(config.augment)
    self._degradation = training_degradation.plain_config(config.degradation)
    self._paths = tuple(paths)
    self._heights = dict(zip(paths, heights))
    self._cache = make_decoded_cache(config)
    # The last two images decoded, as `_top_rows` returns them: consecutive
    # batches often cut from the same image (patches_per_image).
    self._recent: dict[str, tuple[np.ndarray, Optional[int]]] = {}

  def _rows_needed(self, refs) -> dict[str, int]:
    """{path: rows from the top that the batch's crops of it need} for images of known height.

    Empty with the decoded-image cache, which maps whole images.
    """
    rows = {}
    if self._cache is not None:
      return rows
    for path, sample_index in refs:
      if path in self._heights:
        bottom = crop_bottom(self._heights[path], sample_index, seed=self._seed,
                             patch_size=self._patch)
        rows[path] = max(rows.get(path, 0), bottom)
    return rows

  def _top_rows(self, path: str, rows: Optional[int]) -> tuple[np.ndarray, Optional[int]]:
    """(pixels, the full height if `pixels` holds only the top rows, else None) of `path`.

    Decodes only the top `rows` rows (None: all) where the file allows it (8-bit
    PNGs): a crop near the top of a tall photo then costs a fraction of a whole
    decode. Raises ImageReadError as `_pixels_of` does.
    """
    if path in self._recent:
      pixels, partial_height = self._recent[path]
      if partial_height is None or (rows is not None and pixels.shape[0] >= rows):
        return pixels, partial_height
    height = self._heights.get(path)
    pixels = None
    if rows is not None and height is not None and rows < height:
      pixels = image_io.decode_png_top_rows(path, rows, height)
    if pixels is None:
      decoded = _pixels_of(path, self._cache), None
    else:
      pixels.flags.writeable = False
      decoded = pixels, height
    self._recent.pop(path, None)
    self._recent[path] = decoded
    while len(self._recent) > 2:
      del self._recent[next(iter(self._recent))]  # The oldest.
    return decoded

  def _decode_or_replace(self, path: str,
                         rows: Optional[int] = None) -> tuple[np.ndarray, Optional[int]]:
    """`_top_rows` of `path`; if it fails, reports it and uses the next file that works (whole)."""
    try:
      return self._top_rows(path, rows)
    except image_io.ImageReadError as e:
      logging.warning('Training image failed to decode (using the next one): %s', e)
    start = self._paths.index(path)
    for offset in range(1, len(self._paths)):
      candidate = self._paths[(start + offset) % len(self._paths)]
      try:
        return _pixels_of(candidate, self._cache), None
      except image_io.ImageReadError as e:
        logging.warning('Training image failed to decode: %s', e)
    raise image_io.ImageReadError('None of the training images decodes; see the '
                                  'warnings above.')

  def map(self, refs):
    size, low = self._patch, self._patch // self._scale
    batch = new_batch(len(refs), size, low, shared=_IN_WORKER_PROCESS)
    # Plain views to write through: OpenCV then fills the rows in place.
    hr_out, lr_out = batch['hr'].view(np.ndarray), batch['lr'].view(np.ndarray)
    try:
      rows = self._rows_needed(refs)
      for i, (path, sample_index) in enumerate(refs):
        pixels, height = self._decode_or_replace(path, rows.get(path))
        hr, lr = training_sample(
            pixels, sample_index, seed=self._seed, patch_size=size, scale=self._scale,
            augment_cfg=self._augment, degradation_cfg=self._degradation, height=height)
        hr_to_uint8(hr, out=hr_out[i])
        cv2.addWeighted(lr, 2.0, lr, 0.0, -1.0, dst=lr_out[i])  # To [-1, 1] in one pass.
    except BaseException:
      for array in batch.values():  # Nobody else will unlink its shared memory.
        if isinstance(array, grain_multiprocessing.SharedMemoryArray):
          array.unlink_on_del()
      raise
    return batch


def new_batch(rows: int, size: int, low: int, *, shared: bool) -> dict[str, np.ndarray]:
  """Empty {'lr', 'hr'} arrays of a batch; `shared`: in shared memory.

  Grain hands a worker's batch to the trainer through shared memory; arrays
  that already live there travel by name, saving a copy of every batch (and
  the page faults of a private buffer) in the worker.
  """
  make = grain_multiprocessing.SharedMemoryArray if shared else np.empty
  return {'lr': make((rows, low, low, 3), np.float32),
          'hr': make((rows, size, size, 3), np.uint8)}


def _check_shapes(config, process_count: int) -> int:
  data, scale = config.data, config.scale
  if data.patch_size % scale:
    raise TrainingDataError(f'data.patch_size={data.patch_size} is not divisible by '
                     f'scale={scale}.')
  if data.batch_size % process_count:
    raise TrainingDataError(f'data.batch_size={data.batch_size} does not split evenly over '
                     f'{process_count} hosts; use a multiple of {process_count}.')
  if data.patches_per_image < 1:
    raise TrainingDataError(f'data.patches_per_image={data.patches_per_image} must be >= 1.')
  return data.batch_size // process_count


def _ensure_absl_flags_parsed():
  # Grain reads its absl flags when it starts worker processes; programs that
  # did not go through absl.app.run (tests, notebooks) have not parsed them.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


# True in Grain's worker processes: batches are built in shared memory there. In
# the training process a shared-memory array would never be unlinked.
_IN_WORKER_PROCESS = False


def _init_worker(worker_index: int, worker_count: int):
  del worker_index, worker_count
  global _IN_WORKER_PROCESS
  _IN_WORKER_PROCESS = True
  cv2.setNumThreads(1)  # Processes already use every core; OpenCV threads only contend.


def train_dataset(config, *, process_index: int = 0, process_count: int = 1,
                  train_dir: Optional[str] = None) -> grain.IterDataset:
  """The training pipeline as a Grain IterDataset (see the module docstring)."""
  host_batch = _check_shapes(config, process_count)
  if train_dir is None:
    train_dir = resolve_dirs(config)[0]
  scan = scan_training_images(str(train_dir), int(config.data.patch_size))
  paths = list(scan.paths)
  records = grain.MapDataset.source(paths)
  copies = math.ceil(_MIN_SHUFFLE_LENGTH / len(paths))
  if copies > 1:
    records = records.repeat(copies, reseed_each_epoch=False)
  records = records.shuffle(seed=int(config.seed) % 2**32).repeat()
  batches = _PatchRefs(records, int(config.data.patches_per_image), host_batch,
                       process_index, process_count)
  batches = batches.batch(host_batch, drop_remainder=True, batch_fn=list)
  batches = batches.map(_LoadBatch(config, paths, scan.heights))
  workers = int(config.data.num_workers)
  buffer = max(1, int(config.data.prefetch_buffer_size))
  threads = int(config.data.num_threads) if workers == 0 else 0
  ds = batches.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                 prefetch_buffer_size=buffer))
  if workers > 0:
    _ensure_absl_flags_parsed()
    ds = ds.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=workers,
                                     per_worker_buffer_size=buffer),
        worker_init_fn=_init_worker)
  return ds


class TrainIterator(grain.DatasetIterator):
  """Grain's training iterator, closed and released before Python shuts down.

  Grain's prefetch iterators that are still alive while the interpreter tears
  down modules raise from `__del__` (and leak shared memory); closing them at
  exit, while everything is still importable, keeps the exit quiet.
  """

  def __init__(self, pipeline: grain.DatasetIterator):
    super().__init__(pipeline)
    _OPEN_TRAIN_ITERATORS.add(self)

  def __next__(self):
    self._assert_not_closed()
    return next(self._parent)

  def get_state(self) -> dict[str, Any]:
    return self._parent.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state)

  def close(self) -> None:
    """Stops the worker processes and threads (idempotent)."""
    if self._closed:
      return
    super().close()
    self._parents = ()  # Free the pipeline now rather than at interpreter teardown.


_OPEN_TRAIN_ITERATORS = weakref.WeakSet()


@atexit.register
def _close_open_train_iterators():
  for iterator in list(_OPEN_TRAIN_ITERATORS):
    iterator.close()
  gc.collect()  # Collect the closed pipelines' reference cycles while modules exist.


def make_train_iterator(config, *, process_index: int = 0, process_count: int = 1,
                        train_dir: Optional[str] = None) -> TrainIterator:
  """Infinite iterator of this host's training batches {'lr', 'hr'} (module docstring).

  Batches hold `data.batch_size // process_count` samples. `get_state()` /
  `set_state()` resume at the identical next batch; `close()` stops the worker
  processes (done at exit otherwise).
  """
  return TrainIterator(iter(train_dataset(config, process_index=process_index,
                                          process_count=process_count,
                                          train_dir=train_dir)))


def train_steps_per_epoch(config, train_dir: Optional[str] = None) -> int:
  """`data.steps_per_epoch`, or when 0 one pass: usable images * patches / batch."""
  if config.data.steps_per_epoch:
    return int(config.data.steps_per_epoch)
  if train_dir is None:
    train_dir = resolve_dirs(config)[0]
  images = len(scan_training_images(str(train_dir), int(config.data.patch_size)).paths)
  return max(1, images * int(config.data.patches_per_image) // int(config.data.batch_size))
