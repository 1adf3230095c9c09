"""Errors shared by every part of tfmaas.

`UserError` is for mistakes the user can fix (a wrong spec, a missing dataset, a
version that already exists): the message must say what is wrong and how to fix it.
The CLI prints it without a traceback and exits with status 2.
"""

# The exit status of a run stopped by a UserError: retrying it fails the same way, so a
# training Job's podFailurePolicy fails the Job at once on it.
USER_ERROR_EXIT_CODE = 2


class TfmaasError(Exception):
    """Base class of every error tfmaas raises on purpose."""


class UserError(TfmaasError):
    """A mistake the user can fix; the message says what is wrong and how to fix it."""
