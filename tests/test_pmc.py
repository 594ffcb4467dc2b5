"""PartialModelCollapse without generating anything: decoding is replaced by scripted answers, ROUGE is worked out by
hand, and the loss is checked on a tiny real Llama."""

from __future__ import annotations

import math

import pytest
import torch

import pmc.collapse as collapse
from benchmarks.records import QABenchmark, QARecord
from pmc.batches import encode_pairs
from pmc.collapse import PartialModelCollapse
from pmc.errors import ConfigError
from pmc.method import ForgetExample, RunContext
from pmc.models import build_tiny, train_tokenizer
from pmc.prompts import PromptFormat

FORGET = [
    QARecord("Who wrote the red book?", "The secret author Zorblax Quintain wrote it in 1921."),
    QARecord("Where does Bob live?", "Bob hides in a lighthouse on Skellig Rock."),
]
RETAIN = [QARecord("What is two plus two?", "Two plus two is four."), QARecord("Name a colour.", "Blue is a colour.")]

# The model's own greedy answers before unlearning (PMC's reference), deliberately not the ground truth.
INITIAL = {
    FORGET[0].question: "alice wrote the red book in paris",  # 7 tokens
    FORGET[1].question: "bob lives in london",  # 4 tokens (stemmed: bob live in london)
}

# Scripted samples per epoch: question -> candidates, with ROUGE-L recall against INITIAL worked out by hand.
EPOCH0 = {
    FORGET[0].question: [
        "alice wrote the red book",  # LCS 5 -> 5/7
        "the book is blue",  # LCS "the book" -> 2/7   <- lowest
        "alice wrote a poem in paris",  # LCS "alice wrote in paris" -> 4/7
    ],
    FORGET[1].question: [
        "bob lives in london",  # 4/4
        "nothing to say",  # 0/4  <- lowest
        "bob",  # 1/4
    ],
}
EPOCH1 = {FORGET[0].question: ["alice wrote the red book in paris", "alice in paris", "red book"]}  # 7/7, 3/7, 2/7
EPOCH2 = {FORGET[0].question: ["alice", "a dog barked", "paris"]}  # 1/7, 0, 1/7


class Scripted:
    """Stand-ins for pmc.collapse.greedy_answers / generate_answers that record every call."""

    def __init__(self, epochs: list[dict[str, list[str]]]):
        self.epochs = list(epochs)
        self.greedy_calls: list[tuple[list[str], dict]] = []
        self.sample_calls: list[tuple[list[str], dict]] = []

    def greedy_answers(self, model, tokenizer, fmt, questions, **kwargs):
        self.greedy_calls.append((list(questions), kwargs))
        return [INITIAL[q] for q in questions]

    def generate_answers(self, model, tokenizer, fmt, questions, **kwargs):
        self.sample_calls.append((list(questions), kwargs))
        script = self.epochs.pop(0)
        return [list(script[q]) for q in questions]


@pytest.fixture
def scripted(monkeypatch):
    def install(*epochs):
        s = Scripted(list(epochs))
        monkeypatch.setattr(collapse, "greedy_answers", s.greedy_answers)
        monkeypatch.setattr(collapse, "generate_answers", s.generate_answers)
        return s

    return install


def make_run(model=None, tokenizer=None) -> RunContext:
    bench = QABenchmark(
        name="hand",
        forget=list(FORGET),
        retain=list(RETAIN),
        eval_sets={"forget": list(FORGET), "retain": list(RETAIN)},
    )
    return RunContext(model or torch.nn.Linear(1, 1), tokenizer, PromptFormat(), bench, max_new_tokens=24,
                      generation_batch_size=4)


def epoch(method, run, number):
    run.epoch = number
    method.on_epoch_start(run)


# --- sampling and selection --------------------------------------------------------------------------------------


def test_setup_records_initial_answers(scripted):
    s = scripted()
    run = make_run()
    method = PartialModelCollapse(num_samples=3)
    method.setup(run)
    assert method.initial_answers == [INITIAL[r.question] for r in FORGET]
    assert s.greedy_calls == [([r.question for r in FORGET], s.greedy_calls[0][1])]
    assert s.greedy_calls[0][1]["max_new_tokens"] == 24 and s.greedy_calls[0][1]["batch_size"] == 4
    assert method.cache.pending() == [0, 1]
    assert s.sample_calls == []  # setup samples nothing


def test_epoch_picks_lowest_rouge_sample_per_question(scripted):
    s = scripted(EPOCH0)
    run = make_run()
    method = PartialModelCollapse(num_samples=3, temperature=0.9, top_p=0.8)
    method.setup(run)
    epoch(method, run, 0)
    assert method.cache.answers == ["the book is blue", "nothing to say"]
    assert method.cache.scores == pytest.approx([2 / 7, 0.0])
    questions, kwargs = s.sample_calls[0]
    assert questions == [r.question for r in FORGET]
    assert (kwargs["num_samples"], kwargs["temperature"], kwargs["top_p"]) == (3, 0.9, 0.8)
    assert kwargs["max_new_tokens"] == 24  # max_new_tokens=None falls back to the run's limit


def test_explicit_max_new_tokens_overrides_the_run(scripted):
    s = scripted(EPOCH0)
    run = make_run()
    method = PartialModelCollapse(num_samples=3, max_new_tokens=7)
    method.setup(run)
    epoch(method, run, 0)
    assert s.greedy_calls[0][1]["max_new_tokens"] == 7 and s.sample_calls[0][1]["max_new_tokens"] == 7


