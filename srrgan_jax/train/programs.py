"""Compiled programs reused within a process, keyed by everything they depend on.

Running a phase again in the same process (resume, notebooks, tests) reuses its
compiled initialisation, train and eval programs instead of compiling them
again. A key holds the program's kind, the traced config fields (as classified
in `configs/fields.py`), the phase-specific numbers and the mesh.
"""

from __future__ import annotations

import collections
import json
from typing import Callable

import ml_collections

from configs import fields

_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_MAX_PROGRAMS = 12


def traced_config_key(config: ml_collections.ConfigDict) -> str:
  """The config fields a compiled program can depend on, as a hashable string."""
  traced = {name: value for name, value in fields.flatten(config.to_dict()).items()
            if not fields.is_untraced(name)}
  return json.dumps(traced, sort_keys=True, default=str)


def mesh_key(mesh) -> tuple:
  """A hashable identity of a mesh (equal meshes need not hash alike)."""
  return tuple(d.id for d in mesh.devices.flat), tuple(mesh.shape.items())


def cached_program(key, build: Callable):
  """`build()` once per key (a small LRU of jitted functions)."""
  if key not in _PROGRAMS:
    _PROGRAMS[key] = build()
    while len(_PROGRAMS) > _MAX_PROGRAMS:
      _PROGRAMS.popitem(last=False)
  _PROGRAMS.move_to_end(key)
  return _PROGRAMS[key]
