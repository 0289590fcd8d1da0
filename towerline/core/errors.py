"""The one error root of towerline, and the exit codes the CLI maps it to.

Every error a user can cause or fix derives from ``TowerlineError``; the CLI prints its
message as one line and exits with its ``exit_code``. Anything else is a bug and keeps its
traceback. Exit codes (also in the README):

- 0 success; 1 refused or failed (a check did not pass, a service cannot be reached,
  stored data does not verify); 2 bad usage or input (an option, a file, a name, a version
  that does not exist); 130 interrupted (Ctrl-C).
"""

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class TowerlineError(Exception):
    """Something the user can act on; the message says what was wrong and what to do."""

    exit_code = EXIT_FAILED


class InputError(TowerlineError, ValueError):
    """Bad usage or input: an option value, a file, a name or a version that cannot be used."""

    exit_code = EXIT_USAGE


class UnavailableError(TowerlineError):
    """A service (Kafka, Redis, a database) cannot be reached; the message names its address."""


class RefusedError(TowerlineError):
    """A safety check refused the step, so nothing was changed."""
