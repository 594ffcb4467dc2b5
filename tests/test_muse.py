"""MUSE: the synthetic generator, the real-data loader (local files and a faked hub), the metric formulas on numbers
worked out by hand, token-level scoring on a stub model with known probabilities, and `experiment=muse_tiny`
end to end."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from scipy.stats import mannwhitneyu
from torch import nn

from benchmarks import source
from benchmarks.metrics import EvalContext, build_suites, muse
from benchmarks.metrics.muse import MuseSuite
from benchmarks.metrics.scoring import MissingReferenceModel
from benchmarks.muse import load_muse, make_synthetic_muse
from benchmarks.muse.text import knowmem_prompt, text_records, verbmem_record
from benchmarks.source import load_local_file
from benchmarks.synthetic import make_synthetic_tofu
from pmc.core.errors import ConfigError
from pmc.core.prompts import RAW_TEXT
from pmc.core.records import DataError, QABenchmark, QARecord
from pmc.core.rouge import rouge_l_f1
from pmc.eval_cache import as_stored, from_stored
from pmc.experiment import run_experiment
from pmc.pipeline import prompt_format
from pmc.results import summary_table

# --- synthetic generator ------------------------------------------------------------------------------------------


def article_texts(records: list[QARecord]) -> list[str]:
    """The articles among a corpus's training records (the rest are QA texts)."""
    return [r.question + r.answer for r in records if not r.question.startswith("Question:")]


def test_same_arguments_same_benchmark_and_seed_matters():
    assert make_synthetic_muse(seed=3) == make_synthetic_muse(seed=3)
    assert article_texts(make_synthetic_muse(seed=0).forget) != article_texts(make_synthetic_muse(seed=1).forget)


