"""PartialModelCollapse without a trained model: decoding is replaced by scripted answers (or a model whose generate()
echoes a fixed continuation), ROUGE is worked out by hand, the loss is checked on a tiny real Llama, and sampling per
micro-batch is watched through the real training loop."""

from __future__ import annotations

import copy
import datetime
import math

import hydra
import pytest
import torch

import pmc.methods.collapse as collapse
from pmc.core.batches import IGNORE_INDEX, encode_pairs
from pmc.core.errors import ConfigError
from pmc.core.generation import generate_answers
from pmc.core.models import build_tiny, train_tokenizer
from pmc.core.prompts import PromptFormat
from pmc.core.records import QABenchmark, QARecord
from pmc.methods.base import ForgetExample, RunContext
from pmc.methods.collapse import PartialModelCollapse
from pmc.optimisation import TrainingConfig
from pmc.trainer import unlearn

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
    """Stand-ins for pmc.methods.collapse.greedy_answers / generate_answers that record every call. Each sampling call
    takes, for each question asked, the next candidate list of that question's script (scripts are given per epoch)."""

    def __init__(self, epochs: list[dict[str, list[str]]]):
        self.queues: dict[str, list[list[str]]] = {}
        for script in epochs:
            for question, candidates in script.items():
                self.queues.setdefault(question, []).append(candidates)
        self.greedy_calls: list[tuple[list[str], dict]] = []
        self.sample_calls: list[tuple[list[str], dict]] = []

    def greedy_answers(self, model, tokenizer, fmt, questions, **kwargs):
        self.greedy_calls.append((list(questions), kwargs))
        return [INITIAL[q] for q in questions]

    def generate_answers(self, model, tokenizer, fmt, questions, **kwargs):
        self.sample_calls.append((list(questions), kwargs))
        return [list(self.queues[q].pop(0)) for q in questions]


@pytest.fixture
def scripted(monkeypatch):
    def install(*epochs):
        s = Scripted(list(epochs))
        monkeypatch.setattr(collapse, "greedy_answers", s.greedy_answers)
        monkeypatch.setattr(collapse, "generate_answers", s.generate_answers)
        return s

    return install


def make_run(model=None, tokenizer=None, fmt=None) -> RunContext:
    bench = QABenchmark(
        name="hand",
        forget=list(FORGET),
        retain=list(RETAIN),
        eval_sets={"forget": list(FORGET), "retain": list(RETAIN)},
    )
    return RunContext(model or torch.nn.Linear(1, 1), tokenizer, fmt or PromptFormat(), bench, max_new_tokens=24,
                      generation_batch_size=4)


def start(method, run):
    """What the trainer does before the first step of a run that starts afresh."""
    method.setup(run)
    method.init_state(run)


def epoch(method, run, number):
    run.epoch = number
    method.on_epoch_start(run)


def per_epoch(**kwargs) -> PartialModelCollapse:
    return PartialModelCollapse(sample_every="epoch", **kwargs)


# --- sampling and selection, once per epoch ---------------------------------------------------------------------


def test_the_initial_state_is_the_initial_answers(scripted):
    s = scripted()
    run = make_run()
    method = PartialModelCollapse(num_samples=3)
    start(method, run)
    assert method.initial_answers == [INITIAL[r.question] for r in FORGET]
    assert s.greedy_calls == [([r.question for r in FORGET], s.greedy_calls[0][1])]
    assert s.greedy_calls[0][1]["max_new_tokens"] == 24 and s.greedy_calls[0][1]["batch_size"] == 4
    assert method.cache.pending() == [0, 1]
    assert s.sample_calls == []  # setup samples nothing


def test_setup_alone_decodes_nothing(scripted):
    """A resumed run sets PMC up and loads its state, initial answers included: setup decodes nothing."""
    s = scripted()
    method = PartialModelCollapse(num_samples=3)
    method.setup(make_run())
    assert s.greedy_calls == [] and s.sample_calls == [] and method.cache.pending() == [0, 1]


