"""An offline TOFU-style benchmark of invented authors, small and regular enough to train a tiny model on a laptop.

TOFU (Maini et al., 2024) asks 20 questions about each of 200 fictitious authors and unlearns the last 1/5/10% of
them. This module builds the same structure from a seed: every author gets a profile of invented facts, every fact
becomes one short, regularly phrased QA pair (with a paraphrase, and wrong answers for the truth-ratio metric), and
hard-coded real world facts and real books stand in for TOFU's utility sets. Nothing is downloaded, so the harness
runs anywhere, and short answers keep the sequences tiny models must learn short.
"""

from __future__ import annotations

import random

from benchmarks.synthetic.authors import AUTHOR_FACTS, MAX_AUTHORS, MAX_PERTURBED, author_records, invent_authors
from benchmarks.synthetic.utility import (
    IDK_ANSWERS,
    REAL_AUTHORS,
    REAL_BOOKS,
    WORLD_FACT_POOLS,
    WORLD_FACTS,
    utility_records,
)
from pmc.core.records import QABenchmark


def make_synthetic_tofu(
    num_authors: int = 20,
    questions_per_author: int = 10,
    forget_authors: int = 2,
    num_world_facts: int = 30,
    num_real_authors: int = 30,
    retain_eval_authors: int = 4,
    num_perturbed: int = 3,
    seed: int = 0,
) -> QABenchmark:
    """Build the benchmark: the last `forget_authors` authors are forgotten, as in TOFU's forget01/05/10.

    Same arguments give the same benchmark. Authors, their wrong answers and the utility sets each draw from their
    own seeded generator, so e.g. asking for more perturbed answers or world facts leaves the authors unchanged.
    """
    _check_range("num_authors", num_authors, 2, MAX_AUTHORS)
    _check_range("questions_per_author", questions_per_author, 10, len(AUTHOR_FACTS))
    _check_range("forget_authors", forget_authors, 1, num_authors - 1)
    _check_range("retain_eval_authors", retain_eval_authors, 1, num_authors - forget_authors)
    _check_range("num_perturbed", num_perturbed, 3, MAX_PERTURBED)
    _check_range("num_world_facts", num_world_facts, 1, len(WORLD_FACTS))
    _check_range("num_real_authors", num_real_authors, 1, len(REAL_BOOKS))

    authors = invent_authors(random.Random(seed), num_authors)
    perturb_rng = random.Random(f"{seed}:perturbed")
    per_author = [
        author_records(index, profile, questions_per_author, num_perturbed, perturb_rng)
        for index, profile in enumerate(authors)
    ]
    split = num_authors - forget_authors
    forget = [r for records in per_author[split:] for r in records]
    retain = [r for records in per_author[:split] for r in records]

    utility_rng = random.Random(f"{seed}:utility")
    world_facts = utility_records(
        [(q, a, WORLD_FACT_POOLS[kind]) for q, a, kind in WORLD_FACTS], num_world_facts, num_perturbed, utility_rng
    )
    real_authors = utility_records(
        [(f"Who wrote '{title}'?", author, REAL_AUTHORS) for title, author in REAL_BOOKS],
        num_real_authors, num_perturbed, utility_rng,
    )

    return QABenchmark(
        name="synthetic",
        forget=forget,
        retain=retain,
        eval_sets={
            "forget": forget,
            "retain": retain[: retain_eval_authors * questions_per_author],
            "real_authors": real_authors,
            "world_facts": world_facts,
        },
        pretrain=world_facts + real_authors,
        idk_answers=list(IDK_ANSWERS),
    )


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")
