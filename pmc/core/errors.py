"""Errors the harness reports as one clear line instead of a traceback (see pmc.failures)."""


class HarnessError(Exception):
    """Base class for problems a user can fix: bad config, bad checkpoint, a diverged run."""


class ConfigError(HarnessError):
    """A configuration value that cannot work; the message names the key and the accepted values."""


class CheckpointError(HarnessError):
    """A cached or user-supplied checkpoint that is missing, incomplete or unreadable."""


class DataError(HarnessError, ValueError):
    """A data file or record that cannot be used; the message names the file, the line and what is wrong."""


class TrainingDiverged(HarnessError):
    """The loss became NaN or infinite; continuing would only produce garbage metrics."""


class JobFailed(Exception):
    """A job of a multirun failed and recorded why in its failure.json; raised (a plain, picklable Exception) so that
    Hydra's launchers mark the job failed and run the others, and the sweep exits non-zero at the end."""

    def __init__(self, sweep_dir: str, job_dir: str, error: str):
        super().__init__(sweep_dir, job_dir, error)
        self.sweep_dir, self.job_dir, self.error = sweep_dir, job_dir, error

    def __str__(self) -> str:
        return f"{self.job_dir}: {self.error}"


def one_line(message: str) -> str:
    """A multi-line message on one line: "Available options in 'method':\\n\\tflat\\n\\tga" reads
    "Available options in 'method': flat, ga"; other lines are joined by '; ' (or a space after a full stop)."""
    out, listing = "", False
    for line in (line.strip() for line in str(message).splitlines()):
        if not line:
            continue
        if out:
            out += " " if out.endswith((":", ".")) else ", " if listing else "; "
        out += line
        listing = listing or line.endswith(":")
    return out
