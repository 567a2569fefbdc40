"""Image folders -> training batches and evaluation sets; data preparation command.

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

Evaluation (`load_eval_set`) centre-crops (or keeps whole) every image of a
folder and applies the deterministic degradation with a per-image seed derived
from the file name, so every run sees the same LR images.

`python -m srrgan_jax.data --input DIR --output DIR` (console script
`srrgan-prepare-data`) cuts large images into overlapping sub-images, which
decode much faster than whole DIV2K frames.
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import dataclasses
import functools
import gc
import importlib.metadata
import importlib.util
import math
import os
import shutil
import sys
import tempfile
import weakref
import zlib
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from absl import flags
from absl import logging
import cv2
import grain
import numpy as np
import PIL.Image

from srrgan_jax import augment
from srrgan_jax import degradation
from srrgan_jax import image_io
from srrgan_jax import models
from srrgan_jax import tiling

# Shuffling a tiny list with Grain's index_shuffle costs milliseconds per
# element; repeating the list up to this length makes it microseconds.
_MIN_SHUFFLE_LENGTH = 1024
_AUGMENT_STREAM, _DEGRADE_STREAM = 0, 1


# ----------------------------------------------------------------------------
# Folders and files.


def cache_dir() -> Path:
  """`$SRRGAN_CACHE_DIR`, else `~/.cache/srrgan_jax`."""
  return Path(os.environ.get('SRRGAN_CACHE_DIR') or
              Path.home() / '.cache' / 'srrgan_jax').expanduser()


def resolve_dirs(config) -> tuple[Path, Path]:
  """(train_dir, val_dir) of the config; '' means the built-in sample photos."""
  samples = None
  if not config.data.train_dir or not config.data.val_dir:
    samples = sample_photos_dir()
  train_dir = Path(config.data.train_dir) if config.data.train_dir else samples / 'train'
  val_dir = Path(config.data.val_dir) if config.data.val_dir else samples / 'val'
  return train_dir, val_dir


def resolve_test_dir(config) -> Path:
  """`data.test_dir`, or the held-out sample photos when it is ''."""
  if config.data.test_dir:
    return Path(config.data.test_dir)
  return sample_photos_dir() / 'val'


def _image_size(path: Path) -> tuple[int, int]:
  """(height, width) from the file header when Pillow knows the format, else by decoding."""
  try:
    with PIL.Image.open(path) as img:
      width, height = img.size
    return height, width
  except Exception:  # pylint: disable=broad-except
    pixels = image_io.read_image(path).rgb  # Raises ImageReadError naming the file.
    return pixels.shape[0], pixels.shape[1]


@dataclasses.dataclass(frozen=True)
class ImageScan:
  """The usable training images of a folder and those skipped, with the reason."""
  folder: str
  paths: tuple[str, ...]
  skipped: tuple[tuple[str, str], ...]  # (path, why)


@functools.lru_cache(maxsize=8)
def scan_training_images(folder: str, patch_size: int) -> ImageScan:
  """Lists `folder` (recursive) and keeps images that open and hold a patch.

  Reads headers only, so truncated files pass here; the loader reports and
  replaces those when decoding fails. Logs every skipped file and the counts.
  """
  usable, skipped = [], []
  for path in image_io.list_images(folder):  # Raises naming a missing/empty folder.
    try:
      height, width = _image_size(path)
    except image_io.ImageReadError as e:
      skipped.append((str(path), str(e)))
      continue
    if height < patch_size or width < patch_size:
      skipped.append((str(path), f'{path}: {width}x{height} pixels is smaller than '
                      f'the {patch_size}x{patch_size} training patch; remove it or '
                      'lower data.patch_size.'))
      continue
    usable.append(str(path))
  for _, why in skipped:
    logging.warning('Skipping training image: %s', why)
  logging.info('Training images in %s: %d used, %d skipped.', folder, len(usable),
               len(skipped))
  if not usable:
    raise ValueError(f'{folder}: none of its {len(skipped)} images is usable for '
                     f'{patch_size}px training patches (see the warnings above).')
  return ImageScan(str(folder), tuple(usable), tuple(skipped))


def decode_pixels(path: str) -> np.ndarray:
  """Decodes to RGB (H, W, 3) keeping the integer type (uint8/uint16) or float32.

  Training cuts patches from this and converts only them to float, which is
  ~35% faster than `image_io.read_rgb` on DIV2K frames. Gray is replicated,
  alpha dropped and EXIF rotation ignored, as in `image_io`.
  """
  flags_ = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION
  return cv2.cvtColor(image_io.decode_raw(path, flags_), cv2.COLOR_BGR2RGB)


@functools.lru_cache(maxsize=2)
def _decode_cached(path: str) -> np.ndarray:
  # Consecutive batches often cut from the same image (patches_per_image).
  pixels = decode_pixels(path)
  pixels.flags.writeable = False
  return pixels


# ----------------------------------------------------------------------------
# Training samples.


def _plain(config_block) -> Any:
  """A picklable, fast-to-read copy of a ConfigDict block for worker processes."""
  return argparse.Namespace(**config_block.to_dict())


def training_sample(pixels: np.ndarray, sample_index: int, *, seed: int,
                    patch_size: int, scale: int, augment_cfg, degradation_cfg,
                    return_params: bool = False):
  """HR patch and its LR, float32 in [0, 1], for global sample `sample_index`.

  `pixels` is the decoded image (`decode_pixels`) of the sample's record.
  """
  words = [seed % 2**64, sample_index]
  rng = np.random.default_rng(words + [_AUGMENT_STREAM])
  patch, geometry = augment.random_geometry(pixels, patch_size, rng, augment_cfg,
                                            return_params=True)
  hr, colour = augment.colour_jitter(image_io.to_unit_float(patch), rng, augment_cfg,
                                     return_params=True)
  lr, degrade = degradation.degrade_stochastic(
      hr, np.random.default_rng(words + [_DEGRADE_STREAM]), degradation_cfg,
      scale, return_params=True)
  if return_params:
    return hr, lr, {**geometry, **colour, **degrade}
  return hr, lr


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
  """[(path, sample index)] -> {'lr', 'hr'} float32 batches in [-1, 1]."""

  def __init__(self, config, paths: Sequence[str]):
    self._seed = int(config.seed)
    self._patch = int(config.data.patch_size)
    self._scale = int(config.scale)
    self._augment = _plain(config.augment)
    self._degradation = _plain(config.degradation)
    self._paths = tuple(paths)

  def _decode_or_replace(self, path: str) -> np.ndarray:
    """Decodes `path`; if that fails, reports it and uses the next file that works."""
    try:
      return _decode_cached(path)
    except image_io.ImageReadError as e:
      logging.warning('Training image failed to decode (using the next one): %s', e)
    start = self._paths.index(path)
    for offset in range(1, len(self._paths)):
      candidate = self._paths[(start + offset) % len(self._paths)]
      try:
        return _decode_cached(candidate)
      except image_io.ImageReadError as e:
        logging.warning('Training image failed to decode: %s', e)
    raise image_io.ImageReadError('None of the training images decodes; see the '
                                  'warnings above.')

  def map(self, refs):
    size, low = self._patch, self._patch // self._scale
    hr_out = np.empty((len(refs), size, size, 3), np.float32)
    lr_out = np.empty((len(refs), low, low, 3), np.float32)
    for i, (path, sample_index) in enumerate(refs):
      hr, lr = training_sample(
          self._decode_or_replace(path), sample_index, seed=self._seed,
          patch_size=size, scale=self._scale, augment_cfg=self._augment,
          degradation_cfg=self._degradation)
      cv2.addWeighted(hr, 2.0, hr, 0.0, -1.0, dst=hr_out[i])  # To [-1, 1] in one pass.
      cv2.addWeighted(lr, 2.0, lr, 0.0, -1.0, dst=lr_out[i])
    return {'lr': lr_out, 'hr': hr_out}


def _check_shapes(config, process_count: int) -> int:
  data, scale = config.data, config.scale
  if data.patch_size % scale:
    raise ValueError(f'data.patch_size={data.patch_size} is not divisible by '
                     f'scale={scale}.')
  if data.batch_size % process_count:
    raise ValueError(f'data.batch_size={data.batch_size} does not split evenly over '
                     f'{process_count} hosts; use a multiple of {process_count}.')
  if data.patches_per_image < 1:
    raise ValueError(f'data.patches_per_image={data.patches_per_image} must be >= 1.')
  return data.batch_size // process_count


def _ensure_absl_flags_parsed():
  # Grain reads its absl flags when it starts worker processes; programs that
  # did not go through absl.app.run (tests, notebooks) have not parsed them.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _init_worker(worker_index: int, worker_count: int):
  del worker_index, worker_count
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
  batches = batches.map(_LoadBatch(config, paths))
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
  """Infinite iterator of this host's training batches {'lr', 'hr'} in [-1, 1].

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


