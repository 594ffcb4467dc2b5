"""The TOFU metric suite: formulas on numbers worked out by hand, the batched answer log-probability on a stub model
with known probabilities and on a tiny real Llama, and `eval=[paper,tofu]` end to end."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from benchmarks.metrics import EvalContext, scoring, tofu
from pmc.core.models import build_tiny, train_tokenizer
from pmc.core.prompts import PromptFormat
from pmc.core.records import QABenchmark, QARecord
from pmc.eval_cache import as_stored, from_stored
from pmc.experiment import run_experiment

# --- formulas -----------------------------------------------------------------------------------------------------


def test_probability_is_exp_of_the_mean_token_logprob():
    assert tofu.probability(math.log(0.25)) == pytest.approx(0.25)
    assert tofu.probability(0.0) == 1.0


def test_normalised_probability():
    # 0.2 / (0.2 + 0.1 + 0.1 + 0.4) = 0.25
    assert tofu.normalised_probability(0.2, [0.1, 0.1, 0.4]) == pytest.approx(0.25)
    assert tofu.normalised_probability(0.5, [0.5]) == pytest.approx(0.5)


def test_geometric_mean_of_perturbed_probabilities():
    assert tofu.geometric_mean([0.5, 0.125]) == pytest.approx(0.25)  # sqrt(1/16)
    assert tofu.geometric_mean([0.1, 0.1, 0.1]) == pytest.approx(0.1)
    assert tofu.geometric_mean([0.01, 0.1, 1.0]) == pytest.approx(0.1)  # cube root of 1e-3
    assert tofu.geometric_mean([0.3, 0.0]) == 0.0


def test_truth_ratio_divides_the_geometric_mean_by_the_paraphrased_probability():
    assert tofu.truth_ratio([0.5, 0.125], 0.5) == pytest.approx(0.5)  # 0.25 / 0.5
    assert tofu.truth_ratio([0.04, 0.01], 0.01) == pytest.approx(2.0)  # 0.02 / 0.01


def test_truth_ratio_scores_forget_versus_the_other_sets():
    ratios = [0.5, 2.0, 1.0, 0.25]
    # forget: min(TR, 1/TR) = 0.5, 0.5, 1, 0.25 -> mean 2.25 / 4
    assert tofu.forget_truth_ratio_score(ratios) == pytest.approx(0.5625)
    # retain / utility sets: max(0, 1 - TR) = 0.5, 0, 0, 0.75 -> mean 1.25 / 4
    assert tofu.utility_truth_ratio_score(ratios) == pytest.approx(0.3125)
    assert tofu.forget_truth_ratio_score([0.0]) == 0.0  # a vanished numerator is as far from 1 as it gets


def test_model_utility_is_a_harmonic_mean_and_zero_with_a_zero_component():
    assert tofu.model_utility([0.5, 0.25]) == pytest.approx(1 / 3)  # 2 / (2 + 4)
    assert tofu.model_utility([0.5] * 9) == pytest.approx(0.5)
    assert tofu.model_utility([1.0, 0.5, 0.25]) == pytest.approx(3 / 7)  # 3 / (1 + 2 + 4)
    assert tofu.model_utility([0.9] * 8 + [0.0]) == 0.0


def test_forget_quality_is_the_exact_ks_p_value():
    assert tofu.forget_quality([0.3, 0.9, 1.4], [0.3, 0.9, 1.4]) == 1.0
    # Fully separated samples of size n: D = 1, and only 2 of the C(2n, n) orderings reach it -> p = 2 / C(2n, n).
    assert tofu.forget_quality([0.1, 0.2, 0.3], [1.1, 1.2, 1.3]) == pytest.approx(2 / 20)  # 0.1
    assert tofu.forget_quality([5.0, 6.0, 7.0, 8.0], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(2 / 70)


# --- batched answer log-probabilities -----------------------------------------------------------------------------


class WordTokenizer:
    """Whitespace tokenizer over a fixed vocabulary, so token ids (and hence probabilities) are known by hand."""

    VOCAB = ["<pad>", "<eos>", "Question:", "Answer:", "is", "it", "yes", "no", "maybe"]
    pad_token_id, eos_token_id = 0, 1

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [self.VOCAB.index(w) for w in text.split()]}


def bigram_logits() -> torch.Tensor:
    """logits[prev] over the next token. After "Answer:": yes 4 : no 2 : maybe 1 (probabilities 4/7, 2/7, 1/7);
    after an answer word: <eos> 3 : yes 1 (3/4, 1/4). Everything else is (almost) impossible, prompts included,
    which does not matter: only answer tokens are scored."""
    vocab = WordTokenizer.VOCAB
    table = torch.full((len(vocab), len(vocab)), -1e4)
    answer = vocab.index("Answer:")
    for word, weight in (("yes", 4), ("no", 2), ("maybe", 1)):
        table[answer, vocab.index(word)] = math.log(weight)
    for word in ("yes", "no", "maybe"):
        table[vocab.index(word), vocab.index("<eos>")] = math.log(3)
        table[vocab.index(word), vocab.index("yes")] = 0.0
    return table


class BigramStub(nn.Module):
    """A 'language model' whose next-token logits depend only on the current token, and that records how it ran."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(bigram_logits())
        self.calls: list[dict] = []

    def forward(self, input_ids, attention_mask, use_cache=None):  # a causal LM's signature: logits_of passes use_cache
        self.calls.append({"rows": input_ids.shape[0], "training": self.training, "grad": torch.is_grad_enabled()})
        return SimpleNamespace(logits=self.table[input_ids])


