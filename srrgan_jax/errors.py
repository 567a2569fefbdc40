"""The one base class of errors that a user can fix (bad input, config or files).

Commands catch `UserError` and print its message as one line with a non-zero
exit status; any other exception is a bug and keeps its traceback. Each module
raises its own subclass, which also derives from the built-in error it refines
(`ValueError`, `FileNotFoundError`, ...), so callers can catch either.
"""


class UserError(Exception):
  """Bad input: the message names the file, field or value and what to do."""


class ConfigError(UserError, ValueError):
  """A config field has a value that cannot work; the message names the field."""
