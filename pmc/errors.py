"""Errors the harness reports as one clear line instead of a traceback (see pmc.run)."""


class HarnessError(Exception):
    """Base class for problems a user can fix: bad config, bad checkpoint, a diverged run."""


class ConfigError(HarnessError):
    """A configuration value that cannot work; the message names the key and the accepted values."""


class CheckpointError(HarnessError):
    """A cached or user-supplied checkpoint that is missing, incomplete or unreadable."""


class TrainingDiverged(HarnessError):
    """The loss became NaN or infinite; continuing would only produce garbage metrics."""