# ----------------------------------------------------------------------------
# Evaluation.


def eval_image_seed(name: str, cfg) -> int:
  """Noise seed of an evaluation image: eval_noise_seed * 2**32 + crc32(file name)."""
  return int(cfg.eval_noise_seed) * 2**32 + zlib.crc32(Path(name).name.encode('utf-8'))


def eval_pair(path, config, crop: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
  """(HR, deterministic LR) of one evaluation image, float32 in [-1, 1].

  crop: centre crop size, or None for the whole image cropped to a multiple of
  the scale. Undecodable or too-small images raise, naming the file.
  """
  path = Path(path)
  hr = image_io.read_rgb(path)  # Raises ImageReadError naming the file.
  scale = config.scale
  if crop is not None:
    if crop % scale:
      raise ValueError(f'Evaluation crop {crop} is not divisible by scale={scale}.')
    hr = augment.center_crop(hr, crop, name=str(path))
  else:
    hr = hr[:hr.shape[0] - hr.shape[0] % scale, :hr.shape[1] - hr.shape[1] % scale]
  lr = degradation.degrade_deterministic(hr, eval_image_seed(path.name, config.degradation),
                                         config.degradation, scale)
  return models.from_unit(hr), models.from_unit(lr)


def eval_paths(folder, max_images: int = 0) -> list[Path]:
  """The sorted images of an evaluation folder (all, or the first `max_images`)."""
  paths = image_io.list_images(folder)  # Raises naming a missing/empty folder.
  return paths[:max_images] if max_images else paths


def eval_crop_size(config, crop: int = 0) -> int:
  """The HR centre crop to score: `crop`, else data.val_crop_size, else the patch size.

  Raises ValueError unless its LR side fits the generator (a multiple of scale x
  2**stride-2 stages).
  """
  if crop:
    crop, source = int(crop), 'crop size'
  elif config.data.val_crop_size:
    crop, source = int(config.data.val_crop_size), 'data.val_crop_size'
  else:
    crop, source = int(config.data.patch_size), 'data.patch_size'
  size_multiple = models.build_generator(config).size_multiple
  multiple = config.scale * size_multiple
  if crop % multiple:
    raise ValueError(
        f'{source} {crop} is not a multiple of {multiple} (scale {config.scale} x the '
        f'generator\'s {size_multiple} size multiple); choose '
        f'a multiple, e.g. {max(multiple, crop // multiple * multiple)}, or use full images.')
  return crop


def load_eval_set(folder, config, *, crop: Optional[int] | str = 'config',
                  max_images: int = 0) -> dict[str, Any]:
  """Every image of `folder` with its deterministic LR, both in [-1, 1].

  crop: 'config' (default) = `eval_crop_size(config)`; an int = that centre crop;
  None = whole images (lists, not stacked; for large sets loop over `eval_paths`
  with `eval_pair` instead of holding all in memory). Returns {'lr', 'hr',
  'names'} with names relative to `folder`.
  """
  if crop == 'config':
    crop = eval_crop_size(config)
  paths = eval_paths(folder, max_images)
  with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
    pairs = list(pool.map(lambda path: eval_pair(path, config, crop), paths))
  hr, lr = [pair[0] for pair in pairs], [pair[1] for pair in pairs]
  if crop is not None:
    hr, lr = np.stack(hr), np.stack(lr)
  names = [p.relative_to(folder).as_posix() for p in paths]
  return {'lr': lr, 'hr': hr, 'names': names}


def eval_batches(eval_set: dict[str, Any], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """Fixed-size batches of a stacked eval set; the last is padded, `mask` marks real rows."""
  count = len(eval_set['names'])
  for start in range(0, count, batch_size):
    stop = min(start + batch_size, count)
    take = np.minimum(np.arange(start, start + batch_size), count - 1)
    mask = (np.arange(start, start + batch_size) < stop).astype(np.float32)
    yield {'lr': eval_set['lr'][take], 'hr': eval_set['hr'][take], 'mask': mask}


# ----------------------------------------------------------------------------
# Built-in sample photos.

@dataclasses.dataclass(frozen=True)
class _SamplePhoto:
  split: str  # 'train' or 'val'.
  distribution: str  # pip distribution that ships the file.
  package: str  # Import name of that distribution.
  source: str  # Path inside the package; copied byte for byte.
  subject: str
  licence: str

  @property
  def name(self) -> str:
    return Path(self.source).name


_SKIMAGE = ('scikit-image', 'skimage')
_MIDDLEBURY = 'research dataset (Scharstein et al.), redistributed by scikit-image'
_SAMPLE_PHOTOS = (
    _SamplePhoto('train', *_SKIMAGE, 'data/astronaut.png',
                 'Astronaut Eileen Collins (NASA Great Images)', 'public domain'),
    _SamplePhoto('train', *_SKIMAGE, 'data/rocket.jpg',
                 'DSCOVR launch on Falcon 9 (SpaceX)', 'public domain (released by SpaceX)'),
    _SamplePhoto('train', *_SKIMAGE, 'data/hubble_deep_field.jpg',
                 'Hubble eXtreme Deep Field (NASA)', 'public domain'),
    _SamplePhoto('train', *_SKIMAGE, 'data/ihc.png',
                 'Immunohistochemistry micrograph (CMMI)', 'no known copyright restrictions'),
    _SamplePhoto('train', *_SKIMAGE, 'data/motorcycle_left.png',
                 'Middlebury 2014 stereo pair, left view', _MIDDLEBURY),
    _SamplePhoto('train', *_SKIMAGE, 'data/motorcycle_right.png',
                 'Middlebury 2014 stereo pair, right view', _MIDDLEBURY),
    _SamplePhoto('train', *_SKIMAGE, 'data/retina.jpg',
                 'Human retina fundus photograph (M. Haggstrom)', 'CC0 1.0'),
    _SamplePhoto('val', *_SKIMAGE, 'data/chelsea.png',
                 'Chelsea the cat (Stefan van der Walt)', 'CC0'),
    _SamplePhoto('val', *_SKIMAGE, 'data/coffee.png',
                 'Coffee cup (Rachel Michetti, Pikolo Espresso Bar)', 'CC0'),
    _SamplePhoto('val', 'matplotlib', 'matplotlib', 'mpl-data/sample_data/grace_hopper.jpg',
                 'Rear Admiral Grace Hopper (US Navy photograph)', 'public domain'),
)


def _package_file(import_name: str, relative: str) -> Path:
  spec = importlib.util.find_spec(import_name)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f'Python package {import_name!r} is not installed; '
                            'run `pip install -r requirements.txt`.')
  return Path(list(spec.submodule_search_locations)[0]) / relative


def _provenance_text() -> str:
  lines = ['# Built-in sample photos', '',
           'Real photographs that ship inside installed Python packages, copied '
           'here by `srrgan_jax.data.sample_photos_dir()`. `train/` feeds training '
           'and `val/` is held out for validation when `data.train_dir`/`val_dir` '
           'are empty.', '',
           '| split | file | source package | file in the package | subject | licence |',
           '|---|---|---|---|---|---|']
  for photo in _SAMPLE_PHOTOS:
    version = importlib.metadata.version(photo.distribution)
    lines.append(f'| {photo.split} | {photo.name} | {photo.distribution} {version} | '
                 f'{photo.source} | {photo.subject} | {photo.licence} |')
  return '\n'.join(lines) + '\n'


def _sample_photos_complete(root: Path) -> bool:
  """True when `root` holds exactly the current photo list (an older list is redone)."""
  if not (root / 'PROVENANCE.md').is_file():
    return False
  present = {p.relative_to(root).as_posix() for p in root.glob('*/*') if p.is_file()}
  return present == {f'{photo.split}/{photo.name}' for photo in _SAMPLE_PHOTOS}


def sample_photos_dir() -> Path:
  """Folder with `train/` and `val/` sample photos, written once under `cache_dir()`."""
  root = cache_dir() / 'sample_photos'
  if _sample_photos_complete(root):
    return root
  root.parent.mkdir(parents=True, exist_ok=True)
  staging = Path(tempfile.mkdtemp(prefix='.sample_photos-', dir=root.parent))
  try:
    for photo in _SAMPLE_PHOTOS:
      source = _package_file(photo.package, photo.source)
      if not source.is_file():
        raise FileNotFoundError(f'{source}: sample photo missing from the installed '
                                'package; reinstall it (`pip install --force-reinstall '
                                '-r requirements.txt`) or set data.train_dir/val_dir.')
      (staging / photo.split).mkdir(exist_ok=True)
      # Copied as shipped: re-encoding the JPEGs as PNG adds nothing and makes
      # them decode 3-4x slower.
      shutil.copyfile(source, staging / photo.split / photo.name)
    (staging / 'PROVENANCE.md').write_text(_provenance_text())
    if root.exists() and not _sample_photos_complete(root):  # An interrupted attempt.
      shutil.rmtree(root, ignore_errors=True)
    try:
      staging.rename(root)
    except OSError:
      if not _sample_photos_complete(root):  # Not a concurrent process winning.
        raise
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  logging.info('Wrote the built-in sample photos to %s', root)
  return root


# ----------------------------------------------------------------------------
# Data preparation: overlapping sub-images.


def _cut_subimages(path: Path, input_dir: Path, output_dir: Path, crop: int, step: int,
                   compression: int) -> int:
  pixels = image_io.decode_raw(path)
  if pixels.dtype not in (np.uint8, np.uint16):  # e.g. float TIFF: PNG needs integers.
    pixels = np.round(np.clip(pixels, 0, 1) * 65535).astype(np.uint16)
  height, width = pixels.shape[:2]
  target = output_dir / path.relative_to(input_dir).parent
  target.mkdir(parents=True, exist_ok=True)
  count = 0
  # Same layout as inference tiles: every `step` px, the last flush with the edge.
  for top in tiling.tile_starts(height, crop, crop - step):
    for left in tiling.tile_starts(width, crop, crop - step):
      count += 1
      window = pixels[top:top + crop, left:left + crop]
      ok, encoded = cv2.imencode('.png', window,
                                 [cv2.IMWRITE_PNG_COMPRESSION, compression])
      if not ok:
        raise OSError(f'{path}: OpenCV could not encode sub-image {count} as PNG.')
      encoded.tofile(target / f'{path.stem}_s{count:03d}.png')
  return count


def extract_subimages(input_dir, output_dir, *, crop: int = 480, step: int = 240,
                      workers: int = 0, compression: int = 3) -> tuple[int, int, list[str]]:
  """Cuts every image under `input_dir` into crop x crop PNGs every `step` px.

  Keeps bit depth, gray and alpha as they are; sub-folders are mirrored. Returns
  (images done, sub-images written, error messages of images that failed).
  """
  input_dir, output_dir = Path(input_dir), Path(output_dir)
  if step < 1 or crop < 1:
    raise ValueError(f'crop={crop} and step={step} must be positive.')
  paths = image_io.list_images(input_dir)
  cut = functools.partial(_cut_subimages, input_dir=input_dir, output_dir=output_dir,
                          crop=crop, step=step, compression=compression)
  done, written, errors = 0, 0, []
  # OpenCV decodes and encodes without holding the GIL, so threads scale.
  with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
    futures = {pool.submit(cut, path): path for path in paths}
    for number, future in enumerate(concurrent.futures.as_completed(futures), 1):
      try:
        written += future.result()
        done += 1
      except (image_io.ImageReadError, OSError) as e:
        errors.append(str(e))
      if number % 50 == 0 or number == len(paths):
        print(f'{number}/{len(paths)} images, {written} sub-images', flush=True)
  return done, written, errors


def run(argv: Optional[Sequence[str]] = None) -> int:
  """`srrgan-prepare-data`: cut a folder of large images into overlapping sub-images."""
  parser = argparse.ArgumentParser(
      prog='srrgan-prepare-data',
      description='Cut large HR images (e.g. DIV2K_train_HR) into overlapping '
      'sub-images saved as PNG, so training decodes ~10x fewer pixels per patch. '
      'Point data.train_dir at the output folder.')
  parser.add_argument('--input', required=True, help='Folder of HR images (recursive).')
  parser.add_argument('--output', required=True, help='Folder for the sub-images.')
  parser.add_argument('--crop', type=int, default=480, help='Sub-image size in px.')
  parser.add_argument('--step', type=int, default=240,
                      help='Distance between sub-images in px (< crop: overlap).')
  parser.add_argument('--workers', type=int, default=0,
                      help='Parallel threads; 0 = one per CPU core.')
  parser.add_argument('--compression', type=int, default=3,
                      help='PNG compression level 0-9 (3: fast, as BasicSR).')
  args = parser.parse_args(argv)
  done, written, errors = extract_subimages(
      args.input, args.output, crop=args.crop, step=args.step, workers=args.workers,
      compression=args.compression)
  for message in errors:
    print(f'error: {message}', file=sys.stderr)
  print(f'{done} images -> {written} sub-images of at most {args.crop}x{args.crop} in '
        f'{args.output}; {len(errors)} failed.')
  return 1 if errors else 0


if __name__ == '__main__':
  sys.exit(run())
