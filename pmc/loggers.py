"""Experiment loggers selected by `logger=<name>`; every run also writes train_log.jsonl itself (see pmc.experiment).

A logger is told when the run starts (resolved config, run directory, the command-line overrides), gets every
training step, and at the end the results. Tracking is a convenience: a logger that cannot reach its service
warns once and carries on, it never fails the run.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("pmc")


class NullLogger:
    """`logger=none`: log nowhere but the run directory."""

    def start(self, config: dict, run_dir: Path, overrides: list[str]) -> None:
        pass

    def log_step(self, record: dict) -> None:
        pass

    def log_results(self, results: dict, run_dir: Path) -> None:
        pass

    def finish(self) -> None:
        pass


def flat_metrics(metrics: dict[str, dict[str, dict[str, float]]]) -> dict[str, float]:
    """{"unlearned/paper/unlearn_quality": 92.6, ...}: model/suite/metric keys for dashboards."""
    return {f"{model}/{suite}/{key}": value for model, suites in metrics.items()
            for suite, values in suites.items() for key, value in values.items()}


def run_name(overrides: list[str]) -> str:
    """The overrides that make this job differ from the defaults, e.g. "method=ga,seed=1"."""
    kept = [o for o in overrides if not o.startswith(("hydra.", "hydra/", "logger"))]
    return ",".join(kept) or "defaults"


class WandbLogger:
    """`logger=wandb`: a W&B run per job, grouped by sweep (offline by default; `logger.mode=online` to stream).

    Offline runs land in <run dir>/wandb/offline-run-*; upload them later with `wandb sync <that dir>`.
    """

    def __init__(self, project: str = "pmc-harness", entity: str | None = None, group: str | None = None,
                 job_type: str = "unlearn", tags: list[str] | None = None, name: str | None = None,
                 mode: str = "offline", init_timeout_s: float = 60.0):
        self.settings = dict(project=project, entity=entity, group=group, job_type=job_type, tags=list(tags or []),
                             name=name, mode=mode)
        self.init_timeout_s = init_timeout_s
        self.run = None

    def _guard(self, what: str, action) -> None:
        if self.run is None:
            return
        try:
            action()
        except Exception as e:  # a tracking failure must not cost the user their run
            log.warning("W&B: could not %s (%s); continuing without W&B", what, e)
            self.run = None

    def start(self, config: dict, run_dir: Path, overrides: list[str]) -> None:
        try:
            import wandb

            settings = dict(self.settings, name=self.settings["name"] or run_name(overrides))
            # the method as results.json names it (method.name), and the model
            settings["tags"] = settings["tags"] + [config["method"]["name"], config["model"]["name"]]
            self.run = wandb.init(**settings, config=config, dir=str(run_dir),
                                  settings=wandb.Settings(init_timeout=self.init_timeout_s, silent=True))
        except Exception as e:
            log.warning("W&B: could not start a run (%s); continuing without W&B", e)
            self.run = None

    def log_step(self, record: dict) -> None:
        self._guard("log a step", lambda: self.run.log(record, step=record["step"]))

    def log_results(self, results: dict, run_dir: Path) -> None:
        def upload():
            import wandb

            self.run.summary.update(flat_metrics(results["metrics"]))
            self.run.summary.update({f"timings_s/{k}": v for k, v in results["timings_s"].items()})
            artifact = wandb.Artifact(f"results-{self.run.id}", type="results")
            artifact.add_file(str(Path(run_dir) / "results.json"))
            self.run.log_artifact(artifact)

        self._guard("upload the results", upload)

    def finish(self) -> None:
        self._guard("finish", lambda: self.run.finish())
        self.run = None
