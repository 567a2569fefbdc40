"""Opt-in record of what each numerical comparison in the suite measured.

With SRRGAN_TOLERANCE_LOG=FILE, every `np.testing.assert_allclose` and
`assert_array_equal` call appends one JSON line to FILE: the test, the
largest absolute and relative difference seen and the tolerance allowed.
Comparing two such files (e.g. one XLA thread against the default, or 2
against 4 fake devices) shows which comparisons move with the machine and by
how much, before one of them fails somewhere else.
"""

import json
import os

import numpy as np

ENV = 'SRRGAN_TOLERANCE_LOG'


def _differences(actual, desired):
  try:
    a = np.asarray(actual, dtype=np.float64)
    d = np.asarray(desired, dtype=np.float64)
    diff = np.abs(a - d)
  except (TypeError, ValueError):
    return None, None
  if diff.size == 0 or not np.all(np.isfinite(diff)):
    return None, None
  scale = np.abs(d)
  relative = np.where(scale > 0, diff / np.where(scale > 0, scale, 1), 0)
  return float(diff.max()), float(relative.max())


def install(monkeypatch, test_id: str) -> None:
  """Wraps numpy's comparison asserts for one test when $SRRGAN_TOLERANCE_LOG is set."""
  path = os.environ.get(ENV)
  if not path:
    return

  def record(kind, actual, desired, rtol, atol):
    max_abs, max_rel = _differences(actual, desired)
    with open(path, 'a') as f:
      f.write(json.dumps({'test': test_id, 'kind': kind, 'max_abs': max_abs,
                          'max_rel': max_rel, 'rtol': rtol, 'atol': atol}) + '\n')

  allclose, array_equal = np.testing.assert_allclose, np.testing.assert_array_equal

  def logged_allclose(actual, desired, rtol=1e-7, atol=0, *args, **kwargs):
    record('allclose', actual, desired, rtol, atol)
    return allclose(actual, desired, rtol, atol, *args, **kwargs)

  def logged_array_equal(x, y, *args, **kwargs):
    record('equal', x, y, 0, 0)
    return array_equal(x, y, *args, **kwargs)

  monkeypatch.setattr(np.testing, 'assert_allclose', logged_allclose)
  monkeypatch.setattr(np.testing, 'assert_array_equal', logged_array_equal)