def test_synthetic_structure():
    b = make_synthetic_muse(num_forget_articles=5, num_retain_articles=7, num_holdout_articles=4, seed=2)
    assert b.raw_text and b.name == "muse_synthetic" and b.pretrain == []
    forget, retain = article_texts(b.forget), article_texts(b.retain)
    holdout = [r.answer for r in b.eval_sets["mia_holdout"]]
    assert (len(forget), len(retain), len(holdout)) == (5, 7, 4)
    for text in forget + retain + holdout:
        assert 40 <= len(text.split()) <= 80
    # every article is named by its dateline ("Town, 12 March 2034:"), the record's four-word prompt
    towns = [t.split(",")[0] for t in forget + retain + holdout]
    assert len(set(towns)) == len(towns)
    for r in b.forget + b.retain:
        if not r.question.startswith("Question:"):
            assert len(r.question.split()) == 4 and r.question.endswith(":") and r.answer.startswith(" ")

    sets = b.eval_sets
    assert set(sets) == {"verbmem_forget", "knowmem_forget", "knowmem_retain", "mia_forget", "mia_retain",
                         "mia_holdout"}
    assert [r.question + r.answer for r in sets["verbmem_forget"]] == forget
    for r, text in zip(sets["verbmem_forget"], forget):
        assert len(r.question.split()) == len(text.split()) // 2 and r.answer.startswith(" ")
    assert [r.answer for r in sets["mia_forget"]] == forget and all(r.question == "" for r in sets["mia_forget"])
    assert [r.answer for r in sets["mia_retain"]] == retain[:5]
    assert not set(holdout) & set(forget + retain)  # never trained on

    # two facts per article, each stated in its article, and (qa_in_corpus) also trained as a QA text
    assert (len(sets["knowmem_forget"]), len(sets["knowmem_retain"])) == (10, 14)
    for facts, texts in ((sets["knowmem_forget"], forget), (sets["knowmem_retain"], retain)):
        for i, r in enumerate(facts):
            assert r.answer.lower() in texts[i // 2].lower()
    qa_texts = {(r.question, r.answer) for r in b.forget if r.question.startswith("Question:")}
    assert qa_texts == {(knowmem_prompt(r.question), " " + r.answer) for r in sets["knowmem_forget"]}


def test_synthetic_options():
    b = make_synthetic_muse(num_forget_articles=3, num_retain_articles=4, qa_in_corpus=False, num_knowmem_retain=5)
    assert (len(b.forget), len(b.retain), len(b.eval_sets["knowmem_retain"])) == (3, 4, 5)
    with pytest.raises(ValueError, match="num_forget_articles"):
        make_synthetic_muse(num_forget_articles=1)
    with pytest.raises(ValueError, match="max_words"):
        make_synthetic_muse(min_words=50, max_words=40)


def test_text_records_chunk_and_keep_whitespace():
    text = "one two three\n\nfour five six seven"
    records = text_records(text, max_words=4, prefix_words=2)
    assert [(r.question, r.answer) for r in records] == [("one two", " three\n\nfour"), ("five six", " seven")]
    assert text_records("a b c d e", max_words=2, prefix_words=4) == [QARecord("a", " b"), QARecord("c", " d")]
    r = verbmem_record("a b c d e")
    assert (r.question, r.answer) == ("a b", " c d e")


# --- real MUSE loader ---------------------------------------------------------------------------------------------

FILES = {
    ("raw", "forget"): [{"text": "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10"}, {"text": "forget two is short"}],
    ("raw", "retain1"): [{"text": "retain one text here"}],
    ("raw", "retain2"): [{"text": "retain two text here"}],
    ("verbmem", "forget"): [{"prompt": "w1 w2 w3", "gt": " w4 w5"}],
    ("knowmem", "forget_qa"): [{"question": "What is w1?", "answer": "w2"}],
    ("knowmem", "retain_qa"): [{"question": "What is r1?", "answer": "r2"}],
    ("knowmem", "forget_qa_icl"): [{"question": "Shot?", "answer": "yes"}],
    ("knowmem", "retain_qa_icl"): [{"question": "Shot r?", "answer": "no"}],
    ("privleak", "forget"): [{"text": "forget text"}],
    ("privleak", "retain"): [{"text": "retain text"}],
    ("privleak", "holdout"): [{"text": "holdout text"}, {"text": "another holdout"}],
}


def write_muse(root: Path, files=FILES) -> Path:
    for (config, split), rows in files.items():
        path = root / config / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def test_load_local_directory(tmp_path):
    b = load_muse("news", data_dir=str(write_muse(tmp_path)), max_words=4, prefix_words=2)
    assert b.name == "muse_news" and b.raw_text
    assert [(r.question, r.answer) for r in b.forget] == [
        ("w1 w2", " w3 w4"), ("w5 w6", " w7 w8"), ("w9", " w10"), ("forget two", " is short")]
    assert [(r.question, r.answer) for r in b.retain] == [("retain one", " text here")]  # retain1 only by default
    both = load_muse("news", data_dir=str(tmp_path), max_words=4, prefix_words=2, retain_splits=["retain1", "retain2"])
    assert len(both.retain) == 2
    sets = b.eval_sets
    assert sets["verbmem_forget"] == [QARecord("w1 w2 w3", " w4 w5")]
    assert sets["knowmem_forget"] == [QARecord("What is w1?", "w2")]
    assert sets["knowmem_retain_icl"] == [QARecord("Shot r?", "no")]
    assert [r.answer for r in sets["mia_holdout"]] == ["holdout text", "another holdout"]
    assert sets["mia_forget"] == [QARecord("", "forget text")]


def test_benchmark_config_builds_the_loader(tmp_path, make_config):
    from conftest import SMALL_MODEL
    from hydra.utils import instantiate

    cfg = make_config("benchmark=muse", f"benchmark.data_dir={write_muse(tmp_path)}", "benchmark.corpus=books",
                      base=SMALL_MODEL)
    b = instantiate(cfg.benchmark)
    assert b.name == "muse_books" and b.raw_text and len(b.retain) == 1


@pytest.mark.parametrize("line, message", [
    ("{not json", r"privleak/holdout\.jsonl:2: not valid JSON"),
    ('{"txt": "typo"}', r"privleak/holdout\.jsonl:2: field 'text' is missing"),
    ('{"text": "  "}', r"privleak/holdout\.jsonl:2: field 'text' is not a non-empty string"),
    ('["text"]', r"privleak/holdout\.jsonl:2: expected a JSON object"),
])
def test_malformed_record_names_file_and_line(tmp_path, line, message):
    write_muse(tmp_path)
    path = tmp_path / "privleak" / "holdout.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_muse(data_dir=str(tmp_path))


def test_missing_file_directory_and_bad_arguments(tmp_path):
    write_muse(tmp_path)
    (tmp_path / "knowmem" / "retain_qa.jsonl").unlink()
    with pytest.raises(DataError, match=r"knowmem/retain_qa\.jsonl: not found in the MUSE data directory"):
        load_muse(data_dir=str(tmp_path))
    (tmp_path / "knowmem" / "retain_qa.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="contains no records"):
        load_muse(data_dir=str(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        load_muse(data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="unknown MUSE corpus"):
        load_muse("poems", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="retain_splits"):
        load_muse(data_dir=str(tmp_path), retain_splits=["retain3"])


def serve_local(root: Path, asked: list | None = None, missing: str | None = None):
    """A stand-in for the hub: each split is the local JSON-lines file, read by the `datasets` json builder."""
    def load(repo, split):
        if asked is not None:
            asked.append((split.hub_name, repo))
        if split.hub_name == missing:
            raise FileNotFoundError(f"{repo} has no {missing}")
        return load_local_file(root / split.files[0], "json")
    return load


@pytest.mark.parametrize("corpus, repo", [("news", "muse-bench/MUSE-News"), ("books", "muse-bench/MUSE-Books")])
def test_hub_path_loads_the_configs_and_splits_as_the_references(tmp_path, monkeypatch, corpus, repo):
    write_muse(tmp_path)
    asked = []
    monkeypatch.setattr(source, "load_hub_split", serve_local(tmp_path, asked))
    b = load_muse(corpus, max_words=4, prefix_words=2)
    assert b == load_muse(corpus, data_dir=str(tmp_path), max_words=4, prefix_words=2)
    assert {r for _, r in asked} == {repo}
    # load_dataset(repo, config, split=split), as muse_bench load_data.py L9-31
    assert sorted(f for f, _ in asked) == sorted(f"{c}/{s}" for c, s in FILES if (c, s) != ("raw", "retain2"))


def test_hub_errors_name_the_split_and_the_row(tmp_path, monkeypatch):
    write_muse(tmp_path)
    monkeypatch.setattr(source, "load_hub_split", serve_local(tmp_path, missing="raw/forget"))
    with pytest.raises(DataError, match=r"^raw/forget: not found in the MUSE hub dataset muse-bench/MUSE-News "):
        load_muse()
    (tmp_path / "privleak" / "holdout.jsonl").write_text('{"text": "fine"}\n{"txt": "typo"}\n', encoding="utf-8")
    monkeypatch.setattr(source, "load_hub_split", serve_local(tmp_path))
    with pytest.raises(DataError) as e:
        load_muse()
    assert str(e.value) == "hub dataset muse-bench/MUSE-News privleak/holdout: row 2: field 'text' is missing"


def write_parquet_snapshot(root: Path, files=FILES) -> Path:
    """The hub repository's own layout, as `huggingface-cli download` leaves it:
    {config}/{split}-00000-of-00001.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for (config, split), rows in files.items():
        (root / config).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), root / config / f"{split}-00000-of-00001.parquet")
    return root


def test_a_snapshot_of_the_hub_parquet_files_loads_like_the_json_lines(tmp_path):
    jsonl = load_muse("news", data_dir=str(write_muse(tmp_path / "jsonl")), max_words=4, prefix_words=2)
    parquet = load_muse("news", data_dir=str(write_parquet_snapshot(tmp_path / "parquet")), max_words=4,
                        prefix_words=2)
    assert parquet == jsonl


def test_bad_parquet_row_or_file_is_one_error(tmp_path):
    files = {**FILES, ("privleak", "holdout"): [{"text": "one"}, {"text": " "}]}
    root = write_parquet_snapshot(tmp_path, files)
    path = root / "privleak" / "holdout-00000-of-00001.parquet"
    with pytest.raises(DataError) as e:
        load_muse(data_dir=str(root))
    assert str(e.value) == f"{path}: row 2: field 'text' is not a non-empty string"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=rf"^{path}: not a readable parquet file \("):
        load_muse(data_dir=str(root))


# --- formulas -----------------------------------------------------------------------------------------------------


def test_rouge_l_f1():
    # LCS "the cat on the mat" = 5 of 6 tokens on both sides: P = R = F = 5/6
    assert rouge_l_f1("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)
    # LCS "a c" = 2: P = 2/2, R = 2/4, F = 2PR/(P+R) = 2/3
    assert rouge_l_f1("a b c d", "a c") == pytest.approx(2 / 3)
    assert rouge_l_f1("The Cat.", "the cat") == 1.0  # lower-cased, punctuation dropped
    assert rouge_l_f1("running dogs", "run dog") == 0.0  # no stemming, as in muse_bench
    assert rouge_l_f1("a b", "") == 0.0


def test_knowmem_answer_is_cut_at_the_next_question():
    assert muse.cut_knowmem_answer("Paris\n\nQuestion: What") == "Paris"
    assert muse.cut_knowmem_answer("Paris\nQuestion: What") == "Paris"
    assert muse.cut_knowmem_answer(" Paris Question: What") == "Paris"
    assert muse.cut_knowmem_answer("the Red\nPlanet") == "the Red\nPlanet"
    assert knowmem_prompt("Q?", [("A?", "a"), ("B?", "b")]) == "Question: A?\nAnswer: a\n\nQuestion: B?\nAnswer: b" \
                                                                "\n\nQuestion: Q?\nAnswer:"


def test_generation_lengths_are_muse_s_unless_set(monkeypatch):
    assert (MuseSuite().verbmem_max_new_tokens, MuseSuite().knowmem_max_new_tokens) == (128, 32)  # muse_bench's
    sets = {"verbmem_forget": [QARecord("a b", "c a b")], "knowmem_forget": [QARecord("a", "b")],
            "knowmem_retain": [QARecord("b", "c")], "mia_forget": [QARecord("", "a b")],
            "mia_holdout": [QARecord("", "b a")]}
    ctx = EvalContext(WordTokenizer(), RAW_TEXT, QABenchmark("stub", [], [], sets), max_new_tokens=7, batch_size=2)
    asked = []

    def generate(model, tokenizer, fmt, prompts, max_new_tokens, **kwargs):
        asked.append(max_new_tokens)
        return [""] * len(prompts)

    monkeypatch.setattr(muse, "greedy_answers", generate)
    monkeypatch.setattr(muse, "membership", lambda model, ctx, sets: {})
    MuseSuite().score_model(None, ctx)
    MuseSuite(verbmem_max_new_tokens=16, knowmem_max_new_tokens=4).score_model(None, ctx)
    assert asked == [128, 32, 32, 16, 4, 4]  # verbmem, knowmem forget, knowmem retain; never generation's 7


def test_auc_is_the_mann_whitney_statistic_with_ties_as_half():
    assert muse.auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert muse.auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    # pairs (1,2) (1,3) (2,2) (2,3): only the tie counts, as 1/2 -> 0.5 / 4
    assert muse.auc([1.0, 2.0], [2.0, 3.0]) == pytest.approx(0.125)
    assert muse.auc([0.5, 0.5], [0.5]) == 0.5
    forget, holdout = [0.3, 1.2, 0.7, 0.7, 2.0], [0.7, 0.1, 1.5, 0.9]
    u = mannwhitneyu(forget, holdout).statistic
    assert muse.auc(forget, holdout) == pytest.approx(u / (5 * 4))
    assert muse.auc(forget, holdout) == pytest.approx((1 + 3 + 1.5 + 1.5 + 4) / 20)  # by hand, per forget score


def test_privleak():
    assert muse.privleak(0.25, 0.5) == pytest.approx(-50.0)
    assert muse.privleak(0.5, 0.5) == 0.0
    assert muse.privleak(0.0, 0.4) == pytest.approx(-100.0)  # a model that memorised every forget text
    assert muse.privleak(0.6, 0.4) == pytest.approx(50.0)  # forget texts look less familiar than unseen ones
    assert math.isnan(muse.privleak(0.3, 0.0))


def test_membership_scores():
    logprobs = [-1.0, -2.0, -3.0, -4.0, -5.0]
    assert muse.loss_score(logprobs) == 3.0
    assert muse.min_k_score(logprobs, 0.4) == 4.5  # int(0.4 * 5) = 2 lowest: -5, -4
    assert muse.min_k_score(logprobs, 0.1) == 5.0  # int(0.5) = 0 -> at least one token
    assert muse.min_k_score(logprobs, 1.0) == 3.0
    # z = (lp - mu) / sigma = (1, -0.5, -0.75)
    lp, mu, sigma = [-1.0, -2.0, -3.0], [-2.0, -1.5, -1.5], [1.0, 1.0, 2.0]
    assert muse.min_k_plus_plus_score(lp, mu, sigma, 0.4) == 0.75  # int(1.2) = 1: -0.75
    assert muse.min_k_plus_plus_score(lp, mu, sigma, 0.7) == 0.625  # int(2.1) = 2: mean(-0.75, -0.5)
    assert muse.min_k_plus_plus_score([0.0], [0.0], [0.0]) == 0.0  # σ = 0 (one-hot) is floored, not a 0/0
    text = "hello hello hello"
    assert muse.zlib_score([-2.0, -4.0], text) == pytest.approx(3.0 / len(zlib.compress(text.encode())))


def test_token_statistics_on_hand_made_logits():
    # step 1: p = (3/4, 1/4); step 2: uniform over 2
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    picked, mu, sigma = muse.token_statistics(logits, torch.tensor([1, 0]))
    a, b = math.log(0.75), math.log(0.25)
    assert picked.tolist() == pytest.approx([b, math.log(0.5)])
    assert mu.tolist() == pytest.approx([0.75 * a + 0.25 * b, math.log(0.5)])
    # Bernoulli: var(log p) = p(1-p)(a-b)^2; a uniform distribution has σ = 0
    assert sigma.tolist() == pytest.approx([math.sqrt(0.75 * 0.25) * math.log(3.0), 0.0], abs=1e-6)


class WordTokenizer:
    VOCAB = ["<pad>", "<eos>", "a", "b", "c"]
    pad_token_id, eos_token_id = 0, 1

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [self.VOCAB.index(w) for w in text.split()]}


class BigramStub(nn.Module):
    """Next-token logits depend only on the current token: after any token, a : b : c = 2 : 1 : 1."""

    def __init__(self):
        super().__init__()
        table = torch.full((5, 5), -1e4)
        table[:, 2], table[:, 3], table[:, 4] = math.log(2.0), 0.0, 0.0
        self.table = nn.Parameter(table)
        self.calls = []

    def forward(self, input_ids, attention_mask, use_cache=None):  # a causal LM's signature: logits_of passes use_cache
        self.calls.append({"rows": input_ids.shape[0], "training": self.training, "grad": torch.is_grad_enabled()})
        return SimpleNamespace(logits=self.table[input_ids])


def test_text_token_scores_on_known_probabilities():
    model = BigramStub()
    texts = ["a b", "c a a b", "b c"]
    scores = muse.text_token_scores(model, WordTokenizer(), texts, batch_size=2, max_length=3)
    half, quarter = math.log(0.5), math.log(0.25)
    assert scores[0].logprobs == pytest.approx([quarter])
    assert scores[1].logprobs == pytest.approx([half, half])  # cut to 3 tokens: c a a
    assert scores[2].logprobs == pytest.approx([quarter])
    mu = 0.5 * half + 0.5 * quarter
    sigma = math.sqrt(0.5 * (half - mu) ** 2 + 0.5 * (quarter - mu) ** 2)
    assert scores[1].mu == pytest.approx([mu, mu], abs=1e-5) and scores[1].sigma == pytest.approx([sigma] * 2, abs=1e-5)
    assert [c["rows"] for c in model.calls] == [2, 1]
    assert model.training and not any(c["training"] or c["grad"] for c in model.calls)
    one = muse.text_token_scores(model, WordTokenizer(), texts, batch_size=1, max_length=3)
    assert [s.logprobs for s in one] == [s.logprobs for s in scores]
    with pytest.raises(DataError, match="fewer than two tokens"):
        muse.text_token_scores(model, WordTokenizer(), ["a"], batch_size=1, max_length=3)


def test_suite_needs_the_retain_model_and_muse_sets():
    ctx = EvalContext(WordTokenizer(), RAW_TEXT, make_synthetic_muse(num_forget_articles=2, num_retain_articles=1),
                      max_new_tokens=4, batch_size=2)
    with pytest.raises(MissingReferenceModel, match="retain model"):
        MuseSuite().evaluate({"target": BigramStub()}, ctx)
    tofu_like = make_synthetic_tofu(num_authors=3, forget_authors=1, retain_eval_authors=1)
    ctx = EvalContext(WordTokenizer(), RAW_TEXT, tofu_like, max_new_tokens=4, batch_size=2)
    with pytest.raises(DataError, match="verbmem_forget"):
        MuseSuite().evaluate({"target": BigramStub(), "retain": BigramStub()}, ctx)


class Words(WordTokenizer):
    def decode(self, ids, skip_special_tokens=True):
        return " ".join(self.VOCAB[i] for i in ids)


def test_known_stage0_results_give_the_same_scores_without_running_the_retain_model(monkeypatch):
    """As with the eval cache: target and retain scored first, then the unlearned model with their results known;
    its PrivLeak comes from the retain model's known AUC, the retain model is not run again."""
    text = lambda *words: QARecord("", " ".join(words))
    sets = {"verbmem_forget": [QARecord("a b", "c a b")], "knowmem_forget": [QARecord("a", "b")],
            "knowmem_retain": [QARecord("b", "c")], "mia_forget": [text("a", "b", "c"), text("a", "a", "b")],
            "mia_holdout": [text("c", "c", "b"), text("b", "a")], "mia_retain": [text("b", "b", "c")]}
    ctx = EvalContext(Words(), RAW_TEXT, QABenchmark("stub", [], [], sets), max_new_tokens=4, batch_size=2,
                      max_length=16)
    models = {"target": BigramStub(), "retain": BigramStub(), "unlearned": BigramStub()}
    with torch.no_grad():  # three different models: the retain and unlearned ones favour other tokens
        models["retain"].table[:, 3] += 1.0
        models["unlearned"].table[:, 4] += 2.0
    scripted = {id(model): f"{name} a" for name, model in models.items()}
    monkeypatch.setattr(muse, "greedy_answers", lambda model, tok, fmt, prompts, **kw: [scripted[id(model)]] *
                        len(prompts))
    together = MuseSuite().evaluate(models, ctx)

    stage0 = MuseSuite().evaluate({"target": models["target"], "retain": models["retain"]}, ctx)
    models["retain"].calls.clear()
    later = MuseSuite().evaluate(models, ctx, from_stored(as_stored(stage0)))
    assert set(later) == {"unlearned"} and models["retain"].calls == []
    assert as_stored({**stage0, **later}) == as_stored(together)
    assert later["unlearned"].summary["privleak"] != 0.0  # compared with the retain model, not with itself


def _context(benchmark) -> EvalContext:
    return EvalContext(WordTokenizer(), RAW_TEXT, benchmark, max_new_tokens=4, batch_size=2)


def test_privleak_reference_source_and_corpus():
    synthetic = make_synthetic_muse(num_forget_articles=2, num_retain_articles=1)
    news = SimpleNamespace(name="muse_news")
    books = SimpleNamespace(name="muse_books")
    assert MuseSuite().published_corpus(_context(synthetic)) is None  # the retain model's AUC
    assert MuseSuite(privleak_reference="published").published_corpus(_context(news)) == "news"
    assert MuseSuite(privleak_reference="published").published_corpus(_context(books)) == "books"
    assert MuseSuite(privleak_reference="published", privleak_corpus="books").published_corpus(
        _context(synthetic)) == "books"
    # muse_bench constants.py: AUC_RETRAIN[corpus]["forget_holdout_Min-40%"]
    assert muse.PUBLISHED_RETRAIN_AUC == {"news": 0.4772, "books": 0.5393}


@pytest.mark.parametrize("settings, message", [
    ({"privleak_reference": "retain"},
     r"^eval\.muse\.privleak_reference must be one of \['retrain', 'published'\], got 'retain'$"),
    ({"privleak_reference": "published"}, r"benchmark 'muse_synthetic' is neither; set eval\.muse\."
                                          r"privleak_corpus"),
    ({"privleak_corpus": "wiki"},
     r"^eval\.muse\.privleak_corpus must be one of \['books', 'news'\] or null, got 'wiki'$"),
    ({"privleak_refrence": "published"}, r"^eval\.muse\.privleak_refrence: unknown setting; known: "),
    ({"knowmem_max_new_tokens": 0}, r"^eval\.muse\.knowmem_max_new_tokens must be a positive integer, got 0$"),
])
def test_privleak_reference_config_errors(settings, message):
    ctx = _context(make_synthetic_muse(num_forget_articles=2, num_retain_articles=1))
    with pytest.raises(ConfigError, match=message):
        suite = build_suites({"muse": {"_target_": "benchmarks.metrics.muse.MuseSuite", **settings}})["muse"]
        suite.evaluate({"target": BigramStub(), "retain": BigramStub()}, ctx)


def test_published_reference_needs_no_retain_model():
    # with MUSE's published AUC the retain model is not needed: the suite gets past that check to the data check
    ctx = _context(make_synthetic_tofu(num_authors=3, forget_authors=1, retain_eval_authors=1))
    with pytest.raises(DataError, match="verbmem_forget"):
        MuseSuite(privleak_reference="published", privleak_corpus="news").evaluate({"target": BigramStub()}, ctx)


def test_summary_with_the_published_reference():
    # Min-K% scores: forget [1, 3], holdout [2, 4]: pairs (1,2) (1,4) (3,2) (3,4) -> one win -> AUC 1/4
    examples = {
        "verbmem_forget": [{"rouge_l_f1": 0.5}], "knowmem_forget": [{"rouge_l_f1": 0.25}],
        "knowmem_retain": [{"rouge_l_f1": 1.0}],
        "mia_forget": [dict.fromkeys(muse.ATTACKS, 1.0), dict.fromkeys(muse.ATTACKS, 3.0)],
        "mia_holdout": [dict.fromkeys(muse.ATTACKS, 2.0), dict.fromkeys(muse.ATTACKS, 4.0)],
    }
    summary = muse.summarise(examples, muse.PUBLISHED_RETRAIN_AUC["news"], "published")
    assert summary["auc_min_k"] == 0.25
    assert summary["privleak"] == pytest.approx((0.25 - 0.4772) / 0.4772 * 100)  # −47.61...
    assert summary["privleak"] == pytest.approx(-47.6110, abs=1e-4)
    assert summary["privleak_reference"] == "published" and summary["privleak_reference_auc"] == 0.4772
    # the end-of-run table prints the name as it is
    table = summary_table({"unlearned": {"muse": summary}})
    assert "published" in table and "-47.61" in table


# --- end to end ---------------------------------------------------------------------------------------------------

BENCHMARK_SIZE = {"num_forget_articles": 6, "num_retain_articles": 8, "num_holdout_articles": 6}
KEYS = {"verbmem_forget", "knowmem_forget", "knowmem_retain", "privleak", "privleak_reference",
        "privleak_reference_auc", "auc_loss", "auc_zlib", "auc_min_k", "auc_min_k_plus_plus", "auc_min_k_retain"}


@pytest.fixture(scope="module")
def muse_run(tmp_path_factory, stage0_cache):
    from conftest import CONF_DIR, SMALL_MODEL
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[
            *SMALL_MODEL, f"cache_dir={stage0_cache}", "experiment=muse_tiny",
            *(f"benchmark.{key}={value}" for key, value in BENCHMARK_SIZE.items()),
            "model.finetune.epochs=30", "method.training.epochs=2",  # stage 0 is what is tested, not unlearning
        ])
    run_dir = tmp_path_factory.mktemp("muse_run")
    return run_experiment(cfg, run_dir), run_dir, cfg


@pytest.mark.slow  # a whole MUSE run (~50 s): the fast suite tests each MUSE piece on its own
def test_muse_end_to_end(muse_run):
    results, run_dir, cfg = muse_run
    assert list(cfg.eval) == ["muse"] and results["benchmark"] == "muse_synthetic"
    metrics = results["metrics"]
    on_disk = json.loads((run_dir / "results.json").read_text())["metrics"]
    for model in ("target", "retain", "unlearned"):
        summary = metrics[model]["muse"]
        assert set(summary) == KEYS and on_disk[model]["muse"] == summary
        examples = json.loads((run_dir / "eval" / model / "muse.json").read_text())["examples"]
        assert set(examples) == {"verbmem_forget", "knowmem_forget", "knowmem_retain", "mia_forget", "mia_retain",
                                 "mia_holdout"}
    target, retain = metrics["target"]["muse"], metrics["retain"]["muse"]
    # the target memorised the forget articles and their facts; the retain model never saw them
    assert target["verbmem_forget"] > 0.9 and retain["verbmem_forget"] < 0.5
    assert target["knowmem_forget"] > 0.9 and retain["knowmem_forget"] < 0.3
    assert target["knowmem_retain"] > 0.8 and retain["knowmem_retain"] > 0.8
    assert retain["privleak"] == 0.0 and target["privleak"] < -50.0
    assert target["auc_min_k"] < 0.1 and target["auc_min_k_retain"] < 0.1 and retain["auc_min_k_retain"] < 0.1


@pytest.mark.slow
def test_muse_summary_recomputes_from_the_examples(muse_run):
    results, run_dir, _ = muse_run
    load = lambda model: json.loads((run_dir / "eval" / model / "muse.json").read_text())["examples"]
    examples, retain_examples = load("unlearned"), load("retain")
    summary = results["metrics"]["unlearned"]["muse"]
    avg = lambda values: sum(values) / len(values)

    for name in ("verbmem_forget", "knowmem_forget", "knowmem_retain"):
        for r in examples[name]:
            assert r["rouge_l_f1"] == pytest.approx(rouge_l_f1(r["answer"], r["generated"]))
        assert summary[name] == pytest.approx(avg([r["rouge_l_f1"] for r in examples[name]]))

    def mw(forget, holdout):  # P(forget > holdout) + ties / 2, by pairs
        return avg([(f > h) + 0.5 * (f == h) for f in forget for h in holdout])

    for attack in ("loss", "zlib", "min_k", "min_k_plus_plus"):
        scores = lambda rows, attack=attack: [r[attack] for r in rows]
        assert summary[f"auc_{attack}"] == pytest.approx(mw(scores(examples["mia_forget"]),
                                                            scores(examples["mia_holdout"])))
    reference = mw([r["min_k"] for r in retain_examples["mia_forget"]],
                   [r["min_k"] for r in retain_examples["mia_holdout"]])
    assert summary["privleak"] == pytest.approx((summary["auc_min_k"] - reference) / reference * 100)
    assert summary["privleak_reference"] == "retrain" and summary["privleak_reference_auc"] == pytest.approx(reference)
    texts = make_synthetic_muse(**BENCHMARK_SIZE).eval_sets["mia_forget"]
    for r in examples["mia_forget"]:
        text = texts[r["index"]].answer
        assert text.startswith(r["text"]) and r["tokens"] >= 2
        assert r["zlib"] == pytest.approx(r["loss"] / len(zlib.compress(text.encode("utf-8"))))


def test_raw_text_benchmark_uses_the_raw_prompt_format(make_config):
    from conftest import SMALL_MODEL

    cfg = make_config("experiment=muse_tiny", base=SMALL_MODEL)
    assert prompt_format(cfg, make_synthetic_muse(num_forget_articles=2, num_retain_articles=1)) == RAW_TEXT
