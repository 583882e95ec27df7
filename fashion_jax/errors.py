"""The one exception type for mistakes a user can fix.

Everything the runner and the command-line tools raise for bad input (a config value, a
workdir, the data, a checkpoint) is a `UserError` whose message names the problem and the fix.
The command-line entry points print that message and exit with status 2; they never show a
stack trace for it.
"""


class UserError(Exception):
    """A problem in the user's input, with a message that says how to fix it."""


class ConfigError(UserError):
    """An unknown config key or a value of the wrong type or out of range."""


class DataError(UserError):
    """The dataset is missing, unreadable or corrupt."""


class CheckpointError(UserError):
    """A workdir or checkpoint that cannot be used with this config."""


class NonFiniteLossError(UserError):
    """Training produced a NaN or infinite loss; the run stopped."""


class ReportError(UserError):
    """A workdir that cannot be reported on or compared (missing, or holding nothing to report)."""