STUB_PAIRS = [("is it", "yes"), ("is it", "maybe yes"), ("it is", "no"), ("is it", "maybe")]
# Answer tokens (with <eos>) and the probability of each given the previous token, from bigram_logits:
STUB_EXPECTED = [
    (math.log(4 / 7) + math.log(3 / 4)) / 2,  # yes <eos>
    (math.log(1 / 7) + math.log(1 / 4) + math.log(3 / 4)) / 3,  # maybe yes <eos>
    (math.log(2 / 7) + math.log(3 / 4)) / 2,  # no <eos>
    (math.log(1 / 7) + math.log(3 / 4)) / 2,  # maybe <eos>
]


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_answer_logprob_means_on_known_probabilities(batch_size):
    model = BigramStub()
    model.train()
    got = scoring.answer_logprob_means(model, WordTokenizer(), PromptFormat(), STUB_PAIRS, batch_size, max_length=64)
    assert got == pytest.approx(STUB_EXPECTED, abs=1e-6)
    assert [c["rows"] for c in model.calls] == [min(batch_size, 4 - i) for i in range(0, 4, batch_size)]
    assert not any(c["training"] or c["grad"] for c in model.calls)  # eval mode, no autograd
    assert model.training  # and the caller's mode is restored
    assert [tofu.probability(v) for v in got][0] == pytest.approx(math.sqrt(4 / 7 * 3 / 4))


TEXTS = [
    "Question: Who wrote the book?\nAnswer: Jane wrote it.",
    "Question: Where is the cat?\nAnswer: The cat sat on the mat near the door.",
    "Question: What is the capital of France?\nAnswer: Paris is the capital of France.",
    "the quick brown fox jumps over the lazy dog",
]


@pytest.fixture(scope="module")
def tiny():
    tokenizer = train_tokenizer(TEXTS * 3, vocab_size=300)
    model = build_tiny(tokenizer, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                       max_position_embeddings=128, seed=0)
    return model, tokenizer