def test_epoch_picks_lowest_rouge_sample_per_question(scripted):
    s = scripted(EPOCH0)
    run = make_run()
    method = per_epoch(num_samples=3, temperature=0.9, top_p=0.8)
    start(method, run)
    epoch(method, run, 0)
    assert method.cache.answers == ["the book is blue", "nothing to say"]
    assert method.cache.scores == pytest.approx([2 / 7, 0.0])
    questions, kwargs = s.sample_calls[0]
    assert questions == [r.question for r in FORGET]
    assert (kwargs["num_samples"], kwargs["temperature"], kwargs["top_p"], kwargs["top_k"]) == (3, 0.9, 0.8, 50)
    assert kwargs["max_new_tokens"] == 24  # no length set: the run's limit
    assert method.sampled_answers == 6


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"max_new_tokens": 7}, {"max_new_tokens": 7}),
        ({"max_length": 200}, {"max_length": 200}),  # the official limit: prompt + answer tokens
        ({}, {"max_new_tokens": 24}),  # neither: generation.max_new_tokens of the run
    ],
)
def test_one_length_limit_for_initial_answers_and_samples(scripted, kwargs, expected):
    s = scripted(EPOCH0)
    run = make_run()
    method = per_epoch(num_samples=3, **kwargs)
    start(method, run)
    epoch(method, run, 0)
    for _, call in s.greedy_calls + s.sample_calls:  # official: one max_length for both (inference.py L28, pmc.py L195)
        assert {k: call.get(k) for k in ("max_new_tokens", "max_length") if call.get(k) is not None} == expected


def test_best_so_far_ties_replace_and_zero_score_questions_are_not_resampled(scripted):
    s = scripted(EPOCH0, EPOCH1, EPOCH2)
    run = make_run()
    method = per_epoch(num_samples=3)
    start(method, run)

    epoch(method, run, 0)
    # question 1 reached 0 in epoch 0: only question 0 is sampled from now on
    epoch(method, run, 1)
    assert s.sample_calls[1][0] == [FORGET[0].question]
    # best of epoch 1 is "red book" at 2/7, equal to the cached 2/7: the newer answer replaces it (official)
    assert method.cache.answers == ["red book", "nothing to say"]
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
    method = per_epoch(num_samples=3)
    start(method, run)
    epoch(method, run, 0)
    epoch(method, run, 1)
    assert method.cache.answers[0] == "the book is blue"
    assert method.cache.scores[0] == pytest.approx(2 / 7)


def test_forget_examples_are_selected_answers_never_ground_truth(scripted):
    scripted(EPOCH0)
    run = make_run()
    method = per_epoch(num_samples=3)
    start(method, run)
    epoch(method, run, 0)
    examples = method.forget_examples(run)
    assert examples == [ForgetExample(FORGET[0].question, "the book is blue"),
                        ForgetExample(FORGET[1].question, "nothing to say")]
    assert method.forget_batch_examples(run, examples, [1, 0]) == [examples[1], examples[0]]  # no sampling here
    truths = {r.answer for r in FORGET}
    assert not any(e.answer in truths for e in examples)


def test_exponential_length_penalty_changes_the_choice(scripted):
    samples = {
        # 1 word, 1/7 (+ e^-1 = 0.511 when penalised) vs 6 words, 1/7 ("the")
        FORGET[0].question: ["wrote", "the cat is black and white"],
        # "" is one official word, 0 (+ e^-1 = 0.368) vs 6 words, 1/4
        FORGET[1].question: ["", "london is far away from here"],
    }
    scripted(samples, samples)
    plain = per_epoch(num_samples=2)
    run = make_run()
    start(plain, run)
    epoch(plain, run, 0)
    assert plain.cache.answers == ["wrote", ""]  # min_length 0 (official default): tie at 1/7 -> first; 0 < 1/4

    penalised = per_epoch(num_samples=2, min_length=3)  # length_penalty defaults to the official exp form
    run = make_run()
    start(penalised, run)
    epoch(penalised, run, 0)
    assert penalised.cache.answers == ["the cat is black and white", "london is far away from here"]
    assert penalised.cache.scores == pytest.approx([1 / 7, 1 / 4])


