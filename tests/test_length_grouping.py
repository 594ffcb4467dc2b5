"""training.group_by_length: HF Trainer's length-grouped order for stage-0 fine-tuning and unlearning.

The plain order must stay the exact shuffle the trainer always drew (so results without the switch do not move);
the grouped order must be a permutation whose micro-batches hold rows of similar length, the longest first."""

from __future__ import annotations

import random

import pytest
import torch

import pmc.trainer as trainer
from pmc.core.batches import IGNORE_INDEX, epoch_order, pair_length
from pmc.core.models import train_tokenizer
from pmc.core.prompts import PromptFormat
from pmc.core.records import QABenchmark, QARecord
from pmc.methods.base import Method, RunContext
from pmc.optimisation import TrainingConfig


def padded_tokens(order: list[int], lengths: list[int], batch_size: int) -> int:
    """What right-padding each micro-batch to its longest row costs in tokens."""
    chunks = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    return sum(max(lengths[i] for i in chunk) * len(chunk) for chunk in chunks)


def test_plain_order_is_the_shuffle_the_trainer_always_drew():
    assert epoch_order(random.Random(3), 10, 4) == random.Random(3).sample(range(10), 10)


def test_grouped_order_is_a_length_sorted_permutation_with_the_longest_row_first():
    lengths = [random.Random(i).randint(5, 80) for i in range(200)]
    order = epoch_order(random.Random(0), 200, 4, lengths)
    assert sorted(order) == list(range(200))
    assert lengths[order[0]] == max(lengths)  # the longest row leads (an out-of-memory shows at the first step)
    # 200 rows, batch 4: mega-batches of min(200 // 16, 50) = 12 micro-batches = 48 rows, each sorted longest first
    # (only the first row of the first and of the longest mega-batch may have been swapped)
    for start in range(0, 200, 48):
        mega = [lengths[i] for i in order[start : start + 48]][1:]
        assert mega == sorted(mega, reverse=True)


def test_grouping_cuts_the_padding_a_plain_shuffle_pays():
    lengths = [10, 60] * 50  # two lengths, interleaved
    plain = epoch_order(random.Random(1), 100, 8)
    grouped = epoch_order(random.Random(1), 100, 8, lengths)
    assert padded_tokens(grouped, lengths, 8) < 0.8 * padded_tokens(plain, lengths, 8)


def test_grouped_order_is_seeded_and_changes_between_epochs():
    lengths = list(range(40))
    first, second = random.Random(5), random.Random(5)
    epoch1 = epoch_order(first, 40, 4, lengths)
    assert epoch1 == epoch_order(second, 40, 4, lengths)
    assert epoch_order(first, 40, 4, lengths) != epoch1


def test_an_empty_epoch_has_an_empty_order():
    assert epoch_order(random.Random(0), 0, 4, []) == [] == epoch_order(random.Random(0), 0, 4)


def test_lengths_must_cover_every_row():
    with pytest.raises(ValueError, match="3 lengths for 4 rows"):
        epoch_order(random.Random(0), 4, 2, [1, 2, 3])


# 64 rows of two lengths (about 36 and 71 tokens): mega-batches of min(64 // (4 * 4), 50) = 4 micro-batches of 4
RECORDS = [QARecord(f"Question {i}?", " ".join(["word"] * (1 + 7 * (i % 2))) + ".") for i in range(64)]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([t for r in RECORDS for t in (r.question, r.answer)] + ["Question: \nAnswer:"], 200)


def mixed_batches(batches) -> int:
    """Micro-batches holding short and long rows: real lengths differ by more than the one token a question's
    number can add."""
    return sum(int(b.attention_mask.sum(1).max() - b.attention_mask.sum(1).min()) > 1 for b in batches)


def captured_epochs(monkeypatch, call) -> list[list]:
    """The micro-batches of the first two epochs that `call` hands to the training loop (which is not run)."""
    captured = []

    def fake_optimise(model, training, epoch_batches, *args, **kwargs):
        captured.extend([list(epoch_batches(0)), list(epoch_batches(1))])

    monkeypatch.setattr(trainer, "optimise", fake_optimise)
    call()
    return captured


@pytest.mark.parametrize("grouped", [False, True])
def test_finetune_trains_every_pair_once_per_epoch_in_groups_of_similar_length(monkeypatch, tokenizer, grouped):
    fmt = PromptFormat()
    training = TrainingConfig(epochs=2, learning_rate=1e-3, batch_size=4, group_by_length=grouped)
    epochs = captured_epochs(monkeypatch, lambda: trainer.finetune(None, tokenizer, fmt, RECORDS, training, seed=0))
    answer_tokens = sum(pair_length(tokenizer, fmt, r.question, r.answer) - len(fmt.prompt_ids(tokenizer, r.question))
                        for r in RECORDS)
    for batches in epochs:
        assert sum(b.input_ids.shape[0] for b in batches) == len(RECORDS)
        assert sum(int((b.labels != IGNORE_INDEX).sum()) for b in batches) == answer_tokens
        # grouped: each mega-batch is sorted, so at most one of its 4 micro-batches (where short meets long) mixes;
        # a shuffle mixes most of the 16
        assert (mixed_batches(batches) <= 4) if grouped else (mixed_batches(batches) > 8)


def test_grouped_finetune_pays_less_than_half_the_padding(monkeypatch, tokenizer):
    padding = {}
    for grouped in (False, True):
        training = TrainingConfig(epochs=2, learning_rate=1e-3, batch_size=4, group_by_length=grouped)
        finetune = lambda training=training: trainer.finetune(None, tokenizer, PromptFormat(), RECORDS, training, 0)
        epochs = captured_epochs(monkeypatch, finetune)
        padding[grouped] = sum(int((b.attention_mask == 0).sum()) for batches in epochs for b in batches)
    assert padding[True] < 0.5 * padding[False]


class Plain(Method):
    """The forget set as it is; only the micro-batches it is given matter here."""

    name = "plain"


def test_unlearning_groups_forget_rows_by_length(monkeypatch, tokenizer):
    bench = QABenchmark(name="lengths", forget=RECORDS, retain=RECORDS[:2], eval_sets={"forget": RECORDS})
    run = RunContext(torch.nn.Linear(1, 1), tokenizer, PromptFormat(), bench, max_new_tokens=8,
                     generation_batch_size=2)
    training = TrainingConfig(epochs=2, learning_rate=1e-3, batch_size=4, group_by_length=True)
    epochs = captured_epochs(monkeypatch, lambda: trainer.unlearn(Plain(), run, training, seed=0))
    for batches in epochs:
        forget = [f for f, _ in batches]
        assert sum(f.input_ids.shape[0] for f in forget) == len(RECORDS)
        assert mixed_batches(forget) <= 4
