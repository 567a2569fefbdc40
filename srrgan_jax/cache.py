"""The one folder where the project caches files it writes for itself.

Fetched pretrained weights, the built-in sample photos and (when enabled) the
decoded training images live here:
`$SRRGAN_CACHE_DIR`, else `~/.cache/srrgan_jax`.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_ENV = 'SRRGAN_CACHE_DIR'


def cache_dir() -> Path:
  """`$SRRGAN_CACHE_DIR` (an empty value counts as unset), else `~/.cache/srrgan_jax`."""
  configured = os.environ.get(CACHE_DIR_ENV, '')
  return Path(configured).expanduser() if configured else Path.home() / '.cache' / 'srrgan_jax'
