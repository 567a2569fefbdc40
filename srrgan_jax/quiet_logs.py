"""Silencing a library's expected warnings for the length of one call."""

import contextlib
import logging


@contextlib.contextmanager
def quiet(logger_name: str):
  """Raises `logger_name`'s level to ERROR inside the block, then restores it."""
  logger = logging.getLogger(logger_name)
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)
