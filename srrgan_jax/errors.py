"""The one base class of errors that a user can fix (bad input, config or files).

Commands catch `UserError` and print its message as one line with a non-zero
exit status; any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
  """Bad input: the message names the file, field or value and what to do."""
