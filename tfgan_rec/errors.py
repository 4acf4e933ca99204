"""Errors that reach the user as one line and exit code 2."""


class InputError(Exception):
  """Bad user input: the message names the file, row or field and the fix."""

  exit_code = 2
