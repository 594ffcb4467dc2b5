"""PMC's scoring and choice among sampled answers, checked against values worked out by hand."""

from __future__ import annotations

import math
import random

import pytest

from pmc.core.errors import ConfigError
from pmc.core.rouge import rouge_l_recall
from pmc.methods.selection import (
    BestSoFarCache,
    bradley_terry_weights,
    check_length_penalty,
    penalised_score,
    select,
    word_count,
)

# --- ROUGE-L recall ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reference, candidate, expected",
    [
        ("the cat sat on the mat", "the cat sat on the mat", 1.0),
        ("the cat sat on the mat", "dogs bark loudly", 0.0),
        ("the cat sat on the mat", "the cat", 2 / 6),  # LCS "the cat" over 6 reference tokens
        ("the cat sat on the mat", "the mat sat", 2 / 6),  # LCS is a subsequence: "the sat" or "the mat", 2 tokens
        ("the cat sat on the mat", "The CAT, sat!", 3 / 6),  # case and punctuation ignored
        ("cats running", "cat run", 1.0),  # stemming: cats -> cat, running -> run
        ("the cat", "the cat sat on the mat", 1.0),  # recall, not precision: longer candidate still covers it
        ("the cat sat on the mat", "mat the on sat cat the", 3 / 6),  # order matters: LCS is "the on the"
        ("the cat sat on the mat", "", 0.0),
        ("", "anything at all", 0.0),
    ],
)
def test_rouge_l_recall(reference, candidate, expected):
    assert rouge_l_recall(reference, candidate) == pytest.approx(expected)


def test_rouge_l_recall_is_reference_normalised():
    # Recall divides by the reference length: swapping the roles changes the value (2/6 vs 2/2).
    assert rouge_l_recall("the cat", "the cat sat on the mat") == pytest.approx(1.0)
    assert rouge_l_recall("the cat sat on the mat", "the cat") == pytest.approx(1 / 3)


# --- length penalty ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, words",
    [
        ("one two three", 3),
        ("", 1),  # "".split(" ") == [""]: the official count makes an empty answer one word
        ("   ", 1),  # stripped first, so only spaces is empty too
        ("  one two  ", 2),  # leading and trailing spaces are stripped
        ("one  two", 3),  # inner runs of spaces add empty words: ["one", "", "two"]
        ("one\ntwo", 1),  # only spaces split: a newline does not
    ],
)
def test_word_count_is_the_official_split_on_single_spaces(answer, words):
    assert word_count(answer) == words
    assert word_count(answer) == len(answer.strip().split(" "))  # official PMC: unlearning/pmc.py L140


E = math.e
PENALISED = [
    # recall, answer, min_length, penalty, expected (worked out by hand)
    (0.2, "one two", 3, "exp", 0.2 + E**-2),  # 2 words < 3: + e^-2 = 0.3353
    (0.2, "one two three", 3, "exp", 0.2),  # exactly min_length: not penalised
    (0.5, "a b c d", 5, "exp", 0.5 + E**-4),  # 0.5183, under the cap
    (0.0, "", 2, "exp", E**-1),  # empty answer: 1 word -> + e^-1 = 0.3679
    (0.0, "", 1, "exp", 0.0),  # ... and 1 word is not below min_length 1
    (0.9, "one", 5, "exp", 1.0),  # 0.9 + e^-1 = 1.27, capped at 1
    (1.0, "one", 5, "exp", 1.0),  # a full overlap stays 1
    (0.2, "one  two", 3, "exp", 0.2),  # 3 official words (double space): not penalised
    (0.0, "", 0, "exp", 0.0),  # min_length 0 disables the penalty (official: min_len == 0)
    (0.2, "one two", 3, 0.5, 0.7),  # constant option: + 0.5
    (0.9, "one", 5, 0.5, 1.4),  # ... uncapped
    (0.0, "", 2, 2.0, 2.0),  # empty answer is 1 word < 2
    (0.4, "one", 5, 0.0, 0.4),  # a zero constant changes nothing
]


@pytest.mark.parametrize("recall, answer, min_length, penalty, expected", PENALISED)
def test_penalised_score(recall, answer, min_length, penalty, expected):
    assert penalised_score(recall, answer, min_length, penalty) == pytest.approx(expected)


def test_penalised_score_defaults_to_the_official_exponential_form():
    assert penalised_score(0.2, "one two", 3) == pytest.approx(0.2 + math.exp(-2))


@pytest.mark.parametrize("penalty", ["Exp", "linear", "", -0.1, math.inf, math.nan, True, None])
def test_unknown_length_penalty_is_a_config_error(penalty):
    with pytest.raises(ConfigError, match="length_penalty"):
        check_length_penalty(penalty)


@pytest.mark.parametrize("penalty", ["exp", 0, 0.0, 2, 1.5])
def test_length_penalty_accepts_exp_or_a_non_negative_number(penalty):
    check_length_penalty(penalty)


# --- selection rules ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scores, expected",
    [([0.5, 0.2, 0.9], 1), ([0.3, 0.1, 0.1], 1), ([0.0, 0.0], 0), ([0.7], 0), ([1.0, 0.9, 0.8, 0.0], 3)],
)
def test_argmin_picks_lowest_first_on_ties(scores, expected):
    assert select(scores, "argmin", 0.1, random.Random(0)) == expected


def test_argmin_does_not_consume_randomness():
    rng = random.Random(7)
    select([0.3, 0.2], "argmin", 0.1, rng)
    assert rng.random() == random.Random(7).random()