def test_constant_length_penalty_option(scripted):
    samples = {FORGET[0].question: ["wrote", "alice wrote the red book in paris"],  # 1/7 + 2 vs 7/7
               FORGET[1].question: ["", "london"]}  # 0 + 2 vs 1/4 + 2
    scripted(samples)
    method = per_epoch(num_samples=2, min_length=3, length_penalty=2.0)
    run = make_run()
    start(method, run)
    epoch(method, run, 0)
    assert method.cache.answers == ["alice wrote the red book in paris", ""]
    assert method.cache.scores == pytest.approx([1.0, 2.0])  # uncapped, unlike the exp form


def test_bradley_terry_with_sharp_temperature_picks_the_lowest(scripted):
    # tau = 0.01: the 2/7 candidate outweighs the 4/7 one by e^(2/7 / 0.01) ~ 2.5e12; the draw is effectively argmin
    scripted(EPOCH0)
    run = make_run()
    method = per_epoch(num_samples=3, selection="bradley_terry", bt_temperature=0.01, seed=3)
    start(method, run)
    epoch(method, run, 0)
    assert method.cache.answers == ["the book is blue", "nothing to say"]


# --- sampling inside each micro-batch (the official schedule) ---------------------------------------------------


def test_batch_mode_samples_only_the_micro_batchs_pending_questions(scripted):
    s = scripted(EPOCH0, EPOCH1)
    run = make_run()
    method = PartialModelCollapse(num_samples=3)
    assert method.sample_every == "batch"  # the default
    start(method, run)
    epoch(method, run, 0)
    assert s.sample_calls == []  # nothing at the start of an epoch
    examples = method.forget_examples(run)
    assert [e.answer for e in examples] == ["", ""]  # placeholders until sampled, never the ground truth

    rows = method.forget_batch_examples(run, examples, [1])
    assert s.sample_calls[-1][0] == [FORGET[1].question]
    assert rows == [ForgetExample(FORGET[1].question, "nothing to say")]
    assert method.cache.answers == [None, "nothing to say"]
    assert method.cache.mean_score() == 0.0  # over the sampled question only

    rows = method.forget_batch_examples(run, examples, [0, 1])  # question 1 is at 0 already: not resampled
    assert s.sample_calls[-1][0] == [FORGET[0].question]
    assert rows == [ForgetExample(FORGET[0].question, "the book is blue"),
                    ForgetExample(FORGET[1].question, "nothing to say")]
    assert len(s.sample_calls) == 2 and method.sampled_answers == 6


QUESTIONS = [f"Question number {i} about the author?" for i in range(4)]
START = "alpha beta gamma delta"  # every initial answer


def test_batch_mode_samples_inside_each_micro_batch_with_the_current_weights(monkeypatch):
    """Through the real trainer: a sampling call right before each micro-batch's step, with the weights that step
    trains, for exactly that micro-batch's pending questions; the trained rows are the answers just chosen."""
    events = run_watched(monkeypatch, "batch")
    epochs = split_epochs(events)
    # epoch 1: 4 questions, batch 2 -> sample, loss, sample, loss
    assert [e[0] for e in epochs[0]] == ["sample", "loss", "sample", "loss"]
    for (_, weights_s, asked), (_, weights_l, trained) in zip(epochs[0][0::2], epochs[0][1::2]):
        assert torch.equal(weights_s, weights_l)  # sampled with the weights of the step that trains on them
        assert sorted(asked) == sorted(q for q, _ in trained)  # the micro-batch's own questions
    assert not torch.equal(epochs[0][0][1], epochs[0][2][1])  # the first step changed the weights in between
    # only question 0 stays above 0: epoch 2 samples once, in the micro-batch that holds it
    samples = [e for e in epochs[1] if e[0] == "sample"]
    assert [e[2] for e in samples] == [[QUESTIONS[0]]]
    after = epochs[1][epochs[1].index(samples[0]) + 1]
    assert after[0] == "loss" and torch.equal(samples[0][1], after[1]) and QUESTIONS[0] in [q for q, _ in after[2]]
    # trained answers are the sampled choices: question 0's third sampling call ties at 1/4 with the answer from
    # epoch 1 and replaces it (official ties)
    trained = dict(pair for e in epochs[1] if e[0] == "loss" for pair in e[2])
    assert trained[QUESTIONS[0]] == "alpha b3" and all(trained[q].startswith("omega") for q in QUESTIONS[1:])


