"""The synthetic benchmark is the default one: it must be deterministic, shaped like TOFU and fit tiny models."""

import hashlib
import json
from dataclasses import asdict

import pytest

from benchmarks.synthetic import make_synthetic_tofu, tofu_like
from pmc.core.records import QABenchmark


def benchmark_digest(bench: QABenchmark) -> str:
    """SHA-256 of every field of every record, in order."""
    return hashlib.sha256(json.dumps(asdict(bench), sort_keys=True).encode()).hexdigest()


# Digests computed with commit b95532c's single-module generator, before it was split into authors.py, utility.py
# and tofu_like.py: the split must not change a single record.
PINNED_DIGESTS = [
    ({}, "2a891bcb114fc336a4dc84999f3e29ae150a7c9da070a37027f8292796137b8f"),
    ({"seed": 7}, "526b9bc3facd251a7dcb80d6d606d90b63ccc0c81f91d85c486388aaaa8c9964"),
    ({"num_authors": 200, "questions_per_author": 20, "forget_authors": 20, "num_world_facts": 40,
      "num_real_authors": 40, "num_perturbed": 5, "retain_eval_authors": 20, "seed": 3},
     "42015cea2cff87f04c5e33e4e9d6919c141995e308d6505f92c8b62f53ce7c4f"),
]


@pytest.mark.parametrize("kwargs, digest", PINNED_DIGESTS)
def test_generated_benchmark_is_unchanged_since_b95532c(kwargs, digest):
    assert benchmark_digest(make_synthetic_tofu(**kwargs)) == digest


def author_names(bench: QABenchmark) -> list[str]:
    """Each author's name, read off the first question about them ("Where was NAME born?")."""
    names: dict[int, str] = {}
    for r in bench.full:
        names.setdefault(r.author, r.question.removeprefix("Where was ").removesuffix(" born?"))
    return [names[a] for a in sorted(names)]


def test_same_arguments_same_benchmark():
    assert make_synthetic_tofu(seed=3) == make_synthetic_tofu(seed=3)
    assert make_synthetic_tofu(num_authors=7, questions_per_author=13, seed=1) == make_synthetic_tofu(
        num_authors=7, questions_per_author=13, seed=1
    )


def test_different_seed_different_authors():
    a, b = make_synthetic_tofu(seed=0), make_synthetic_tofu(seed=1)
    assert author_names(a) != author_names(b)
    assert [r.answer for r in a.full] != [r.answer for r in b.full]


def test_authors_do_not_depend_on_perturbation_or_utility_sizes():
    a = make_synthetic_tofu(num_perturbed=3, num_world_facts=10, seed=5)
    b = make_synthetic_tofu(num_perturbed=5, num_world_facts=40, num_real_authors=5, seed=5)
    assert [(r.question, r.answer) for r in a.full] == [(r.question, r.answer) for r in b.full]


def test_sizes_and_split_structure():
    n, q, f, k = 12, 15, 3, 4
    bench = make_synthetic_tofu(
        num_authors=n, questions_per_author=q, forget_authors=f, retain_eval_authors=k, num_world_facts=25,
        num_real_authors=35,
    )
    assert bench.name == "synthetic"
    assert len(bench.forget) == f * q
    assert len(bench.retain) == (n - f) * q
    assert [r.author for r in bench.forget] == [a for a in range(n - f, n) for _ in range(q)]
    assert [r.author for r in bench.retain] == [a for a in range(n - f) for _ in range(q)]
    assert len(set(author_names(bench))) == n

    assert set(bench.eval_sets) == {"forget", "retain", "real_authors", "world_facts"}
    assert bench.eval_sets["forget"] == bench.forget
    assert bench.eval_sets["retain"] == bench.retain[: k * q]
    assert {r.author for r in bench.eval_sets["retain"]} == set(range(k))
    assert len(bench.eval_sets["world_facts"]) == 25
    assert len(bench.eval_sets["real_authors"]) == 35
    assert bench.pretrain == bench.eval_sets["world_facts"] + bench.eval_sets["real_authors"]

    forget_questions = {r.question for r in bench.forget}
    assert not forget_questions & {r.question for r in bench.retain}
    assert not set(bench.forget) & set(bench.retain)

    assert len(bench.idk_answers) >= 5 and all(a.strip() for a in bench.idk_answers)