def test_bradley_terry_weights_two_candidates():
    # logits (1 - s) / tau = (1 - 0) / 0.5 = 2 and (1 - 0.5) / 0.5 = 1 -> softmax = e/(e+1), 1/(e+1)
    w = bradley_terry_weights([0.0, 0.5], 0.5)
    assert w == pytest.approx([math.e / (math.e + 1), 1 / (math.e + 1)])
    assert w == pytest.approx([0.7310585786, 0.2689414214])


def test_bradley_terry_weights_three_candidates():
    # logits (1 - s) / 0.2 = 4, 4, 2 -> weights 1/(2 + e^-2), 1/(2 + e^-2), e^-2/(2 + e^-2)
    w = bradley_terry_weights([0.2, 0.2, 0.6], 0.2)
    z = 2 + math.exp(-2)
    assert w == pytest.approx([1 / z, 1 / z, math.exp(-2) / z])
    assert w == pytest.approx([0.4683105, 0.4683105, 0.0633789], abs=1e-6)
    assert sum(w) == pytest.approx(1.0)


def test_bradley_terry_weights_temperature_sharpens():
    # Same scores, tau 0.05: logits 20 vs 10 -> the low score gets 1/(1 + e^-10) of the mass.
    assert bradley_terry_weights([0.0, 0.5], 0.05)[0] == pytest.approx(1 / (1 + math.exp(-10)))
    # Equal scores -> uniform, whatever tau.
    assert bradley_terry_weights([0.3, 0.3, 0.3, 0.3], 0.01) == pytest.approx([0.25] * 4)


def test_bradley_terry_weights_do_not_overflow():
    # Raw exp(1 / 1e-3) overflows a float; the weights must still be a proper distribution.
    w = bradley_terry_weights([0.0, 1.0], 1e-3)
    assert w == pytest.approx([1.0, 0.0])


def test_bradley_terry_sampling_frequencies_match_weights():
    rng = random.Random(1234)
    scores = [0.2, 0.2, 0.6]
    draws = 20_000
    counts = [0, 0, 0]
    for _ in range(draws):
        counts[select(scores, "bradley_terry", 0.2, rng)] += 1
    z = 2 + math.exp(-2)
    expected = [1 / z, 1 / z, math.exp(-2) / z]
    for count, p in zip(counts, expected):
        # binomial standard deviation is at most sqrt(0.25 / 20000) ~ 0.0035; allow ~4 sigma
        assert count / draws == pytest.approx(p, abs=0.015)


def test_bradley_terry_sampling_is_reproducible_with_the_same_seed():
    scores = [0.1, 0.4, 0.5, 0.9]
    a = [select(scores, "bradley_terry", 0.3, r) for r in [random.Random(5)] for _ in range(50)]
    b = [select(scores, "bradley_terry", 0.3, r) for r in [random.Random(5)] for _ in range(50)]
    assert a == b and len(set(a)) > 1  # deterministic, yet not always the same index


@pytest.mark.parametrize("rule", ["softmax", "min", "", "Argmin"])
def test_unknown_rule_is_a_config_error(rule):
    with pytest.raises(ConfigError, match="selection"):
        select([0.1, 0.2], rule, 0.1, random.Random(0))


@pytest.mark.parametrize("tau", [0.0, -0.1])
def test_non_positive_bt_temperature_is_a_config_error(tau):
    with pytest.raises(ConfigError, match="bt_temperature"):
        select([0.1, 0.2], "bradley_terry", tau, random.Random(0))
    with pytest.raises(ConfigError, match="bt_temperature"):
        bradley_terry_weights([0.1, 0.2], tau)


# --- best-so-far cache -------------------------------------------------------------------------------------------


def test_cache_starts_empty_and_everything_pending():
    cache = BestSoFarCache(3)
    assert cache.pending() == [0, 1, 2]
    assert cache.answers == [None, None, None]
    assert math.isnan(cache.mean_score())  # nothing sampled yet


def test_cache_ties_replace_the_cached_answer():
    # official PMC (unlearning/pmc.py L51-58): the old answer is kept only if the new score is higher
    cache = BestSoFarCache(2)
    assert cache.offer(0, "first", 0.5) is True
    assert cache.offer(0, "tie", 0.5) is True  # equal: the newer answer wins
    assert (cache.answers[0], cache.scores[0]) == ("tie", 0.5)
    assert cache.offer(0, "worse", 0.7) is False
    assert (cache.answers[0], cache.scores[0]) == ("tie", 0.5)
    assert cache.offer(0, "better", 0.2) is True
    assert (cache.answers[0], cache.scores[0]) == ("better", 0.2)
    assert cache.answers[1] is None and cache.scores[1] == math.inf  # other questions untouched


def test_cache_zero_score_questions_leave_pending():
    cache = BestSoFarCache(3)
    cache.offer(0, "a", 0.4)
    cache.offer(1, "b", 0.0)
    assert cache.pending() == [0, 2]  # 0 still improvable, 2 never sampled, 1 done
    cache.offer(2, "c", 0.1)
    assert cache.pending() == [0, 2]
    cache.offer(0, "d", 0.0)
    cache.offer(2, "e", 0.0)
    assert cache.pending() == []
    assert cache.answers == ["d", "b", "e"]


def test_cache_mean_score_is_over_sampled_questions():
    cache = BestSoFarCache(3)
    cache.offer(0, "answer 0", 0.3)
    assert cache.mean_score() == pytest.approx(0.3)  # questions 1 and 2 not sampled yet: left out, not infinite
    for i, s in [(1, 0.0), (2, 0.6)]:
        cache.offer(i, f"answer {i}", s)
    assert cache.mean_score() == pytest.approx(0.3)
    cache.offer(2, "answer 2b", 0.3)
    assert cache.mean_score() == pytest.approx(0.2)