def test_epoch_mode_samples_once_at_the_start_of_each_epoch(monkeypatch):
    events = run_watched(monkeypatch, "epoch")
    epochs = split_epochs(events)
    assert [e[0] for e in epochs[0]] == ["sample", "loss", "loss"]
    assert sorted(epochs[0][0][2]) == sorted(QUESTIONS)
    assert not torch.equal(epochs[0][0][1], epochs[0][2][1])  # the second micro-batch trains on stale samples
    assert [e[0] for e in epochs[1]] == ["sample", "loss", "loss"] and epochs[1][0][2] == [QUESTIONS[0]]


def test_step_mode_samples_an_optimizer_steps_questions_at_its_start_with_the_weights_it_trains(monkeypatch):
    """sample_every=step: with gradient accumulation (micro-batches of 1, 3 to a step: 4 questions are a step of 3
    and a step of 1) one sampling call at each step's start, for every question of its micro-batches, with the
    weights all of them train with; the micro-batches then train on the answers just chosen."""
    events = run_watched(monkeypatch, "step", batch_size=1, accumulation=3)
    epochs = split_epochs(events)
    assert [e[0] for e in epochs[0]] == ["sample", "loss", "loss", "loss", "sample", "loss"]
    first, second = epochs[0][0], epochs[0][4]
    assert sorted(first[2] + second[2]) == sorted(QUESTIONS) and len(first[2]) == 3
    for sample, losses in ((first, epochs[0][1:4]), (second, epochs[0][5:])):
        assert sorted(q for loss in losses for q, _ in loss[2]) == sorted(sample[2])  # the step's own questions
        assert all(torch.equal(sample[1], loss[1]) for loss in losses)  # the weights every micro-batch trains with
    assert not torch.equal(first[1], second[1])  # the first step changed the weights in between
    trained = dict(pair for e in epochs[0] if e[0] == "loss" for pair in e[2])
    assert trained == {q: "alpha b1" if q in first[2] and q == QUESTIONS[0] else
                       "omega b1" if q in first[2] else "alpha b2" if q == QUESTIONS[0] else "omega b2"
                       for q in QUESTIONS}
    # epoch 2: only question 0 is still above 0, sampled at the start of the step whose micro-batches hold it
    samples = [(k, e) for k, e in enumerate(epochs[1]) if e[0] == "sample"]
    assert [e[2] for _, e in samples] == [[QUESTIONS[0]]]
    assert samples[0][0] in (0, 4)


def test_step_mode_samples_what_the_official_schedule_samples_with_the_same_weights(monkeypatch):
    """Under accumulation the official schedule samples each micro-batch with the step's weights, unchanged
    between its micro-batches: the same distributions as one call per step. Without accumulation the two schedules
    make the same calls with the same weights, call for call (so the same random draws)."""
    official = split_epochs(run_watched(monkeypatch, "batch", batch_size=1, accumulation=3))[0]
    assert [e[0] for e in official] == ["sample", "loss"] * 4
    assert all(torch.equal(official[0][1], e[1]) for e in official[:6])  # the first step's three micro-batches
    one_per_step = split_epochs(run_watched(monkeypatch, "step", batch_size=1, accumulation=3))[0]
    assert torch.equal(official[0][1], one_per_step[0][1])
    assert sorted(q for e in official[:6:2] for q in e[2]) == sorted(one_per_step[0][2])

    batch, step = run_watched(monkeypatch, "batch"), run_watched(monkeypatch, "step")
    assert [e[0] for e in step] == [e[0] for e in batch]
    for b, s in zip(batch, step):
        assert all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in zip(b, s))