def test_batched_and_one_at_a_time_agree_on_a_real_tiny_model(tiny):
    model, tokenizer = tiny
    pairs = [("Who wrote the book?", "Jane wrote it."),
             ("Where is the cat?", "The cat sat on the mat near the door, quite still."),
             ("What is the capital of France?", "Paris."),
             ("Who wrote the book?", "The lazy dog wrote it."),
             ("Where is the cat?", "On the mat."),
             ("What is the capital of France?", "Paris is the capital of France, the quick brown fox says."),
             ("Who?", "Jane.")] * 2
    one = scoring.answer_logprob_means(model, tokenizer, PromptFormat(), pairs, batch_size=1, max_length=128)
    eight = scoring.answer_logprob_means(model, tokenizer, PromptFormat(), pairs, batch_size=8, max_length=128)
    assert torch.allclose(torch.tensor(one), torch.tensor(eight), atol=1e-5, rtol=0)
    assert one[:7] == one[7:] and len(set(one[:7])) == 7  # same pair, same value; different pairs differ
    assert all(-math.log(len(tokenizer)) - 3 < v < 0 for v in one)  # an untrained model is near-uniform


def test_suite_needs_the_retain_model(tiny):
    model, tokenizer = tiny
    benchmark = QABenchmark("b", [], [], {s: [QARecord("q", "a", "q", "a", ("b",))] for s in tofu.SETS})
    ctx = EvalContext(tokenizer, PromptFormat(), benchmark, max_new_tokens=2, batch_size=4)
    with pytest.raises(scoring.MissingReferenceModel, match="retain model"):
        tofu.TofuSuite().evaluate({"target": model, "unlearned": model}, ctx)


def test_known_stage0_results_give_the_same_scores_without_running_the_retain_model(tiny):
    """As with the eval cache: target and retain scored first, then the unlearned model with their results known;
    its forget quality comes from the retain model's known truth ratios, the retain model is not run again."""
    model, tokenizer = tiny
    retain, unlearned = (build_tiny(tokenizer, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                    max_position_embeddings=128, seed=seed) for seed in (1, 2))
    records = [QARecord("Who wrote the book?", "Jane wrote it.", "Who wrote it?", "Jane did.",
                        ("The cat wrote it.", "Paris wrote it.")),
               QARecord("Where is the cat?", "On the mat.", "Where's the cat?", "The cat is on the mat.",
                        ("Near the fox.", "In France.")),
               QARecord("What is the capital of France?", "Paris.", "France's capital?", "It is Paris.",
                        ("The dog.", "The mat."))]
    benchmark = QABenchmark("b", [], [], {s: records for s in tofu.SETS})
    ctx = EvalContext(tokenizer, PromptFormat(), benchmark, max_new_tokens=3, batch_size=4)
    models = {"target": model, "retain": retain, "unlearned": unlearned}
    together = tofu.TofuSuite().evaluate(models, ctx)

    stage0 = tofu.TofuSuite().evaluate({"target": model, "retain": retain}, ctx)
    calls = []
    retain.register_forward_pre_hook(lambda module, inputs: calls.append(1))
    later = tofu.TofuSuite().evaluate(models, ctx, from_stored(as_stored(stage0)))
    assert set(later) == {"unlearned"} and calls == []
    assert as_stored({**stage0, **later}) == as_stored(together)
    assert 0.0 < later["unlearned"].summary["forget_quality"] <= 1.0


# --- end to end ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tofu_run(tmp_path_factory, stage0_cache):
    from conftest import CONF_DIR, SMALL
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*SMALL, f"cache_dir={stage0_cache}", "eval=[paper,tofu]",
                                          "method.training.epochs=1"])  # unlearning is not what is tested
    run_dir = tmp_path_factory.mktemp("tofu_run")
    return run_experiment(cfg, run_dir), run_dir


def test_tofu_suite_end_to_end(tofu_run):
    results, run_dir = tofu_run
    metrics = results["metrics"]
    assert metrics["retain"]["tofu"]["forget_quality"] == 1.0  # the KS test of retain against itself
    assert metrics["target"]["tofu"]["forget_quality"] < 0.5  # the target memorised the forget set
    keys = {"forget_quality", "model_utility"} | {f"{s}_{m}" for s in tofu.SETS for m in ("prob", "rouge",
                                                                                            "truth_ratio")}
    for model in ("target", "retain", "unlearned"):
        summary = metrics[model]["tofu"]
        assert set(summary) == keys
        assert 0.0 < summary["model_utility"] <= 1.0
        on_disk = json.loads((run_dir / "eval" / model / "tofu.json").read_text())
        assert on_disk["summary"] == summary
        assert set(on_disk["examples"]) == set(tofu.SETS)
        assert (run_dir / "eval" / model / "paper.json").is_file()