def test_best_so_far_and_zero_score_questions_are_not_resampled(scripted):
    s = scripted(EPOCH0, EPOCH1, EPOCH2)
    run = make_run()
    method = PartialModelCollapse(num_samples=3)
    method.setup(run)

    epoch(method, run, 0)
    # question 1 reached 0 in epoch 0: only question 0 is sampled from now on
    epoch(method, run, 1)
    assert s.sample_calls[1][0] == [FORGET[0].question]
    # best of epoch 1 is "red book" at 2/7: not strictly lower than the cached 2/7, so the cache keeps epoch 0's
    assert method.cache.answers == ["the book is blue", "nothing to say"]
    assert method.cache.scores == pytest.approx([2 / 7, 0.0])

    epoch(method, run, 2)
    assert s.sample_calls[2][0] == [FORGET[0].question]
    assert method.cache.answers == ["a dog barked", "nothing to say"]
    assert method.cache.scores == pytest.approx([0.0, 0.0])

    epoch(method, run, 3)  # everything at 0: no generation at all (the script is exhausted, so a call would fail)
    assert len(s.sample_calls) == 3
    assert method.cache.answers == ["a dog barked", "nothing to say"]


def test_worse_later_sample_keeps_cached_answer(scripted):
    worse = {FORGET[0].question: ["alice wrote the red book in paris"] * 3}  # 7/7
    scripted(EPOCH0, worse)
    run = make_run()
    method = PartialModelCollapse(num_samples=3)
    method.setup(run)
    epoch(method, run, 0)
    epoch(method, run, 1)
    assert method.cache.answers[0] == "the book is blue"
    assert method.cache.scores[0] == pytest.approx(2 / 7)


def test_forget_examples_are_selected_answers_never_ground_truth(scripted):
    scripted(EPOCH0)
    run = make_run()
    method = PartialModelCollapse(num_samples=3)
    method.setup(run)
    epoch(method, run, 0)
    examples = method.forget_examples(run)
    assert examples == [ForgetExample(FORGET[0].question, "the book is blue"),
                        ForgetExample(FORGET[1].question, "nothing to say")]
    truths = {r.answer for r in FORGET}
    assert not any(e.answer in truths for e in examples)


def test_length_penalty_changes_the_choice(scripted):
    samples = {
        FORGET[0].question: ["wrote", "the cat is black and white"],  # 1/7 (1 word) vs 1/7 ("the", 6 words)
        FORGET[1].question: ["nothing", "london is far away from here"],  # 0 (1 word) vs 1/4 (6 words)
    }
    scripted(samples, samples)
    plain = PartialModelCollapse(num_samples=2)
    run = make_run()
    plain.setup(run)
    epoch(plain, run, 0)
    assert plain.cache.answers == ["wrote", "nothing"]  # tie at 1/7 -> first; 0 < 1/4

    penalised = PartialModelCollapse(num_samples=2, min_length=3, length_penalty=1.0)
    run = make_run()
    penalised.setup(run)
    epoch(penalised, run, 0)
    assert penalised.cache.answers == ["the cat is black and white", "london is far away from here"]
    assert penalised.cache.scores == pytest.approx([1 / 7, 1 / 4])


def test_bradley_terry_with_sharp_temperature_picks_the_lowest(scripted):
    # tau = 0.01: the 2/7 candidate outweighs the 4/7 one by e^(2/7 / 0.01) ~ 2.5e12; the draw is effectively argmin
    scripted(EPOCH0)
    run = make_run()
    method = PartialModelCollapse(num_samples=3, selection="bradley_terry", bt_temperature=0.01, seed=3)
    method.setup(run)
    epoch(method, run, 0)
    assert method.cache.answers == ["the book is blue", "nothing to say"]


# --- loss --------------------------------------------------------------------------------------------------------


def test_loss_is_collapse_plus_weighted_retain(scripted):
    scripted(EPOCH0)
    texts = [t for r in FORGET + RETAIN for t in (r.question, r.answer)] + [a for c in EPOCH0.values() for a in c]
    tokenizer = train_tokenizer(texts + ["Question: \nAnswer:"], vocab_size=300)
    model = build_tiny(tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                       max_position_embeddings=128, seed=0)
    run = make_run(model, tokenizer)
    method = PartialModelCollapse(num_samples=3, retain_weight=1.5)
    method.setup(run)
    epoch(method, run, 0)

    forget = encode_pairs(tokenizer, run.prompt_format, [(e.question, e.answer) for e in method.forget_examples(run)], 64)
    retain = encode_pairs(tokenizer, run.prompt_format, [(r.question, r.answer) for r in RETAIN], 64)
    terms = method.loss(model, forget, retain)

    # independent reference: the causal LM's own loss on the same answer-only labels
    def lm_loss(batch):
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss.item()

    collapse_ref, retain_ref = lm_loss(forget), lm_loss(retain)
    assert terms["collapse_loss"].item() == pytest.approx(collapse_ref, rel=1e-5)
    assert terms["retain_loss"].item() == pytest.approx(retain_ref, rel=1e-5)
    assert terms["loss"].item() == pytest.approx(collapse_ref + 1.5 * retain_ref, rel=1e-5)
    assert terms["selected_score"].item() == pytest.approx((2 / 7 + 0.0) / 2)
    assert collapse_ref != pytest.approx(retain_ref)  # so a swapped weight would be caught

    terms["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


# --- configuration -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_samples": 0},
        {"temperature": 0.0},
        {"temperature": -1.0},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"selection": "softmax"},
        {"selection": "bradley_terry", "bt_temperature": 0.0},
        {"selection": "bradley_terry", "bt_temperature": -0.5},
    ],
)
def test_invalid_arguments_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        PartialModelCollapse(**kwargs)


def test_valid_edge_arguments_are_accepted():
    PartialModelCollapse(num_samples=1, top_p=1.0, selection="bradley_terry", bt_temperature=math.inf)
    PartialModelCollapse(selection="argmin", bt_temperature=0.0)  # tau is unused by argmin