def split_epochs(events):
    epochs = []
    for event in events:
        if event[0] == "epoch":
            epochs.append([])
        else:
            epochs[-1].append(event)
    return epochs


def run_watched(monkeypatch, sample_every: str, batch_size: int = 2, accumulation: int = 1):
    """Two epochs of PMC on a 1-layer Llama through pmc.trainer.unlearn, every sampling call and loss recorded with
    a copy of the weights at that moment. Question 0's candidates always overlap its initial answer (best 1/4, so it
    stays pending); the others get a 0-score candidate the first time."""
    events: list[tuple] = []
    calls = []

    def weights(model):
        return torch.cat([p.detach().flatten() for p in model.parameters()]).clone()

    def fake_greedy(model, tokenizer, fmt, questions, **kwargs):
        return [START] * len(questions)

    def fake_generate(model, tokenizer, fmt, questions, **kwargs):
        calls.append(questions)
        n = len(calls)
        events.append(("sample", weights(model), list(questions)))
        return [[f"alpha beta b{n}", f"alpha b{n}"] if q == QUESTIONS[0] else [f"alpha b{n}", f"omega b{n}"]
                for q in questions]

    monkeypatch.setattr(collapse, "greedy_answers", fake_greedy)
    monkeypatch.setattr(collapse, "generate_answers", fake_generate)

    texts = QUESTIONS + [r.question for r in RETAIN] + [r.answer for r in RETAIN] + ["alpha beta omega b1 b2 b3 b4"]
    tokenizer = train_tokenizer(texts + ["Question: \nAnswer:"], vocab_size=300)
    model = build_tiny(tokenizer, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                       max_position_embeddings=128, seed=0)
    bench = QABenchmark(name="watched", forget=[QARecord(q, "The secret answer.") for q in QUESTIONS],
                        retain=list(RETAIN), eval_sets={})
    run = RunContext(model, tokenizer, PromptFormat(), bench, max_new_tokens=8, generation_batch_size=4)

    class Watched(PartialModelCollapse):
        def on_epoch_start(self, run):
            events.append(("epoch",))
            super().on_epoch_start(run)

        def loss(self, model, forget, retain):
            pairs = []
            for ids, mask in zip(forget.input_ids, forget.attention_mask):
                text = tokenizer.decode(ids[mask == 1].tolist(), skip_special_tokens=True)
                question, answer = text.removeprefix("Question: ").split("\nAnswer: ")
                pairs.append((question, answer))
            events.append(("loss", weights(model), pairs))
            return super().loss(model, forget, retain)

    method = Watched(num_samples=2, sample_every=sample_every)
    training = TrainingConfig(epochs=2, learning_rate=1e-2, batch_size=batch_size,
                              gradient_accumulation_steps=accumulation)
    unlearn(method, run, training, seed=0)
    return events


# --- loss --------------------------------------------------------------------------------------------------------


def test_loss_is_collapse_plus_weighted_retain(scripted):
    scripted(EPOCH0)
    texts = [t for r in FORGET + RETAIN for t in (r.question, r.answer)] + [a for c in EPOCH0.values() for a in c]
    tokenizer = train_tokenizer(texts + ["Question: \nAnswer:"], vocab_size=300)
    model = build_tiny(tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                       max_position_embeddings=128, seed=0)
    run = make_run(model, tokenizer)
    method = PartialModelCollapse(num_samples=3, retain_weight=1.5)
    start(method, run)
    rows = method.forget_batch_examples(run, method.forget_examples(run), [0, 1])

    forget = encode_pairs(tokenizer, run.prompt_format, [(e.question, e.answer) for e in rows], 64)
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