def test_summary_recomputes_from_the_examples(tofu_run):
    """Every aggregate from the per-question rows by hand (no suite code), for the unlearned model."""
    results, run_dir = tofu_run
    examples = json.loads((run_dir / "eval" / "unlearned" / "tofu.json").read_text())["examples"]
    retain_examples = json.loads((run_dir / "eval" / "retain" / "tofu.json").read_text())["examples"]
    summary = results["metrics"]["unlearned"]["tofu"]

    def avg(values):
        values = list(values)
        return sum(values) / len(values)

    for name, rows in examples.items():
        for r in rows:
            gm = math.prod(r["perturbed_probs"]) ** (1 / len(r["perturbed_probs"]))
            assert r["truth_ratio"] == pytest.approx(gm / r["paraphrased_prob"])
        if name in ("forget", "retain"):
            assert summary[f"{name}_prob"] == pytest.approx(avg(r["prob"] for r in rows))
        else:
            assert all(r["paraphrased_answer"] == r["answer"] for r in rows)
            assert summary[f"{name}_prob"] == pytest.approx(
                avg(r["prob"] / (r["prob"] + sum(r["perturbed_probs"])) for r in rows))
        assert summary[f"{name}_rouge"] == pytest.approx(avg(r["rouge"] for r in rows))
    assert summary["forget_truth_ratio"] == pytest.approx(
        avg(min(r["truth_ratio"], 1 / r["truth_ratio"]) for r in examples["forget"]))
    for name in ("retain", "real_authors", "world_facts"):
        assert summary[f"{name}_truth_ratio"] == pytest.approx(
            avg(max(0.0, 1 - r["truth_ratio"]) for r in examples[name]))
    nine = [summary[f"{s}_{m}"] for s in ("retain", "real_authors", "world_facts") for m in ("prob", "rouge",
                                                                                           "truth_ratio")]
    assert summary["model_utility"] == pytest.approx(9 / sum(1 / v for v in nine))
    # forget quality: scipy's KS test between this model's and the retain model's raw forget truth ratios
    from scipy.stats import ks_2samp

    a = [r["truth_ratio"] for r in examples["forget"]]
    b = [r["truth_ratio"] for r in retain_examples["forget"]]
    assert summary["forget_quality"] == pytest.approx(ks_2samp(a, b).pvalue)


def test_paper_suite_in_the_same_run_follows_the_official_code(tofu_run):
    """paper.json of the same run: the paraphrased split against the paraphrased answers, utility's retain term on
    the training retain split (50 records <= 400: all of them, in order), the summary from the rows."""
    from benchmarks.synthetic import make_synthetic_tofu

    _, run_dir = tofu_run
    benchmark = make_synthetic_tofu(num_authors=6, forget_authors=1, num_world_facts=10, num_real_authors=10,
                                    retain_eval_authors=2)  # conftest's SMALL benchmark
    on_disk = json.loads((run_dir / "eval" / "unlearned" / "paper.json").read_text())
    examples, summary = on_disk["examples"], on_disk["summary"]
    assert [(r["question"], r["answer"]) for r in examples["forget_paraphrased"]] == \
        [(r.paraphrased_question, r.paraphrased_answer) for r in benchmark.forget]
    assert [(r["index"], r["question"]) for r in examples["retain"]] == \
        [(i, r.question) for i, r in enumerate(benchmark.retain)]
    assert len(examples["retain"]) == 50
    avg = lambda rows: sum(r["rouge_l_recall"] for r in rows) / len(rows)
    assert summary["unlearn_quality"] == pytest.approx(
        100 * (2 - avg(examples["forget"]) - avg(examples["forget_paraphrased"])) / 2)
    assert summary["utility"] == pytest.approx(
        100 * (avg(examples["retain"]) + avg(examples["world_facts"]) + avg(examples["real_authors"])) / 3)