def test_author_records_have_paraphrases_and_wrong_answers():
    bench = make_synthetic_tofu(num_authors=30, questions_per_author=20, num_perturbed=5, seed=2)
    for r in bench.full:
        assert r.paraphrased_question and r.paraphrased_question != r.question
        assert r.paraphrased_answer and r.paraphrased_answer != r.answer
        assert len(r.perturbed_answer) == 5 and len(set(r.perturbed_answer)) == 5
        # The wrong answers are the paraphrased answer with another value, so none may equal it.
        assert r.answer not in r.perturbed_answer and r.paraphrased_answer not in r.perturbed_answer


def test_author_wrong_answers_use_other_values_of_the_same_fact():
    bench = make_synthetic_tofu(num_authors=6, questions_per_author=20)
    names = author_names(bench)
    for i, r in enumerate(bench.full):
        fact = tofu_like.AUTHOR_FACTS[i % 20]
        name = names[r.author]
        value_of = {fact.paraphrased_answer.format(name=name, value=v): v for v in fact.values}
        true_value = value_of[r.paraphrased_answer]
        assert r.answer == fact.answer.format(name=name, value=true_value)
        for wrong in r.perturbed_answer:
            assert value_of[wrong] != true_value


def test_utility_records_have_wrong_answers():
    bench = make_synthetic_tofu(num_perturbed=4, seed=7)
    for name in ("world_facts", "real_authors"):
        for r in bench.eval_sets[name]:
            assert r.author is None and r.paraphrased_question is None and r.paraphrased_answer is None
            assert len(r.perturbed_answer) == 4 and len(set(r.perturbed_answer)) == 4
            assert r.answer not in r.perturbed_answer


def test_answers_are_short():
    bench = make_synthetic_tofu(num_authors=40, questions_per_author=20, num_perturbed=5, seed=4)
    for text in bench.texts():
        assert len(text.split()) <= 25, text


def test_questions_are_unique():
    bench = make_synthetic_tofu(
        num_authors=tofu_like.MAX_AUTHORS, questions_per_author=20, forget_authors=20,
        num_world_facts=len(tofu_like.WORLD_FACTS), num_real_authors=len(tofu_like.REAL_BOOKS), num_perturbed=5,
    )
    questions = [r.question for r in bench.full + bench.pretrain]
    assert len(questions) == len(set(questions))


def test_hard_coded_lists_are_large_enough():
    assert len(tofu_like.WORLD_FACTS) >= 40 and len(tofu_like.REAL_BOOKS) >= 40
    assert len(set(tofu_like.REAL_AUTHORS)) == len(tofu_like.REAL_AUTHORS)
    for _, answer, kind in tofu_like.WORLD_FACTS:
        assert answer in tofu_like.WORLD_FACT_POOLS[kind]
    assert len(tofu_like.AUTHOR_FACTS) == 20


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_authors": 1},
        {"num_authors": tofu_like.MAX_AUTHORS + 1},
        {"questions_per_author": 9},
        {"questions_per_author": 21},
        {"forget_authors": 0},
        {"forget_authors": 20},
        {"retain_eval_authors": 0},
        {"retain_eval_authors": 19},
        {"num_perturbed": 2},
        {"num_perturbed": tofu_like.MAX_PERTURBED + 1},
        {"num_world_facts": 0},
        {"num_world_facts": len(tofu_like.WORLD_FACTS) + 1},
        {"num_real_authors": len(tofu_like.REAL_BOOKS) + 1},
        {"num_authors": 5.0},
        {"forget_authors": True},
    ],
)
def test_invalid_arguments_raise(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        make_synthetic_tofu(**kwargs)
