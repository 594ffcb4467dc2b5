"""How a job fails: one line on stderr, a failure.json in its directory (never a results.json), and in a multirun the
other jobs go on; the command exits 1 when anything failed.

A problem the user can fix (a config key, a data file, a checkpoint, a diverged loss, memory) is one line; a crash
(a bug) keeps its traceback, on stderr for a single run and in failure.json for every job.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from pmc.core.errors import HarnessError, JobFailed, one_line
from pmc.core.records import DataError
from pmc.results import summary_table, write_json_atomic

FAILURE_FILE = "failure.json"
TRACEBACK_LINES = 60  # the tail of the traceback kept in failure.json
# Hydra's own command-line conflicts, raised as plain ValueErrors before any job starts, and what to do instead
HYDRA_USAGE_ERRORS = {
    "Only one of --run, --multirun": "to dry-run a sweep, drop -m and the comma-separated values",
    "The --resolve flag": "add --cfg job",
}


@contextmanager
def stage(name: str):
    """Tag an exception escaping this block with the stage it came from (the innermost stage wins)."""
    try:
        yield
    except BaseException as e:
        if not hasattr(e, "pmc_stage"):
            e.pmc_stage = name
        raise


def describe(error: BaseException) -> tuple[str, bool]:
    """(one line saying what went wrong, whether the user can fix it without touching the code)."""
    import torch  # here, not at the top: the command lines import this module before they need torch (pmc.run)

    if isinstance(error, (HarnessError, DataError)):
        return one_line(str(error)), True
    if isinstance(error, MissingMandatoryValue):
        return f"config key '{error.full_key}' is required: pass {error.full_key}=...", True
    if isinstance(error, OmegaConfBaseException):  # an interpolation that does not resolve, a key that is not there
        key = getattr(error, "full_key", None)
        message = one_line(str(error)).split("; full_key:")[0]
        return (f"config key '{key}': {message}" if key else f"config: {message}"), True
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        device = "GPU" if isinstance(error, torch.OutOfMemoryError) else "CPU"
        return (f"out of {device} memory ({one_line(str(error))[:200]}); lower method.training.batch_size "
                "(raising gradient_accumulation_steps to keep the effective batch) or generation.batch_size"), True
    if isinstance(error, RuntimeError) and "does not have a deterministic implementation" in str(error):
        operation = str(error).split(" does not have", 1)[0]
        return (f"deterministic=true, but {operation} has no deterministic implementation in torch "
                f"{torch.__version__} on this device (docs/determinism.md); run with deterministic=false"), True
    return f"{type(error).__name__}: {one_line(str(error))}", False


def failure_record(error: BaseException, overrides: list[str]) -> dict:
    line, user_error = describe(error)
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__)).splitlines()
    return {
        "status": "failed",
        "stage": getattr(error, "pmc_stage", "setup"),
        "error_type": type(error).__name__,
        "error": line,
        "user_error": user_error,
        "overrides": overrides,
        "traceback_tail": trace[-TRACEBACK_LINES:],
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def report_errors(run_fn, cfg) -> dict:
    """Run run_fn(cfg, run_dir) in this Hydra job's directory.

    On failure: failure.json in the job directory; a single run prints one line and exits 1 (a crash re-raises, so
    its traceback shows); a multirun job prints one line and raises JobFailed, which Hydra's launchers (basic and
    submitit) record as a failed job while the sweep goes on. On success a stale failure.json of an earlier attempt
    in the same directory is removed.
    """
    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    overrides = OmegaConf.to_container(hydra.overrides.task, resolve=False)  # as typed: `seed=${x}` stays so
    try:
        results = run_fn(cfg, run_dir)
    except Exception as error:
        record = failure_record(error, overrides)
        write_json_atomic(run_dir / FAILURE_FILE, record)
        if hydra.mode == RunMode.MULTIRUN:
            print(f"error: job {hydra.job.num} failed in {record['stage']}: {record['error']} "
                  f"[{run_dir / FAILURE_FILE}]; the sweep goes on", file=sys.stderr)
            raise JobFailed(str(Path(hydra.sweep.dir).resolve()), str(run_dir), record["error"]) from None
        if record["user_error"]:
            print(f"error: {record['error']}", file=sys.stderr)
            sys.exit(1)
        raise
    (run_dir / FAILURE_FILE).unlink(missing_ok=True)
    print(f"\n{results.get('method', 'evaluation')} on {results['benchmark']} (seed {results['seed']}), "
          f"results in {run_dir}")
    print(summary_table(results["metrics"]))
    return results


def failed_jobs(sweep_dir: str | Path) -> list[Path]:
    """Job directories under a sweep that hold a failure.json."""
    return sorted(path.parent for path in Path(sweep_dir).rglob(FAILURE_FILE))


def with_group_options(message: str, conf_dir: str | Path) -> str:
    """Hydra says "Could not load 'eval/nope'." for an unknown option inside a list (`eval=[paper,nope]`) without
    the group's options it lists for a single one (`eval=nope`); add them, in the same words."""
    match = re.search(r"Could not load '([\w/]+)/[^'/]+'", message)
    group = Path(conf_dir) / match.group(1) if match else None
    if group is None or not group.is_dir():
        return message
    options = sorted(path.stem for path in group.glob("*.yaml"))
    return f"{message.rstrip('.')}; Available options in '{match.group(1)}': {', '.join(options)}"


def cli(hydra_main, conf_dir: str | Path) -> None:
    """Run a @hydra.main function (its config tree in conf_dir) so that every configuration error is one line and
    exit status 1.

    HYDRA_FULL_ERROR=1 makes Hydra raise its errors (an unknown config option, an override that does not parse,
    an invalid combination of flags) instead of printing its many-line report, so they are caught here; a sweep
    whose jobs failed ends here too, with one line naming them.
    """
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_main()
    except JobFailed as e:
        failed = failed_jobs(e.sweep_dir) or [Path(e.job_dir)]
        print(f"error: {len(failed)} job(s) of the sweep failed (each has a {FAILURE_FILE}): "
              f"{', '.join(str(job) for job in failed)}", file=sys.stderr)
        sys.exit(1)
    except CompactHydraException as e:
        message = str(e).split("\nConfig search path:")[0]  # where Hydra looked: noise for an unknown option
        print(f"error: {with_group_options(one_line(message), conf_dir)}", file=sys.stderr)
        sys.exit(1)
    except ValueError as e:
        advice = next((advice for start, advice in HYDRA_USAGE_ERRORS.items() if str(e).startswith(start)), None)
        if advice is None:
            raise
        print(f"error: {one_line(str(e))} ({advice})", file=sys.stderr)
        sys.exit(1)