# --- decoding: top-k, length limits, the answer tag --------------------------------------------------------------


class EchoModel(torch.nn.Module):
    """generate(): the prompt rows, each repeated num_return_sequences times, followed by the first max_new_tokens of
    a fixed continuation (then end-of-sequence); records the keyword arguments it got."""

    def __init__(self, continuation: list[int], eos_id: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.continuation, self.eos_id, self.calls = continuation, eos_id, []

    def generate(self, input_ids, attention_mask, max_new_tokens, num_return_sequences, **kwargs):
        self.calls.append({"max_new_tokens": max_new_tokens, **kwargs})
        tail = (self.continuation + [self.eos_id] * max_new_tokens)[:max_new_tokens]
        rows = input_ids.repeat_interleave(num_return_sequences, dim=0)
        return torch.cat([rows, torch.tensor([tail] * rows.shape[0])], dim=1)


PHI = PromptFormat(question_template="Question: {question}\n", answer_prefix="Answer: ", answer_tag="Answer: ")


@pytest.fixture(scope="module")
def echo_tokenizer():
    texts = [f"Question: {r.question}\nAnswer: {r.answer}" for r in FORGET + RETAIN] + ["Answer: the book is blue"]
    return train_tokenizer(texts, vocab_size=300)


def echo(tokenizer, text: str) -> EchoModel:
    return EchoModel(tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id)


@pytest.mark.parametrize("top_k, expected", [(None, 50), (7, 7), (0, 0)])
def test_top_k_reaches_generate(echo_tokenizer, top_k, expected):
    model = echo(echo_tokenizer, "the book is blue")
    run = make_run(model, echo_tokenizer)
    method = per_epoch(num_samples=2, temperature=0.7, top_p=0.9, **({} if top_k is None else {"top_k": top_k}))
    start(method, run)
    epoch(method, run, 0)
    greedy, sampled = model.calls
    assert greedy["do_sample"] is False and greedy["top_k"] is None and "logits_processor" not in greedy
    if expected:  # with top-k, the harness's sampler (tests/test_sampling_filter.py) draws and generate takes it
        (sampling,) = sampled["logits_processor"]
        assert sampled["do_sample"] is False and sampled["top_k"] is None
        assert (sampling.temperature, sampling.top_p, sampling.top_k) == (0.7, 0.9, expected)
    else:
        assert sampled["do_sample"] is True
        assert (sampled["temperature"], sampled["top_p"], sampled["top_k"]) == (0.7, 0.9, 0)
    assert method.cache.answers == ["the book is blue", "the book is blue"]


def test_max_length_counts_each_rows_own_prompt(echo_tokenizer):
    continuation = "the book is blue and the cat is black"
    model = echo(echo_tokenizer, continuation)
    tokens = echo_tokenizer(continuation, add_special_tokens=False)["input_ids"]
    fmt = PromptFormat()
    questions = [FORGET[0].question, RETAIN[1].question]  # prompts of different lengths
    lengths = [len(fmt.prompt_ids(echo_tokenizer, q)) for q in questions]
    assert lengths[0] > lengths[1] + 2
    limit = lengths[0] + 3  # the longer prompt leaves room for 3 answer tokens, the shorter for more

    answers = generate_answers(model, echo_tokenizer, fmt, questions, max_length=limit, batch_size=2)
    assert model.calls[-1]["max_new_tokens"] == limit - lengths[1]
    expected = [echo_tokenizer.decode(tokens[: limit - n]).strip() for n in lengths]
    assert [a[0] for a in answers] == expected
    assert len(expected[0].split()) < len(expected[1].split())

    answers = generate_answers(model, echo_tokenizer, fmt, questions, max_new_tokens=3, batch_size=2)
    assert model.calls[-1]["max_new_tokens"] == 3
    assert [a[0] for a in answers] == [echo_tokenizer.decode(tokens[:3]).strip()] * 2


@pytest.mark.parametrize("kwargs", [{}, {"max_new_tokens": 3, "max_length": 40}])
def test_exactly_one_length_limit(echo_tokenizer, kwargs):
    with pytest.raises(ConfigError, match="exactly one of max_new_tokens, max_length"):
        generate_answers(echo(echo_tokenizer, "x"), echo_tokenizer, PromptFormat(), ["q"], **kwargs)


def test_max_length_shorter_than_a_prompt_is_a_config_error(echo_tokenizer):
    with pytest.raises(ConfigError, match="max_length=3 leaves no room"):
        generate_answers(echo(echo_tokenizer, "x"), echo_tokenizer, PromptFormat(), [FORGET[0].question], max_length=3)


@pytest.mark.parametrize(
    "generated, fmt, expected",
    [
        ("Answer: the book is blue", PHI, "the book is blue"),  # the model writes the tag itself: removed
        ("the book is blue", PHI, "the book is blue"),  # no tag: kept whole (the official sampler's slice of
                                                        # len("Answer: ") characters would leave "is blue")
        ("Answer: the book is blue", PromptFormat(), "Answer: the book is blue"),  # a format without a tag
    ],
)
def test_answer_tag_is_stripped_from_decoded_answers(echo_tokenizer, generated, fmt, expected):
    model = echo(echo_tokenizer, generated)
    greedy = generate_answers(model, echo_tokenizer, fmt, [FORGET[0].question], max_new_tokens=20)
    sampled = generate_answers(model, echo_tokenizer, fmt, [FORGET[0].question], max_new_tokens=20, num_samples=2,
                               temperature=1.0, top_p=1.0)
    assert greedy == [[expected]] and sampled == [[expected, expected]]


def test_phi_format_trains_the_answer_tag_like_the_official_encoding(echo_tokenizer):
    """Official (unlearning/encoding.py L19-25): text = "Question: q\\n" + "Answer: " + a + eos, labels from the
    first token after the tokenised question, so the "Answer: " tag is trained."""
    question, answer = FORGET[0].question, FORGET[0].answer
    batch = encode_pairs(echo_tokenizer, PHI, [(question, answer)], 256)
    labels = [t for t in batch.labels[0].tolist() if t != IGNORE_INDEX]

    text = f"Question: {question}\nAnswer: {answer}{echo_tokenizer.eos_token}"
    ids = echo_tokenizer(text)["input_ids"]
    start = len(echo_tokenizer(f"Question: {question}\n")["input_ids"])
    assert labels == ids[start:]
    assert batch.input_ids[0].tolist() == ids
    assert echo_tokenizer.decode(labels).startswith("Answer: ")


# --- prompt formats ----------------------------------------------------------------------------------------------

DATED_TEMPLATE = (
    "{%- if not date_string is defined %}{%- set date_string = strftime_now('%d %b %Y') %}{%- endif %}"
    "<date>{{ date_string }}</date>{%- for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{%- endfor %}"
    "{%- if add_generation_prompt %}<assistant>{%- endif %}"
)


def test_chat_prompt_carries_the_configured_date_not_todays(echo_tokenizer):
    tokenizer = copy.deepcopy(echo_tokenizer)
    tokenizer.chat_template = DATED_TEMPLATE  # Llama-3.2's template: today's date unless date_string is given
    chat = dict(style="chat", question_template="{question}", answer_prefix="", system_prompt="Be brief.")
    dated = PromptFormat(**chat, chat_template_kwargs={"date_string": "10 Apr 2025"})
    prompt = tokenizer.decode(dated.prompt_ids(tokenizer, "Who?"))
    assert prompt == "<date>10 Apr 2025</date><system>Be brief.<user>Who?<assistant>"

    undated = tokenizer.decode(PromptFormat(**chat).prompt_ids(tokenizer, "Who?"))
    assert datetime.date.today().strftime("%d %b %Y") in undated  # without it the prompt changes with the day


def test_model_configs_carry_the_official_prompts(make_config):
    phi = PromptFormat(**make_config(base=["model=phi_1_5"]).model.prompt)
    assert (phi.question_template, phi.answer_prefix, phi.answer_tag) == ("Question: {question}\n", "Answer: ",
                                                                         "Answer: ")
    for name in ("llama3_2_1b_instruct", "llama3_2_3b_instruct", "llama3_1_8b_instruct"):
        llama = PromptFormat(**make_config(base=[f"model={name}"]).model.prompt)
        assert llama.chat_template_kwargs == {"date_string": "10 Apr 2025"}
        assert (llama.style, llama.system_prompt, llama.answer_tag) == ("chat", "You are a helpful assistant.", "")


def test_formats_with_chat_template_kwargs_are_hashable_by_value():
    chat = dict(style="chat", question_template="{question}", answer_prefix="")
    a = PromptFormat(**chat, chat_template_kwargs={"date_string": "10 Apr 2025"})
    b = PromptFormat(**chat, chat_template_kwargs={"date_string": "10 Apr 2025"})
    c = PromptFormat(**chat, chat_template_kwargs={"date_string": "11 Apr 2025"})
    assert a == b and hash(a) == hash(b) and a != c
    assert {(a, "q"): 1}[(b, "q")] == 1  # tokenisation memos key on (format, text)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"answer_tag": "Answer: "}, "answer_tag"),  # default answer_prefix " " does not begin with the tag
        ({"chat_template_kwargs": {"date_string": "10 Apr 2025"}}, "only used by style 'chat'"),
        ({"style": "chat", "chat_template_kwargs": ["date_string"]}, "must map names"),
    ],
)
def test_bad_prompt_formats_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PromptFormat(**kwargs)


