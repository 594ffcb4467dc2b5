"""Which of the PMC paper's claims the collected sweeps reproduce: the claims table (results/claims.md, written by
scripts/claims.py).

Reads what collect.py reads (each job's results.json, through pmc.reporting.tables.collect) plus each job's
eval/<model>/<suite>.json and train_log.jsonl, and writes one row per claim of the paper: the rule that decides it
(its thresholds stated in the row), the measured numbers, and a verdict: "holds", "does not hold", or
"not testable: <what is missing>" (missing suites, runs or ablations never raise). Claims:

  C1  PMC reaches high unlearn quality while keeping utility, and no baseline dominates it on the unlearn-quality/
      utility front (Pareto dominance over every setting of every method; the dominating settings are named).
  C2  NPO shifts the log-probabilities of unrelated text downwards, PMC leaves them near zero (analyses suite,
      collateral damage).
  C3  The least-likely multiple-choice attack recovers the true answer after NPO-style methods, not after PMC
      (analyses suite: attack rate vs chance and vs the target).
  C4  Ablations (one row each, from --ablation NAME=DIR): more epochs and more samples raise unlearn quality, a larger
      λ keeps utility, a higher temperature helps until utility falls. Jobs are paired by their configs: two jobs
      are on one line when everything that shapes the unlearned model (model, benchmark, stage 0, generation, the
      method and its training) is equal but the ablated value, whichever sweep they came from; seeds are averaged.
  C5  Dynamics (PMC's train_log.jsonl): the selected answers' ROUGE drops within the first epochs; the retain loss
      recovers from its peak.
  C6  GA-family answers degenerate (empty, repeated, gibberish), PMC's stay fluent (analyses suite: response
      quality), with example answers.

A "setting" is a job's Hydra overrides without the seed (collect.py's grouping), its numbers the mean over seeds.
C2, C3 and C6 compare each method at its setting with the highest unlearn quality (where it has unlearned most).
"""

from __future__ import annotations

from pathlib import Path

from pmc.reporting.claims.ablations import ABLATIONS, ablation_holds, c4_ablation
from pmc.reporting.claims.model import Claim, Sweeps
from pmc.reporting.claims.report import report
from pmc.reporting.claims.rules import c1_front, c2_collateral, c3_attack, c5_dynamics, c6_quality


def evaluate(sweeps: Sweeps, ablations: dict[str, list[Path]]) -> list[Claim]:
    """Every claim's row; `sweeps` must hold at least one unlearned job."""
    claims = [c1_front(sweeps), c2_collateral(sweeps), c3_attack(sweeps)]
    claims += [c4_ablation(name, ablations.get(name, [])) for name in ABLATIONS]
    claims += [c5_dynamics(sweeps), c6_quality(sweeps)]
    return claims


__all__ = ["ABLATIONS", "Claim", "Sweeps", "ablation_holds", "evaluate", "report"]