# --- configuration -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("experiment, n, t, lam", [("tofu_phi", 5, 1.25, 1.5), ("tofu_llama3b", 20, 0.9, 1.25)])
def test_paper_experiments_use_the_official_pmc_settings(make_config, experiment, n, t, lam):
    handler = make_config(f"experiment={experiment}", base=[]).method.handler
    method = hydra.utils.instantiate(handler)
    assert (method.num_samples, method.temperature, method.top_p, method.retain_weight) == (n, t, 0.95, lam)
    assert (method.top_k, method.max_length, method.max_new_tokens) == (50, 200, None)
    assert (method.sample_every, method.min_length, method.length_penalty) == ("batch", 0, "exp")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_samples": 0},
        {"temperature": 0.0},
        {"temperature": -1.0},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"top_k": -1},
        {"top_k": 2.5},
        {"top_k": "50"},
        {"max_length": 200, "max_new_tokens": 64},
        {"max_length": 0},
        {"max_new_tokens": -3},
        {"sample_every": "micro_batch"},
        {"sample_every": "Batch"},
        {"selection": "softmax"},
        {"selection": "bradley_terry", "bt_temperature": 0.0},
        {"selection": "bradley_terry", "bt_temperature": -0.5},
        {"min_length": -1},
        {"length_penalty": "exponential"},
        {"length_penalty": -1.0},
    ],
)
def test_invalid_arguments_are_one_line_config_errors(kwargs):
    with pytest.raises(ConfigError) as error:
        PartialModelCollapse(**kwargs)
    assert "\n" not in str(error.value)


def test_valid_edge_arguments_are_accepted():
    PartialModelCollapse(num_samples=1, top_p=1.0, selection="bradley_terry", bt_temperature=math.inf)
    PartialModelCollapse(selection="argmin", bt_temperature=0.0)  # tau is unused by argmin
    PartialModelCollapse(top_k=0, max_length=1, sample_every="epoch", min_length=3, length_penalty=0)
